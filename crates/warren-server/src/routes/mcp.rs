//! `POST|DELETE /api/v1/mcp`: MCP's streamable HTTP transport (protocol 2025-06-18 and
//! 2025-03-26), authenticated with a bearer token like every other route.
//!
//! - `POST` carries one JSON-RPC message (or, in a 2025-03-26 session, a batch). `initialize`
//!   opens a session, whose id comes back in `Mcp-Session-Id`; every later message must carry
//!   it (400 without, 404 for an unknown or ended session, or one opened with another token).
//!   Notifications and responses are answered 202 with no body; requests with
//!   `application/json`, or, for `tools/call` when the client accepts `text/event-stream`, an SSE
//!   stream holding comment heartbeats while the tool runs, then the response. A client that
//!   goes away does not cancel the call (the spec's rule); `notifications/cancelled` does.
//! - `MCP-Protocol-Version`, when sent, must be a version this server speaks (else 400).
//! - `GET` is 405: the server has nothing to say unasked (no server-initiated stream).
//! - `DELETE` with `Mcp-Session-Id` ends the session.
//!
//! Errors of the transport are JSON-RPC error objects with no id (HTTP 400/404); a missing or
//! bad token is the API's 401. Only `initialize` and `DELETE` are audit records of their own
//! (`mcp.session.create`, `mcp.session.delete`): what tools do is audited by the API routes they
//! call. `Origin` is not checked: a browser cannot send this endpoint the bearer token it needs
//! on its own (no cookies are taken), so a rebound DNS name gains a page nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::audit::{AuditNote, NotAudited};
use crate::auth::Caller;
use crate::error::ErrorBody;
use crate::mcp::{self, Message, RpcError};

/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol version header.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// How often an SSE answer to a tool call still running sends a comment.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_mcp, delete_mcp))
}

/// A JSON-RPC 2.0 message (see the MCP specification, 2025-06-18).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct JsonRpcMessage {
    /// Always `"2.0"`.
    jsonrpc: String,
    /// A request's id (a string or a number); absent in notifications.
    #[schema(value_type = Option<Object>)]
    id: Option<Value>,
    /// `initialize`, `ping`, `tools/list`, `tools/call`, `notifications/initialized`,
    /// `notifications/cancelled`.
    method: Option<String>,
    /// The method's parameters.
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
}

/// A JSON-RPC error answer of the transport (no id).
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(mcp::error_response(Value::Null, code, message)),
    )
        .into_response();
    r.extensions_mut().insert(NotAudited);
    r
}

fn json_answer(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.extensions_mut().insert(NotAudited);
    r
}

fn accepted() -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    r.extensions_mut().insert(NotAudited);
    r
}

/// Which answer forms the client takes: (JSON, SSE). No `Accept` at all takes JSON.
fn accepts(headers: &HeaderMap) -> (bool, bool) {
    let mut any = false;
    let (mut js, mut sse) = (false, false);
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            any = true;
            let m = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match m.as_str() {
                "application/json" | "application/*" => js = true,
                "text/event-stream" => sse = true,
                "*/*" => js = true,
                _ => {}
            }
        }
    }
    if !any {
        js = true;
    }
    (js, sse)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Sends one JSON-RPC message (or a 2025-03-26 batch) to the MCP server.
#[utoipa::path(post, path = "/api/v1/mcp", tag = "mcp", security(("token" = [])),
    params(
        ("Mcp-Session-Id" = Option<String>, Header, description = "the session, from the answer to `initialize`; required on every other message"),
        ("MCP-Protocol-Version" = Option<String>, Header, description = "the negotiated protocol version (2025-06-18 or 2025-03-26)"),
    ),
    request_body(content = JsonRpcMessage, description = "a JSON-RPC 2.0 request, notification or response (or, in a 2025-03-26 session, an array of them)", content_type = "application/json"),
    responses(
        (status = 200, description = "the JSON-RPC answer: application/json, or text/event-stream for a tool call when the client accepts it; `Mcp-Session-Id` on the answer to `initialize`"),
        (status = 202, description = "a notification or response was accepted"),
        (status = 400, description = "not JSON-RPC (a JSON-RPC error object with no id), a missing session, or an unsupported protocol version"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such session (ended, expired, or opened with another token)"),
        (status = 406, description = "the client accepts neither application/json nor text/event-stream"),
    ))]
async fn post_mcp(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (takes_json, takes_sse) = accepts(&headers);
    if !takes_json && !takes_sse {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            mcp::INVALID_REQUEST,
            "Not Acceptable: accept application/json and text/event-stream",
        );
    }
    if let Some(v) = header_str(&headers, VERSION_HEADER) {
        if mcp::supported(v).is_none() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                mcp::INVALID_REQUEST,
                &format!(
                    "Bad Request: unsupported MCP-Protocol-Version {v} (this server speaks {})",
                    mcp::VERSIONS.join(", ")
                ),
            );
        }
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                mcp::PARSE_ERROR,
                &format!("Parse error: {e}"),
            )
        }
    };
    let session_id = header_str(&headers, SESSION_HEADER).map(str::to_string);

    // initialize: a new session.
    if let Some(init) = initialize_request(&value) {
        let (id, params) = init;
        if session_id.is_some() {
            return json_answer(mcp::error_response(
                id,
                mcp::INVALID_REQUEST,
                "Invalid Request: this session is already initialized (send initialize without Mcp-Session-Id for a new one)",
            ));
        }
        let requested = match mcp::initialize_params(params.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                let mut r = json_answer(mcp::error_response(id, e.code, e.message));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            }
        };
        let version = mcp::negotiate(&requested);
        let sid = state.mcp.open(&caller.token.id, version);
        let mut r = (
            StatusCode::OK,
            axum::Json(mcp::result_response(id, mcp::initialize_result(version))),
        )
            .into_response();
        if let Ok(h) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert(SESSION_HEADER, h);
        }
        let mut note = AuditNote {
            action: Some("mcp.session.create".into()),
            target_type: Some("mcp_session".into()),
            ..Default::default()
        };
        note.details_json = Some(
            json!({
                "protocol_version": version,
                "client": params.as_ref().and_then(|p| p.get("clientInfo")).cloned(),
            })
            .to_string(),
        );
        r.extensions_mut().insert(note);
        return r;
    }

    let Some(sid) = session_id else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            mcp::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
        );
    };
    let Some(version) = state.mcp.session(&sid, &caller.token.id) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            mcp::INVALID_REQUEST,
            "Session not found: it ended or expired; send initialize for a new one",
        );
    };
    let Some(api) = state.mcp.api() else {
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            mcp::INTERNAL_ERROR,
            "the MCP endpoint is not ready",
        );
    };
    let user_agent = format!(
        "{} (via mcp)",
        header_str(&headers, "user-agent").unwrap_or("unknown")
    );
    let ctx = std::sync::Arc::new(mcp::tools::ToolCtx {
        api,
        authorization: headers
            .get(header::AUTHORIZATION)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("")),
        remote: Some(remote),
        user_agent: HeaderValue::from_str(&user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static("unknown (via mcp)")),
        structured: version != mcp::BATCH_VERSION,
    });

    match value {
        Value::Array(items) => {
            if version != mcp::BATCH_VERSION {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    mcp::INVALID_REQUEST,
                    &format!("Invalid Request: protocol version {version} has no JSON-RPC batches; send one message per request"),
                );
            }
            if items.is_empty() {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    mcp::INVALID_REQUEST,
                    "Invalid Request: an empty batch",
                );
            }
            let mut answers = Vec::new();
            for item in items {
                if let Some((id, _)) = initialize_request(&item) {
                    answers.push(mcp::error_response(
                        id,
                        mcp::INVALID_REQUEST,
                        "Invalid Request: initialize cannot be part of a batch",
                    ));
                    continue;
                }
                if let Some(a) = one(&state, &ctx, &sid, item).await {
                    answers.push(a);
                }
            }
            if answers.is_empty() {
                accepted()
            } else {
                json_answer(Value::Array(answers))
            }
        }
        value => match mcp::classify(value) {
            Message::Request { id, method, params } if method == "tools/call" && takes_sse => {
                sse_call(&state, ctx, &sid, id, params)
            }
            m => {
                // A request's answer is 200 whatever it says; a message that is not JSON-RPC 400.
                let is_request = matches!(m, Message::Request { .. });
                match dispatch(&state, &ctx, &sid, m).await {
                    Some(a) => {
                        let mut r = json_answer(a);
                        if !is_request {
                            *r.status_mut() = StatusCode::BAD_REQUEST;
                        }
                        r
                    }
                    None => accepted(),
                }
            }
        },
    }
}

/// The id and params of an `initialize` request.
fn initialize_request(v: &Value) -> Option<(Value, Option<Value>)> {
    if v.get("method").and_then(Value::as_str) != Some("initialize") {
        return None;
    }
    let id = v.get("id")?.clone();
    if !id.is_string() && !id.is_number() {
        return None;
    }
    Some((id, v.get("params").cloned()))
}

/// One message of a session: its answer, if one is due.
async fn one(
    state: &AppState,
    ctx: &std::sync::Arc<mcp::tools::ToolCtx>,
    sid: &str,
    v: Value,
) -> Option<Value> {
    dispatch(state, ctx, sid, mcp::classify(v)).await
}

async fn dispatch(
    state: &AppState,
    ctx: &std::sync::Arc<mcp::tools::ToolCtx>,
    sid: &str,
    m: Message,
) -> Option<Value> {
    match m {
        Message::Invalid(e) => Some(e),
        Message::Response => None,
        Message::Notification { method, params } => {
            match method.as_str() {
                "notifications/initialized" => state.mcp.set_initialized(sid),
                "notifications/cancelled" => {
                    if let Some(r) = params.as_ref().and_then(|p| p.get("requestId")) {
                        state.mcp.cancel(sid, r);
                    }
                }
                _ => {}
            }
            None
        }
        Message::Request { id, method, params } => {
            let answer = match method.as_str() {
                "tools/call" => {
                    let h = spawn_call(state, ctx.clone(), sid, id.clone(), params);
                    match h.await {
                        Ok(r) => r,
                        Err(_) => Err(RpcError {
                            code: mcp::INTERNAL_ERROR,
                            message: "the tool call was cancelled".into(),
                        }),
                    }
                }
                m => request(m, params).await,
            };
            Some(match answer {
                Ok(r) => mcp::result_response(id, r),
                Err(e) => mcp::error_response(id, e.code, e.message),
            })
        }
    }
}

/// Requests other than `tools/call`.
async fn request(method: &str, _params: Option<Value>) -> Result<Value, RpcError> {
    match method {
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": mcp::tools::list()})),
        "initialize" => Err(RpcError {
            code: mcp::INVALID_REQUEST,
            message: "Invalid Request: this session is already initialized".into(),
        }),
        other => Err(RpcError {
            code: mcp::METHOD_NOT_FOUND,
            message: format!("Method not found: {other}"),
        }),
    }
}

/// Runs a tool call as a task of its own (a client that goes away does not cancel it;
/// `notifications/cancelled` does).
fn spawn_call(
    state: &AppState,
    ctx: std::sync::Arc<mcp::tools::ToolCtx>,
    sid: &str,
    id: Value,
    params: Option<Value>,
) -> tokio::task::JoinHandle<Result<Value, RpcError>> {
    let mcp_state = state.mcp.clone();
    let sid_owned = sid.to_string();
    let id2 = id.clone();
    let h = tokio::spawn(async move {
        let r = tool_call(&ctx, params).await;
        mcp_state.untrack(&sid_owned, &id2);
        r
    });
    state.mcp.track(sid, &id, h.abort_handle());
    h
}

async fn tool_call(ctx: &mcp::tools::ToolCtx, params: Option<Value>) -> Result<Value, RpcError> {
    let Some(Value::Object(p)) = params else {
        return Err(RpcError::params(
            "Invalid params: tools/call needs params {name, arguments}",
        ));
    };
    let name = match p.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => {
            return Err(RpcError::params(
                "Invalid params: `name` (the tool) must be a string",
            ))
        }
    };
    let arguments = p.get("arguments").cloned().unwrap_or(Value::Null);
    mcp::tools::call(ctx, &name, arguments).await
}

/// A tool call answered as an SSE stream: heartbeats while it runs, then the response.
fn sse_call(
    state: &AppState,
    ctx: std::sync::Arc<mcp::tools::ToolCtx>,
    sid: &str,
    id: Value,
    params: Option<Value>,
) -> Response {
    let mut h = spawn_call(state, ctx, sid, id.clone(), params);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let answer = loop {
            tokio::select! {
                r = &mut h => break r,
                _ = beat.tick() => {
                    // The client may have gone: the call goes on all the same.
                    let _ = tx.send(Ok(Bytes::from_static(b": running\n\n"))).await;
                }
            }
        };
        let msg = match answer {
            Ok(Ok(r)) => mcp::result_response(id, r),
            Ok(Err(e)) => mcp::error_response(id, e.code, e.message),
            Err(_) => mcp::error_response(id, mcp::INTERNAL_ERROR, "the tool call was cancelled"),
        };
        let _ = tx
            .send(Ok(Bytes::from(format!("event: message\ndata: {msg}\n\n"))))
            .await;
    });
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    r.extensions_mut().insert(NotAudited);
    r
}

/// Ends an MCP session.
#[utoipa::path(delete, path = "/api/v1/mcp", tag = "mcp", security(("token" = [])),
    params(("Mcp-Session-Id" = String, Header, description = "the session to end")),
    responses(
        (status = 204, description = "the session ended (tool calls in flight are dropped)"),
        (status = 400, description = "no Mcp-Session-Id header"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such session"),
    ))]
async fn delete_mcp(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let Some(sid) = header_str(&headers, SESSION_HEADER) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            mcp::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        );
    };
    if !state.mcp.close(sid, &caller.token.id) {
        return rpc_error(
            StatusCode::NOT_FOUND,
            mcp::INVALID_REQUEST,
            "Session not found",
        );
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.extensions_mut().insert(AuditNote {
        action: Some("mcp.session.delete".into()),
        target_type: Some("mcp_session".into()),
        ..Default::default()
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(accepts(&h), (true, false));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        assert_eq!(accepts(&h), (true, true));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert_eq!(accepts(&h), (false, true));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(accepts(&h), (false, false));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*;q=0.1"));
        assert_eq!(accepts(&h), (true, false));
    }
}
