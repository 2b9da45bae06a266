//! `GET /workspaces/{ws}/terminal`: a web terminal. A WebSocket to a PTY running in the
//! workspace that survives its client for a grace period, so a browser tab that lost its network
//! (or was reloaded) reconnects to the same shell, as Coder's reconnecting PTY does.
//!
//! # Connecting
//!
//! `GET /api/v1/workspaces/{ws}/terminal?session=ID[&rows=R&cols=C][&command=CMD]`, upgraded to a
//! WebSocket with the subprotocol `warren.terminal.v1`.
//!
//! - `session`: chosen by the client (1 to 64 of `A-Z a-z 0-9 . _ -`; a UUID per terminal tab).
//!   The first connection with an id starts the process; later ones with the same id, by the
//!   same user on the same workspace, attach to it. Sessions are keyed by (user, workspace, id):
//!   another user's id names a different session, never theirs.
//! - `rows`, `cols`: the window size (1 to 1000), applied on every attach that gives it; a new
//!   session without them is 24×80.
//! - `command`: run `/bin/sh -c CMD` instead of the login shell (the remote user's shell from the
//!   workspace's `/etc/passwd`, else bash or sh, as `warren shell`); only used when the session
//!   starts. Processes run as the workspace's remote user with `TERM=xterm-256color`.
//!
//! Authentication is the API's. Browsers cannot set `Authorization` on a WebSocket, so the token
//! may instead be offered as a second subprotocol, `warren.bearer.<token>`
//! (`new WebSocket(url, ["warren.terminal.v1", "warren.bearer." + token])`): it stays out of URLs
//! (and so out of proxy logs and history), and the server selects `warren.terminal.v1`, never
//! echoing the token. A client that offers subprotocols must offer `warren.terminal.v1`.
//! Authorization is exec's (`Op::WorkspaceExec`; another user's workspace is 404).
//!
//! # Messages
//!
//! Binary messages are terminal bytes both ways: keystrokes from the client, output from the
//! server. Text messages are JSON control messages with a `type`:
//!
//! - client → server: `{"type":"resize","rows":R,"cols":C}`. Anything else (unknown type, bad
//!   JSON, sizes out of range, over 4 KiB) is answered with a non-fatal `error` and ignored. A
//!   message over 1 MiB ends the connection (the session waits for a reconnect).
//! - server → client:
//!   - `{"type":"attached","session":ID,"new":BOOL,"offset":N}` first. Then, when reattaching,
//!     the recent output (up to [`RING_BYTES`], as binary) is replayed before live output.
//!     `offset` is the position of the first replayed byte in the session's whole output, so a
//!     client that kept its screen (and counted the bytes it got) skips what it already has;
//!     one that did not (a reloaded page) resets its terminal and shows everything.
//!   - `{"type":"exit","code":N}` when the process exits, after its last output; the session
//!     is gone and the socket closes (1000).
//!   - `{"type":"error","code":CODE,"message":..,"hint":..,"fatal":BOOL}`: `code` is a stable
//!     API error code (`limit_exceeded` for too many sessions, `invalid_state` for a workspace
//!     that is not running, `invalid_request` for a bad control message). Fatal ones close the
//!     socket (4000, with the code as reason); a server shutting down sends `unavailable` and
//!     closes with 1001.
//!   - `{"type":"taken_over"}`: another connection attached to this session (one client per
//!     session: the newest wins, as a reloaded tab should); the socket closes (4001). Clients
//!     should not reconnect automatically after this one.
//!
//! # Lifetime
//!
//! While no client is attached, the process keeps running and its output goes to the ring
//! buffer. After the grace period (`terminal_grace`, default 5 minutes) with no client, it is
//! hung up: SIGHUP, then SIGKILL after [`exec::GONE_GRACE`], and the session is forgotten. A
//! process that exits while detached keeps its output and exit code for the rest of the grace
//! period: a reconnect gets them, then the session is gone. A server shutdown hangs up every
//! terminal (the PTYs are the server's). A silent client (no message, not even a pong to the
//! server's pings, for [`CLIENT_SILENCE`]) or one that stops reading for [`SEND_TIMEOUT`]
//! counts as gone.
//!
//! Each terminal is an open `pty` activity session while its process lives, and each keystroke
//! is activity. Each connection is audited (`workspace.terminal`: who, from where, the session id,
//! whether it started or reattached).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::v1::ExecRequest;
use warren_api::ErrorCode;
use warren_store::{AuditOutcome, NewAuditRecord, WorkspaceRecord};

use super::exec;
use crate::app::{AppState, RequestId};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;

/// The subprotocol of this endpoint.
pub const PROTOCOL: &str = "warren.terminal.v1";

/// Recent output kept per session for a reconnecting client.
pub const RING_BYTES: usize = 256 * 1024;

/// Terminal sessions one user may have at once (attached or waiting for a reconnect).
pub const MAX_SESSIONS_PER_USER: usize = 16;

/// Largest control (text) message accepted.
const MAX_CONTROL_BYTES: usize = 4096;

/// The window size of a session started without one (rows, columns).
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// Largest window dimension accepted.
const MAX_DIM: u16 = 1000;

/// How often the server pings an attached client.
const PING_EVERY: Duration = Duration::from_secs(20);

/// A client heard nothing from (no message, no pong) for this long is gone.
pub const CLIENT_SILENCE: Duration = Duration::from_secs(60);

/// A client whose socket takes this long to accept one message is gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(terminal))
}

/// (user id, workspace id, client's session id).
type Key = (String, String, String);

/// The server's terminal sessions.
#[derive(Default)]
pub struct Terminals {
    map: Mutex<HashMap<Key, Arc<Term>>>,
    next_gen: AtomicU64,
    /// Session tasks still running (a dying session is out of `map` but may still be here).
    running: AtomicUsize,
    closing: AtomicBool,
}

/// One session, as connections see it.
struct Term {
    ctl: mpsc::Sender<Ctl>,
    stdin: mpsc::Sender<Option<Vec<u8>>>,
    pty: OwnedFd,
}

/// Messages to a session's task.
enum Ctl {
    /// A client attaches (taking over from the one before); acknowledged, with the stream
    /// offset of the first replayed byte, once the replay is queued. A dropped acknowledgement
    /// means the session ended.
    Attach(Attachment, oneshot::Sender<u64>),
    /// The client with this generation is gone.
    Detach(u64),
    /// The server is shutting down.
    Shutdown,
}

/// A connected client, as the session's task sees it.
struct Attachment {
    generation: u64,
    out: mpsc::Sender<Vec<u8>>,
    end: oneshot::Sender<End>,
}

/// Why a client's stream ends.
enum End {
    Exit(Result<i32, String>),
    TakenOver,
    Shutdown,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Terminals {
    /// Sessions open now (attached or waiting for a reconnect).
    pub fn count(&self) -> usize {
        lock(&self.map).len()
    }

    /// Hangs up every terminal and waits (up to `limit`) for their processes to be gone.
    pub async fn shutdown(&self, limit: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let terms: Vec<Arc<Term>> = lock(&self.map).values().cloned().collect();
        let _ = tokio::time::timeout(limit, async {
            for t in terms {
                let _ = t.ctl.send(Ctl::Shutdown).await;
            }
            while self.running.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    fn get(&self, key: &Key) -> Option<Arc<Term>> {
        lock(&self.map).get(key).cloned()
    }

    fn remove(&self, key: &Key) {
        lock(&self.map).remove(key);
    }

    fn user_sessions(&self, user: &str) -> usize {
        lock(&self.map).keys().filter(|(u, _, _)| u == user).count()
    }
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded,
        format!("too many terminal sessions (at most {MAX_SESSIONS_PER_USER} per user)"),
    )
    .hint("close a terminal (`exit` in it), or reconnect to one of yours with its session id")
}

/// The query string, checked.
struct Params {
    session: String,
    /// The window size asked for, if any (a reattach without one keeps the terminal's).
    size: Option<(u16, u16)>,
    command: Option<String>,
}

fn params(raw: Option<&str>) -> ApiResult<Params> {
    let hint = "e.g. ?session=6f1c2a&rows=24&cols=80; reuse the session id to reconnect";
    let mut session = None;
    let (mut rows, mut cols) = (None, None);
    let mut command = None;
    for (k, v) in form_pairs(raw.unwrap_or(""))? {
        match k.as_str() {
            "session" => session = Some(v),
            "rows" | "cols" => {
                let n = v
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (1..=MAX_DIM).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{k}: `{v}` is not a number from 1 to {MAX_DIM}"
                        ))
                        .hint(hint)
                    })?;
                if k == "rows" {
                    rows = Some(n);
                } else {
                    cols = Some(n);
                }
            }
            "command" => {
                if v.trim().is_empty() || v.len() > 4096 || v.contains('\0') {
                    return Err(ApiError::bad_request(
                        "command: give a shell command line of at most 4096 bytes",
                    )
                    .hint("leave it out for the login shell"));
                }
                command = Some(v);
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{k}` (known: session, rows, cols, command)"
                ))
                .hint(hint))
            }
        }
    }
    let session = session.ok_or_else(|| {
        ApiError::bad_request("session: missing; the client chooses a terminal session id")
            .hint(hint)
    })?;
    if session.is_empty()
        || session.len() > 64
        || !session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ApiError::bad_request(
            "session: 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_` and `-`",
        )
        .hint("a UUID works"));
    }
    let size = match (rows, cols) {
        (None, None) => None,
        (r, c) => Some((r.unwrap_or(DEFAULT_SIZE.0), c.unwrap_or(DEFAULT_SIZE.1))),
    };
    Ok(Params {
        session,
        size,
        command,
    })
}

/// `application/x-www-form-urlencoded` pairs, with a clear error for bad encoding.
fn form_pairs(q: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = vec![];
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn decode(s: &str) -> ApiResult<String> {
    let bad = || ApiError::bad_request("the query string is not valid URL encoding");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let h = std::str::from_utf8(h).map_err(|_| bad())?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| bad())?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A reconnectable terminal over a WebSocket (see the module documentation for the protocol).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/terminal", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"),
        ("session" = String, Query, description = "client-chosen session id (1-64 of A-Za-z0-9._-); reuse it to reconnect"),
        ("rows" = Option<u16>, Query, description = "window rows (1-1000, default 24)"),
        ("cols" = Option<u16>, Query, description = "window columns (1-1000, default 80)"),
        ("command" = Option<String>, Query, description = "run `/bin/sh -c COMMAND` instead of the login shell (new sessions only)")),
    responses((status = 101, description = "WebSocket, subprotocol `warren.terminal.v1` (the token may come as a `warren.bearer.<token>` subprotocol): binary messages are terminal bytes; text messages are JSON control messages (`resize` from the client; `attached`, `exit`, `error`, `taken_over` from the server)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[allow(clippy::too_many_arguments)]
async fn terminal(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let p = params(query.as_deref())?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad_request("this route is a WebSocket: send a WebSocket upgrade request")
            .hint(format!("connect with the `{PROTOCOL}` subprotocol"))
    })?;
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.is_empty() && !offered.contains(&PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "offer the `{PROTOCOL}` subprotocol (browsers fail a handshake whose subprotocol they did not offer)"
        ))
        .hint(format!(
            r#"new WebSocket(url, ["{PROTOCOL}", "warren.bearer." + token])"#
        )));
    }
    let audit = crate::audit::upgrade_record(
        request_id.0,
        &caller,
        remote,
        crate::audit::user_agent(&headers),
        "workspace.terminal",
        &rec,
    );
    let user = caller.user.id.clone();
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| connection(state, user, rec, p, socket, audit)))
}

/// Finds the session or starts it; `Ok((term, new))`.
async fn open(
    state: &AppState,
    key: &Key,
    rec: &WorkspaceRecord,
    p: &Params,
) -> ApiResult<(Arc<Term>, bool)> {
    let terminals = &state.terminals;
    if terminals.closing.load(Ordering::SeqCst) {
        return Err(shutting_down());
    }
    if let Some(t) = terminals.get(key) {
        return Ok((t, false));
    }
    if terminals.user_sessions(&key.0) >= MAX_SESSIONS_PER_USER {
        return Err(too_many());
    }
    // The user's login shell, else bash or sh as `warren shell` and the SSH gateway pick.
    let (argv, login_shell) = match &p.command {
        Some(c) => (vec!["/bin/sh".into(), "-c".into(), c.clone()], false),
        None => (warren_api::v1::shell_fallback(), true),
    };
    let req = ExecRequest {
        command: argv,
        login_shell,
        env: [("TERM".to_string(), "xterm-256color".to_string())].into(),
        cwd: None,
        user: None,
        stdin: None,
        timeout: None,
        tty: Some(p.size.unwrap_or(DEFAULT_SIZE)),
    };
    let mut started = exec::start(state, &key.0, rec, &req).await?;
    let (Some(stdin), Some(pty)) = (started.stdin.take(), started.pty.take()) else {
        let _ = started.signaller.signal(9);
        return Err(ApiError::internal("the terminal came without a PTY"));
    };
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    exec::stdin_writer(&started, stdin, move || in_rx.blocking_recv());
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    let term = Arc::new(Term {
        ctl: ctl_tx,
        stdin: in_tx,
        pty,
    });
    {
        let mut map = lock(&terminals.map);
        // Another connection with the same id may have started it meanwhile: use that one.
        let lost = if terminals.closing.load(Ordering::SeqCst) {
            Some(Err(shutting_down()))
        } else if let Some(t) = map.get(key) {
            Some(Ok((t.clone(), false)))
        } else if map.keys().filter(|(u, _, _)| *u == key.0).count() >= MAX_SESSIONS_PER_USER {
            Some(Err(too_many()))
        } else {
            None
        };
        if let Some(r) = lost {
            drop(map);
            let _ = started.signaller.signal(9);
            return r;
        }
        map.insert(key.clone(), term.clone());
        terminals.running.fetch_add(1, Ordering::SeqCst);
    }
    let grace = state.cfg.terminal_grace;
    let st = state.clone();
    let k = key.clone();
    tokio::spawn(async move {
        run_session(&st.terminals, &k, started, ctl_rx, grace).await;
        st.terminals.running.fetch_sub(1, Ordering::SeqCst);
    });
    Ok((term, true))
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "the server is shutting down",
    )
    .hint("reconnect when it is back (a new session starts)")
}

/// The output kept for a reconnecting client.
struct Ring {
    buf: VecDeque<u8>,
    /// Bytes of output ever pushed.
    total: u64,
}

impl Ring {
    /// The stream offset of the oldest byte kept.
    fn start(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    fn push(&mut self, b: &[u8]) {
        self.total += b.len() as u64;
        if b.len() >= RING_BYTES {
            self.buf.clear();
            self.buf.extend(&b[b.len() - RING_BYTES..]);
            return;
        }
        let over = (self.buf.len() + b.len()).saturating_sub(RING_BYTES);
        self.buf.drain(..over);
        self.buf.extend(b);
    }
}

/// A session's task: owns the process, the ring and the attached client, until the process is
/// gone. Output is read only as fast as the attached client takes it (a terminal's flow
/// control); with no client it goes to the ring alone.
async fn run_session(
    terminals: &Terminals,
    key: &Key,
    mut started: exec::Started,
    mut ctl: mpsc::Receiver<Ctl>,
    grace: Duration,
) {
    let mut ring = Ring {
        buf: VecDeque::new(),
        total: 0,
    };
    // An open `pty` session on the workspace while the process lives.
    let mut activity = Some(started.activity);
    let mut client: Option<Attachment> = None;
    // Output read but not yet taken by the client.
    let mut pending: Option<Vec<u8>> = None;
    let mut alone_since = Some(tokio::time::Instant::now());
    let mut out_open = true;
    let mut exited: Option<Result<i32, String>> = None;
    let shutdown = loop {
        let expiry = alone_since.map(|t| t + grace);
        let reserve = client.as_ref().map(|c| c.out.clone());
        tokio::select! {
            cmd = ctl.recv() => match cmd {
                Some(Ctl::Attach(a, ack)) => {
                    if let Some(old) = client.take() {
                        let _ = old.end.send(End::TakenOver);
                    }
                    pending = None;
                    let replay: Vec<u8> = ring.buf.iter().copied().collect();
                    for chunk in replay.chunks(64 * 1024) {
                        // A fresh channel with room for the whole ring.
                        let _ = a.out.try_send(chunk.to_vec());
                    }
                    let _ = ack.send(ring.start());
                    if let Some(code) = exited.take() {
                        // It exited while nobody watched: this client gets the end, and the
                        // session is over.
                        let _ = a.end.send(End::Exit(code));
                        terminals.remove(key);
                        return;
                    }
                    client = Some(a);
                    alone_since = None;
                }
                Some(Ctl::Detach(generation)) => {
                    if client.as_ref().is_some_and(|c| c.generation == generation) {
                        client = None;
                        pending = None;
                        alone_since = Some(tokio::time::Instant::now());
                    }
                }
                Some(Ctl::Shutdown) | None => break true,
            },
            Some(permit) = reserve_owned(reserve), if pending.is_some() => match permit {
                Ok(permit) => {
                    if let Some(b) = pending.take() {
                        permit.send(b);
                    }
                }
                // The client's connection is ending; its Detach is on its way.
                Err(()) => pending = None,
            },
            chunk = started.out.recv(), if out_open && pending.is_none() && exited.is_none() => match chunk {
                Some((_, b)) => {
                    ring.push(&b);
                    if client.is_some() {
                        pending = Some(b);
                    }
                }
                None => out_open = false,
            },
            code = &mut started.exit, if exited.is_none() => {
                let code = code.unwrap_or_else(|_| Err("lost track of the terminal's process".into()));
                // The last output (a daemon it started may hold the PTY: not for long).
                if let Some(b) = pending.take() {
                    send_out(&client, b).await;
                }
                while let Ok(Some((_, b))) = tokio::time::timeout(exec::DRAIN, started.out.recv()).await {
                    ring.push(&b);
                    send_out(&client, b).await;
                }
                match client.take() {
                    Some(c) => {
                        let _ = c.end.send(End::Exit(code));
                        terminals.remove(key);
                        return;
                    }
                    // Kept for a reconnect until the grace period ends.
                    None => {
                        exited = Some(code);
                        drop(activity.take());
                    }
                }
            },
            () = sleep_until(expiry), if expiry.is_some() => break false,
        }
    };
    // Nobody came back in time, or the server is going away: forget the session, then hang up.
    terminals.remove(key);
    if let Some(c) = client.take() {
        let _ = c.end.send(End::Shutdown);
    }
    drop(ctl);
    if exited.is_some() {
        return;
    }
    exec::hang_up(&started.signaller, false);
    let kill_after = if shutdown {
        Duration::from_secs(2)
    } else {
        exec::GONE_GRACE
    };
    let out = &mut started.out;
    let discard = async move {
        while out.recv().await.is_some() {}
        std::future::pending::<()>().await
    };
    let gone = tokio::select! {
        r = tokio::time::timeout(kill_after, &mut started.exit) => r.is_ok(),
        () = discard => false,
    };
    if !gone {
        let _ = started.signaller.signal(9);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut started.exit).await;
    }
}

async fn reserve_owned(
    tx: Option<mpsc::Sender<Vec<u8>>>,
) -> Option<Result<mpsc::OwnedPermit<Vec<u8>>, ()>> {
    let tx = tx?;
    Some(tx.reserve_owned().await.map_err(|_| ()))
}

async fn send_out(client: &Option<Attachment>, b: Vec<u8>) {
    if let Some(c) = client {
        let _ = tokio::time::timeout(SEND_TIMEOUT, c.out.send(b)).await;
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

fn error_msg(e: &ErrorBody, fatal: bool) -> Message {
    let mut v = serde_json::json!({
        "type": "error",
        "code": e.code.as_str(),
        "message": e.message,
        "fatal": fatal,
    });
    if let Some(h) = &e.hint {
        v["hint"] = h.clone().into();
    }
    text(v)
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

/// One client connection: attach (starting the session if new), then relay until either side
/// ends.
async fn connection(
    state: AppState,
    user: String,
    rec: WorkspaceRecord,
    p: Params,
    mut socket: WebSocket,
    mut audit: NewAuditRecord,
) {
    let key: Key = (user, rec.id.clone(), p.session.clone());
    // A session that ends between lookup and attach: try once more (a new one starts).
    let mut attempt = 0;
    let (term, new, offset, out_rx, end_rx, generation) = loop {
        attempt += 1;
        let (term, new) = match open(&state, &key, &rec, &p).await {
            Ok(x) => x,
            Err(e) => {
                audit.outcome = AuditOutcome::Failure;
                audit.status = e.status.as_u16();
                audit.details_json = Some(
                    serde_json::json!({"session": p.session, "error": e.body.code.as_str()})
                        .to_string(),
                );
                crate::audit::record(&state, audit).await;
                let _ = socket.send(error_msg(&e.body, true)).await;
                let _ = socket.send(close(4000, e.body.code.as_str())).await;
                return;
            }
        };
        let generation = state.terminals.next_gen.fetch_add(1, Ordering::SeqCst);
        // Room for the whole ring replayed in 64 KiB chunks, and then some.
        let (out_tx, out_rx) = mpsc::channel(RING_BYTES / (64 * 1024) + 16);
        let (end_tx, end_rx) = oneshot::channel();
        let (ack_tx, ack_rx) = oneshot::channel();
        let a = Attachment {
            generation,
            out: out_tx,
            end: end_tx,
        };
        if term.ctl.send(Ctl::Attach(a, ack_tx)).await.is_ok() {
            if let Ok(offset) = ack_rx.await {
                break (term, new, offset, out_rx, end_rx, generation);
            }
        }
        if attempt >= 3 {
            let e = shutting_down();
            let _ = socket.send(error_msg(&e.body, true)).await;
            let _ = socket.send(close(1001, "unavailable")).await;
            return;
        }
    };
    if let (Some((rows, cols)), false) = (p.size, new) {
        let _ = warren_runtime::tty::set_window_size(term.pty.as_fd(), rows, cols);
    }
    audit.details_json = Some(
        serde_json::json!({
            "session": p.session,
            "attach": if new { "new" } else { "reattach" },
            "command": p.command,
            "size": p.size,
        })
        .to_string(),
    );
    crate::audit::record(&state, audit).await;
    let hello =
        serde_json::json!({"type": "attached", "session": p.session, "new": new, "offset": offset});
    relay(socket, &term, hello, out_rx, end_rx).await;
    let _ = term.ctl.send(Ctl::Detach(generation)).await;
}

/// Control messages a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { rows: u32, cols: u32 },
}

/// Copies output to the socket and input to the session until the session ends this client or
/// the client goes away.
async fn relay(
    socket: WebSocket,
    term: &Term,
    hello: serde_json::Value,
    mut out_rx: mpsc::Receiver<Vec<u8>>,
    mut end_rx: oneshot::Receiver<End>,
) {
    let (mut sink, mut stream) = socket.split();
    // Non-fatal errors from the reading side, sent by the writing side.
    let (note_tx, mut note_rx) = mpsc::channel::<Message>(8);
    let reader = async {
        loop {
            let msg = match tokio::time::timeout(CLIENT_SILENCE, stream.next()).await {
                Ok(Some(Ok(m))) => m,
                // Closed, broken, or silent too long.
                _ => return,
            };
            match msg {
                Message::Binary(b) => {
                    if !b.is_empty() && term.stdin.send(Some(b.to_vec())).await.is_err() {
                        return;
                    }
                }
                Message::Text(t) => {
                    if let Err(e) = control(term, t.as_str()) {
                        let e = ApiError::bad_request(e)
                            .hint(r#"send {"type":"resize","rows":R,"cols":C}; keystrokes go in binary messages"#);
                        let _ = note_tx.send(error_msg(&e.body, false)).await;
                    }
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    let writer = async {
        if !send(&mut sink, text(hello)).await {
            return;
        }
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut out_open = true;
        loop {
            let msg = tokio::select! {
                biased;
                b = out_rx.recv(), if out_open => match b {
                    Some(b) => Message::Binary(b.into()),
                    // The end follows.
                    None => {
                        out_open = false;
                        continue;
                    }
                },
                end = &mut end_rx => {
                    let last = match end {
                        Ok(End::Exit(Ok(code))) => vec![
                            text(serde_json::json!({"type": "exit", "code": code})),
                            close(1000, "exited"),
                        ],
                        Ok(End::Exit(Err(e))) => {
                            let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError, e);
                            vec![error_msg(&e.body, true), close(4000, "runtime_error")]
                        }
                        Ok(End::TakenOver) => vec![
                            text(serde_json::json!({"type": "taken_over"})),
                            close(4001, "taken_over"),
                        ],
                        Ok(End::Shutdown) => vec![
                            error_msg(&shutting_down().body, true),
                            close(1001, "unavailable"),
                        ],
                        Err(_) => vec![close(1011, "internal")],
                    };
                    // Output queued before the end goes first (`biased` took it already).
                    for m in last {
                        if !send(&mut sink, m).await {
                            break;
                        }
                    }
                    return;
                },
                Some(n) = note_rx.recv() => n,
                _ = ping.tick() => Message::Ping(Vec::new().into()),
            };
            if !send(&mut sink, msg).await {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

/// Sends one message; false when the client is gone or stopped reading.
async fn send(sink: &mut futures_util::stream::SplitSink<WebSocket, Message>, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(m)).await,
        Ok(Ok(()))
    )
}

/// Applies a control message; the error says what was wrong.
fn control(term: &Term, t: &str) -> Result<(), String> {
    if t.len() > MAX_CONTROL_BYTES {
        return Err(format!(
            "control message of {} bytes: at most {MAX_CONTROL_BYTES}",
            t.len()
        ));
    }
    match serde_json::from_str::<Control>(t) {
        Ok(Control::Resize { rows, cols }) => {
            let ok = |n: u32| (1..=u32::from(MAX_DIM)).contains(&n);
            if !ok(rows) || !ok(cols) {
                return Err(format!(
                    "resize: rows and cols must be from 1 to {MAX_DIM} (got {rows}×{cols})"
                ));
            }
            // In range, so they fit.
            let (r, c) = (rows as u16, cols as u16);
            warren_runtime::tty::set_window_size(term.pty.as_fd(), r, c)
                .map_err(|e| format!("resize: {e}"))
        }
        Err(e) => Err(format!("invalid control message: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_latest_bytes() {
        let mut r = Ring {
            buf: VecDeque::new(),
            total: 0,
        };
        r.push(b"abc");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"abc");
        r.push(&vec![b'x'; RING_BYTES - 1]);
        assert_eq!(r.buf.len(), RING_BYTES);
        assert_eq!(r.buf[0], b'c');
        let mut big = vec![b'y'; RING_BYTES + 10];
        big[10] = b'z';
        r.push(&big);
        assert_eq!(r.buf.len(), RING_BYTES);
        assert_eq!(r.buf[0], b'z');
        assert_eq!(r.total, (3 + RING_BYTES - 1 + RING_BYTES + 10) as u64);
        assert_eq!(r.start(), r.total - RING_BYTES as u64);
    }

    #[test]
    fn query_parameters_are_checked() {
        let p = params(Some("session=a-1.b_2&rows=50&cols=132&command=echo+hi%21")).unwrap();
        assert_eq!(
            (p.session.as_str(), p.size, p.command.as_deref()),
            ("a-1.b_2", Some((50, 132)), Some("echo hi!"))
        );
        let p = params(Some("session=x")).unwrap();
        assert_eq!((p.size, p.command), (None, None));
        assert_eq!(
            params(Some("session=x&cols=100")).unwrap().size,
            Some((24, 100))
        );
        for (q, needle) in [
            ("", "session: missing"),
            ("session=", "session: 1 to 64"),
            ("session=a/b", "session: 1 to 64"),
            ("session=x&rows=0", "rows"),
            ("session=x&cols=1001", "cols"),
            ("session=x&rows=abc", "rows"),
            ("session=x&token=wrn_", "unknown query parameter `token`"),
            ("session=%zz", "URL encoding"),
            ("session=x&command=", "command"),
        ] {
            let e = params(Some(q)).err().unwrap_or_else(|| panic!("{q}"));
            assert!(e.body.message.contains(needle), "{q}: {}", e.body.message);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        assert!(params(Some(&format!("session={}", "a".repeat(65)))).is_err());
    }
}
