//! `/healthz` (the process answers), `/readyz` (the database answers and the server is not
//! shutting down) and `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;

/// Health and metrics routes (outside `/api/v1`, unauthenticated).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let by_state: Vec<(String, i64)> = state
        .store
        .count_by_state()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n))
        .collect();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&by_state),
    )
}
