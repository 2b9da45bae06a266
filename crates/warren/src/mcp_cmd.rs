//! `warren mcp`: an MCP server on stdin/stdout (newline-delimited JSON-RPC) for clients that
//! start their servers as processes (Claude Code, editors), bridged to the selected server's
//! `/api/v1/mcp` (streamable HTTP) with the context's token (or `WARREN_URL` + `WARREN_TOKEN`).
//!
//! Nothing but JSON-RPC goes to stdout; diagnostics go to stderr. Requests are relayed
//! concurrently (a long tool call does not hold up a `ping`), except `initialize`, which the
//! session id every later message needs comes from. A session the server no longer knows (it
//! restarted, or the session expired) is opened again with the client's own `initialize`, and
//! the message is sent once more. The bridge exits when stdin closes, ending its session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use tokio::sync::mpsc;

use crate::client::{Client, SseParser};
use crate::context::{Contexts, Target};
use crate::output::user_error;

const SESSION: &str = "mcp-session-id";
const VERSION: &str = "mcp-protocol-version";

/// JSON-RPC: the line is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the server could not be asked.
const INTERNAL_ERROR: i64 = -32603;

/// The session as the bridge knows it.
#[derive(Default)]
struct State {
    session: Option<String>,
    version: Option<String>,
    /// The client's `initialize`, kept to open a new session when the server lost ours.
    initialize: Option<Value>,
}

struct Bridge {
    client: Client,
    state: Mutex<State>,
    out: mpsc::Sender<String>,
}

fn log(msg: &str) {
    eprintln!("warren mcp: {msg}");
}

/// Runs the bridge until stdin closes.
pub async fn run(local: bool, context: Option<&str>) -> Result<u8> {
    let contexts = Contexts::load()?;
    let remote = match crate::context::select(local, context, &contexts)? {
        Target::Remote(r) => r,
        Target::Embedded => {
            return Err(user_error(
                "`warren mcp` needs a server, and no context is selected",
                "sign in with `warren login URL`, pick one with --context NAME, or set WARREN_URL and WARREN_TOKEN",
            ))
        }
    };
    let client = Client::for_remote(&remote)?;
    let (tx, mut rx) = mpsc::channel::<String>(64);
    // stdin and stdout are read and written on threads of their own (blocking I/O).
    let writer = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = rx.blocking_recv() {
            if stdout.write_all(line.as_bytes()).is_err()
                || stdout.write_all(b"\n").is_err()
                || stdout.flush().is_err()
            {
                break;
            }
        }
    });
    let (line_tx, mut line_rx) = mpsc::channel::<std::io::Result<String>>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let end = line.is_err();
            if line_tx.blocking_send(line).is_err() || end {
                break;
            }
        }
    });
    let bridge = Arc::new(Bridge {
        client,
        state: Mutex::new(State::default()),
        out: tx,
    });
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let line = match line_rx.recv().await {
            Some(Ok(l)) => l,
            None => break,
            Some(Err(e)) => {
                log(&format!("reading stdin: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                bridge
                    .emit(json!({"jsonrpc": "2.0", "id": null,
                        "error": {"code": PARSE_ERROR, "message": format!("Parse error: {e}")}}))
                    .await;
                continue;
            }
        };
        if msg.get("method").and_then(Value::as_str) == Some("initialize") {
            // Everything after needs the session it opens.
            bridge.initialize(msg).await;
        } else {
            let b = bridge.clone();
            tasks.spawn(async move { b.relay(msg).await });
        }
        // Reap finished relays.
        while tasks.try_join_next().is_some() {}
    }
    // stdin closed: give answers on their way a moment, then end the session.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    bridge.end().await;
    drop(bridge);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(0)
}

impl Bridge {
    async fn emit(&self, v: Value) {
        // Compact JSON never holds a raw newline.
        let _ = self.out.send(v.to_string()).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts one message; (status, content type, session header, body stream).
    async fn post(&self, msg: &Value) -> Result<reqwest::Response, anyhow::Error> {
        let (session, version) = {
            let s = self.lock();
            (s.session.clone(), s.version.clone())
        };
        let mut rb = self
            .client
            .request(Method::POST, "/mcp")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(msg.to_string());
        if let Some(s) = session {
            rb = rb.header(SESSION, s);
        }
        if let Some(v) = version {
            rb = rb.header(VERSION, v);
        }
        rb.send().await.map_err(|e| self.client.transport_error(e))
    }

    /// `initialize`: opens the session and relays the answer.
    async fn initialize(&self, msg: Value) {
        {
            let mut s = self.lock();
            s.session = None;
            s.version = None;
            s.initialize = Some(msg.clone());
        }
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        match self.open(&msg).await {
            Ok(answer) => self.emit(answer).await,
            Err(e) => self.fail(&id, &e).await,
        }
    }

    /// Sends `initialize`; keeps the session and version; the answer.
    async fn open(&self, msg: &Value) -> Result<Value, anyhow::Error> {
        let resp = self.post(msg).await?;
        let session = resp
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let answers = self.answers(resp).await?;
        let answer = answers.into_iter().next().unwrap_or(Value::Null);
        let mut s = self.lock();
        s.session = session;
        s.version = answer["result"]["protocolVersion"]
            .as_str()
            .map(str::to_string);
        Ok(answer)
    }

    /// Relays one message (not `initialize`), opening the session again if the server lost it.
    async fn relay(&self, msg: Value) {
        let id = msg.get("id").cloned();
        let mut reopened = false;
        loop {
            let resp = match self.post(&msg).await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(id) = &id {
                        self.fail(id, &e).await;
                    } else {
                        log(&format!("{e:#}"));
                    }
                    return;
                }
            };
            if resp.status() == StatusCode::NOT_FOUND && !reopened {
                reopened = true;
                if self.reopen().await {
                    continue;
                }
            }
            match self.answers(resp).await {
                Ok(answers) => {
                    for a in answers {
                        self.emit(a).await;
                    }
                }
                Err(e) => match &id {
                    Some(id) => self.fail(id, &e).await,
                    None => log(&format!("{e:#}")),
                },
            }
            return;
        }
    }

    /// Opens a new session with the client's `initialize`; whether it worked.
    async fn reopen(&self) -> bool {
        let Some(init) = self.lock().initialize.clone() else {
            return false;
        };
        {
            let mut s = self.lock();
            s.session = None;
            s.version = None;
        }
        match self.open(&init).await {
            Ok(a) if a.get("result").is_some() => {
                log("the server had lost the session: opened a new one");
                let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                if let Ok(r) = self.post(&note).await {
                    let _ = r.bytes().await;
                }
                true
            }
            Ok(a) => {
                log(&format!("cannot open a new session: {a}"));
                false
            }
            Err(e) => {
                log(&format!("cannot open a new session: {e:#}"));
                false
            }
        }
    }

    /// The JSON-RPC messages of an answer: none (202), its JSON, or its SSE `message` events.
    /// A transport error with a JSON-RPC error body is that error; others are API errors.
    async fn answers(&self, resp: reqwest::Response) -> Result<Vec<Value>, anyhow::Error> {
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            return Ok(vec![]);
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if sse && status.is_success() {
            let mut out = Vec::new();
            let mut parser = SseParser::default();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.client.transport_error(e))?;
                for ev in parser.push(&chunk) {
                    if ev.event == "message" {
                        if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                            out.push(v);
                        }
                    }
                }
            }
            return Ok(out);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.client.transport_error(e))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if status.is_success() => Ok(match v {
                Value::Array(a) => a,
                v => vec![v],
            }),
            Ok(v) if v.get("jsonrpc").is_some() => Ok(vec![v]),
            _ => Err(crate::client::ApiError::from_body(status, &body).into()),
        }
    }

    /// Answers request `id` with the error `e` (so the client does not wait forever).
    async fn fail(&self, id: &Value, e: &anyhow::Error) {
        let (message, hint) = match e.downcast_ref::<crate::client::ApiError>() {
            Some(a) => (a.message.clone(), a.hint.clone()),
            None => match e.downcast_ref::<crate::output::UserError>() {
                Some(u) => (u.msg.clone(), u.hint.clone()),
                None => (format!("{e:#}"), None),
            },
        };
        log(&match &hint {
            Some(h) => format!("{message} (hint: {h})"),
            None => message.clone(),
        });
        let text = match hint {
            Some(h) => format!("{message}; hint: {h}"),
            None => message,
        };
        if id.is_null() {
            return;
        }
        self.emit(json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": INTERNAL_ERROR, "message": text}}))
            .await;
    }

    /// Ends the session on the server.
    async fn end(&self) {
        let Some(session) = self.lock().session.take() else {
            return;
        };
        let rb = self
            .client
            .request(Method::DELETE, "/mcp")
            .header(SESSION, session);
        let _ = tokio::time::timeout(Duration::from_secs(5), rb.send()).await;
    }
}
