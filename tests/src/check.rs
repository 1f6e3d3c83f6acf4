//! The delivery check every scenario ends with.

use crate::cluster::Published;

/// Asserts what one subscriber received, ignoring `reset` events:
/// - every acknowledged (201) message is there;
/// - nothing appears twice;
/// - nothing appears that was never attempted, and order is publish order.
///
/// A refused publish may still appear: when Redis dies after running the
/// script but before answering, the event was stored and broadcast though
/// its publisher saw an error. Everything else is exact.
pub fn assert_delivered(who: &str, received: &[String], published: &Published) {
    let mut cursor = 0;
    for message in received {
        match published.attempted[cursor..]
            .iter()
            .position(|m| m == message)
        {
            Some(skip) => cursor += skip + 1,
            None => {
                let earlier = published.attempted[..cursor].contains(message);
                panic!(
                    "{who}: {message:?} arrived {}; received {} events",
                    if earlier {
                        "twice or out of order"
                    } else {
                        "but was never published"
                    },
                    received.len()
                );
            }
        }
    }
    let missing: Vec<&String> = published
        .stored
        .iter()
        .filter(|m| !received.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "{who}: {} acknowledged events never arrived, first {:?}; received {}",
        missing.len(),
        missing.first(),
        received.len()
    );
}
