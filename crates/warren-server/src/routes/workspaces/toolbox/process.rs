//! Toolbox processes: run a command and get its output (one JSON answer, or Server-Sent Events),
//! background processes the server keeps track of (stdin, signals, wait, output kept in a ring),
//! and sessions that keep a shell's working directory and exported variables between commands.
//!
//! Every process runs inside the workspace as an ordinary exec (its namespaces, cgroup, seccomp
//! and user; the remote user by default). Output is bounded: a run keeps the first
//! [`MAX_OUTPUT`] bytes of each stream then a marker line; a background process keeps the last
//! [`RING`] bytes of each. A `timeout` sends SIGTERM to the process and its descendants, then
//! SIGKILL after [`super::super::exec::GONE_GRACE`].
//!
//! Session audit: each process's start and end are recorded (`session.process_start`,
//! `session.process_end`). For a buffered run the request's own audit record is the end record
//! (it carries the request id, address and client), and the start is written while the process
//! starts; for a streamed run or a background process the request's record is the start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::activity::ActivityKind;
use warren_api::auth::Op;
use warren_api::ErrorCode;
use warren_runtime::{ExecProcess, Stdio};
use warren_store::WorkspaceRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use crate::routes::workspaces::exec::{Slot, DRAIN, GONE_GRACE};
use crate::session_audit::{self, SessionEvent, Via};

/// Output a run keeps per stream; the rest is counted and dropped.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Output a background process keeps per stream (the most recent).
pub const RING: usize = 1 << 20;
/// Background processes per workspace (running or ended, until deleted).
pub const MAX_PROCESSES: usize = 64;
/// Sessions per workspace.
pub const MAX_SESSIONS: usize = 16;
/// The longest a `wait` holds the request.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long writing a background process's stdin may block (it does not read).
const STDIN_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run))
        .routes(routes!(list_processes, start_process))
        .routes(routes!(get_process, delete_process))
        .routes(routes!(process_stdin))
        .routes(routes!(process_signal))
        .routes(routes!(process_wait))
        .routes(routes!(process_output))
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(delete_session))
        .routes(routes!(session_run))
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// A command to run: exactly one of `command` (argv) and `shell` (run by `/bin/sh -c`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    /// The program and its arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A shell command line, run by `/bin/sh -c`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Working directory inside the workspace (default: the user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// User name or uid (default: the workspace's remote user).
    #[serde(default)]
    pub user: Option<String>,
    /// Time limit, e.g. `30s`: then SIGTERM to the process and its descendants, SIGKILL after a
    /// grace period.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Text written to the process's stdin, then EOF (runs only; without it stdin is empty).
    #[serde(default)]
    pub stdin: Option<String>,
    /// A name for a background process (`POST processes` only).
    #[serde(default)]
    pub name: Option<String>,
}

/// What a run gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RunResult {
    /// The exit code (128 + N when killed by signal N); none when the time limit killed it or the
    /// workspace stopped under it.
    pub exit_code: Option<i32>,
    /// Standard output (lossy UTF-8), at most 1 MiB, then the truncation marker.
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// Whether stdout was cut (`[warren: output truncated: N bytes dropped]` ends it).
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Killed by its time limit.
    pub timed_out: bool,
    /// Wall time from start to exit, milliseconds.
    pub duration_ms: u64,
    /// A session's working directory after the command (sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A background process.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    /// `p_...`, unique in its workspace.
    pub id: String,
    /// The name given at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// argv (a shell command line is `["/bin/sh", "-c", LINE]`).
    pub command: Vec<String>,
    /// The working directory asked for.
    pub cwd: Option<String>,
    /// The user asked for.
    pub user: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// Still running.
    pub running: bool,
    /// Its exit code once ended (none when killed by its time limit or lost with the workspace).
    pub exit_code: Option<i32>,
    /// RFC 3339 UTC, once ended.
    pub ended_at: Option<String>,
    /// Killed by its time limit.
    pub timed_out: bool,
}

/// A signal to send: a name (`TERM`, `KILL`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, `STOP`,
/// `CONT`, with or without `SIG`) or a number from 1 to 64.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal.
    #[schema(value_type = Object)]
    pub signal: serde_json::Value,
}

/// A slice of a background process's output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputChunk {
    /// The bytes from the offset asked for (or the oldest still kept), as lossy UTF-8.
    pub data: String,
    /// Offset of the byte after `data`: ask from here next time.
    pub next_offset: u64,
    /// Bytes between the offset asked for and `data` that the ring no longer holds.
    pub truncated_before: u64,
}

/// Both streams' output (`stream=both`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BothOutput {
    /// stdout from `offset`.
    pub stdout: OutputChunk,
    /// stderr from `stderr_offset`.
    pub stderr: OutputChunk,
}

/// Query of `GET processes/{id}/output`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// `stdout` (default), `stderr` or `both`.
    pub stream: Option<String>,
    /// Byte offset in the stream (stdout for `both`).
    pub offset: Option<u64>,
    /// stderr's offset for `both`.
    pub stderr_offset: Option<u64>,
    /// Stream Server-Sent Events (`stdout`, `stderr`, then `exit`) until the process ends.
    pub follow: Option<bool>,
}

/// Query of `GET processes/{id}/wait`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// How long to wait (default `30s`, at most `10m`); then the process is answered still
    /// running.
    pub timeout: Option<String>,
}

/// Query of `POST processes/{id}/stdin`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StdinQuery {
    /// Close stdin after writing the body.
    pub eof: Option<bool>,
}

/// A new session.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Starting directory (default: the user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Variables exported at start.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// User the session's commands run as (default: the remote user).
    #[serde(default)]
    pub user: Option<String>,
}

/// A session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// `s_...`, unique in its workspace.
    pub id: String,
    /// Its working directory after the last command.
    pub cwd: String,
    /// The user its commands run as.
    pub user: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// A command in a session.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCommand {
    /// A shell command line (evaluated by `/bin/sh` in the session's state).
    pub command: String,
    /// Time limit for this command.
    #[serde(default)]
    pub timeout: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validation

fn no_nul(field: &str, s: &str) -> ApiResult<()> {
    if s.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field}: NUL bytes are not allowed"
        )));
    }
    Ok(())
}

fn parse_timeout(t: Option<&str>) -> ApiResult<Option<Duration>> {
    let Some(t) = t else { return Ok(None) };
    let d = warren_api::template::parse_duration(t).map_err(|e| {
        ApiError::bad_request(format!("timeout `{t}`: {e}")).hint("e.g. \"30s\", \"5m\" or \"1h\"")
    })?;
    if d.is_zero() {
        return Err(
            ApiError::bad_request(format!("timeout `{t}`: must be more than zero"))
                .hint("leave it out for no time limit"),
        );
    }
    Ok(Some(d))
}

/// A checked command: argv, environment, cwd, user, time limit.
struct Checked {
    argv: Vec<String>,
    env: Vec<String>,
    cwd: Option<String>,
    user: Option<String>,
    timeout: Option<Duration>,
}

fn check(req: &RunCommand) -> ApiResult<Checked> {
    let argv = match (&req.command, &req.shell) {
        (Some(_), Some(_)) => {
            return Err(
                ApiError::bad_request("command, shell: give one of them, not both")
                    .hint(r#"e.g. {"command": ["ls", "-l"]} or {"shell": "ls -l | wc -l"}"#),
            )
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "command: give the program and its arguments (or `shell` for a command line)",
            )
            .hint(r#"e.g. {"command": ["ls", "-l"]} or {"shell": "ls -l | wc -l"}"#))
        }
        (Some(c), None) => {
            if c.is_empty() || c[0].is_empty() {
                return Err(
                    ApiError::bad_request("command: give the program and its arguments")
                        .hint(r#"e.g. {"command": ["ls", "-l"]}"#),
                );
            }
            for a in c {
                no_nul("command", a)?;
            }
            c.clone()
        }
        (None, Some(s)) => {
            if s.trim().is_empty() {
                return Err(ApiError::bad_request("shell: the command line is empty")
                    .hint(r#"e.g. {"shell": "ls -l | wc -l"}"#));
            }
            no_nul("shell", s)?;
            vec!["/bin/sh".into(), "-c".into(), s.clone()]
        }
    };
    let env = check_env(&req.env)?;
    if let Some(c) = &req.cwd {
        if c.is_empty() {
            return Err(ApiError::bad_request(
                "cwd: empty; leave it out for the home directory",
            ));
        }
        no_nul("cwd", c)?;
    }
    if let Some(u) = &req.user {
        if u.is_empty() {
            return Err(ApiError::bad_request(
                "user: empty; leave it out for the remote user",
            ));
        }
        no_nul("user", u)?;
    }
    Ok(Checked {
        argv,
        env,
        cwd: req.cwd.clone(),
        user: req.user.clone(),
        timeout: parse_timeout(req.timeout.as_deref())?,
    })
}

fn check_env(env: &BTreeMap<String, String>) -> ApiResult<Vec<String>> {
    let mut out = Vec::with_capacity(env.len());
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "env: `{k}` is not a variable name"
            )));
        }
        no_nul("env", v)?;
        out.push(format!("{k}={v}"));
    }
    Ok(out)
}

fn parse_signal(v: &serde_json::Value) -> ApiResult<i32> {
    let bad = || {
        ApiError::bad_request(format!("signal: unknown signal {v}")).hint(
            "give TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT or a number from 1 to 64",
        )
    };
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .filter(|n| (1..=64).contains(n))
            .map(|n| n as i32)
            .ok_or_else(bad),
        serde_json::Value::String(s) => {
            let up = s.trim().to_ascii_uppercase();
            let name = up.strip_prefix("SIG").unwrap_or(&up);
            Ok(match name {
                "HUP" => 1,
                "INT" => 2,
                "QUIT" => 3,
                "KILL" => 9,
                "USR1" => 10,
                "USR2" => 12,
                "TERM" => 15,
                "CONT" => 18,
                "STOP" => 19,
                _ => match name.parse::<i32>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return Err(bad()),
                },
            })
        }
        _ => Err(bad()),
    }
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
        .hint("see /api/v1/openapi.json for the parameters")
}

// ---------------------------------------------------------------------------------------------
// Starting and driving a process

/// Signals a process and the processes it started.
pub(crate) struct Ctl {
    signaller: warren_runtime::Signaller,
    pid: i32,
    ws_id: String,
}

impl Ctl {
    /// Sends `sig` to the process and every descendant (found on the host's `/proc`, and only
    /// those in the workspace's cgroup), so a shell's children go too.
    pub(crate) fn signal_tree(&self, sig: i32) {
        let tree = descendants(self.pid, &self.ws_id);
        let _ = self.signaller.signal(sig);
        if let Some(s) = rustix::process::Signal::from_named_raw(sig) {
            for p in tree {
                if let Some(pid) = rustix::process::Pid::from_raw(p) {
                    let _ = rustix::process::kill_process(pid, s);
                }
            }
        }
    }

    /// Sends `sig` to the process alone.
    fn signal(&self, sig: i32) {
        let _ = self.signaller.signal(sig);
    }
}

/// The descendants of host pid `root` whose cgroup names workspace `ws_id`.
fn descendants(root: i32, ws_id: &str) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<i32>().ok())
        {
            parent.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.retain(|p| {
        std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains(ws_id))
    });
    out
}

/// A started process's pipes, exit and control.
struct Spawned {
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    exit: oneshot::Receiver<Result<i32, String>>,
    ctl: Arc<Ctl>,
}

async fn spawn(state: &AppState, rec: &WorkspaceRecord, c: &Checked) -> ApiResult<Spawned> {
    let process = ExecProcess {
        argv: c.argv.clone(),
        env: c.env.clone(),
        cwd: c.cwd.clone(),
        user: c.user.clone(),
        tty: None,
        detach: false,
        login_shell: false,
    };
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
        .exec_record(rec.clone(), process, Some(stdio))
        .await?;
    state.metrics.execs.inc();
    let stdout = pipe::Receiver::from_owned_fd(out_r.into()).map_err(ApiError::internal)?;
    let stderr = pipe::Receiver::from_owned_fd(err_r.into()).map_err(ApiError::internal)?;
    let stdin = pipe::Sender::from_owned_fd(in_w.into()).map_err(ApiError::internal)?;
    let signaller = session.signaller().map_err(ApiError::internal)?;
    let pid = session.pid;
    let (exit_tx, exit) = oneshot::channel();
    // A thread of its own, not the blocking pool: a long-running command must not take a slot
    // other work (engine operations) needs.
    std::thread::spawn(move || {
        let _ = exit_tx.send(session.wait().map_err(|e| e.to_string()));
    });
    Ok(Spawned {
        stdin: Some(stdin),
        stdout,
        stderr,
        exit,
        ctl: Arc::new(Ctl {
            signaller,
            pid,
            ws_id: rec.id.clone(),
        }),
    })
}

/// How a driven process ended.
struct Ended {
    code: Result<i32, String>,
    timed_out: bool,
    /// Its consumer went away before it ended (it was hung up).
    abandoned: bool,
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads a process's output into `send` until it exits and both pipes end (or, after the exit,
/// [`DRAIN`] passes: a daemon it started may hold them open). The time limit sends SIGTERM to
/// the tree, SIGKILL after a grace; `gone` finishing (the consumer left) hangs it up likewise.
async fn drive<F, Fut>(
    sp: &mut Spawned,
    timeout: Option<Duration>,
    mut send: F,
    gone: impl std::future::Future<Output = ()>,
) -> Ended
where
    F: FnMut(u8, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut out_open = true;
    let mut err_open = true;
    let mut bo = vec![0u8; 64 * 1024];
    let mut be = vec![0u8; 64 * 1024];
    let deadline = sleep_until_opt(timeout.map(|t| tokio::time::Instant::now() + t));
    tokio::pin!(deadline);
    tokio::pin!(gone);
    let mut timed_out = false;
    let mut abandoned = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut code: Option<Result<i32, String>> = None;
    loop {
        if code.is_some() && !out_open && !err_open {
            break;
        }
        tokio::select! {
            r = sp.stdout.read(&mut bo), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => if !abandoned && !send(1, bo[..n].to_vec()).await {
                    abandoned = true;
                    sp.ctl.signal_tree(1);
                    kill_at = Some(tokio::time::Instant::now() + GONE_GRACE);
                },
            },
            r = sp.stderr.read(&mut be), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => if !abandoned && !send(2, be[..n].to_vec()).await {
                    abandoned = true;
                    sp.ctl.signal_tree(1);
                    kill_at = Some(tokio::time::Instant::now() + GONE_GRACE);
                },
            },
            r = &mut sp.exit, if code.is_none() => {
                code = Some(r.unwrap_or_else(|_| Err("lost track of the process".into())));
                if out_open || err_open {
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
            }
            () = &mut deadline, if !timed_out && code.is_none() => {
                timed_out = true;
                sp.ctl.signal_tree(15);
                kill_at = Some(tokio::time::Instant::now() + GONE_GRACE);
            }
            () = sleep_until_opt(kill_at), if kill_at.is_some() && code.is_none() => {
                sp.ctl.signal_tree(9);
                kill_at = None;
            }
            () = sleep_until_opt(drain_until), if drain_until.is_some() => break,
            () = &mut gone, if !abandoned && code.is_none() => {
                abandoned = true;
                sp.ctl.signal_tree(1);
                kill_at = Some(tokio::time::Instant::now() + GONE_GRACE);
            }
        }
    }
    Ended {
        code: code.unwrap_or_else(|| Err("lost track of the process".into())),
        timed_out,
        abandoned,
    }
}

/// The first [`MAX_OUTPUT`] bytes of a stream, and how many more came.
#[derive(Default)]
struct Capped {
    data: Vec<u8>,
    dropped: u64,
}

impl Capped {
    fn push(&mut self, b: &[u8]) {
        let room = MAX_OUTPUT.saturating_sub(self.data.len());
        let take = room.min(b.len());
        self.data.extend_from_slice(&b[..take]);
        self.dropped += (b.len() - take) as u64;
    }

    fn finish(self) -> (String, bool) {
        let mut s = String::from_utf8_lossy(&self.data).into_owned();
        if self.dropped > 0 {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&format!(
                "[warren: output truncated: {} bytes dropped]\n",
                self.dropped
            ));
        }
        (s, self.dropped > 0)
    }
}

fn started_event(id: &str, c: &Checked) -> SessionEvent {
    SessionEvent::ProcessStarted {
        id: id.to_string(),
        argv: c.argv.clone(),
        cwd: c.cwd.clone(),
        user: c.user.clone(),
        via: Via::Toolbox,
    }
}

fn ended_event(
    id: &str,
    c: &Checked,
    started_at: &str,
    exit_code: Option<i32>,
    timed_out: bool,
) -> SessionEvent {
    SessionEvent::ProcessEnded {
        id: id.to_string(),
        argv: c.argv.clone(),
        cwd: c.cwd.clone(),
        user: c.user.clone(),
        via: Via::Toolbox,
        started_at: started_at.to_string(),
        ended_at: session_audit::now(),
        exit_code,
        timed_out,
    }
}

/// A session event as the request's own audit record (see the module documentation).
fn note_for(rec: &WorkspaceRecord, caller: &Caller, ev: &SessionEvent) -> AuditNote {
    let r = warren_store::session::session_record(rec, Some(&session_audit::actor(caller)), ev);
    AuditNote {
        action: Some(r.action),
        target_type: Some("workspace".into()),
        target_id: Some(rec.id.clone()),
        target_name: Some(rec.name.to_string()),
        diff_json: None,
        details_json: r.details_json,
    }
}

/// Runs a command to its end and gives its buffered result and its end record. The process is
/// driven by a task of its own: if the client goes away it is hung up, and its end is recorded
/// there.
async fn run_buffered(
    state: &AppState,
    caller: &Caller,
    rec: &WorkspaceRecord,
    c: Checked,
    stdin: Option<String>,
) -> ApiResult<(RunResult, SessionEvent)> {
    let slot = Slot::take(&caller.user.id)?;
    let id = session_audit::process_id();
    let started_at = session_audit::now();
    let t0 = Instant::now();
    // The start record is written while the process starts; both are done before the answer.
    let (_, sp) = tokio::join!(
        session_audit::record(state, rec, Some(caller), started_event(&id, &c)),
        spawn(state, rec, &c)
    );
    let mut sp = match sp {
        Ok(sp) => sp,
        Err(e) => {
            let ev = ended_event(&id, &c, &started_at, None, false);
            session_audit::record(state, rec, Some(caller), ev).await;
            return Err(e);
        }
    };
    let activity = state.activity.session(&rec.id, ActivityKind::Exec);
    let (tx, rx) = oneshot::channel::<(RunResult, SessionEvent)>();
    let (st, rec2, caller2) = (state.clone(), rec.clone(), caller.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let _activity = activity;
        if let (Some(mut w), Some(text)) = (sp.stdin.take(), stdin) {
            tokio::spawn(async move {
                let _ = w.write_all(text.as_bytes()).await;
            });
        }
        let mut out = Capped::default();
        let mut err = Capped::default();
        let mut tx = tx;
        let ended = drive(
            &mut sp,
            c.timeout,
            |chan, b| {
                if chan == 1 {
                    out.push(&b);
                } else {
                    err.push(&b);
                }
                std::future::ready(true)
            },
            async { tx.closed().await },
        )
        .await;
        let duration_ms = t0.elapsed().as_millis() as u64;
        let exit_code = match (&ended.code, ended.timed_out) {
            (Ok(code), false) => Some(*code),
            _ => None,
        };
        let ev = ended_event(&id, &c, &started_at, exit_code, ended.timed_out);
        let (stdout, stdout_truncated) = out.finish();
        let (stderr, stderr_truncated) = err.finish();
        let result = RunResult {
            exit_code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            timed_out: ended.timed_out,
            duration_ms,
            cwd: None,
        };
        if ended.abandoned || tx.send((result, ev.clone())).is_err() {
            // Nobody to answer: the end is recorded here.
            session_audit::record(&st, &rec2, Some(&caller2), ev).await;
        }
    });
    rx.await
        .map_err(|_| ApiError::internal("lost track of the process"))
}

fn sse_output(chan: u8, bytes: Vec<u8>) -> String {
    let data = match String::from_utf8(bytes) {
        Ok(s) => serde_json::json!({ "text": s }),
        Err(e) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes())
        }),
    };
    let name = if chan == 2 { "stderr" } else { "stdout" };
    format!("event: {name}\ndata: {data}\n\n")
}

fn sse_exit(code: &Result<i32, String>, timed_out: bool) -> String {
    match code {
        Ok(c) if !timed_out => format!(
            "event: exit\ndata: {}\n\n",
            serde_json::json!({"code": c, "timed_out": false})
        ),
        Ok(_) => format!(
            "event: exit\ndata: {}\n\n",
            serde_json::json!({"code": null, "timed_out": true})
        ),
        Err(e) => format!(
            "event: exit\ndata: {}\n\n",
            serde_json::json!({"code": null, "timed_out": timed_out, "error": e})
        ),
    }
}

fn sse_response(rx: mpsc::Receiver<Result<String, std::convert::Infallible>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Runs a command, its output streamed as Server-Sent Events.
async fn run_sse(
    state: &AppState,
    caller: &Caller,
    rec: &WorkspaceRecord,
    c: Checked,
    stdin: Option<String>,
) -> ApiResult<Response> {
    let slot = Slot::take(&caller.user.id)?;
    let id = session_audit::process_id();
    let started_at = session_audit::now();
    let mut sp = spawn(state, rec, &c).await?;
    let note = note_for(rec, caller, &started_event(&id, &c));
    let activity = state.activity.session(&rec.id, ActivityKind::Exec);
    let (tx, rx) = mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    let (st, rec2, caller2) = (state.clone(), rec.clone(), caller.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let _activity = activity;
        if let (Some(mut w), Some(text)) = (sp.stdin.take(), stdin) {
            tokio::spawn(async move {
                let _ = w.write_all(text.as_bytes()).await;
            });
        }
        let ended = drive(
            &mut sp,
            c.timeout,
            |chan, b| {
                let tx = tx.clone();
                async move { tx.send(Ok(sse_output(chan, b))).await.is_ok() }
            },
            async { tx.closed().await },
        )
        .await;
        if !ended.abandoned {
            let _ = tx.send(Ok(sse_exit(&ended.code, ended.timed_out))).await;
        }
        let exit_code = match (&ended.code, ended.timed_out) {
            (Ok(code), false) => Some(*code),
            _ => None,
        };
        let ev = ended_event(&id, &c, &started_at, exit_code, ended.timed_out);
        session_audit::record(&st, &rec2, Some(&caller2), ev).await;
    });
    Ok((axum::Extension(note), sse_response(rx)).into_response())
}

/// Runs a command in the workspace and answers its output and exit code: one JSON `RunResult`,
/// or with `Accept: text/event-stream` Server-Sent Events `stdout` and `stderr` (data
/// `{"text"}` or `{"base64"}`) then `exit` (`{"code", "timed_out"}`).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/process/run", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = RunCommand,
    responses((status = 200, body = RunResult, description = "JSON, or text/event-stream when asked for"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    Json(req): Json<RunCommand>,
) -> ApiResult<Response> {
    let c = check(&req)?;
    if req.name.is_some() {
        return Err(
            ApiError::bad_request("name: only background processes have names")
                .hint("POST .../toolbox/processes starts a background process"),
        );
    }
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    if wants_sse(&headers) {
        return run_sse(&state, &caller, &rec, c, req.stdin).await;
    }
    let (result, ev) = run_buffered(&state, &caller, &rec, c, req.stdin).await?;
    let note = note_for(&rec, &caller, &ev);
    Ok((axum::Extension(note), Json(result)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Background processes and sessions: the registry

/// The last [`RING`] bytes of a stream and the offset of the first of them.
#[derive(Default)]
struct Ring {
    buf: VecDeque<u8>,
    start: u64,
}

impl Ring {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend(b.iter().copied());
        if self.buf.len() > RING {
            let over = self.buf.len() - RING;
            self.buf.drain(..over);
            self.start += over as u64;
        }
    }

    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Bytes from `offset` (or the oldest kept), the next offset and how many were lost.
    fn read(&self, offset: u64) -> (Vec<u8>, u64, u64) {
        let from = offset.clamp(self.start, self.end());
        let lost = self.start.saturating_sub(offset);
        let i = (from - self.start) as usize;
        let data: Vec<u8> = self.buf.range(i..).copied().collect();
        (data, self.end(), lost)
    }
}

#[derive(Default)]
struct BgState {
    running: bool,
    exit_code: Option<i32>,
    ended_at: Option<String>,
    timed_out: bool,
    out: Ring,
    err: Ring,
}

/// A background process.
struct Bg {
    id: String,
    name: Option<String>,
    command: Vec<String>,
    cwd: Option<String>,
    user: Option<String>,
    started_at: String,
    st: Mutex<BgState>,
    changed: watch::Sender<()>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    ctl: Arc<Ctl>,
}

impl Bg {
    fn info(&self) -> ProcessInfo {
        let st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        ProcessInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            started_at: self.started_at.clone(),
            running: st.running,
            exit_code: st.exit_code,
            ended_at: st.ended_at.clone(),
            timed_out: st.timed_out,
        }
    }

    fn running(&self) -> bool {
        self.st.lock().unwrap_or_else(|p| p.into_inner()).running
    }
}

/// A session: its state lives in the workspace, in `dir`.
struct Sess {
    id: String,
    dir: String,
    user: Option<String>,
    created_at: String,
    cwd: Mutex<String>,
    /// One command at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Sess {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            cwd: self.cwd.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            user: self.user.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

#[derive(Default)]
struct WsEntry {
    procs: BTreeMap<String, Arc<Bg>>,
    sessions: BTreeMap<String, Arc<Sess>>,
}

/// The server's background processes and sessions, per workspace (in memory: they end with
/// the server, as their processes do).
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, WsEntry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WsEntry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a workspace's processes and sessions (it stopped or was deleted), killing what
    /// still runs.
    pub fn forget_workspace(&self, ws_id: &str) {
        let gone = self.lock().remove(ws_id);
        if let Some(e) = gone {
            for p in e.procs.values() {
                if p.running() {
                    p.ctl.signal_tree(9);
                }
            }
        }
    }

    /// How many processes and sessions the registry holds in all (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (
            g.values().map(|e| e.procs.len()).sum(),
            g.values().map(|e| e.sessions.len()).sum(),
        )
    }

    fn procs(&self, ws: &str) -> Vec<Arc<Bg>> {
        self.lock()
            .get(ws)
            .map(|e| e.procs.values().cloned().collect())
            .unwrap_or_default()
    }

    fn proc(&self, ws: &str, id: &str) -> ApiResult<Arc<Bg>> {
        check_id("p", "process", id)?;
        self.lock()
            .get(ws)
            .and_then(|e| e.procs.get(id).cloned())
            .ok_or_else(|| {
                ApiError::not_found("process", id)
                    .hint("GET .../toolbox/processes lists the workspace's background processes")
            })
    }

    fn sess(&self, ws: &str, id: &str) -> ApiResult<Arc<Sess>> {
        check_id("s", "session", id)?;
        self.lock()
            .get(ws)
            .and_then(|e| e.sessions.get(id).cloned())
            .ok_or_else(|| {
                ApiError::not_found("session", id)
                    .hint("GET .../toolbox/sessions lists the workspace's sessions")
            })
    }
}

/// A well-formed id: `PREFIX_` and 16 lowercase hex digits (checked after authorization, so
/// the answer tells nothing about a workspace the caller may not see).
fn check_id(prefix: &str, what: &str, id: &str) -> ApiResult<()> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| {
            r.len() == 16
                && r.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        return Ok(());
    }
    let shown: String = id.chars().take(40).collect();
    Err(
        ApiError::bad_request(format!("id: `{shown}` is not a {what} id ({prefix}_...)")).hint(
            if prefix == "p" {
                "GET .../toolbox/processes lists them"
            } else {
                "GET .../toolbox/sessions lists them"
            },
        ),
    )
}

fn too_many(what: &str, max: usize, hint: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded,
        format!("too many {what} in this workspace (at most {max})"),
    )
    .hint(hint.to_string())
}

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

// ---------------------------------------------------------------------------------------------
// Background process routes

/// Starts a background process; its output is kept (the last 1 MiB of each stream) until it is
/// deleted. `stdin` text is written first and stdin stays open.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/processes", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = RunCommand,
    responses((status = 201, body = ProcessInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn start_process(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<RunCommand>,
) -> ApiResult<Response> {
    let c = check(&req)?;
    if let Some(n) = &req.name {
        if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "name: 1 to 128 characters, no control characters",
            ));
        }
    }
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let limit_hint = "DELETE .../toolbox/processes/{id} forgets an ended process";
    if state.toolbox.procs(&rec.id).len() >= MAX_PROCESSES {
        return Err(too_many("background processes", MAX_PROCESSES, limit_hint));
    }
    let mut sp = spawn(&state, &rec, &c).await?;
    let id = new_id("p");
    let bg = Arc::new(Bg {
        id: id.clone(),
        name: req.name.clone(),
        command: c.argv.clone(),
        cwd: c.cwd.clone(),
        user: c.user.clone(),
        started_at: session_audit::now(),
        st: Mutex::new(BgState {
            running: true,
            ..Default::default()
        }),
        changed: watch::channel(()).0,
        stdin: tokio::sync::Mutex::new(None),
        ctl: sp.ctl.clone(),
    });
    let mut stdin = sp.stdin.take();
    if let (Some(w), Some(text)) = (stdin.as_mut(), &req.stdin) {
        let _ = tokio::time::timeout(STDIN_WRITE_TIMEOUT, w.write_all(text.as_bytes())).await;
    }
    *bg.stdin.lock().await = stdin;
    {
        let mut g = state.toolbox.lock();
        let e = g.entry(rec.id.clone()).or_default();
        if e.procs.len() >= MAX_PROCESSES {
            drop(g);
            sp.ctl.signal_tree(9);
            return Err(too_many("background processes", MAX_PROCESSES, limit_hint));
        }
        e.procs.insert(id.clone(), bg.clone());
    }
    let note = note_for(&rec, &caller, &started_event(&id, &c));
    let activity = state.activity.session(&rec.id, ActivityKind::Exec);
    let (st, rec2, caller2, bg2) = (state.clone(), rec.clone(), caller.clone(), bg.clone());
    tokio::spawn(async move {
        let _activity = activity;
        let ended = drive(
            &mut sp,
            c.timeout,
            |chan, b| {
                {
                    let mut s = bg2.st.lock().unwrap_or_else(|p| p.into_inner());
                    if chan == 1 {
                        s.out.push(&b);
                    } else {
                        s.err.push(&b);
                    }
                }
                bg2.changed.send_replace(());
                std::future::ready(true)
            },
            std::future::pending(),
        )
        .await;
        let exit_code = match (&ended.code, ended.timed_out) {
            (Ok(code), false) => Some(*code),
            _ => None,
        };
        let ev = ended_event(&bg2.id, &c, &bg2.started_at, exit_code, ended.timed_out);
        {
            let mut s = bg2.st.lock().unwrap_or_else(|p| p.into_inner());
            s.running = false;
            s.exit_code = exit_code;
            s.timed_out = ended.timed_out;
            s.ended_at = Some(session_audit::now());
        }
        *bg2.stdin.lock().await = None;
        bg2.changed.send_replace(());
        session_audit::record(&st, &rec2, Some(&caller2), ev).await;
    });
    Ok((StatusCode::CREATED, axum::Extension(note), Json(bg.info())).into_response())
}

/// The workspace's background processes (running and ended, until deleted).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/processes", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = Vec<ProcessInfo>), (status = 404, body = ErrorBody)))]
async fn list_processes(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<ProcessInfo>>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    Ok(Json(
        state
            .toolbox
            .procs(&rec.id)
            .iter()
            .map(|b| b.info())
            .collect(),
    ))
}

/// A background process.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)")),
    responses((status = 200, body = ProcessInfo), (status = 404, body = ErrorBody)))]
async fn get_process(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<Json<ProcessInfo>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    Ok(Json(state.toolbox.proc(&rec.id, &id)?.info()))
}

/// Kills a background process (and its descendants) if it still runs, and forgets it.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)")),
    responses((status = 204, description = "forgotten"), (status = 404, body = ErrorBody)))]
async fn delete_process(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let bg = state.toolbox.proc(&rec.id, &id)?;
    if bg.running() {
        bg.ctl.signal_tree(9);
    }
    if let Some(e) = state.toolbox.lock().get_mut(&rec.id) {
        e.procs.remove(&id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Writes the request body to a background process's stdin; `eof=true` closes it afterwards.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}/stdin", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)"), StdinQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204, description = "written"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn process_stdin(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    q: Result<Query<StdinQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let Query(q) = q.map_err(bad_query)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let bg = state.toolbox.proc(&rec.id, &id)?;
    let mut w = bg.stdin.lock().await;
    let closed = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!("process {id}'s stdin is closed"),
        )
        .hint("it ended, or stdin was closed with eof=true")
    };
    let Some(pipe) = w.as_mut() else {
        return Err(closed());
    };
    if !body.is_empty() {
        match tokio::time::timeout(STDIN_WRITE_TIMEOUT, pipe.write_all(&body)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                *w = None;
                return Err(closed());
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::Conflict,
                    format!("process {id} is not reading its stdin"),
                ))
            }
        }
    }
    if q.eof == Some(true) {
        *w = None;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to a background process.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}/signal", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)")),
    request_body = SignalRequest,
    responses((status = 204, description = "sent"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn process_signal(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(req): Json<SignalRequest>,
) -> ApiResult<StatusCode> {
    let sig = parse_signal(&req.signal)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let bg = state.toolbox.proc(&rec.id, &id)?;
    if !bg.running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!("process {id} has ended"),
        ));
    }
    bg.ctl.signal(sig);
    Ok(StatusCode::NO_CONTENT)
}

/// Waits for a background process to end, at most `timeout`; answers it either way (`running`
/// tells).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}/wait", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)"), WaitQuery),
    responses((status = 200, body = ProcessInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn process_wait(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Json<ProcessInfo>> {
    let Query(q) = q.map_err(bad_query)?;
    let t = parse_timeout(q.timeout.as_deref())?.unwrap_or(Duration::from_secs(30));
    if t > MAX_WAIT {
        return Err(
            ApiError::bad_request(format!("timeout: at most {}s", MAX_WAIT.as_secs()))
                .hint("wait again after it returns"),
        );
    }
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let bg = state.toolbox.proc(&rec.id, &id)?;
    let mut rx = bg.changed.subscribe();
    let deadline = tokio::time::Instant::now() + t;
    while bg.running() {
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(Json(bg.info()))
}

fn chunk(r: &Ring, offset: u64) -> OutputChunk {
    let (data, next_offset, truncated_before) = r.read(offset);
    OutputChunk {
        data: String::from_utf8_lossy(&data).into_owned(),
        next_offset,
        truncated_before,
    }
}

/// A background process's output from an offset (the last 1 MiB of each stream is kept;
/// `truncated_before` counts what was lost), or with `follow=true` Server-Sent Events
/// `stdout`/`stderr` from there until it ends, then `exit`.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/processes/{id}/output", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "process id (p_...)"), OutputQuery),
    responses((status = 200, body = OutputChunk, description = "JSON (BothOutput for stream=both), or text/event-stream with follow=true"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn process_output(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    q: Result<Query<OutputQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let (want_out, want_err) = match q.stream.as_deref().unwrap_or("stdout") {
        "stdout" => (true, false),
        "stderr" => (false, true),
        "both" => (true, true),
        other => {
            return Err(ApiError::bad_request(format!(
                "stream: `{other}` is not stdout, stderr or both"
            )))
        }
    };
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let bg = state.toolbox.proc(&rec.id, &id)?;
    let (mut off_out, mut off_err) = match (want_out, want_err) {
        (true, true) => (q.offset.unwrap_or(0), q.stderr_offset.unwrap_or(0)),
        (true, false) => (q.offset.unwrap_or(0), 0),
        _ => (0, q.offset.unwrap_or(0)),
    };
    if q.follow != Some(true) {
        let s = bg.st.lock().unwrap_or_else(|p| p.into_inner());
        return Ok(match (want_out, want_err) {
            (true, true) => Json(BothOutput {
                stdout: chunk(&s.out, off_out),
                stderr: chunk(&s.err, off_err),
            })
            .into_response(),
            (true, false) => Json(chunk(&s.out, off_out)).into_response(),
            _ => Json(chunk(&s.err, off_err)).into_response(),
        });
    }
    let (tx, rx) = mpsc::channel::<Result<String, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let mut changed = bg.changed.subscribe();
        loop {
            let (out, err, ended) = {
                let s = bg.st.lock().unwrap_or_else(|p| p.into_inner());
                let out = want_out.then(|| s.out.read(off_out));
                let err = want_err.then(|| s.err.read(off_err));
                let ended = (!s.running).then(|| (s.exit_code, s.timed_out));
                (out, err, ended)
            };
            for (chan, r, off) in [(1u8, out, &mut off_out), (2u8, err, &mut off_err)] {
                if let Some((data, next, _)) = r {
                    *off = next;
                    if !data.is_empty() && tx.send(Ok(sse_output(chan, data))).await.is_err() {
                        return;
                    }
                }
            }
            if let Some((code, timed_out)) = ended {
                let data = serde_json::json!({"code": code, "timed_out": timed_out});
                let _ = tx.send(Ok(format!("event: exit\ndata: {data}\n\n"))).await;
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Ok(sse_response(rx))
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// Sets a session up: its directory (private to its user), the exported variables and the
/// working directory; prints the working directory. `$1` is the session's directory.
const SESSION_CREATE: &str =
    "umask 077 && mkdir \"$1\" && export -p > \"$1/env\" && pwd > \"$1/cwd\" && pwd";

/// Runs `$2` in a session whose state is in `$1`, and saves the state on the way out (a trap),
/// telling the working directory on stderr's last line.
const SESSION_RUN: &str = "__warren_d=$1; __warren_c=$2; set --; . \"$__warren_d/env\"; \
cd \"$(cat \"$__warren_d/cwd\")\" || exit 1; \
trap '__warren_s=$?; export -p > \"$__warren_d/env\"; pwd > \"$__warren_d/cwd\"; \
printf \"\\036warren-cwd:%s\\n\" \"$PWD\" >&2; exit $__warren_s' EXIT; \
eval \"$__warren_c\"";

const CWD_MARK: &str = "\u{1e}warren-cwd:";

/// Starts a session: a shell state (working directory, exported variables) kept inside the
/// workspace between commands.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/sessions", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = CreateSession,
    responses((status = 201, body = SessionInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<CreateSession>,
) -> ApiResult<Response> {
    let probe = RunCommand {
        command: Some(vec!["sh".into()]),
        cwd: req.cwd.clone(),
        env: req.env.clone(),
        user: req.user.clone(),
        ..Default::default()
    };
    let mut c = check(&probe)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let hint = "DELETE .../toolbox/sessions/{id} ends a session";
    let count = |st: &AppState| {
        st.toolbox
            .lock()
            .get(&rec.id)
            .map_or(0, |e| e.sessions.len())
    };
    if count(&state) >= MAX_SESSIONS {
        return Err(too_many("sessions", MAX_SESSIONS, hint));
    }
    let id = new_id("s");
    let dir = format!("/tmp/.warren-session-{id}");
    c.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        SESSION_CREATE.into(),
        "sh".into(),
        dir.clone(),
    ];
    c.timeout = Some(Duration::from_secs(30));
    let (r, ev) = run_buffered(&state, &caller, &rec, c, None).await?;
    if r.exit_code != Some(0) {
        let why = r.stderr.lines().last().unwrap_or("").to_string();
        return Err(
            ApiError::bad_request(format!("the session could not be set up: {why}"))
                .hint("the workspace needs /bin/sh and a writable /tmp"),
        );
    }
    let sess = Arc::new(Sess {
        id: id.clone(),
        dir,
        user: req.user.clone(),
        created_at: session_audit::now(),
        cwd: Mutex::new(r.stdout.trim_end_matches('\n').to_string()),
        lock: tokio::sync::Mutex::new(()),
    });
    {
        let mut g = state.toolbox.lock();
        let e = g.entry(rec.id.clone()).or_default();
        if e.sessions.len() >= MAX_SESSIONS {
            return Err(too_many("sessions", MAX_SESSIONS, hint));
        }
        e.sessions.insert(id, sess.clone());
    }
    let note = note_for(&rec, &caller, &ev);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(sess.info()),
    )
        .into_response())
}

/// The workspace's sessions.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/sessions", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = Vec<SessionInfo>), (status = 404, body = ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<SessionInfo>>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let list: Vec<Arc<Sess>> = state
        .toolbox
        .lock()
        .get(&rec.id)
        .map(|e| e.sessions.values().cloned().collect())
        .unwrap_or_default();
    Ok(Json(list.iter().map(|s| s.info()).collect()))
}

/// Ends a session (its state in the workspace is removed).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/toolbox/sessions/{id}", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "session id (s_...)")),
    responses((status = 204, description = "ended"), (status = 404, body = ErrorBody)))]
async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let sess = state.toolbox.sess(&rec.id, &id)?;
    if let Some(e) = state.toolbox.lock().get_mut(&rec.id) {
        e.sessions.remove(&id);
    }
    let _guard = sess.lock.lock().await;
    let c = Checked {
        argv: vec!["rm".into(), "-rf".into(), sess.dir.clone()],
        env: vec![],
        cwd: Some("/".into()),
        user: sess.user.clone(),
        timeout: Some(Duration::from_secs(30)),
    };
    // Best effort: a stopped workspace lost its /tmp anyway.
    let _ = run_buffered(&state, &caller, &rec, c, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a shell command line in a session: it starts in the session's working directory with
/// its exported variables, and leaves them for the next command (`cwd` in the answer).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/sessions/{id}/run", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "session id (s_...)")),
    request_body = SessionCommand,
    responses((status = 200, body = RunResult), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn session_run(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    Json(req): Json<SessionCommand>,
) -> ApiResult<Response> {
    if req.command.trim().is_empty() {
        return Err(ApiError::bad_request("command: the command line is empty")
            .hint(r#"e.g. {"command": "cd src && ls"}"#));
    }
    no_nul("command", &req.command)?;
    let timeout = parse_timeout(req.timeout.as_deref())?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let sess = state.toolbox.sess(&rec.id, &id)?;
    let _guard = sess.lock.lock().await;
    let c = Checked {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            SESSION_RUN.into(),
            "sh".into(),
            sess.dir.clone(),
            req.command.clone(),
        ],
        env: vec![],
        cwd: Some("/".into()),
        user: sess.user.clone(),
        timeout,
    };
    let (mut r, ev) = run_buffered(&state, &caller, &rec, c, None).await?;
    if let Some(i) = r.stderr.rfind(CWD_MARK) {
        let tail = &r.stderr[i + CWD_MARK.len()..];
        if let Some(path) = tail.strip_suffix('\n').filter(|p| !p.contains('\n')) {
            let path = path.to_string();
            r.stderr.truncate(i);
            *sess.cwd.lock().unwrap_or_else(|p| p.into_inner()) = path;
        }
    }
    r.cwd = Some(sess.cwd.lock().unwrap_or_else(|p| p.into_inner()).clone());
    let note = note_for(&rec, &caller, &ev);
    Ok((axum::Extension(note), Json(r)).into_response())
}
