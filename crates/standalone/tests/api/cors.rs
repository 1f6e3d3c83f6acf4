//! Cross-origin requests (`http.cors`): preflights, the CORS headers of
//! every answer on both `GET` paths and on publishes, and the refusal of
//! publishes from other sites.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{GetPath, TestApp, data, next_events, spawn_app, spawn_app_with};

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";
const ORIGINS: &str = "ES__HTTP__CORS__ALLOWED_ORIGINS";
const CREDENTIALS: &str = "ES__HTTP__CORS__ALLOW_CREDENTIALS";
/// What every answer of a CORS-enabled app varies by.
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// The CORS-related headers of an answer: every `Access-Control-*` and `Vary`.
fn cors_headers(response: &reqwest::Response) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    for (name, value) in response.headers() {
        let name = name.as_str();
        if name.starts_with("access-control-") || name == "vary" {
            let value = value.to_str().unwrap().to_owned();
            headers
                .entry(name.to_owned())
                .and_modify(|all: &mut String| {
                    all.push_str(", ");
                    all.push_str(&value);
                })
                .or_insert(value);
        }
    }
    headers
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

async fn preflight(
    app: &TestApp,
    origin: Option<&str>,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(Method::OPTIONS, format!("{}/event-stream", app.address))
        .header("Access-Control-Request-Method", method);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    if !headers.is_empty() {
        request = request.header("Access-Control-Request-Headers", headers);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_the_allow_headers_and_max_age() {
    let app = spawn_app_with(&[(ORIGINS, APP), ("ES__HTTP__CORS__MAX_AGE_SECS", "120")]).await;
    for method in ["POST", "GET"] {
        let response = preflight(
            &app,
            Some(APP),
            method,
            "content-type,authorization,idempotency-key,last-event-id,accept,x-request-id",
        )
        .await;
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(
            cors_headers(&response),
            expected(&[
                ("access-control-allow-origin", APP),
                ("access-control-allow-methods", "GET, HEAD, POST"),
                (
                    "access-control-allow-headers",
                    "content-type, authorization, idempotency-key, last-event-id, accept, x-request-id"
                ),
                ("access-control-max-age", "120"),
                ("vary", VARY),
            ]),
            "{method}"
        );
    }
    // With credentials on, the preflight says so too.
    let app = spawn_app_with(&[(ORIGINS, APP), (CREDENTIALS, "true")]).await;
    let response = preflight(&app, Some(APP), "POST", "content-type").await;
    assert_eq!(response.status(), 200);
    let headers = cors_headers(&response);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "600", "the default");
}

#[tokio::test]
async fn a_refused_preflight_gets_a_400_in_jsend_without_cors_headers() {
    let app = spawn_app_with(&[(ORIGINS, APP), (CREDENTIALS, "true")]).await;
    let cases = [
        (Some(EVIL), "POST", "content-type", "origin not allowed"),
        (Some("null"), "POST", "", "origin not allowed"),
        (
            Some(APP),
            "DELETE",
            "",
            "method or request headers not allowed",
        ),
        (
            Some(APP),
            "POST",
            "x-custom",
            "method or request headers not allowed",
        ),
        (None, "POST", "", "a preflight needs an Origin header"),
    ];
    for (origin, method, headers, why) in cases {
        let response = preflight(&app, origin, method, headers).await;
        assert_eq!(response.status(), 400, "{why}");
        assert_eq!(
            cors_headers(&response),
            expected(&[("vary", VARY)]),
            "{origin:?} {method} {headers}: only Vary"
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            format!(r#"{{"status":"fail","data":"CORS preflight refused: {why}"}}"#)
        );
    }
}

#[tokio::test]
async fn with_cors_off_a_preflight_gets_the_405_and_no_cors_headers() {
    let app = spawn_app().await;
    let response = preflight(&app, Some(APP), "POST", "content-type").await;
    assert_eq!(response.status(), 405);
    assert!(cors_headers(&response).is_empty(), "{response:?}");
}

/// One `GET /event-stream` with `origin`, on `path`.
async fn get(
    app: &TestApp,
    path: GetPath,
    query: &str,
    origin: Option<&str>,
) -> (u16, BTreeMap<String, String>) {
    let mut request = app.get_on(path, query);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), cors_headers(&response))
}

#[tokio::test]
async fn both_get_paths_send_the_same_cors_headers_for_every_origin_and_setting() {
    let settings: [(&str, &[(&str, &str)]); 4] = [
        ("a listed origin", &[(ORIGINS, APP)]),
        (
            "a listed origin with credentials",
            &[(ORIGINS, APP), (CREDENTIALS, "true")],
        ),
        ("any origin", &[(ORIGINS, "*")]),
        ("CORS off", &[]),
    ];
    for (setting, env) in settings {
        let app = spawn_app_with(env).await;
        let enabled = !env.is_empty();
        let same_origin = app.address.clone();
        for (origin, who) in [
            (Some(APP), "allowed"),
            (Some(EVIL), "refused"),
            (Some(same_origin.as_str()), "same origin"),
            (None, "no origin"),
        ] {
            // A stream, and a refusal (a bad topic): both carry them.
            for (query, status) in [("topic=cors", 200), ("topic=a%20b", 400)] {
                let case = format!("{setting}, {who} origin, {query}");
                let (fast_status, fast) = get(&app, GetPath::Fast, query, origin).await;
                let (actix_status, actix) = get(&app, GetPath::Actix, query, origin).await;
                assert_eq!((fast_status, actix_status), (status, status), "{case}");
                assert_eq!(fast, actix, "{case}: the two paths disagree");

                let allow_origin = match (setting, who) {
                    ("any origin", "allowed" | "refused" | "same origin") => Some("*"),
                    ("any origin" | "CORS off", _) => None,
                    (_, "allowed") => Some(APP),
                    _ => None,
                };
                let mut want = Vec::new();
                if let Some(allow_origin) = allow_origin {
                    want.push(("access-control-allow-origin", allow_origin));
                    want.push(("access-control-expose-headers", "x-event-id, retry-after"));
                    if setting.ends_with("credentials") {
                        want.push(("access-control-allow-credentials", "true"));
                    }
                }
                if enabled {
                    want.push(("vary", VARY));
                }
                assert_eq!(fast, expected(&want), "{case}");
            }
        }
    }
}

async fn post(app: &TestApp, origin: Option<&str>, body: serde_json::Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/event-stream", app.address))
        .json(&body);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_allowed_origin_publishes_and_may_read_the_event_id() {
    let app = spawn_app_with(&[(ORIGINS, APP)]).await;
    let response = post(&app, Some(APP), json!({"message": "hi", "topic": "cors"})).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-event-id"));
    assert_eq!(
        cors_headers(&response),
        expected(&[
            ("access-control-allow-origin", APP),
            ("access-control-expose-headers", "x-event-id, retry-after"),
            ("vary", VARY),
        ])
    );
}

#[tokio::test]
async fn a_publish_from_another_site_is_refused_with_403_and_publishes_nothing() {
    for env in [&[(ORIGINS, APP)][..], &[]] {
        let app = spawn_app_with(env).await;
        let mut stream = app.subscribe("topic=csrf", None).await;
        let form = app
            .client
            .post(format!("{}/event-stream", app.address))
            .header("Origin", EVIL)
            .form(&[("message", "forged form"), ("topic", "csrf")])
            .send()
            .await
            .unwrap();
        let json = post(
            &app,
            Some(EVIL),
            json!({"message": "forged json", "topic": "csrf"}),
        )
        .await;
        // The origin is judged before the body: a bad body gets the 403 too.
        let bad_body = post(&app, Some(EVIL), json!({"message": ""})).await;
        let null = post(
            &app,
            Some("null"),
            json!({"message": "sandboxed", "topic": "csrf"}),
        )
        .await;
        for response in [form, json, bad_body, null] {
            assert_eq!(response.status(), 403, "{env:?}");
            assert!(
                !response
                    .headers()
                    .contains_key("access-control-allow-origin")
            );
            assert_eq!(
                response.text().await.unwrap(),
                r#"{"status":"fail","data":"origin not allowed"}"#
            );
        }
        // Requests without Origin (curl, servers) and same-origin pages
        // publish as ever; the subscriber sees only those: had a forged
        // publish gone through, it would have come first.
        app.publish_to("csrf", "from curl").await;
        let same = post(
            &app,
            Some(&app.address),
            json!({"message": "same origin", "topic": "csrf"}),
        )
        .await;
        assert_eq!(same.status(), 201, "{env:?}");
        let events = next_events(&mut stream, 2).await;
        assert_eq!(data(&events), ["from curl", "same origin"], "{env:?}");
    }
}
