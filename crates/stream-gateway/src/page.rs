//! The live page at `/`: follow topics, watch events arrive, publish.
//!
//! A static page and its script, embedded in the binary and served by
//! every process that serves streams, so `cargo run` and each gateway
//! behind nginx have it. No build step and nothing loaded from elsewhere.
//!
//! The Content-Security-Policy allows only what the page does: its script
//! from this origin (`/app.js`), its one inline `<style>` by hash, and
//! requests to this origin (the stream and the publish). Event data is
//! written as text, so even a message that is HTML cannot run.

use std::sync::LazyLock;

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use base64::Engine as _;
use operations::health;
use sha2::{Digest as _, Sha256};

/// The page's path.
pub const PATH: &str = "/";

/// The script's path; the page refers to it relative to its own.
pub const SCRIPT_PATH: &str = "/app.js";

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");

/// The page's policy, with the hash of its `<style>` block computed from
/// the embedded page itself, so the two cannot drift apart.
static POLICY: LazyLock<String> = LazyLock::new(|| policy(PAGE));

fn policy(page: &str) -> String {
    let style = page
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map_or("", |(style, _)| style);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style.as_bytes()));
    format!(
        "default-src 'none'; script-src 'self'; style-src 'sha256-{hash}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Mounts the page and its script, for GET and HEAD (actix-http sends a
/// HEAD answer's headers without its body); other methods get a JSend 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .route(web::get().to(page))
            .route(web::head().to(page))
            .route(method_not_allowed()),
    )
    .service(
        web::resource(SCRIPT_PATH)
            .route(web::get().to(script))
            .route(web::head().to(script))
            .route(method_not_allowed()),
    );
}

fn method_not_allowed() -> actix_web::Route {
    health::method_not_allowed("GET, HEAD".to_owned())
}

async fn page() -> HttpResponse {
    embedded("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY.as_str()))
        .body(PAGE)
}

async fn script() -> HttpResponse {
    embedded("text/javascript; charset=utf-8").body(SCRIPT)
}

/// The headers both files share. `no-cache` with no validator: a browser
/// fetches them again each time (a few kilobytes), so a new binary's page
/// is seen at once.
fn embedded(content_type: &'static str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_style_block_and_nothing_inline() {
        let policy = policy("<head><style>p { color: red; }</style></head>");
        // echo -n 'p { color: red; }' | openssl dgst -sha256 -binary | base64
        assert!(
            policy.contains("style-src 'sha256-pckGv9YvNcB5xy+Y4fbqhyo+ib850wyiuWeNbZvLi00=';"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn the_page_loads_its_script_from_this_origin_and_writes_data_as_text() {
        assert!(PAGE.contains(r#"<script src="app.js" defer></script>"#));
        assert!(
            !PAGE.contains("<script>"),
            "an inline script would be blocked"
        );
        assert!(!SCRIPT.contains("innerHTML"));
    }
}
