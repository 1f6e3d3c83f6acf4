//! The live page at `/` and its script: what is served, with which
//! headers. What a browser does with them is tested in real Chromium
//! (`tests/tests/browser.rs`).

use reqwest::Method;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_page_and_its_script_are_served_for_get_and_head_with_their_headers() {
    let app = spawn_app().await;
    let cases = [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "// The live page's script",
        ),
    ];
    for (path, content_type, starts) in cases {
        let get = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200, "GET {path}");
        let headers = get.headers().clone();
        assert_eq!(headers["content-type"], content_type, "GET {path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "GET {path}");
        assert_eq!(headers["cache-control"], "no-cache", "GET {path}");
        let body = get.text().await.unwrap();
        assert!(body.starts_with(starts), "GET {path}: {body:.80}");

        let head = app
            .client
            .request(Method::HEAD, format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["content-type"], content_type, "HEAD {path}");
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str(),
            "HEAD {path}"
        );
        assert_eq!(
            head.bytes().await.unwrap().len(),
            0,
            "HEAD {path} has a body"
        );
    }
}

#[tokio::test]
async fn the_page_has_a_policy_that_allows_only_its_own_script_and_requests() {
    let app = spawn_app().await;
    let response = app.client.get(&app.address).send().await.unwrap();
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(policy.contains("style-src 'sha256-"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
}

#[tokio::test]
async fn other_methods_on_the_page_and_its_script_get_a_jsend_405() {
    let app = spawn_app().await;
    for path in ["/", "/app.js"] {
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let response = app
                .client
                .request(method.clone(), format!("{}{path}", app.address))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(response.headers()["allow"], "GET, HEAD", "{method} {path}");
            assert_eq!(
                response.text().await.unwrap(),
                r#"{"status":"fail","data":"method not allowed"}"#,
                "{method} {path}"
            );
        }
    }
}
