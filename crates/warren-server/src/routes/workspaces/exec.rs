//! Exec: run a command in a workspace as its remote user.
//!
//! - `POST /workspaces/{ws}/exec`: non-interactive; stdout, stderr and the exit code stream back
//!   as newline-delimited JSON events ([`ExecEvent`]).
//! - `GET /workspaces/{ws}/exec/ws`: a WebSocket for interactive use (stdin, signals, a PTY with
//!   resize). The client's first message is the [`ExecRequest`] as text; then binary frames whose
//!   first byte is the channel: client→server 0 stdin, 1 stdin EOF, 2 resize `{"rows","cols"}`,
//!   3 signal (decimal number); server→client 1 stdout, 2 stderr, 3 exit `{"code"}`, 4 error.
//!
//! Every exec is counted and audited (`workspace.exec`, with the command).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;
use warren_api::activity::ActivityKind;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::v1::{ExecEvent, ExecRequest};
use warren_engine::WsRef;
use warren_runtime::{ExecProcess, Stdio};
use warren_store::{AuditOutcome, NewAuditRecord, WorkspaceRecord};

use crate::app::{AppState, Json, RequestId};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{tracing_log, ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use futures_util::{SinkExt, StreamExt};

/// Output waited for after the process exits (a daemon it started may hold the pipes open).
pub(crate) const DRAIN: Duration = Duration::from_millis(500);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec_stream))
        .routes(routes!(exec_ws))
}

/// A started process: its output, stdin, PTY, exit and a way to signal it.
pub(crate) struct Started {
    pub(crate) out: mpsc::Receiver<(u8, Vec<u8>)>,
    pub(crate) stdin: Option<std::fs::File>,
    pub(crate) pty: Option<OwnedFd>,
    pub(crate) exit: tokio::sync::oneshot::Receiver<Result<i32, String>>,
    pub(crate) signaller: warren_runtime::Signaller,
    /// The exec (or terminal) as an open session on the workspace, for idle policies; `touch` it
    /// on input.
    pub(crate) activity: crate::activity::Session,
    _slot: Slot,
}

/// Concurrent execs allowed on the server, and per user: each holds threads until its process
/// exits, so one user cannot starve the others.
const MAX_EXECS: usize = 256;
const MAX_EXECS_PER_USER: usize = 32;

static EXECS: std::sync::Mutex<Option<std::collections::HashMap<String, usize>>> =
    std::sync::Mutex::new(None);

/// A running exec's place in the limits; released on drop.
pub(crate) struct Slot(String);

impl Slot {
    /// Takes a place for `user`, or refuses (429) when the server or the user has too many.
    pub(crate) fn take(user: &str) -> ApiResult<Slot> {
        let mut g = EXECS.lock().unwrap_or_else(|p| p.into_inner());
        let map = g.get_or_insert_with(Default::default);
        let total: usize = map.values().sum();
        let mine = map.get(user).copied().unwrap_or(0);
        if total >= MAX_EXECS || mine >= MAX_EXECS_PER_USER {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                warren_api::ErrorCode::Unavailable,
                format!(
                    "too many commands running (at most {MAX_EXECS_PER_USER} per user, {MAX_EXECS} in all)"
                ),
            )
            .hint("wait for some to finish"));
        }
        *map.entry(user.to_string()).or_default() += 1;
        Ok(Slot(user.to_string()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = EXECS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = g.as_mut() {
            if let Some(n) = map.get_mut(&self.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.0);
                }
            }
        }
    }
}

/// The session audit of a process the API's exec or the SSH gateway starts: its start, then its
/// end (`session.process_start`, `session.process_end`).
pub(crate) struct ProcAudit {
    rec: WorkspaceRecord,
    actor: (Option<String>, Option<String>, Option<String>),
    id: String,
    argv: Vec<String>,
    cwd: Option<String>,
    user: Option<String>,
    via: crate::session_audit::Via,
    started_at: String,
}

impl ProcAudit {
    /// For `req` in `rec`, by the user (id, name) with the token.
    pub(crate) fn new(
        rec: &WorkspaceRecord,
        actor: (Option<String>, Option<String>, Option<String>),
        req: &ExecRequest,
        via: crate::session_audit::Via,
    ) -> Self {
        ProcAudit {
            rec: rec.clone(),
            actor,
            id: crate::session_audit::process_id(),
            argv: req.command.clone(),
            cwd: req.cwd.clone(),
            user: req.user.clone(),
            via,
            started_at: crate::session_audit::now(),
        }
    }

    /// For a request's caller.
    pub(crate) fn of_caller(
        rec: &WorkspaceRecord,
        caller: &Caller,
        req: &ExecRequest,
        via: crate::session_audit::Via,
    ) -> Self {
        Self::new(
            rec,
            (
                Some(caller.user.id.clone()),
                Some(caller.user.username.clone()),
                Some(caller.token.id.clone()),
            ),
            req,
            via,
        )
    }

    async fn record(&self, state: &AppState, ev: crate::session_audit::SessionEvent) {
        let actor = crate::session_audit::SessionActor {
            user_id: self.actor.0.clone().unwrap_or_default(),
            username: self.actor.1.clone().unwrap_or_default(),
            token_id: self.actor.2.clone().unwrap_or_default(),
        };
        let mut r = warren_store::session::session_record(&self.rec, Some(&actor), &ev);
        // An SSH key's session has no token.
        r.actor_token_id = self.actor.2.clone();
        crate::audit::record(state, r).await;
    }

    /// Records the start.
    pub(crate) async fn started(&self, state: &AppState) {
        let ev = crate::session_audit::SessionEvent::ProcessStarted {
            id: self.id.clone(),
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            via: self.via,
        };
        self.record(state, ev).await;
    }

    /// Records the end: the exit code, none when killed by its time limit or lost.
    pub(crate) async fn ended(&self, state: &AppState, exit_code: Option<i32>, timed_out: bool) {
        let ev = crate::session_audit::SessionEvent::ProcessEnded {
            id: self.id.clone(),
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            via: self.via,
            started_at: self.started_at.clone(),
            ended_at: crate::session_audit::now(),
            exit_code,
            timed_out,
        };
        self.record(state, ev).await;
    }
}

/// Signals `sig` now and, if the process is still there after a grace period, SIGKILL: for a
/// client that went away.
pub(crate) fn hang_up(signaller: &warren_runtime::Signaller, exit_seen: bool) {
    if exit_seen {
        return;
    }
    let _ = signaller.signal(1);
}

fn pump(fd: OwnedFd, chan: u8, tx: mpsc::Sender<(u8, Vec<u8>)>) {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send((chan, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

pub(crate) fn validate(req: &ExecRequest) -> ApiResult<Option<Duration>> {
    if req.command.is_empty() || req.command[0].is_empty() {
        return Err(
            ApiError::bad_request("command: give the program and its arguments")
                .hint(r#"e.g. {"command": ["sh", "-c", "echo hi"]}"#),
        );
    }
    for k in req.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "env: `{k}` is not a variable name"
            )));
        }
    }
    if let Some((r, c)) = req.tty {
        if r == 0 || c == 0 {
            return Err(ApiError::bad_request(
                "tty: rows and columns must be positive",
            ));
        }
    }
    req.timeout
        .as_deref()
        .map(|t| {
            warren_api::template::parse_duration(t)
                .map_err(|e| ApiError::bad_request(format!("timeout `{t}`: {e}")))
        })
        .transpose()
}

pub(crate) async fn start(
    state: &AppState,
    user: &str,
    rec: &WorkspaceRecord,
    req: &ExecRequest,
) -> ApiResult<Started> {
    let slot = Slot::take(user)?;
    let process = ExecProcess {
        argv: req.command.clone(),
        env: req.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: req.cwd.clone(),
        user: req.user.clone(),
        tty: req.tty,
        detach: false,
        login_shell: req.login_shell,
    };
    let (tx, out) = mpsc::channel(64);
    let (session, stdin, pty) = if req.tty.is_some() {
        let session = state
            .engine
            .exec(WsRef::Id(rec.id.clone()), process, None)
            .await?;
        let master = session
            .pty
            .as_ref()
            .ok_or_else(|| ApiError::internal("no PTY came back"))?;
        let reader = master.try_clone().map_err(ApiError::internal)?;
        let writer = master.try_clone().map_err(ApiError::internal)?;
        let resize = master.try_clone().map_err(ApiError::internal)?;
        pump(reader, 1, tx);
        (session, Some(std::fs::File::from(writer)), Some(resize))
    } else {
        let (in_r, in_w) = std::io::pipe().map_err(ApiError::internal)?;
        let (out_r, out_w) = std::io::pipe().map_err(ApiError::internal)?;
        let (err_r, err_w) = std::io::pipe().map_err(ApiError::internal)?;
        let stdio = Stdio {
            stdin: in_r.into(),
            stdout: out_w.into(),
            stderr: err_w.into(),
        };
        let session = state
            .engine
            .exec(WsRef::Id(rec.id.clone()), process, Some(stdio))
            .await?;
        pump(out_r.into(), 1, tx.clone());
        pump(err_r.into(), 2, tx);
        let w: OwnedFd = in_w.into();
        (session, Some(std::fs::File::from(w)), None)
    };
    state.metrics.execs.inc();
    let signaller = session.signaller().map_err(ApiError::internal)?;
    // A thread of its own, not the blocking pool: a long-running command must not take a slot
    // other work (engine operations) needs.
    let (exit_tx, exit) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(session.wait().map_err(|e| e.to_string()));
    });
    Ok(Started {
        out,
        stdin,
        pty,
        exit,
        signaller,
        activity: state.activity.session(
            &rec.id,
            if req.tty.is_some() {
                ActivityKind::Pty
            } else {
                ActivityKind::Exec
            },
        ),
        _slot: slot,
    })
}

/// Capacity asked for a process's stdin pipe (Linux's default `pipe-max-size`).
const STDIN_PIPE_SIZE: usize = 1 << 20;

/// Writes a process's stdin on a thread of its own (writes to a pipe or PTY may block), noting
/// activity for each write. `next` gives the next chunk, `Some(None)` for EOF (^D on a terminal)
/// and `None` when the client is gone.
pub(crate) fn stdin_writer(
    started: &Started,
    mut w: std::fs::File,
    mut next: impl FnMut() -> Option<Option<Vec<u8>>> + Send + 'static,
) {
    let is_pty = started.pty.is_some();
    let activity = started.activity.toucher();
    if !is_pty {
        // A pipe of 1 MiB rather than 64 KiB: a fast sender (scp's upload) then fills it far
        // less often, and each time it is full this thread sleeps and is woken again, which
        // cost more than the copying (perf, `scp -O` of 1 GiB through the SSH gateway).
        // Beyond the system's limit the default stays.
        let _ = rustix::pipe::fcntl_setpipe_size(&w, STDIN_PIPE_SIZE);
    }
    std::thread::spawn(move || {
        while let Some(msg) = next() {
            match msg {
                Some(b) => {
                    activity.touch();
                    if w.write_all(&b).is_err() {
                        break;
                    }
                }
                None if is_pty => {
                    let _ = w.write_all(&[4]);
                }
                None => break,
            }
        }
    });
}

fn output_event(chan: u8, bytes: Vec<u8>) -> ExecEvent {
    let (text, base64) = match String::from_utf8(bytes) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        ),
    };
    if chan == 2 {
        ExecEvent::Stderr { text, base64 }
    } else {
        ExecEvent::Stdout { text, base64 }
    }
}

fn line(ev: &ExecEvent) -> Result<String, std::convert::Infallible> {
    Ok(format!(
        "{}\n",
        serde_json::to_string(ev).unwrap_or_else(|_| "{}".into())
    ))
}

/// Runs a command and streams its output and exit code as NDJSON events.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/exec", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = ExecRequest,
    responses((status = 200, description = "application/x-ndjson stream of ExecEvent", body = ExecEvent),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn exec_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Response> {
    let timeout = validate(&req)?;
    if req.tty.is_some() {
        return Err(ApiError::bad_request(
            "tty: a terminal needs the WebSocket exec (GET /api/v1/workspaces/{ws}/exec/ws)",
        ));
    }
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let mut started = start(&state, &caller.user.id, &rec, &req).await?;
    let proc_audit = ProcAudit::of_caller(&rec, &caller, &req, crate::session_audit::Via::Exec);
    proc_audit.started(&state).await;
    let audit_state = state.clone();
    // stdin: the given text, then EOF.
    if let Some(mut w) = started.stdin.take() {
        let text = req.stdin.clone().unwrap_or_default();
        std::thread::spawn(move || {
            let _ = w.write_all(text.as_bytes());
        });
    }
    let (tx, rx) = mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut gone: Option<tokio::time::Instant> = None;
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let code = loop {
            let kill_at = gone.map(|t| t + GONE_GRACE);
            tokio::select! {
                Some((chan, bytes)) = started.out.recv() => {
                    if gone.is_none() && tx.send(line(&output_event(chan, bytes))).await.is_err() {
                        // The client left: hang up, as a closed terminal would.
                        gone = Some(tokio::time::Instant::now());
                        hang_up(&started.signaller, false);
                    }
                }
                _ = beat.tick(), if gone.is_none() => {
                    // A quiet command still tells whether its client is there: HTTP/1 notices a
                    // closed connection only when writing.
                    if tx.send(line(&ExecEvent::Heartbeat)).await.is_err() {
                        gone = Some(tokio::time::Instant::now());
                        hang_up(&started.signaller, false);
                    }
                }
                r = &mut started.exit => break r,
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    let _ = started.signaller.signal(libc_sigkill());
                }
                () = sleep_until_opt(kill_at), if kill_at.is_some() => {
                    let _ = started.signaller.signal(libc_sigkill());
                    gone = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        };
        drain(&mut started.out, |chan, bytes| {
            let tx = tx.clone();
            async move { tx.send(line(&output_event(chan, bytes))).await.is_ok() }
        })
        .await;
        if timed_out {
            let _ = tx
                .send(line(&ExecEvent::Error {
                    message: "the command timed out and was killed".into(),
                }))
                .await;
        }
        let exit_code = match &code {
            Ok(Ok(c)) if !timed_out => Some(*c),
            _ => None,
        };
        proc_audit.ended(&audit_state, exit_code, timed_out).await;
        let ev = match code {
            Ok(Ok(code)) => ExecEvent::Exit { code },
            Ok(Err(e)) => ExecEvent::Error { message: e },
            Err(_) => ExecEvent::Error {
                message: "lost track of the command".into(),
            },
        };
        let _ = tx.send(line(&ev)).await;
    });
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.details_json =
        Some(serde_json::json!({"command": req.command, "user": req.user}).to_string());
    Ok((
        axum::Extension(note),
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

fn libc_sigkill() -> i32 {
    9
}

/// How often a quiet NDJSON exec stream sends a heartbeat event.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a command whose client left gets after SIGHUP before SIGKILL.
pub(crate) const GONE_GRACE: Duration = Duration::from_secs(5);

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// After the process exited: forwards the output still coming until both streams end or none has
/// come for [`DRAIN`] (a daemon it started may hold the pipes open).
async fn drain<F, Fut>(out: &mut mpsc::Receiver<(u8, Vec<u8>)>, mut send: F)
where
    F: FnMut(u8, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while let Ok(Some((chan, bytes))) = tokio::time::timeout(DRAIN, out.recv()).await {
        if !send(chan, bytes).await {
            break;
        }
    }
}

/// Interactive exec over a WebSocket (see the module documentation for the frames).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/exec/ws", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 101, description = "WebSocket; first client message: ExecRequest as text"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn exec_ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            let audit = crate::audit::upgrade_record(
                request_id.0,
                &caller,
                remote,
                user_agent,
                "workspace.exec",
                &rec,
            );
            ws_session(state, rec, socket, audit).await;
        }))
}

async fn ws_error(socket: &mut WebSocket, msg: &str) {
    let mut f = vec![4u8];
    f.extend_from_slice(msg.as_bytes());
    let _ = socket.send(Message::Binary(f.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// What the socket's reader task hands to the session loop.
enum Input {
    /// The client closed the socket or it broke.
    Gone,
}

async fn ws_session(
    state: AppState,
    rec: WorkspaceRecord,
    mut socket: WebSocket,
    mut audit: NewAuditRecord,
) {
    let first = tokio::time::timeout(Duration::from_secs(30), socket.recv()).await;
    let req: ExecRequest = match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str(t.as_str()) {
            Ok(r) => r,
            Err(e) => {
                audit.outcome = AuditOutcome::Failure;
                crate::audit::record(&state, audit).await;
                return ws_error(&mut socket, &format!("invalid exec request: {e}")).await;
            }
        },
        _ => {
            audit.outcome = AuditOutcome::Failure;
            crate::audit::record(&state, audit).await;
            return ws_error(
                &mut socket,
                "expected the exec request as the first (text) message",
            )
            .await;
        }
    };
    audit.details_json = Some(
        serde_json::json!({"command": req.command, "user": req.user, "tty": req.tty.is_some()})
            .to_string(),
    );
    let user = audit.actor_user_id.clone().unwrap_or_default();
    let started = match validate(&req) {
        Ok(timeout) => start(&state, &user, &rec, &req).await.map(|s| (s, timeout)),
        Err(e) => Err(e),
    };
    let (mut started, timeout) = match started {
        Ok(s) => s,
        Err(e) => {
            audit.outcome = AuditOutcome::Failure;
            crate::audit::record(&state, audit).await;
            return ws_error(&mut socket, &e.body.message).await;
        }
    };
    let proc_audit = ProcAudit::new(
        &rec,
        (
            audit.actor_user_id.clone(),
            audit.actor_username.clone(),
            audit.actor_token_id.clone(),
        ),
        &req,
        crate::session_audit::Via::Exec,
    );
    crate::audit::record(&state, audit).await;
    proc_audit.started(&state).await;

    // stdin goes through a thread: writes to a pipe or PTY may block.
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    if let Some(w) = started.stdin.take() {
        stdin_writer(&started, w, move || in_rx.blocking_recv());
    }
    // The socket's reading half runs on its own, so a client sending stdin faster than the
    // process reads it never stops the output (which the process may be blocked writing).
    let (mut sink, mut stream) = socket.split();
    let (gone_tx, mut gone_rx) = mpsc::channel::<Input>(1);
    let signaller = match started.signaller.try_clone() {
        Ok(s) => s,
        Err(e) => {
            let _ = started.signaller.signal(libc_sigkill());
            tracing_log(&format!("exec: {e}"));
            return;
        }
    };
    let pty = started.pty.as_ref().and_then(|p| p.try_clone().ok());
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                    // A process that no longer reads stdin just loses the rest.
                    0 => {
                        let _ = in_tx.send(Some(b[1..].to_vec())).await;
                    }
                    1 => {
                        let _ = in_tx.send(None).await;
                    }
                    2 => {
                        let sz = serde_json::from_slice::<serde_json::Value>(&b[1..]).ok();
                        if let (Some(pty), Some(sz)) = (&pty, sz) {
                            let rows = sz["rows"].as_u64().and_then(|v| u16::try_from(v).ok());
                            let cols = sz["cols"].as_u64().and_then(|v| u16::try_from(v).ok());
                            if let (Some(r), Some(c)) = (rows, cols) {
                                let _ = warren_runtime::tty::set_window_size(pty.as_fd(), r, c);
                            }
                        }
                    }
                    3 => {
                        let sig = std::str::from_utf8(&b[1..])
                            .ok()
                            .and_then(|s| s.trim().parse::<i32>().ok())
                            .filter(|s| (1..=64).contains(s));
                        if let Some(sig) = sig {
                            let _ = signaller.signal(sig);
                        }
                    }
                    _ => {}
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = gone_tx.send(Input::Gone).await;
    });

    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut gone: Option<tokio::time::Instant> = None;
    let code = loop {
        let kill_at = gone.map(|t| t + GONE_GRACE);
        tokio::select! {
            Some((chan, bytes)) = started.out.recv() => {
                if gone.is_none() {
                    let mut f = Vec::with_capacity(bytes.len() + 1);
                    f.push(chan);
                    f.extend_from_slice(&bytes);
                    if sink.send(Message::Binary(f.into())).await.is_err() {
                        gone = Some(tokio::time::Instant::now());
                        hang_up(&started.signaller, false);
                    }
                }
            }
            Some(Input::Gone) = gone_rx.recv(), if gone.is_none() => {
                // The client left: hang up, as a closed terminal would; SIGKILL after a grace.
                gone = Some(tokio::time::Instant::now());
                hang_up(&started.signaller, false);
            }
            r = &mut started.exit => break r,
            () = &mut deadline, if !timed_out => {
                timed_out = true;
                let _ = started.signaller.signal(libc_sigkill());
            }
            () = sleep_until_opt(kill_at), if kill_at.is_some() => {
                let _ = started.signaller.signal(libc_sigkill());
                gone = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    reader.abort();
    let exit_code = match &code {
        Ok(Ok(c)) if !timed_out => Some(*c),
        _ => None,
    };
    proc_audit.ended(&state, exit_code, timed_out).await;
    if gone.is_some() {
        return;
    }
    while let Ok(Some((chan, bytes))) = tokio::time::timeout(DRAIN, started.out.recv()).await {
        let mut f = vec![chan];
        f.extend_from_slice(&bytes);
        if sink.send(Message::Binary(f.into())).await.is_err() {
            break;
        }
    }
    let last = match code {
        Ok(Ok(code)) => {
            let mut f = vec![3u8];
            f.extend_from_slice(serde_json::json!({ "code": code }).to_string().as_bytes());
            f
        }
        Ok(Err(e)) => [&[4u8][..], e.as_bytes()].concat(),
        Err(_) => [&[4u8][..], b"lost track of the command"].concat(),
    };
    let _ = sink.send(Message::Binary(last.into())).await;
    let _ = sink.send(Message::Close(None)).await;
}
