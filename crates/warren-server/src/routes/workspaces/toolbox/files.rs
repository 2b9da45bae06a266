//! Toolbox files: read, write (streamed both ways), list, stat, mkdir, move, remove, chmod,
//! search by glob or content, directories as tar (down and up) and a directory watch (SSE).
//!
//! The server never opens a workspace path on the host: every operation is `warren __toolbox OP
//! JSON` (crate `warren-toolbox`) started inside the workspace from its read-only tools mount
//! through the same [`exec::start`] as any command, as the workspace's remote user unless the
//! request names another. So what a path resolves to (symlinks, `..`, `/proc/1/root`) and who may
//! touch it are the container's business, exactly as for a shell in the workspace. Uploads are
//! streamed into the toolbox's stdin in frames it commits only on an explicit end frame: an
//! upload over `toolbox_max_upload`, or one whose client goes away, leaves nothing behind.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::toolbox_files::{
    ChmodRequest, FileInfo, FileWritten, MkdirRequest, MoveRequest, SearchMatch, TarExtracted,
    WatchEvent,
};
use warren_api::v1::ExecRequest;
use warren_api::ErrorCode;
use warren_store::WorkspaceRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use crate::routes::workspaces::exec::{self, Started};

/// Entries a listing returns unless asked for fewer (and at most [`MAX_LIST`]).
const LIST_LIMIT: usize = 10_000;
const MAX_LIST: usize = 100_000;
/// Search results unless asked for fewer (and at most [`MAX_SEARCH`]).
const SEARCH_LIMIT: usize = 1_000;
const MAX_SEARCH: usize = 10_000;
/// The largest JSON answer read from the toolbox.
const ANSWER_MAX: usize = 64 << 20;
/// The most of the toolbox's stdout buffered before it says it is ready (or kept of a watch
/// line): the toolbox runs in the workspace, so its output is the workspace user's to forge.
const EARLY_MAX: usize = 1 << 20;
/// The largest diff kept in a session audit record (the rest is cut, marked `diff_truncated`).
const DIFF_MAX: usize = 64 << 10;
/// An upload whose body sends nothing for this long is abandoned (nothing is written).
const UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// The most of the toolbox's stderr kept.
const STDERR_MAX: usize = 64 << 10;
/// Upload bytes gathered into one frame for the toolbox's stdin.
const FRAME: usize = 256 << 10;
/// How often a quiet watch stream sends a comment (which also notices a client gone).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read_file, write_file, remove_file))
        .routes(routes!(upload_tar))
        .routes(routes!(list_files))
        .routes(routes!(stat_file))
        .routes(routes!(make_dir))
        .routes(routes!(move_file))
        .routes(routes!(chmod_file))
        .routes(routes!(search_files))
        .routes(routes!(watch_files))
}

// ---- requests ----

/// `GET .../toolbox/files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The file (or, with `format=tar`, directory); relative paths start at the workspace folder.
    path: String,
    /// `tar`: the directory as a tar archive (symlinks kept as symlinks).
    format: Option<String>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `PUT .../toolbox/files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// The file to write (replaced atomically when complete).
    path: String,
    /// Permission bits in octal (default: the old file's, else `0644`).
    mode: Option<String>,
    /// Make missing parent directories.
    mkdir: Option<bool>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `PUT .../toolbox/files/tar`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TarQuery {
    /// The directory to extract into (made if missing).
    path: String,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `DELETE .../toolbox/files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// What to remove (a symlink itself, never its target).
    path: String,
    /// Remove a directory and everything in it.
    recursive: Option<bool>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `GET .../toolbox/files/list`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The directory.
    path: String,
    /// Walk subdirectories too (symlinks are not followed).
    recursive: Option<bool>,
    /// At most this many entries (default 10000, at most 100000).
    limit: Option<usize>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `GET .../toolbox/files/stat`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatQuery {
    /// The path (a symlink is described, not followed).
    path: String,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `GET .../toolbox/files/search`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The directory searched (recursively; symlinks are not followed).
    path: String,
    /// Names matching this glob (`*.rs`; with a `/` it matches the path under `path`:
    /// `src/**/*.rs`).
    glob: Option<String>,
    /// Lines containing this text (files over 10 MiB and binary files are skipped); with
    /// `glob`, only in the files it matches.
    content: Option<String>,
    /// At most this many results (default 1000, at most 10000).
    limit: Option<usize>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

/// `GET .../toolbox/files/watch`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The directory watched.
    path: String,
    /// Watch the directories under it too (those made later included).
    recursive: Option<bool>,
    /// Act as this user (default: the workspace's remote user).
    user: Option<String>,
}

// ---- checks ----

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
        .hint("e.g. ?path=src/main.rs; relative paths start at the workspace folder")
}

fn check_path(field: &str, p: &str) -> ApiResult<()> {
    if p.is_empty() {
        return Err(ApiError::bad_request(format!("{field}: empty")).hint(
            "give a path inside the workspace; relative paths start at the workspace folder",
        ));
    }
    if p.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field}: contains a NUL byte"
        )));
    }
    if p.len() > 4096 {
        return Err(ApiError::bad_request(format!(
            "{field}: longer than 4096 bytes"
        )));
    }
    Ok(())
}

fn check_user(u: &Option<String>) -> ApiResult<()> {
    if let Some(u) = u {
        if u.is_empty() || u.len() > 64 || u.contains(['\0', ':', '/', '\n']) {
            return Err(ApiError::bad_request(format!(
                "user: `{}` is not a user name",
                u.escape_debug()
            ))
            .hint("a name from the workspace's /etc/passwd, or a uid"));
        }
    }
    Ok(())
}

fn check_mode(m: &Option<String>) -> ApiResult<()> {
    if let Some(m) = m {
        let t = m.strip_prefix("0o").unwrap_or(m);
        let ok =
            !t.is_empty() && t.len() <= 5 && u32::from_str_radix(t, 8).is_ok_and(|v| v <= 0o7777);
        if !ok {
            return Err(ApiError::bad_request(format!(
                "mode: `{}` is not octal permissions",
                m.escape_debug()
            ))
            .hint("e.g. 0644 or 755"));
        }
    }
    Ok(())
}

fn check_limit(limit: Option<usize>, default: usize, max: usize) -> ApiResult<usize> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit: {n} is out of range: 1 to {max}"
        ))),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the upload is larger than the toolbox's limit of {max} bytes"),
    )
    .hint("the server's toolbox_max_upload setting sets the limit; nothing was written")
}

fn note(rec: &WorkspaceRecord, details: Value) -> AuditNote {
    let mut n = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    n.details_json = Some(details.to_string());
    n
}

// ---- running the toolbox ----

/// Starts `warren __toolbox OP ARGS` in the workspace.
async fn spawn(
    state: &AppState,
    caller: &Caller,
    rec: &WorkspaceRecord,
    user: Option<String>,
    op: &str,
    args: Value,
) -> ApiResult<Started> {
    let req = ExecRequest {
        command: state
            .engine
            .tool_command(&[warren_toolbox::SUBCOMMAND, op, &args.to_string()]),
        user,
        ..Default::default()
    };
    exec::start(state, &caller.user.id, rec, &req)
        .await
        .map_err(|mut e| {
            if e.body.message.contains(warren_runtime::tools::MOUNT_POINT) {
                e.body.hint = Some(format!(
                    "the toolbox comes from the workspace's {} mount, which a workspace started by \
                     an older Warren lacks: restart the workspace",
                    warren_runtime::tools::MOUNT_POINT
                ));
            }
            e
        })
}

/// The toolbox's failure, from its stderr (`{"error": {"code", "message"}}`) and exit.
fn failure(stderr: &[u8], code: &Result<i32, String>) -> ApiError {
    let text = String::from_utf8_lossy(stderr);
    for line in text.lines().rev() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(e) = v.get("error") else { continue };
        let msg = e["message"].as_str().unwrap_or("failed").to_string();
        return match e["code"].as_str().unwrap_or("") {
            "not_found" => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, msg).hint(
                "paths are inside the workspace; relative ones start at the workspace folder",
            ),
            "invalid_request" => ApiError::bad_request(msg),
            "permission_denied" => {
                ApiError::forbidden(format!("permission denied inside the workspace: {msg}"))
                    .hint("the toolbox acts as the workspace's remote user; `user` names another")
            }
            "exists" => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, msg),
            "payload_too_large" => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                msg,
            )
            .hint("the server's toolbox_max_upload setting sets the limit; nothing was written"),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::RuntimeError,
                msg,
            ),
        };
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let what = match code {
        Ok(c) => format!("the toolbox exited with status {c}"),
        Err(e) => format!("the toolbox failed: {e}"),
    };
    let mut err = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::RuntimeError,
        if last.is_empty() {
            what
        } else {
            format!("{what}: {}", last.trim())
        },
    );
    if text.contains(warren_runtime::tools::MOUNT_POINT) {
        err = err.hint("restart the workspace: it was started without Warren's tools mount");
    }
    err
}

/// What a finished toolbox said.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: Result<i32, String>,
}

impl Output {
    /// The JSON answer of a successful run, or the failure.
    fn answer(&self) -> ApiResult<Value> {
        if self.code != Ok(0) {
            return Err(failure(&self.stderr, &self.code));
        }
        serde_json::from_slice(&self.stdout).map_err(|e| {
            ApiError::internal(format!(
                "toolbox answer: {e}: {}",
                String::from_utf8_lossy(&self.stderr)
            ))
        })
    }
}

fn keep(buf: &mut Vec<u8>, chunk: &[u8], max: usize) -> bool {
    if buf.len() + chunk.len() > max {
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..room]);
        false
    } else {
        buf.extend_from_slice(chunk);
        true
    }
}

/// Reads the rest of the toolbox's output (its pipes close when it exits: it starts nothing
/// that could keep them open), then its exit status.
async fn finish(run: &mut Running, mut stdout: Vec<u8>, mut stderr: Vec<u8>) -> Output {
    let st = &mut run.st;
    let mut over = false;
    while let Some((chan, b)) = st.out.recv().await {
        if chan == 1 {
            if !keep(&mut stdout, &b, ANSWER_MAX) && !over {
                // Past the limit: stop it rather than read (and drop) without end.
                over = true;
                let _ = st.signaller.signal(9);
            }
        } else {
            keep(&mut stderr, &b, STDERR_MAX);
        }
    }
    let code = exit_of(st).await;
    run.ended = true;
    let code = if over && code == Ok(0) {
        Err(format!("its answer is over {ANSWER_MAX} bytes"))
    } else {
        code
    };
    Output {
        stdout,
        stderr,
        code,
    }
}

/// The toolbox's exit status (once its output ended).
async fn exit_of(st: &mut Started) -> Result<i32, String> {
    (&mut st.exit)
        .await
        .unwrap_or_else(|_| Err("lost track of it".into()))
}

/// Runs an operation without input and returns its JSON answer.
async fn call(
    state: &AppState,
    caller: &Caller,
    rec: &WorkspaceRecord,
    user: Option<String>,
    op: &str,
    args: Value,
) -> ApiResult<Value> {
    let mut st = spawn(state, caller, rec, user, op, args).await?;
    drop(st.stdin.take());
    // Killed if the request is dropped (the client went away) before it ends.
    let mut run = Running { st, ended: false };
    finish(&mut run, vec![], vec![]).await.answer()
}

/// A running toolbox: killed if dropped (the client went away) before its end was seen.
struct Running {
    st: Started,
    ended: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.st.signaller.signal(9);
        }
    }
}

/// Waits for the toolbox's `{"ready": ...}` line on stderr (or its failure); stdout that came
/// first is kept.
async fn wait_ready(st: &mut Started) -> ApiResult<(Value, VecDeque<Vec<u8>>)> {
    let mut early = VecDeque::new();
    let mut early_len = 0usize;
    let mut err: Vec<u8> = vec![];
    let mut scanned = 0usize;
    // Only the output decides: the exit may be seen before the last of it is read.
    while let Some((chan, b)) = st.out.recv().await {
        if chan == 1 {
            early_len += b.len();
            if early_len > EARLY_MAX {
                let _ = st.signaller.signal(9);
                return Err(ApiError::internal(format!(
                    "the toolbox wrote over {EARLY_MAX} bytes before it was ready; stopped it"
                ))
                .hint("something in the workspace (an LD_PRELOAD, a wrapper) interferes with Warren's toolbox"));
            }
            early.push_back(b);
            continue;
        }
        keep(&mut err, &b, STDERR_MAX);
        while let Some(i) = err[scanned..].iter().position(|c| *c == b'\n') {
            let line = &err[scanned..scanned + i];
            scanned += i + 1;
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                if let Some(r) = v.get("ready") {
                    return Ok((r.clone(), early));
                }
            }
        }
        if err.len() >= STDERR_MAX {
            let _ = st.signaller.signal(9);
            break;
        }
    }
    let code = exit_of(st).await;
    Err(failure(&err, &code))
}

/// The toolbox's stdout as a body, after it said it is ready. A failure midway breaks the
/// transfer (the client sees an incomplete body, never a silently short file).
fn stream_body(st: Started, early: VecDeque<Vec<u8>>) -> Body {
    let run = Running { st, ended: false };
    let s = futures_util::stream::unfold(
        (run, early, Vec::<u8>::new(), false),
        |(mut run, mut early, mut err, done)| async move {
            if done {
                return None;
            }
            if let Some(b) = early.pop_front() {
                return Some((Ok(Bytes::from(b)), (run, early, err, false)));
            }
            loop {
                match run.st.out.recv().await {
                    Some((1, b)) => return Some((Ok(Bytes::from(b)), (run, early, err, false))),
                    Some((_, b)) => {
                        keep(&mut err, &b, STDERR_MAX);
                    }
                    None => {
                        let code = exit_of(&mut run.st).await;
                        run.ended = true;
                        if code == Ok(0) {
                            return None;
                        }
                        let e = failure(&err, &code);
                        crate::error::tracing_log(&format!("toolbox stream: {}", e.body.message));
                        return Some((
                            Err(std::io::Error::other(e.body.message)),
                            (run, early, err, true),
                        ));
                    }
                }
            }
        },
    );
    Body::from_stream(s)
}

/// An upload streamed to its end frame: the toolbox is committing it. What the server itself
/// counted and hashed of the body is the record's truth, not the toolbox's answer.
struct Uploaded {
    run: Running,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    size: u64,
    sha256: String,
}

impl Uploaded {
    /// Waits for the toolbox's answer and runs `then` on it, in a task of its own: once the end
    /// frame is sent the file is (being) renamed into place, so what follows (the session audit)
    /// must happen even if the client goes away now.
    async fn finish_then<T, F, Fut>(self, then: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Output, u64, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ApiResult<T>> + Send,
    {
        let Uploaded {
            mut run,
            stdout,
            stderr,
            size,
            sha256,
        } = self;
        tokio::spawn(async move {
            let out = finish(&mut run, stdout, stderr).await;
            then(out, size, sha256).await
        })
        .await
        .map_err(|e| ApiError::internal(format!("upload: {e}")))?
    }
}

/// Streams `body` into the toolbox's stdin in frames and sends the end frame when it ends;
/// stops (without committing) past `max` bytes, when the client breaks off or sends nothing for
/// [`UPLOAD_IDLE`].
async fn upload(st: Started, body: Body, max: u64) -> ApiResult<Uploaded> {
    upload_idle(st, body, max, UPLOAD_IDLE).await
}

async fn upload_idle(mut st: Started, body: Body, max: u64, idle: Duration) -> ApiResult<Uploaded> {
    use sha2::Digest;
    let stdin = st
        .stdin
        .take()
        .ok_or_else(|| ApiError::internal("the toolbox has no stdin"))?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    exec::stdin_writer(&st, stdin, move || rx.blocking_recv().map(Some));
    let mut run = Running { st, ended: false };
    let mut data = body.into_data_stream();
    let mut total = 0u64;
    let mut hash = sha2::Sha256::new();
    let mut buf: Vec<u8> = Vec::with_capacity(FRAME + 4);
    let mut stdout = vec![];
    let mut stderr = vec![];
    fn frame(buf: &mut Vec<u8>) -> Vec<u8> {
        let mut f = Vec::with_capacity(buf.len() + 4);
        f.extend_from_slice(&warren_toolbox::frame_header(buf.len() as u32));
        f.append(buf);
        f
    }
    enum End {
        Complete,
        TooLarge,
        Broken,
        Idle,
        ToolGone,
    }
    let end = loop {
        tokio::select! {
            chunk = tokio::time::timeout(idle, data.next()) => match chunk {
                Err(_) => break End::Idle,
                Ok(Some(Ok(b))) => {
                    total += b.len() as u64;
                    if total > max {
                        break End::TooLarge;
                    }
                    hash.update(&b);
                    buf.extend_from_slice(&b);
                    if buf.len() >= FRAME && tx.send(frame(&mut buf)).await.is_err() {
                        break End::ToolGone;
                    }
                }
                Ok(Some(Err(_))) => break End::Broken,
                Ok(None) => {
                    if !buf.is_empty() && tx.send(frame(&mut buf)).await.is_err() {
                        break End::ToolGone;
                    }
                    let _ = tx.send(warren_toolbox::frame_header(0).to_vec()).await;
                    break End::Complete;
                }
            },
            m = run.st.out.recv() => match m {
                Some((1, b)) => { keep(&mut stdout, &b, EARLY_MAX); }
                Some((_, b)) => { keep(&mut stderr, &b, STDERR_MAX); }
                None => break End::ToolGone,
            },
        }
    };
    // Closing stdin: after the end frame the toolbox renames into place; without it, it
    // removes what it wrote.
    drop(tx);
    let end = match end {
        // The toolbox gave up before the body ended (bad input, say): the rest of the body is
        // still counted (not kept) so an upload over the limit is told so, whatever it holds.
        End::ToolGone => loop {
            match tokio::time::timeout(idle, data.next()).await {
                Ok(Some(Ok(b))) => {
                    total += b.len() as u64;
                    if total > max {
                        break End::TooLarge;
                    }
                }
                _ => break End::ToolGone,
            }
        },
        e => e,
    };
    let fail = match end {
        End::Complete | End::ToolGone => {
            return Ok(Uploaded {
                run,
                stdout,
                stderr,
                size: total,
                sha256: hex::encode(hash.finalize()),
            })
        }
        End::TooLarge => too_large(max),
        End::Broken => {
            ApiError::bad_request("the upload broke off before its end; nothing was written")
        }
        End::Idle => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InvalidRequest,
            format!(
                "the upload sent nothing for {} s; abandoned, nothing was written",
                idle.as_secs()
            ),
        )
        .hint("send the body without pauses"),
    };
    // Let the toolbox remove its temporary file (it does on stdin's end without the end frame).
    let _ = finish(&mut run, stdout, stderr).await;
    Err(fail)
}

/// `diff` cut to [`DIFF_MAX`] bytes (on a character boundary), and whether it was cut.
fn cap_diff(diff: Option<&str>) -> (Option<String>, bool) {
    let Some(d) = diff else { return (None, false) };
    if d.len() <= DIFF_MAX {
        return (Some(d.to_string()), false);
    }
    let mut end = DIFF_MAX;
    while !d.is_char_boundary(end) {
        end -= 1;
    }
    (Some(d[..end].to_string()), true)
}

// ---- handlers ----

/// Downloads a file (streamed, with its length), or a directory as a tar with `format=tar`.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/files", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ReadQuery),
    responses((status = 200, description = "the file's bytes (application/octet-stream), or application/x-tar with format=tar"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn read_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let tar = match q.format.as_deref() {
        None | Some("raw") => false,
        Some("tar") => true,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "format: `{}` is not raw or tar",
                f.escape_debug()
            )))
        }
    };
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let op = if tar { "tar-out" } else { "read" };
    let mut st = spawn(&state, &caller, &rec, q.user, op, json!({"path": q.path})).await?;
    drop(st.stdin.take());
    let (ready, early) = wait_ready(&mut st).await?;
    let name = std::path::Path::new(&q.path)
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_"))
        .unwrap_or_else(|| "root".into());
    let mut resp = stream_body(st, early).into_response();
    let h = resp.headers_mut();
    if tar {
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-tar"),
        );
        if let Ok(v) =
            header::HeaderValue::from_str(&format!("attachment; filename=\"{name}.tar\""))
        {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    } else {
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(n) = ready["size"].as_u64() {
            h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
        }
        if let Some(m) = ready["mode"].as_str() {
            if let Ok(v) = header::HeaderValue::from_str(m) {
                h.insert("x-warren-file-mode", v);
            }
        }
    }
    Ok(resp)
}

/// Uploads a file: the raw body is streamed into a temporary file next to the target, renamed
/// over it when complete. Over `toolbox_max_upload`, or broken off, nothing is left behind.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/toolbox/files", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's content"),
    responses((status = 200, body = FileWritten),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn write_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<WriteQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    check_mode(&q.mode)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let max = state.cfg.toolbox_max_upload;
    if content_length(&headers).is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let args =
        json!({"path": q.path, "mode": q.mode, "mkdir": q.mkdir.unwrap_or(false), "max": max});
    let st = spawn(&state, &caller, &rec, q.user.clone(), "write", args).await?;
    let (st2, rec2, caller2, path) = (state.clone(), rec.clone(), caller.clone(), q.path.clone());
    let written = upload(st, body, max)
        .await?
        .finish_then(move |out, size, sha256| async move {
            let v = out.answer()?;
            let written = FileWritten {
                path: v["path"].as_str().unwrap_or(&path).to_string(),
                size,
                sha256,
            };
            let (diff, diff_truncated) = cap_diff(v["diff"].as_str());
            crate::session_audit::record(
                &st2,
                &rec2,
                Some(&caller2),
                crate::session_audit::SessionEvent::FileWritten {
                    path: written.path.clone(),
                    size: written.size,
                    sha256: written.sha256.clone(),
                    diff,
                    diff_truncated,
                    via: crate::session_audit::Via::Toolbox,
                },
            )
            .await;
            Ok(written)
        })
        .await?;
    let n = note(
        &rec,
        json!({"path": written.path, "size": written.size, "sha256": written.sha256, "user": q.user}),
    );
    Ok((axum::Extension(n), Json(written)).into_response())
}

/// Removes a file, a symlink or an empty directory (any directory with `recursive=true`).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/toolbox/files", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), RemoveQuery),
    responses((status = 204, description = "removed"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let recursive = q.recursive.unwrap_or(false);
    call(
        &state,
        &caller,
        &rec,
        q.user.clone(),
        "remove",
        json!({"path": q.path, "recursive": recursive}),
    )
    .await?;
    let n = note(
        &rec,
        json!({"path": q.path, "recursive": recursive, "user": q.user}),
    );
    Ok((axum::Extension(n), StatusCode::NO_CONTENT).into_response())
}

/// Uploads a tar archive and extracts it into a directory (made if missing). Absolute names,
/// `..`, symlinks leading out, entries through a symlink, devices and FIFOs are refused; a refused,
/// oversized or broken-off archive leaves nothing.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/toolbox/files/tar", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), TarQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "a tar archive"),
    responses((status = 200, body = TarExtracted),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload_tar(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<TarQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let max = state.cfg.toolbox_max_upload;
    if content_length(&headers).is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let args = json!({"path": q.path, "max": max, "mkdir": true});
    let st = spawn(&state, &caller, &rec, q.user.clone(), "tar-in", args).await?;
    let (st2, rec2, caller2) = (state.clone(), rec.clone(), caller.clone());
    let (v, archive_size, archive_sha256) = upload(st, body, max)
        .await?
        .finish_then(move |out, size, sha256| async move {
            let v = out.answer()?;
            // Each file made is a file written, for the session audit (the first 1000; the rest
            // are counted in the request's record). Per-file sizes and hashes are the toolbox's
            // word; the archive's (in the request's record) are the server's own.
            for f in v["written"].as_array().into_iter().flatten().take(1000) {
                crate::session_audit::record(
                    &st2,
                    &rec2,
                    Some(&caller2),
                    crate::session_audit::SessionEvent::FileWritten {
                        path: f["path"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(4096)
                            .collect(),
                        size: f["size"].as_u64().unwrap_or(0),
                        sha256: f["sha256"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(64)
                            .collect(),
                        diff: None,
                        diff_truncated: false,
                        via: crate::session_audit::Via::Toolbox,
                    },
                )
                .await;
            }
            Ok((v, size, sha256))
        })
        .await?;
    let omitted = v["written_omitted"].as_u64().unwrap_or(0);
    let done: TarExtracted = serde_json::from_value(v).map_err(ApiError::internal)?;
    let n = note(
        &rec,
        json!({"path": done.path, "files": done.files, "bytes": done.bytes, "user": q.user,
            "files_not_in_session_audit": omitted,
            "archive_size": archive_size, "archive_sha256": archive_sha256}),
    );
    Ok((axum::Extension(n), Json(done)).into_response())
}

/// Lists a directory (recursively with `recursive=true`, never following symlinks).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/files/list", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ListQuery),
    responses((status = 200, body = Vec<FileInfo>, description = "entries in path order; `X-Warren-Truncated: true` when limit cut the list"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let limit = check_limit(q.limit, LIST_LIMIT, MAX_LIST)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        q.user,
        "list",
        json!({"path": q.path, "recursive": q.recursive.unwrap_or(false), "limit": limit}),
    )
    .await?;
    let truncated = v["truncated"].as_bool().unwrap_or(false);
    let entries: Vec<FileInfo> =
        serde_json::from_value(v["entries"].clone()).map_err(ApiError::internal)?;
    Ok((
        [(
            "x-warren-truncated",
            if truncated { "true" } else { "false" },
        )],
        Json(entries),
    )
        .into_response())
}

/// A path's metadata (a symlink is described, not followed).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/files/stat", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), StatQuery),
    responses((status = 200, body = FileInfo),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn stat_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<StatQuery>, QueryRejection>,
) -> ApiResult<Json<FileInfo>> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        q.user,
        "stat",
        json!({"path": q.path}),
    )
    .await?;
    Ok(Json(serde_json::from_value(v).map_err(ApiError::internal)?))
}

/// Makes a directory (`parents`: missing parents too, and an existing directory is fine).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/files/mkdir", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = MkdirRequest,
    responses((status = 201, body = FileInfo),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn make_dir(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<MkdirRequest>,
) -> ApiResult<Response> {
    check_path("path", &req.path)?;
    check_user(&req.user)?;
    check_mode(&req.mode)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        req.user.clone(),
        "mkdir",
        json!({"path": req.path, "parents": req.parents, "mode": req.mode}),
    )
    .await?;
    let info: FileInfo = serde_json::from_value(v).map_err(ApiError::internal)?;
    let n = note(&rec, json!({"path": info.path, "user": req.user}));
    Ok((StatusCode::CREATED, axum::Extension(n), Json(info)).into_response())
}

/// Moves (renames) a file or directory; an existing target is refused (409) unless `overwrite`.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/files/move", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = MoveRequest,
    responses((status = 200, body = FileInfo),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn move_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<MoveRequest>,
) -> ApiResult<Response> {
    check_path("from", &req.from)?;
    check_path("to", &req.to)?;
    check_user(&req.user)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        req.user.clone(),
        "move",
        json!({"from": req.from, "to": req.to, "overwrite": req.overwrite}),
    )
    .await?;
    let info: FileInfo = serde_json::from_value(v).map_err(ApiError::internal)?;
    let n = note(
        &rec,
        json!({"from": req.from, "to": info.path, "user": req.user}),
    );
    Ok((axum::Extension(n), Json(info)).into_response())
}

/// Changes a file's permission bits.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/files/chmod", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = ChmodRequest,
    responses((status = 200, body = FileInfo),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn chmod_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(req): Json<ChmodRequest>,
) -> ApiResult<Response> {
    check_path("path", &req.path)?;
    check_user(&req.user)?;
    check_mode(&Some(req.mode.clone()))?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        req.user.clone(),
        "chmod",
        json!({"path": req.path, "mode": req.mode}),
    )
    .await?;
    let info: FileInfo = serde_json::from_value(v).map_err(ApiError::internal)?;
    let n = note(
        &rec,
        json!({"path": info.path, "mode": info.mode, "user": req.user}),
    );
    Ok((axum::Extension(n), Json(info)).into_response())
}

/// Searches a directory tree by name (`glob`) or by content (`content`, lines containing the
/// text; files over 10 MiB and binary files are skipped).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/files/search", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), SearchQuery),
    responses((status = 200, body = Vec<SearchMatch>, description = "matches in path order; `X-Warren-Truncated: true` when limit cut them"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn search_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let limit = check_limit(q.limit, SEARCH_LIMIT, MAX_SEARCH)?;
    match (&q.glob, &q.content) {
        (None, None) => {
            return Err(ApiError::bad_request("give glob or content")
                .hint("e.g. ?path=.&glob=*.rs or ?path=.&content=TODO"))
        }
        (Some(g), _) if g.is_empty() || g.len() > 1024 || g.contains('\0') => {
            return Err(ApiError::bad_request(
                "glob: empty, longer than 1024 bytes or with a NUL byte",
            ))
        }
        (_, Some(c)) if c.is_empty() || c.len() > 1024 || c.contains('\0') => {
            return Err(ApiError::bad_request(
                "content: empty, longer than 1024 bytes or with a NUL byte",
            ))
        }
        _ => {}
    }
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let v = call(
        &state,
        &caller,
        &rec,
        q.user,
        "search",
        json!({"path": q.path, "glob": q.glob, "content": q.content, "limit": limit}),
    )
    .await?;
    let truncated = v["truncated"].as_bool().unwrap_or(false);
    let matches: Vec<SearchMatch> =
        serde_json::from_value(v["matches"].clone()).map_err(ApiError::internal)?;
    Ok((
        [(
            "x-warren-truncated",
            if truncated { "true" } else { "false" },
        )],
        Json(matches),
    )
        .into_response())
}

/// Watches a directory (inotify inside the workspace): Server-Sent Events named after the
/// event's kind with a [`WatchEvent`] as data, until the client goes (the watcher is then ended).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/files/watch", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), WatchQuery),
    responses((status = 200, body = WatchEvent, description = "text/event-stream of WatchEvent"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn watch_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    check_path("path", &q.path)?;
    check_user(&q.user)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let mut st = spawn(
        &state,
        &caller,
        &rec,
        q.user,
        "watch",
        json!({"path": q.path, "recursive": q.recursive.unwrap_or(false)}),
    )
    .await?;
    drop(st.stdin.take());
    let (_, early) = wait_ready(&mut st).await?;
    let (tx, rx) = mpsc::channel::<Result<String, Infallible>>(64);
    tokio::spawn(async move {
        let mut run = Running { st, ended: false };
        let mut line: Vec<u8> = early.into_iter().flatten().collect();
        let mut err = vec![];
        loop {
            while let Some(i) = line.iter().position(|c| *c == b'\n') {
                let l: Vec<u8> = line.drain(..=i).collect();
                let Ok(ev) = serde_json::from_slice::<WatchEvent>(&l) else {
                    continue;
                };
                let msg = format!(
                    "event: {}\ndata: {}\n\n",
                    ev.kind,
                    serde_json::to_string(&ev).unwrap_or_default()
                );
                if tx.send(Ok(msg)).await.is_err() {
                    return; // `run` is dropped: the watcher is killed.
                }
            }
            tokio::select! {
                () = tx.closed() => return,
                m = run.st.out.recv() => match m {
                    Some((1, b)) => {
                        if line.len() < (1 << 20) {
                            line.extend_from_slice(&b);
                        }
                    }
                    Some((_, b)) => { keep(&mut err, &b, STDERR_MAX); }
                    None => {
                        let code = exit_of(&mut run.st).await;
                        run.ended = true;
                        let e = failure(&err, &code);
                        let msg = format!(
                            "event: error\ndata: {}\n\n",
                            json!({"message": e.body.message})
                        );
                        let _ = tx.send(Ok(msg)).await;
                        return;
                    }
                },
                () = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Ok(": keep-alive\n\n".to_owned())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_diffs_are_capped_on_a_character_boundary() {
        assert_eq!(cap_diff(None), (None, false));
        assert_eq!(cap_diff(Some("+a\n")), (Some("+a\n".into()), false));
        // A helper can answer with any diff: a huge one is cut, mid-character never.
        let big = format!("+{}", "é".repeat(DIFF_MAX));
        let (d, cut) = cap_diff(Some(&big));
        let d = d.unwrap();
        assert!(cut && d.len() <= DIFF_MAX && d.len() > DIFF_MAX - 4);
        assert!(big.starts_with(&d));
    }
}
