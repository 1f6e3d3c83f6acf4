//! What a subscriber asks for: its topics and where to resume.

use actix_web::http::header::HeaderMap;
use shared_types::publish::topic_error;
use shared_types::{Cursor, DEFAULT_TOPIC};

use crate::error::StreamError;

/// A validated subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Sorted and without duplicates: the order of positions in the cursor.
    pub topics: Vec<String>,
    /// Where the stream starts.
    pub resume: Resume,
}

/// Where a stream starts, from the client's last event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No id (or an empty one, what EventSource sends before it saw any):
    /// at each topic's head.
    Head,
    /// After this cursor: history first, then live.
    After(Cursor),
    /// An id this server cannot read (malformed, foreign, too long, for
    /// another number of topics, or a header that is not visible ASCII):
    /// at each topic's head, after a `reset` per topic saying so. Not a
    /// 400: an EventSource gives up for good on any non-200 answer, and a
    /// stale id would then lock its page out until reloaded.
    Invalid,
}

/// Reads `topic` (repeatable), `lastEventId` / `last_event_id` from the
/// query string and the `Last-Event-ID` header, which wins because browsers
/// send it on reconnect. Only the topics can make it fail.
pub fn parse(
    query: &str,
    headers: &HeaderMap,
    max_topics: usize,
) -> Result<SubscribeRequest, StreamError> {
    let mut topics = Vec::new();
    let mut query_id = None;
    let mut query_id_snake = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "topic" => topics.push(value.into_owned()),
            "lastEventId" => query_id = Some(value.into_owned()),
            "last_event_id" => query_id_snake = Some(value.into_owned()),
            _ => {}
        }
    }
    for topic in &topics {
        if let Some(why) = topic_error(topic) {
            return Err(StreamError::Invalid(format!("topic {why}")));
        }
    }
    if topics.is_empty() {
        topics.push(DEFAULT_TOPIC.to_owned());
    }
    topics.sort();
    topics.dedup();
    if topics.len() > max_topics {
        return Err(StreamError::Invalid(format!(
            "at most {max_topics} topics per subscription"
        )));
    }
    // `None`: a header that is not visible ASCII, which no id of ours is.
    let header_id = headers
        .get("last-event-id")
        .map(|value| value.to_str().ok().map(str::to_owned));
    let id = match header_id {
        Some(None) => {
            tracing::debug!("Last-Event-ID is not visible ASCII; starting at the head");
            return Ok(SubscribeRequest {
                topics,
                resume: Resume::Invalid,
            });
        }
        Some(Some(id)) => Some(id),
        None => None,
    };
    // An empty id is what EventSource sends before it saw any: a fresh start.
    let id = [id, query_id, query_id_snake]
        .into_iter()
        .flatten()
        .find(|id| !id.is_empty());
    // `Cursor::parse` refuses anything longer than a cursor can be before
    // looking further, so a huge id costs no more than a short one.
    let resume = match id.map(|id| Cursor::parse(id.trim(), topics.len())) {
        None => Resume::Head,
        Some(Ok(cursor)) => Resume::After(cursor),
        Some(Err(error)) => {
            tracing::debug!(%error, "unreadable last event id; starting at the head");
            Resume::Invalid
        }
    };
    Ok(SubscribeRequest { topics, resume })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use shared_types::cursor::MAX_CURSOR_LEN;

    fn parse_uri(uri: &str, header: Option<&str>) -> Result<SubscribeRequest, StreamError> {
        let mut request = TestRequest::get().uri(uri);
        if let Some(header) = header {
            request = request.insert_header(("Last-Event-ID", header));
        }
        let request = request.to_http_request();
        parse(request.query_string(), request.headers(), 4)
    }

    #[test]
    fn topics_default_sort_and_dedup() {
        assert_eq!(parse_uri("/e", None).unwrap().topics, [DEFAULT_TOPIC]);
        assert_eq!(
            parse_uri("/e?topic=b&topic=a&topic=b", None)
                .unwrap()
                .topics,
            ["a", "b"]
        );
    }

    #[test]
    fn header_wins_over_query_and_query_forms_are_accepted() {
        let after = |uri, header| match parse_uri(uri, header).unwrap().resume {
            Resume::After(cursor) => cursor.to_string(),
            other => panic!("{uri}: {other:?}"),
        };
        assert_eq!(after("/e?lastEventId=a-1", Some("b-2")), "b-2");
        assert_eq!(after("/e?last_event_id=c-3", None), "c-3");
        assert_eq!(
            parse_uri("/e?lastEventId=", None).unwrap().resume,
            Resume::Head
        );
    }

    #[test]
    fn unreadable_ids_start_at_the_head_with_a_reset() {
        let long = format!("/e?lastEventId={}", "1".repeat(MAX_CURSOR_LEN + 1));
        for (uri, header) in [
            ("/e?lastEventId=zz", None),
            ("/e?topic=a&topic=b&lastEventId=a-1", None),
            ("/e?lastEventId=a-1", Some("not an id")),
            (long.as_str(), None),
        ] {
            assert_eq!(
                parse_uri(uri, header).unwrap().resume,
                Resume::Invalid,
                "{uri} {header:?}"
            );
        }
        let request = TestRequest::get()
            .uri("/e?lastEventId=a-1")
            .insert_header((
                "Last-Event-ID",
                actix_web::http::header::HeaderValue::from_bytes(b"\xff-1").unwrap(),
            ))
            .to_http_request();
        assert_eq!(
            parse(request.query_string(), request.headers(), 4)
                .unwrap()
                .resume,
            Resume::Invalid,
            "a header that is not visible ASCII wins over a good query id"
        );
    }

    #[test]
    fn bad_topics_are_refused() {
        for uri in [
            "/e?topic=a%20b",
            "/e?topic=",
            "/e?topic=a&topic=b&topic=c&topic=d&topic=e",
        ] {
            assert!(
                matches!(parse_uri(uri, None), Err(StreamError::Invalid(_))),
                "{uri}"
            );
        }
    }
}
