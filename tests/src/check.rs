//! The delivery check every scenario ends with.

use crate::cluster::Published;
use crate::subscriber::Seen;

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

/// [`assert_delivered`] for a finished subscriber, which must also have
/// stayed on its one connection: a failover or a slot move behind it is
/// healed by the server, never by the client reconnecting.
pub fn assert_delivered_on_one_connection(who: &str, seen: &Seen, published: &Published) {
    assert_eq!(
        seen.connections, 1,
        "{who}: the stream stayed open; ends {:?}",
        seen.ends
    );
    let data: Vec<String> = seen
        .events
        .iter()
        .filter(|e| e.event != "reset")
        .map(|e| e.data.clone())
        .collect();
    assert_delivered(who, &data, published);
}
