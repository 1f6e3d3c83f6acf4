//! `POST /event-stream`: its state, its admission and its handler.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use shared_types::{JSend, Limits, ValidPublish};

use crate::error::PublishError;
use crate::extract::PublishBody;
use crate::metrics::PublishMetrics;

/// What the publish handler needs.
#[derive(Debug, Clone)]
pub struct IngestState {
    pub bus: bus::Bus,
    pub limits: Limits,
    pub metrics: PublishMetrics,
}

/// Everything that decides whether a publish may go ahead, before the bus
/// is asked: the one place every refusal of a publish is made.
pub fn admit(state: &IngestState, body: PublishBody) -> Result<ValidPublish, PublishError> {
    body.0
        .validate_into(&state.limits)
        .map_err(PublishError::Invalid)
}

/// Admits, publishes, and answers 201 with the tutorial's exact body and
/// the new event's id in a header, only once the bus confirmed it.
pub async fn publish(
    body: PublishBody,
    state: web::Data<IngestState>,
) -> Result<HttpResponse, PublishError> {
    let valid = admit(&state, body)?;
    let position = match state
        .bus
        .publish(&valid.topic, &valid.event_type, &valid.message)
        .await
    {
        Ok(position) => position,
        Err(error) => {
            state.metrics.publish_failures().inc();
            return Err(error.into());
        }
    };
    state.metrics.published().inc();
    tracing::debug!(topic = %valid.topic, id = %position, "published");
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header((crate::EVENT_ID_HEADER, position.to_string()))
        .insert_header(actix_web::http::header::ContentType::json())
        .body(JSend::success(valid.message).to_json()))
}
