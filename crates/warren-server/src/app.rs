//! The server's shared state, middleware and router.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use warren_api::ErrorCode;
use warren_engine::Engine;
use warren_store::{OrgRecord, Store};

use crate::auth::TokenCache;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::metrics::Metrics;

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub engine: Engine,
    /// The store (same as the engine's).
    pub store: Store,
    /// Configuration.
    pub cfg: Arc<ServerConfig>,
    /// The default organization.
    pub org: Arc<OrgRecord>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Token lookup cache.
    pub tokens: Arc<TokenCache>,
    /// Notices to every server replica (token revocations, user changes).
    pub pubsub: Arc<dyn crate::coord::Pubsub>,
    /// Per-key locks shared by every replica (quota admission).
    pub locks: Arc<dyn crate::coord::Locks>,
    /// Running jobs.
    pub jobs: Arc<Jobs>,
    /// Set when graceful shutdown begins (`/readyz` then answers 503).
    pub shutdown: Arc<std::sync::atomic::AtomicBool>,
    /// Token last-use updates waiting to be written (id -> time), flushed in the background.
    pub token_uses: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// The SSH gateway's bound address, once it listens.
    pub ssh_addr: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    /// Workspace activity (sessions, execs, port traffic) for idle policies.
    pub activity: Arc<crate::activity::Activity>,
    /// Web terminal sessions (`GET /workspaces/{ws}/terminal`).
    pub terminals: Arc<crate::routes::workspaces::terminal::Terminals>,
    /// Preview tickets and browser sessions.
    pub previews: Arc<crate::preview::Previews>,
    /// Event streams open per user (`GET /events?follow=true`).
    pub event_followers: Arc<crate::routes::events::Followers>,
    /// The lifecycle-policy reconciler's caches and pass lock.
    pub governor: Arc<crate::governor::Governor>,
    /// MCP sessions (`/api/v1/mcp`) and the in-process API their tools call.
    pub mcp: Arc<crate::mcp::Mcp>,
    /// The secrets key and the workspaces' agent sockets.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Task runners of this process and the task scheduler's wake-up.
    pub tasks: Arc<crate::tasks::Tasks>,
    /// Toolbox background processes and sessions, per workspace.
    pub toolbox: Arc<crate::routes::workspaces::toolbox::process::Registry>,
}

impl AppState {
    /// Whether graceful shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes a use of a token (written to the store in the background, at most every few seconds).
    pub fn touch_token(&self, id: &str, at: &str) {
        self.token_uses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), at.to_string());
    }

    /// Writes pending token uses and workspace activity.
    pub async fn flush_token_uses(&self) {
        let pending: Vec<(String, String)> = self
            .token_uses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (id, at) in pending {
            let _ = self.store.touch_token(&id, &at).await;
        }
        self.activity.flush(&self.store).await;
    }
}

/// The id of a request (also sent back as `X-Request-Id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware: assigns a request id and records metrics.
async fn request_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Always the server's own: the audit log records it, so a client must not choose it.
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Methods outside HTTP's standard set never reach the routes (nor the audit log or metrics
    // labels, which they could otherwise grow without bound).
    const KNOWN: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
    ];
    if !KNOWN.contains(&req.method().as_str()) {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "unknown HTTP method",
        )
        .into_response();
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t0 = Instant::now();
    let mut resp = next.run(req).await;
    state
        .metrics
        .request(&route, &method, resp.status().as_u16(), t0.elapsed());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Turns axum's plain-text rejections (413 from the body limit, 405) into JSON errors.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || resp.status().is_success() || resp.status().is_informational() {
        return resp;
    }
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "request body too large",
        )
        .hint("the server's max_body_bytes setting sets the limit")
        .into_response(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        )
        .hint("see /api/v1/openapi.json for the routes and their methods")
        .into_response(),
        _ => resp,
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        .hint("see /api/v1/openapi.json for the routes")
}

/// Builds the router: API routes, health, metrics, OpenAPI, middleware.
pub fn router(state: AppState) -> Router {
    // The API as MCP tools call it, in-process: the same routes and middleware (authentication,
    // audit, body limit), without preview dispatch. Its state has an MCP registry of its own
    // (which holds no router), so the router does not hold itself.
    let mut inner = state.clone();
    inner.mcp = Arc::new(crate::mcp::Mcp::default());
    state.mcp.set_api(api_router(inner));
    let (api, doc) = crate::routes::api().split_for_parts();
    let doc = crate::openapi::finish(doc);
    let doc_json = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let app = Router::new().merge(api).route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let d = doc_json.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    d.as_str().to_owned(),
                )
            }
        }),
    );
    layered(app, &state)
        // Outermost: preview URLs bypass the API's middleware (audit, body limit, JSON errors).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::preview::dispatch,
        ))
        .with_state(state)
}

/// The API routes with the API's middleware, for in-process calls (MCP tools).
fn api_router(state: AppState) -> Router {
    let (api, _) = crate::routes::api().split_for_parts();
    layered(Router::new().merge(api), &state).with_state(state)
}

/// Health routes, the fallback and the API's middleware around `app`.
fn layered(app: Router<AppState>, state: &AppState) -> Router<AppState> {
    let max_body = state.cfg.max_body_bytes;
    app.merge(crate::routes::health::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::audit_layer,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_layer,
        ))
}

/// The OpenAPI document (for the drift test and `warren server openapi`).
pub fn openapi_json() -> String {
    let (_, doc) = crate::routes::api().split_for_parts();
    crate::openapi::finish(doc)
        .to_pretty_json()
        .unwrap_or_default()
}

/// A JSON body extractor whose rejections are `invalid_request` errors naming the field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::bad_request(
                "expected a JSON body with `Content-Type: application/json`",
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "request body too large",
                ))
            }
            Err(e) => return Err(ApiError::bad_request(e.body_text())),
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                ApiError::bad_request("the request body must be a JSON object")
                    .hint("see /api/v1/openapi.json for the expected fields"),
            );
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize::<_, T>(de)
            .map(Json)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = plain_serde_message(e.inner());
                let msg = if path.is_empty() || path == "." {
                    msg
                } else {
                    format!("{path}: {msg}")
                };
                ApiError::bad_request(format!("invalid request body: {msg}"))
                    .hint("see /api/v1/openapi.json for the expected fields")
            })
    }
}

/// serde's message with Rust type names replaced by JSON terms.
fn plain_serde_message(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg.as_str();
    while let Some(i) = rest.find("expected ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "expected ".len()..];
        let end = after.find([',', ' ']).unwrap_or(after.len());
        let word = &after[..end];
        let tail = &after[end..];
        let (replacement, tail) = match word {
            "struct" | "enum" => {
                // "expected struct Name" -> "expected an object" (enums: "a valid value").
                let t = tail.trim_start();
                let skip = t.find([',', ' ']).unwrap_or(t.len());
                let what = if word == "struct" {
                    "an object"
                } else {
                    "one of the documented values"
                };
                (what.to_string(), &t[skip..])
            }
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
                ("an integer".to_string(), tail)
            }
            "f32" | "f64" => ("a number".to_string(), tail),
            _ => (word.to_string(), tail),
        };
        out.push_str("expected ");
        out.push_str(&replacement);
        rest = tail;
    }
    out.push_str(rest);
    out
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        n: i64,
        inner: Option<Inner>,
        x: Option<f64>,
    }

    #[test]
    fn serde_messages_speak_json() {
        let e = serde_json::from_str::<Body>(r#"{"n": "x"}"#).unwrap_err();
        assert!(
            plain_serde_message(&e).contains("expected an integer"),
            "{e}"
        );
        let e = serde_json::from_str::<Body>(r#"{"n": 1, "inner": 5}"#).unwrap_err();
        let m = plain_serde_message(&e);
        assert!(
            m.contains("expected an object") && !m.contains("Inner"),
            "{m}"
        );
        let e = serde_json::from_str::<Body>(r#"{"n": 1, "x": "y"}"#).unwrap_err();
        assert!(plain_serde_message(&e).contains("expected a number"), "{e}");
    }
}
