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
    /// Where to resume, if the client said.
    pub cursor: Option<Cursor>,
}

/// Reads `topic` (repeatable), `lastEventId` / `last_event_id` from the
/// query string and the `Last-Event-ID` header, which wins because browsers
/// send it on reconnect.
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
    let header_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| StreamError::Invalid("Last-Event-ID is not visible ASCII".to_owned()))?
                .to_owned(),
        ),
        None => None,
    };
    // An empty id is what EventSource sends before it saw any: a fresh start.
    let cursor = [header_id, query_id, query_id_snake]
        .into_iter()
        .flatten()
        .find(|id| !id.is_empty())
        .map(|id| Cursor::parse(id.trim(), topics.len()))
        .transpose()
        .map_err(|error| StreamError::Invalid(error.to_string()))?;
    Ok(SubscribeRequest { topics, cursor })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

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
        let r = parse_uri("/e?lastEventId=a-1", Some("b-2")).unwrap();
        assert_eq!(r.cursor.unwrap().to_string(), "b-2");
        assert_eq!(
            parse_uri("/e?last_event_id=c-3", None)
                .unwrap()
                .cursor
                .unwrap()
                .to_string(),
            "c-3"
        );
        assert_eq!(parse_uri("/e?lastEventId=", None).unwrap().cursor, None);
    }

    #[test]
    fn bad_topics_and_cursors_are_refused() {
        for uri in [
            "/e?topic=a%20b",
            "/e?topic=",
            "/e?topic=a&topic=b&topic=c&topic=d&topic=e",
            "/e?lastEventId=zz",
            "/e?topic=a&topic=b&lastEventId=a-1",
        ] {
            assert!(
                matches!(parse_uri(uri, None), Err(StreamError::Invalid(_))),
                "{uri}"
            );
        }
    }
}
