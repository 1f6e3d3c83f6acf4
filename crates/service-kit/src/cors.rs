//! Cross-origin requests (CORS): one decision for every path a request
//! can take.
//!
//! `http.cors` names the other origins whose pages may use the API. Where
//! actix serves (publishes, `OPTIONS` preflights, streams handed over by
//! the connection layer), the `actix-cors` middleware answers preflights
//! and adds the response headers, and [`tidy`] finishes its answer. The
//! connection's fast path (`GET /event-stream` served on the socket) does
//! not go through actix middleware: it adds the same headers with
//! [`Policy::add_headers`], and the standalone's API tests check the two
//! paths agree header for header. Both ask [`Policy::allows`] whether an
//! origin is allowed: actix-cors through its origin function.
//!
//! A refused origin still gets its answer, without CORS headers, so the
//! browser keeps it from the page (curl and servers are not browsers and
//! are not affected). Only a publish from a refused origin that is not the
//! request's own is refused outright (`403`, in ingest's admission): a
//! cross-site HTML form posts without a preflight, and CORS alone would
//! let it publish.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::settings::CorsSettings;

/// Request headers a page may send: the publish body's type, credentials
/// for a future auth layer, idempotent retries, resuming, content
/// negotiation and request tracing.
const ALLOWED_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("last-event-id"),
    header::ACCEPT,
    HeaderName::from_static("x-request-id"),
];

/// Response headers a page may read besides the safelisted ones: the id a
/// publish was given, and how long to wait after a refusal.
const EXPOSED_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static("x-event-id"), header::RETRY_AFTER];

const ALLOWED_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// What a CORS-enabled answer varies by (actix-cors's list): caches must
/// not hand one origin's answer to another.
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// At most one log line per this long about refused origins, counting the
/// others: a page embedded on a busy foreign site must not flood the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes of a refused `Origin` shown in the log.
const LOGGED_ORIGIN: usize = 128;

/// What the settings allow; cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origins: Origins,
    credentials: bool,
    max_age_secs: u64,
}

#[derive(Debug)]
enum Origins {
    /// CORS off: no CORS headers, preflights get the route's 405.
    None,
    /// `*`: every origin, answered `Access-Control-Allow-Origin: *`.
    Any,
    /// These exact origins, each echoed back when it asks.
    List(Vec<String>),
}

/// Where a request comes from, as far as CORS is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a cross-origin browser request (curl, a
    /// server, a same-origin `GET`).
    NoOrigin,
    /// An origin `http.cors.allowed_origins` allows.
    Allowed,
    /// Not allowed, but the request's own origin (`Origin` names the `Host`
    /// it was sent to): a same-origin page, which needs no CORS.
    SameOrigin,
    /// Another origin, not allowed.
    Refused,
}

impl Policy {
    pub fn new(settings: &CorsSettings) -> Self {
        let origins: Vec<String> = settings.origins().map(str::to_owned).collect();
        let origins = match origins.as_slice() {
            [] => Origins::None,
            [any] if any == "*" => Origins::Any,
            _ => Origins::List(origins),
        };
        Self(Arc::new(Inner {
            origins,
            credentials: settings.allow_credentials,
            max_age_secs: settings.max_age_secs,
        }))
    }

    /// Whether any origin is allowed at all; off, no CORS header is sent.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.0.origins, Origins::None)
    }

    /// Whether `origin` may read answers. Browsers send origins in
    /// lowercase, as the settings require them; case is ignored anyway.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.0.origins {
            Origins::None => false,
            Origins::Any => true,
            Origins::List(origins) => {
                let origin = origin.as_bytes();
                origins
                    .iter()
                    .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
            }
        }
    }

    /// Where a request with these headers comes from.
    pub fn verdict(&self, request: &HeaderMap) -> Verdict {
        let Some(origin) = request.get(header::ORIGIN) else {
            return Verdict::NoOrigin;
        };
        if self.allows(origin) {
            Verdict::Allowed
        } else if is_same_origin(origin, request.get(header::HOST)) {
            Verdict::SameOrigin
        } else {
            Verdict::Refused
        }
    }

    /// [`Policy::verdict`], logging a refusal (see [`LOG_EVERY`]). Called
    /// once per request, where it enters a service.
    pub fn judge(&self, request: &HeaderMap, method: &Method) -> Verdict {
        let verdict = self.verdict(request);
        if verdict == Verdict::Refused
            && let Some(origin) = request.get(header::ORIGIN)
        {
            log_refused(origin, method);
        }
        verdict
    }

    /// The actix-cors middleware for these settings; disabled (wrap it in
    /// `Condition`) when [`Policy::is_enabled`] is false.
    pub fn middleware(&self) -> actix_cors::Cors {
        let cors = actix_cors::Cors::default()
            .allowed_methods(ALLOWED_METHODS)
            .allowed_headers(ALLOWED_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(usize::try_from(self.0.max_age_secs).unwrap_or(usize::MAX))
            // A refused origin gets its answer without CORS headers: the
            // browser blocks it, curl is not affected.
            .block_on_origin_mismatch(false);
        let cors = match &self.0.origins {
            Origins::Any => cors.allow_any_origin().send_wildcard(),
            Origins::None | Origins::List(_) => {
                let policy = self.clone();
                cors.allowed_origin_fn(move |origin, _| policy.allows(origin))
            }
        };
        if self.0.credentials {
            cors.supports_credentials()
        } else {
            cors
        }
    }

    /// The CORS headers of an answer to a request with `request`'s headers
    /// that is not a preflight, exactly as actix-cors followed by [`tidy`]
    /// leaves them: what the fast path adds to its answers.
    pub fn add_headers(&self, request: &HeaderMap, verdict: Verdict, response: &mut HeaderMap) {
        if !self.is_enabled() {
            return;
        }
        if verdict == Verdict::Allowed
            && let Some(origin) = request.get(header::ORIGIN)
        {
            let allow_origin = match self.0.origins {
                Origins::Any => HeaderValue::from_static("*"),
                Origins::None | Origins::List(_) => origin.clone(),
            };
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
            response.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                list(&EXPOSED_HEADERS),
            );
            if self.0.credentials {
                response.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        add_vary(response);
    }
}

/// Finishes actix-cors's answer, on every response of a CORS-enabled app:
/// - without `Access-Control-Allow-Origin` (no origin, or a refused one),
///   none of the other CORS headers either: actix-cors adds the exposed
///   headers and the credentials flag to every answer, which grant nothing
///   alone and only confuse whoever reads them;
/// - its lists in one fixed order: it writes them from a hash set, so each
///   worker would answer in its own order;
/// - `Vary` on every answer, refused preflights included.
pub fn tidy(response: &mut HeaderMap) {
    if response.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        for (name, value) in [
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                list(&EXPOSED_HEADERS),
            ),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, list(&ALLOWED_HEADERS)),
            (header::ACCESS_CONTROL_ALLOW_METHODS, list(&ALLOWED_METHODS)),
        ] {
            if response.contains_key(&name) {
                response.insert(name, value);
            }
        }
    } else {
        response.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        response.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    }
    let varies = response
        .get_all(header::VARY)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("origin"));
    if !varies {
        add_vary(response);
    }
}

/// Whether `request` is a CORS preflight: `OPTIONS` asking for a method.
pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
    method == Method::OPTIONS && request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Appends [`VARY`] to the answer's `Vary`, as actix-cors does.
fn add_vary(response: &mut HeaderMap) {
    let value = match response.get(header::VARY) {
        Some(vary) => {
            let mut value = vary.as_bytes().to_vec();
            value.extend_from_slice(b", ");
            value.extend_from_slice(VARY.as_bytes());
            HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static(VARY))
        }
        None => HeaderValue::from_static(VARY),
    };
    response.insert(header::VARY, value);
}

/// `a, b, c`: a header list in the order given.
fn list<T: AsRef<str>>(items: &[T]) -> HeaderValue {
    let joined: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    HeaderValue::from_str(&joined.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

/// Whether `origin` (`scheme://authority`) names the authority the request
/// was sent to (`Host`), the scheme's default port written or not. The
/// scheme itself cannot be compared (TLS may end at a proxy), so a page on
/// `http://host` counts as the same origin as `https://host`.
fn is_same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    host.len() == authority.len() + default_port.len()
        && host[..authority.len()].eq_ignore_ascii_case(authority)
        && host[authority.len()..].eq_ignore_ascii_case(default_port)
}

/// How many refusals went unlogged since the last line, and when it was.
static REFUSALS: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));

/// Logs a refused origin at info, at most once per [`LOG_EVERY`] per
/// process; the line counts the refusals not logged since the previous one.
fn log_refused(origin: &HeaderValue, method: &Method) {
    let mut refusals = REFUSALS.lock().unwrap_or_else(PoisonError::into_inner);
    let (last, unlogged) = &mut *refusals;
    if last.is_some_and(|last| last.elapsed() < LOG_EVERY) {
        *unlogged += 1;
        return;
    }
    let bytes = origin.as_bytes();
    let origin = String::from_utf8_lossy(&bytes[..bytes.len().min(LOGGED_ORIGIN)]);
    tracing::info!(
        %origin,
        %method,
        unlogged_since_last = *unlogged,
        "origin not allowed (http.cors.allowed_origins)"
    );
    *last = Some(Instant::now());
    *unlogged = 0;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> Policy {
        Policy::new(&CorsSettings {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: credentials,
            max_age_secs: 600,
        })
    }

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn the_verdict_tells_allowed_same_origin_and_refused_apart() {
        let listed = policy(&["https://app.example"], false);
        let off = policy(&[], false);
        let any = policy(&["*"], false);
        let cases = [
            (&listed, None, "api.example", Verdict::NoOrigin),
            (
                &listed,
                Some("https://app.example"),
                "api.example",
                Verdict::Allowed,
            ),
            (
                &listed,
                Some("https://APP.example"),
                "api.example",
                Verdict::Allowed,
            ),
            (
                &listed,
                Some("https://evil.example"),
                "api.example",
                Verdict::Refused,
            ),
            (&listed, Some("null"), "api.example", Verdict::Refused),
            (
                &off,
                Some("https://app.example"),
                "api.example",
                Verdict::Refused,
            ),
            (
                &off,
                Some("http://127.0.0.1:9990"),
                "127.0.0.1:9990",
                Verdict::SameOrigin,
            ),
            (
                &off,
                Some("https://api.example"),
                "api.example:443",
                Verdict::SameOrigin,
            ),
            (
                &off,
                Some("http://api.example"),
                "api.example:80",
                Verdict::SameOrigin,
            ),
            (
                &off,
                Some("http://api.example"),
                "api.example:8080",
                Verdict::Refused,
            ),
            (
                &off,
                Some("http://127.0.0.1:9991"),
                "127.0.0.1:9990",
                Verdict::Refused,
            ),
            (
                &off,
                Some("http://api.example.evil"),
                "api.example",
                Verdict::Refused,
            ),
            (&any, Some("null"), "api.example", Verdict::Allowed),
        ];
        for (policy, origin, host, verdict) in cases {
            assert_eq!(
                policy.verdict(&request(origin, host)),
                verdict,
                "{origin:?} to {host} under {policy:?}"
            );
        }
    }

    /// A log writer tests can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refused_origins_are_logged_at_info_truncated_and_at_most_once_per_interval() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let listed = policy(&["https://app.example"], false);
        let long = format!("https://{}.example", "x".repeat(500));
        tracing::subscriber::with_default(subscriber, || {
            for origin in [long.as_str(), "https://evil.example", "https://app.example"] {
                listed.judge(&request(Some(origin), "api.example"), &Method::POST);
            }
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "one line per interval: {log}");
        assert!(
            lines[0].contains(" INFO ") && lines[0].contains("origin not allowed"),
            "{log}"
        );
        let shown = format!("https://{}", "x".repeat(LOGGED_ORIGIN - "https://".len()));
        assert!(lines[0].contains(&format!("origin={shown} ")), "{log}");
        assert!(
            !log.contains("evil"),
            "the second refusal is only counted: {log}"
        );
        let (_, unlogged) = *REFUSALS.lock().unwrap();
        assert_eq!(unlogged, 1, "the allowed origin is not a refusal");
    }

    #[test]
    fn tidy_strips_headers_that_grant_nothing_and_orders_lists() {
        let mut refused = HeaderMap::new();
        refused.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, list(&["x", "y"]));
        refused.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        tidy(&mut refused);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused.get(header::VARY).unwrap(), VARY);

        let mut allowed = HeaderMap::new();
        allowed.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        allowed.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, x-event-id"),
        );
        allowed.insert(header::VARY, HeaderValue::from_static("Origin"));
        tidy(&mut allowed);
        assert_eq!(
            allowed.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(),
            "x-event-id, retry-after"
        );
        assert_eq!(
            allowed.get(header::VARY).unwrap(),
            "Origin",
            "already varies by Origin"
        );
    }
}
