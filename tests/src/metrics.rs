//! What a service's `/metrics` says.

/// The whole `/metrics` text of the service at `base`, `None` while it
/// does not answer.
pub async fn text(client: &reqwest::Client, base: &str) -> Option<String> {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of one series, named with its labels as exposed
/// (`es_rate_limit_refusals_total{limit="publish"}`), `None` while the
/// service does not answer or does not show it.
pub async fn value(client: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    text(client, base).await?.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The `es_stream_connections` gauge of the service at `base`, `None`
/// while it does not answer.
pub async fn open_streams(client: &reqwest::Client, base: &str) -> Option<u64> {
    value(client, base, "es_stream_connections")
        .await
        .map(|open| open as u64)
}
