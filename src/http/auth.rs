//! `http.token`: when set, the page, the JSON API and `/metrics` need it — as a bearer
//! token (`Authorization: Bearer <token>`, what Prometheus and scripts send) or as the
//! password of HTTP basic auth (what a browser asks for; the user name is not checked).
//! `/healthz` stays open for health checks.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::broker::Broker;

/// Compares without an early exit, so response time does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented(request: &Request) -> Option<Vec<u8>> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().as_bytes().to_vec());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

pub async fn require_token(
    State(broker): State<Arc<Broker>>,
    request: Request,
    next: Next,
) -> Response {
    let token = broker.config.http.token.as_bytes();
    if token.is_empty() || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match presented(&request) {
        Some(given) if same(&given, token) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"tern\", charset=\"UTF-8\"")],
            axum::Json(serde_json::json!({
                "error": "this tern's HTTP port needs its token (http.token): Authorization: Bearer <token>, or basic auth with the token as password"
            })),
        )
            .into_response(),
    }
}
