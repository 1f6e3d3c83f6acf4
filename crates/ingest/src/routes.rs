//! `POST /event-stream`: its state, its admission and its handler.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, web};
use bus::Published;
use operations::metrics::Action;
use service_kit::access_log::client_of;
use service_kit::cors::{Policy, Verdict};
use service_kit::{Access, Client, Refusal};
use shared_types::{JSend, Limits, ValidPublish};

use crate::error::PublishError;
use crate::extract::{self, PublishBody};
use crate::limit::PublishLimit;
use crate::metrics::PublishMetrics;

/// What the publish handler needs.
#[derive(Debug, Clone)]
pub struct IngestState {
    pub bus: bus::Bus,
    pub limits: Limits,
    pub metrics: PublishMetrics,
    /// `http.cors`: which other origins' pages may publish.
    pub cors: Policy,
    /// `auth`: whether a publish needs a token.
    pub access: Access,
    /// `publish.rate_limit_per_sec`: `None` when off.
    pub limit: Option<PublishLimit>,
    /// `publish.idempotency_*`: how long and how many keys a topic keeps.
    pub idempotency: bus::IdempotencyPolicy,
}

/// Everything that decides whether a publish may go ahead, before the bus
/// is asked: the one place every refusal of a publish is made.
///
/// The origin comes first, whatever the body: a page on another origin
/// that `http.cors.allowed_origins` does not allow may not publish. CORS
/// alone would not stop it: an HTML form posts across sites without a
/// preflight, and only its answer is hidden from the page. A request
/// without `Origin` (curl, servers) or from the page's own origin passes.
///
/// The client's rate limit comes next, before the token: a flood costs
/// one bucket check per request, never a signature verification, and
/// every request that passes the origin spends from its sender's bucket,
/// a refused token or body included (a flood of bad tokens is a flood).
/// The bucket is the sender's address, never a token's subject, so a
/// forged or stolen token cannot spend someone else's budget; and a page
/// on another origin cannot spend its visitors' (the origin is refused
/// first). A refusal here spends nothing.
///
/// An access refusal is logged by its label and counted in
/// `es_auth_refusals_total`.
pub fn admit(
    state: &IngestState,
    client: &Client,
    headers: &HeaderMap,
    body: Result<PublishBody, actix_web::Error>,
) -> Result<ValidPublish, actix_web::Error> {
    if state.cors.verdict(headers) == Verdict::Refused {
        return Err(PublishError::OriginNotAllowed.into());
    }
    if let (Some(limit), Some(address)) = (&state.limit, client.address)
        && let Err(retry_after) = limit.check(address)
    {
        state.metrics.rate_limited().inc();
        tracing::info!(%address, retry_after, "publish refused: rate limit");
        return Err(PublishError::RateLimited(retry_after).into());
    }
    let refused = |refusal: Refusal| {
        state
            .metrics
            .auth_refusals()
            .count(Action::Publish, refusal.label());
        tracing::info!(refusal = refusal.label(), "publish refused: access");
        PublishError::Access(refusal)
    };
    let grant = state.access.publish_grant(headers).map_err(refused)?;
    let valid = body?
        .0
        .with_idempotency_header(extract::idempotency_header(headers)?)
        .validate_into(&state.limits)
        .map_err(PublishError::Invalid)?;
    match grant {
        Some(grant) if !grant.may_publish(&valid.topic) => Err(refused(Refusal::NotCovered).into()),
        _ => Ok(valid),
    }
}

/// Admits, publishes, and answers 201 with the tutorial's exact body and
/// the new event's id in a header, only once the bus confirmed it. With an
/// idempotency key, a retry of a publish the bus already confirmed gets the
/// same answer, marked [`REPLAYED_HEADER`], and nothing is published again.
pub async fn publish(
    request: HttpRequest,
    body: Result<PublishBody, actix_web::Error>,
    state: web::Data<IngestState>,
) -> Result<HttpResponse, actix_web::Error> {
    let valid = admit(&state, &client_of(&request), request.headers(), body)?;
    let published = match &valid.idempotency_key {
        None => state
            .bus
            .publish(&valid.topic, &valid.event_type, &valid.message)
            .await
            .map(Published::Stored),
        Some(key) => {
            state
                .bus
                .publish_idempotent(
                    &valid.topic,
                    &valid.event_type,
                    &valid.message,
                    key,
                    &state.idempotency,
                )
                .await
        }
    };
    let (position, replayed) = match published {
        Ok(Published::Stored(position)) => (position, false),
        Ok(Published::Replayed(position)) => (position, true),
        Ok(Published::KeyReused) => return Err(PublishError::KeyReused.into()),
        Err(error) => {
            state.metrics.publish_failures().inc();
            return Err(PublishError::from(error).into());
        }
    };
    let mut answer = HttpResponse::build(StatusCode::CREATED);
    if replayed {
        state.metrics.replayed().inc();
        tracing::debug!(topic = %valid.topic, id = %position, "publish replayed");
        answer.insert_header((REPLAYED_HEADER, "true"));
    } else {
        state.metrics.published().inc();
        tracing::debug!(topic = %valid.topic, id = %position, "published");
    }
    Ok(answer
        .insert_header((crate::EVENT_ID_HEADER, position.to_string()))
        .insert_header(actix_web::http::header::ContentType::json())
        .body(JSend::success(valid.message).to_json()))
}

/// Marks a 201 that repeats an earlier publish's answer (same idempotency
/// key and request) rather than reporting a new event.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
