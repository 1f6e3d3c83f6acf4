//! What a service's `/metrics` says.

/// The `es_stream_connections` gauge of the service at `base`, `None`
/// while it does not answer.
pub async fn open_streams(client: &reqwest::Client, base: &str) -> Option<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("es_stream_connections "))
        .and_then(|value| value.trim().parse().ok())
}
