//! The HTTP port: `/healthz`, `/metrics` (Prometheus text) and the JSON API under `/v1`
//! (documented in docs/HTTP-API.md).

mod actions;
mod auth;
mod bridges;
mod broker_status;
mod console;
mod error;
mod groups;
mod records;
mod tls;
mod topics;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/mirror", get(mirror_status))
        .route("/v1/sinks", get(sink_status))
        .route("/", get(console::page))
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route("/v1/bridges", get(bridges::list))
        .route("/v1/broker", get(broker_status::status))
        .route("/v1/topics", get(topics::list).post(actions::create_topic))
        .route("/v1/topics/{topic}/configs", patch(actions::alter_configs))
        .route(
            "/v1/topics/{topic}/delete-records",
            post(actions::delete_records),
        )
        .route(
            "/v1/groups/{group}/reset-offsets",
            post(actions::reset_offsets),
        )
        .route("/v1/topics/{topic}", get(topics::detail))
        .route("/v1/topics/{topic}/records", get(records::browse))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::detail))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&broker),
            auth::require_token,
        ))
        .with_state(broker)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || broker.render_metrics())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The mirror links of this tern (`[mirror]` and `[hub]`), as `tern mirror status` shows them.
async fn mirror_status(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let body = serde_json::to_string_pretty(&broker.mirror_status.snapshot())
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// The `[[sinks.kafka]]` of this tern: cursors, lag and errors per partition.
async fn sink_status(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let sinks: Vec<tern_bridges::kafka_sink::status::SinkStatus> = match broker.sinks.lock() {
        Ok(list) => list
            .iter()
            .filter_map(|s| s.status.lock().ok().map(|s| s.clone()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let body = serde_json::to_string_pretty(&serde_json::json!({ "sinks": sinks }))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], body)
}

pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let https = match (&broker.config.http.cert, &broker.config.http.key) {
        (Some(cert), Some(key)) => Some(
            tern_bridges::tls::server_config(cert, key, None)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        _ => None,
    };
    let app = router(Arc::clone(&broker));
    match https {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
        Some(config) => {
            let listener = tls::TlsListener::start(listener, config, shutdown.clone())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
    }
}
