//! MCP (the Model Context Protocol) over JSON-RPC 2.0, written out here: sessions, the
//! lifecycle (`initialize`, `notifications/initialized`, `ping`), `tools/list` and `tools/call`.
//! The HTTP transport (`POST|DELETE /api/v1/mcp`) is `routes::mcp`; `warren mcp` bridges stdio
//! to it.
//!
//! Tools never act on their own: each calls the REST API in-process (`Mcp::api`, the API's own
//! router and middleware) with the caller's `Authorization` header, so authorization, quotas,
//! per-user caps and the audit log are exactly the API's, and a tool can do nothing its token
//! could not do through the API. A session belongs to the token that opened it; another token
//! naming it gets "no such session".
//!
//! Protocol versions: 2025-06-18 (the latest this server speaks) and 2025-03-26 (which has
//! JSON-RPC batches). A client asking for another version is answered with 2025-06-18, and
//! decides itself whether it can go on.

pub mod tools;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{json, Value};

/// The protocol versions this server speaks, latest first.
pub const VERSIONS: [&str; 2] = ["2025-06-18", "2025-03-26"];

/// The version that has JSON-RPC batches.
pub const BATCH_VERSION: &str = "2025-03-26";

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid parameters (unknown tool, bad arguments).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the server failed.
pub const INTERNAL_ERROR: i64 = -32603;

/// How long a session lives without a message.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions one token may hold; opening one more ends its least recently used.
const SESSIONS_PER_TOKEN: usize = 32;
/// Sessions of the whole server.
const SESSIONS_MAX: usize = 10_000;

/// The answer to a requested protocol version: the same when spoken, else the latest.
pub fn negotiate(requested: &str) -> &'static str {
    supported(requested).unwrap_or(VERSIONS[0])
}

/// The version if this server speaks it.
pub fn supported(v: &str) -> Option<&'static str> {
    VERSIONS.iter().find(|s| **s == v).copied()
}

/// A JSON-RPC error answer.
pub fn error_response(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// A JSON-RPC success answer.
pub fn result_response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error on its way to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// One line.
    pub message: String,
}

impl RpcError {
    /// Invalid params.
    pub fn params(message: impl Into<String>) -> Self {
        RpcError {
            code: INVALID_PARAMS,
            message: message.into(),
        }
    }
}

/// One JSON-RPC message from a client, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: an answer is due.
    Request {
        /// Its id (a string or a number).
        id: Value,
        /// The method.
        method: String,
        /// The parameters, if any.
        params: Option<Value>,
    },
    /// A notification: no answer.
    Notification {
        /// The method.
        method: String,
        /// The parameters, if any.
        params: Option<Value>,
    },
    /// A response to a request of the server's (this server sends none): ignored.
    Response,
    /// Not a JSON-RPC message: the error answer (with the id when one could be read).
    Invalid(Value),
}

/// Classifies one JSON value as a JSON-RPC message.
pub fn classify(v: Value) -> Message {
    let Value::Object(mut o) = v else {
        return Message::Invalid(error_response(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: a JSON-RPC message is a JSON object",
        ));
    };
    let id = o.remove("id");
    let id_ok = matches!(&id, Some(Value::String(_)) | Some(Value::Number(_)));
    let err_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid(error_response(
            err_id,
            INVALID_REQUEST,
            "Invalid Request: `jsonrpc` must be \"2.0\"",
        ));
    }
    let params = o.remove("params");
    if let Some(p) = &params {
        if !p.is_object() && !p.is_array() {
            return Message::Invalid(error_response(
                err_id,
                INVALID_REQUEST,
                "Invalid Request: `params` must be an object",
            ));
        }
    }
    match o.remove("method") {
        Some(Value::String(method)) => match id {
            None => Message::Notification { method, params },
            Some(_) if id_ok => Message::Request {
                id: err_id,
                method,
                params,
            },
            Some(_) => Message::Invalid(error_response(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: `id` must be a string or a number",
            )),
        },
        Some(_) => Message::Invalid(error_response(
            err_id,
            INVALID_REQUEST,
            "Invalid Request: `method` must be a string",
        )),
        None if o.contains_key("result") || o.contains_key("error") => Message::Response,
        None => Message::Invalid(error_response(
            err_id,
            INVALID_REQUEST,
            "Invalid Request: no `method`",
        )),
    }
}

/// What `initialize` answers with `version`.
pub fn initialize_result(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {
            "name": "warren",
            "title": "Warren",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "Warren runs development workspaces (containers) on a server. \
            Create one with create_workspace (from a template), run commands with run_command, \
            read and write its files, use git in it, and get the preview URL of a port a server \
            listens on. Workspaces are named; delete them with delete_workspace when done.",
    })
}

/// The checked `params` of `initialize`: the protocol version asked for.
pub fn initialize_params(params: Option<&Value>) -> Result<String, RpcError> {
    let p = params.ok_or_else(|| RpcError::params("Invalid params: initialize needs params"))?;
    match p.get("protocolVersion") {
        Some(Value::String(v)) => Ok(v.clone()),
        Some(_) => Err(RpcError::params(
            "Invalid params: `protocolVersion` must be a string",
        )),
        None => Err(RpcError::params(
            "Invalid params: `protocolVersion` is required",
        )),
    }
}

struct Session {
    token_id: String,
    version: &'static str,
    last_used: Instant,
    initialized: bool,
    /// Tool calls in flight, by request id (as JSON text), for `notifications/cancelled`.
    calls: HashMap<String, tokio::task::AbortHandle>,
}

impl Session {
    fn end(self) {
        for (_, h) in self.calls {
            h.abort();
        }
    }
}

/// Live MCP sessions, and the in-process API their tools call.
#[derive(Default)]
pub struct Mcp {
    api: OnceLock<Router>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Mcp {
    /// Sets the API router tools call (once, when the server's router is built).
    pub fn set_api(&self, r: Router) {
        let _ = self.api.set(r);
    }

    /// The API router tools call.
    pub fn api(&self) -> Option<Router> {
        self.api.get().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `token_id` speaking `version`; returns its id.
    pub fn open(&self, token_id: &str, version: &'static str) -> String {
        let id = crate::auth::random_secret();
        let mut m = self.lock();
        let expired: Vec<String> = m
            .iter()
            .filter(|(_, s)| s.last_used.elapsed() > SESSION_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(s) = m.remove(&k) {
                s.end();
            }
        }
        let oldest = |m: &HashMap<String, Session>, token: Option<&str>| {
            m.iter()
                .filter(|(_, s)| token.is_none_or(|t| s.token_id == t))
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        };
        let mine = m.values().filter(|s| s.token_id == token_id).count();
        if mine >= SESSIONS_PER_TOKEN {
            if let Some(s) = oldest(&m, Some(token_id)).and_then(|k| m.remove(&k)) {
                s.end();
            }
        }
        if m.len() >= SESSIONS_MAX {
            if let Some(s) = oldest(&m, None).and_then(|k| m.remove(&k)) {
                s.end();
            }
        }
        m.insert(
            id.clone(),
            Session {
                token_id: token_id.to_string(),
                version,
                last_used: Instant::now(),
                initialized: false,
                calls: HashMap::new(),
            },
        );
        id
    }

    /// The protocol version of session `id` when it exists and belongs to `token_id` (and
    /// notes its use); `None` otherwise, whoever's it is.
    pub fn session(&self, id: &str, token_id: &str) -> Option<&'static str> {
        let mut m = self.lock();
        let s = m.get_mut(id)?;
        if s.token_id != token_id {
            return None;
        }
        if s.last_used.elapsed() > SESSION_IDLE {
            if let Some(s) = m.remove(id) {
                s.end();
            }
            return None;
        }
        s.last_used = Instant::now();
        Some(s.version)
    }

    /// Ends session `id` of `token_id` (its tool calls in flight are dropped); whether it was.
    pub fn close(&self, id: &str, token_id: &str) -> bool {
        let mut m = self.lock();
        if m.get(id).is_none_or(|s| s.token_id != token_id) {
            return false;
        }
        if let Some(s) = m.remove(id) {
            s.end();
        }
        true
    }

    /// Notes `notifications/initialized`.
    pub fn set_initialized(&self, id: &str) {
        if let Some(s) = self.lock().get_mut(id) {
            s.initialized = true;
        }
    }

    /// Whether session `id` has been told `notifications/initialized`.
    pub fn is_initialized(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|s| s.initialized)
    }

    /// Remembers a tool call in flight (for cancellation).
    pub fn track(&self, session: &str, request: &Value, h: tokio::task::AbortHandle) {
        if let Some(s) = self.lock().get_mut(session) {
            s.calls.insert(request.to_string(), h);
        }
    }

    /// Forgets a finished tool call.
    pub fn untrack(&self, session: &str, request: &Value) {
        if let Some(s) = self.lock().get_mut(session) {
            s.calls.remove(&request.to_string());
        }
    }

    /// `notifications/cancelled`: drops the tool call in flight (an exec it runs is hung up).
    pub fn cancel(&self, session: &str, request: &Value) {
        if let Some(h) = self
            .lock()
            .get_mut(session)
            .and_then(|s| s.calls.remove(&request.to_string()))
        {
            h.abort();
        }
    }

    /// Number of live sessions (metrics, tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_to_one_spoken() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2025-03-26"), "2025-03-26");
        assert_eq!(negotiate("2024-11-05"), "2025-06-18");
        assert_eq!(negotiate("2099-01-01"), "2025-06-18");
        assert_eq!(supported("junk"), None);
    }

    #[test]
    fn messages_are_classified() {
        let m = classify(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
        assert_eq!(
            m,
            Message::Request {
                id: json!(1),
                method: "ping".into(),
                params: None
            }
        );
        let m = classify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert!(matches!(m, Message::Notification { .. }));
        assert_eq!(
            classify(json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            Message::Response
        );
        for bad in [
            json!([1]),
            json!("x"),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 3}),
            json!({"jsonrpc": "2.0", "id": 1}),
        ] {
            let Message::Invalid(e) = classify(bad.clone()) else {
                panic!("{bad} was accepted");
            };
            assert_eq!(e["error"]["code"], INVALID_REQUEST, "{bad}");
        }
        // The id is kept when it could be read.
        let Message::Invalid(e) = classify(json!({"jsonrpc": "2.0", "id": "a", "method": 1}))
        else {
            panic!()
        };
        assert_eq!(e["id"], "a");
    }

    #[test]
    fn sessions_belong_to_their_token() {
        let m = Mcp::default();
        let a = m.open("tok-a", "2025-06-18");
        assert_eq!(m.session(&a, "tok-a"), Some("2025-06-18"));
        assert_eq!(m.session(&a, "tok-b"), None);
        assert!(!m.close(&a, "tok-b"));
        assert!(m.close(&a, "tok-a"));
        assert_eq!(m.session(&a, "tok-a"), None);
    }

    #[test]
    fn a_token_holds_a_bounded_number_of_sessions() {
        let m = Mcp::default();
        let first = m.open("t", "2025-06-18");
        for _ in 0..SESSIONS_PER_TOKEN {
            m.open("t", "2025-06-18");
        }
        assert_eq!(m.len(), SESSIONS_PER_TOKEN);
        assert_eq!(m.session(&first, "t"), None, "the oldest was ended");
    }

    #[test]
    fn initialize_needs_a_protocol_version() {
        assert!(initialize_params(None).is_err());
        assert!(initialize_params(Some(&json!({}))).is_err());
        assert!(initialize_params(Some(&json!({"protocolVersion": 1}))).is_err());
        assert_eq!(
            initialize_params(Some(&json!({"protocolVersion": "x"}))).unwrap(),
            "x"
        );
    }
}
