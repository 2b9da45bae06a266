//! Toolbox git: clone, status, diff, add, commit, branches, checkout, push, pull and log on a
//! repository inside a workspace (`/api/v1/workspaces/{ws}/toolbox/git/...`).
//!
//! Every operation runs the image's own `git` inside the workspace as its remote user, through
//! the same exec as `POST /exec` (namespaces, cgroup, seccomp, per-user caps), with a time limit
//! and bounded output. The server never opens workspace paths on the host: `path` is a directory
//! in the workspace (relative to the workspace folder unless absolute), confined as any command
//! there is.
//!
//! Credentials never reach the repository's configuration: git gets `-c credential.helper=`
//! (which clears any helper the image or the user configured) and Warren's own helper on its
//! command line, URLs that carry credentials are refused, and URLs are shown and audited without
//! their userinfo. `GIT_TERMINAL_PROMPT=0`: git fails rather than waiting for a password.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::git::{
    GitAddRequest, GitBranchCreated, GitBranchInfo, GitBranchRequest, GitBranches,
    GitCheckoutRequest, GitCloneRequest, GitCommitRequest, GitCommitted, GitFileStatus, GitHead,
    GitLogEntry, GitPullRequest, GitPulled, GitPushRequest, GitPushed, GitStatus,
};
use warren_api::v1::ExecRequest;
use warren_api::ErrorCode;
use warren_store::WorkspaceRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use crate::routes::workspaces::exec;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(git_clone))
        .routes(routes!(git_status))
        .routes(routes!(git_diff))
        .routes(routes!(git_add))
        .routes(routes!(git_commit))
        .routes(routes!(git_branches))
        .routes(routes!(git_branch))
        .routes(routes!(git_checkout))
        .routes(routes!(git_push))
        .routes(routes!(git_pull))
        .routes(routes!(git_log))
}

/// TEMPORARY until the `secrets` helper's `crate::secrets::git_helper_args` is merged (the lead
/// switches this call over): the credential-helper arguments of every git command line. Clearing
/// the helper list keeps any helper the image or the user configured from storing or answering
/// credentials.
fn credential_args(state: &AppState, _rec: &WorkspaceRecord) -> Vec<String> {
    crate::secrets::git_helper_args(&state.engine)
}

/// Output kept per stream; the rest is counted and dropped.
const MAX_OUTPUT: usize = 1 << 20;
/// Time limit of local operations.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time limit of operations that talk to a remote (clone, push, pull).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest time limit a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest commit message, branch name, path or URL accepted.
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_FIELD: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Bodies and answers.

/// `?path=`: the repository (default: the workspace folder).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GitPathQuery {
    /// A directory of the repository (relative to the workspace folder unless absolute).
    pub path: Option<String>,
}

/// `GET git/diff` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GitDiffQuery {
    /// A directory of the repository (relative to the workspace folder unless absolute).
    pub path: Option<String>,
    /// The staged changes (index against HEAD, or against `base`) instead of the work tree's.
    pub staged: Option<bool>,
    /// Compare with this revision (a commit, branch or `main...HEAD`) instead of the index.
    pub base: Option<String>,
}

/// `GET git/log` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GitLogQuery {
    /// A directory of the repository (relative to the workspace folder unless absolute).
    pub path: Option<String>,
    /// At most this many commits (default 20, at most 1000).
    pub limit: Option<u32>,
    /// Start from this revision (default HEAD).
    pub rev: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Running git in the workspace.

/// What a git command did.
struct GitRun {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_dropped: usize,
    timed_out: bool,
}

impl GitRun {
    fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last non-empty line git wrote (stderr, else stdout), without credentials.
    fn last_line(&self) -> String {
        let last = |text: String| {
            text.lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        };
        let line = last(self.stderr())
            .or_else(|| last(self.stdout()))
            .unwrap_or_default();
        let line = strip_userinfo_in(&line);
        if line.chars().count() > 400 {
            line.chars().take(400).collect::<String>() + "…"
        } else {
            line
        }
    }
}

/// Kills the command if the request goes away before it ends.
struct KillOnDrop(Option<warren_runtime::Signaller>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.signal(9);
        }
    }
}

/// One git invocation in a workspace.
struct Git<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    rec: &'a WorkspaceRecord,
    /// `-C` directory (none: the workspace folder).
    dir: Option<String>,
}

impl<'a> Git<'a> {
    fn new(
        state: &'a AppState,
        caller: &'a Caller,
        rec: &'a WorkspaceRecord,
        dir: Option<String>,
    ) -> Self {
        Git {
            state,
            caller,
            rec,
            dir,
        }
    }

    /// Runs `git ARGS` (with the credential and safety options first); `env` and `stdin` are
    /// the command's.
    async fn run_with(
        &self,
        args: &[&str],
        env: BTreeMap<String, String>,
        stdin: Option<String>,
        timeout: Duration,
    ) -> ApiResult<GitRun> {
        let mut command: Vec<String> = vec!["git".into()];
        command.extend(credential_args(self.state, self.rec));
        for c in [
            "core.pager=cat",
            "color.ui=false",
            "advice.detachedHead=false",
        ] {
            command.push("-c".into());
            command.push(c.into());
        }
        // A stalled HTTP transfer ends on its own within the time limit: the remote helper is a
        // child of git that stopping git alone would leave waiting on the network.
        command.push("-c".into());
        command.push("http.lowSpeedLimit=1".into());
        command.push("-c".into());
        command.push(format!("http.lowSpeedTime={}", timeout.as_secs().max(1)));
        if let Some(d) = &self.dir {
            command.push("-C".into());
            command.push(d.clone());
        }
        command.extend(args.iter().map(|a| a.to_string()));
        let mut full_env: BTreeMap<String, String> = [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GCM_INTERACTIVE", "never"),
            ("GIT_PAGER", "cat"),
            ("LC_ALL", "C"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        full_env.extend(env);
        let req = ExecRequest {
            command,
            env: full_env,
            cwd: None,
            user: None,
            stdin: None,
            timeout: None,
            tty: None,
            login_shell: false,
        };
        let mut started = exec::start(self.state, &self.caller.user.id, self.rec, &req)
            .await
            .map_err(no_git)?;
        let mut guard = KillOnDrop(started.signaller.try_clone().ok());
        if let Some(mut w) = started.stdin.take() {
            let text = stdin.unwrap_or_default();
            std::thread::spawn(move || {
                let _ = w.write_all(text.as_bytes());
            });
        }
        let mut run = GitRun {
            code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_dropped: 0,
            timed_out: false,
        };
        let keep = |run: &mut GitRun, chan: u8, bytes: Vec<u8>| {
            if chan == 2 {
                // stderr: the end matters (git's last line says what went wrong).
                run.stderr.extend_from_slice(&bytes);
                if run.stderr.len() > MAX_OUTPUT {
                    let cut = run.stderr.len() - MAX_OUTPUT;
                    run.stderr.drain(..cut);
                }
            } else {
                let room = MAX_OUTPUT.saturating_sub(run.stdout.len());
                let take = room.min(bytes.len());
                run.stdout.extend_from_slice(&bytes[..take]);
                run.stdout_dropped += bytes.len() - take;
            }
        };
        // At the time limit SIGTERM (git removes what a clone had begun, and its helpers), then
        // SIGKILL if it is still there after exec's grace period.
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let exit = loop {
            tokio::select! {
                Some((chan, bytes)) = started.out.recv() => keep(&mut run, chan, bytes),
                r = &mut started.exit => break r,
                () = &mut deadline => {
                    if run.timed_out {
                        let _ = started.signaller.signal(9);
                        deadline.as_mut().reset(tokio::time::Instant::now() + MAX_TIMEOUT);
                    } else {
                        run.timed_out = true;
                        let _ = started.signaller.signal(15);
                        deadline.as_mut().reset(tokio::time::Instant::now() + exec::GONE_GRACE);
                    }
                }
            }
        };
        guard.0 = None;
        // What is still in the pipes (a child git started may hold them a little longer).
        while let Ok(Some((chan, bytes))) =
            tokio::time::timeout(exec::DRAIN, started.out.recv()).await
        {
            keep(&mut run, chan, bytes);
        }
        run.code = match exit {
            Ok(Ok(code)) => Some(code),
            _ => None,
        };
        Ok(run)
    }

    async fn run(&self, args: &[&str], timeout: Duration) -> ApiResult<GitRun> {
        self.run_with(args, BTreeMap::new(), None, timeout).await
    }

    /// Runs a command that must succeed: git's failure becomes the answer (`what` names the
    /// operation, `hint` says what to do).
    async fn must(&self, what: &str, args: &[&str], timeout: Duration) -> ApiResult<GitRun> {
        let r = self.run(args, timeout).await?;
        check(what, r)
    }

    /// Branch and commit of HEAD (and the repository's top directory when `top`).
    async fn head(&self, top: bool) -> ApiResult<GitHead> {
        let st = self.status(false).await?;
        let path = if top {
            let r = self
                .must(
                    "rev-parse",
                    &["rev-parse", "--show-toplevel"],
                    LOCAL_TIMEOUT,
                )
                .await?;
            Some(r.stdout().trim().to_string())
        } else {
            None
        };
        Ok(GitHead {
            path,
            branch: st.branch,
            commit: st.commit,
        })
    }

    /// `git status`, parsed (untracked files too when `untracked`).
    async fn status(&self, untracked: bool) -> ApiResult<GitStatus> {
        let u = if untracked {
            "--untracked-files=all"
        } else {
            "--untracked-files=no"
        };
        let r = self
            .must(
                "status",
                &["status", "--porcelain=v2", "--branch", "-z", u],
                LOCAL_TIMEOUT,
            )
            .await?;
        Ok(parse_status(&r.stdout()))
    }
}

/// An exec that could not start because the image has no git becomes a clear 400.
fn no_git(e: ApiError) -> ApiError {
    if e.body.message.contains("not found in the workspace") {
        ApiError::bad_request("git is not installed in the workspace image").hint(
            "use an image with git, or install it in the workspace (e.g. `apt-get install git`)",
        )
    } else {
        e
    }
}

/// Git's failure as an answer: 409 for a conflict with the repository's state (rejected
/// push, merge conflict, existing branch, nothing to commit), 400 for anything else; the message
/// is git's last line.
fn check(what: &str, r: GitRun) -> ApiResult<GitRun> {
    if r.ok() {
        return Ok(r);
    }
    if r.timed_out {
        return Err(ApiError::bad_request(format!(
            "git {what} did not finish in time and was stopped"
        ))
        .hint("give a longer `timeout`"));
    }
    let line = r.last_line();
    let all = format!("{}\n{}", r.stderr(), r.stdout()).to_ascii_lowercase();
    let conflict = [
        "rejected",
        "non-fast-forward",
        "fetch first",
        "conflict",
        "already exists",
        "nothing to commit",
        "divergent",
        "would be overwritten",
        "not possible to fast-forward",
        "unmerged",
        "uncommitted changes",
    ]
    .iter()
    .any(|n| all.contains(n));
    let (status, code) = if conflict {
        (StatusCode::CONFLICT, ErrorCode::Conflict)
    } else {
        (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
    };
    let message = if line.is_empty() {
        format!("git {what} failed (exit code {})", r.code.unwrap_or(-1))
    } else {
        format!("git {what} failed: {line}")
    };
    let hint = if all.contains("nothing to commit") {
        "stage changes first (POST toolbox/git/add), or set `allow_empty`"
    } else if all.contains("not a git repository") {
        "`path` must be inside a repository (clone one with POST toolbox/git/clone)"
    } else if all.contains("authentication failed")
        || all.contains("could not read username")
        || all.contains("terminal prompts disabled")
    {
        "the remote wants credentials: store a git secret for its host and request it for the workspace"
    } else if conflict {
        "bring the repository up to date (pull) or resolve the conflict, then retry"
    } else {
        "see git's message; GET toolbox/git/status shows the repository's state"
    };
    Err(ApiError::new(status, code, message).hint(hint))
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// A field git reads as an argument: not empty, not an option, no NUL or newline, bounded.
fn arg_field(name: &str, v: &str) -> ApiResult<()> {
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{name}: must not be empty")));
    }
    if v.starts_with('-') {
        return Err(
            ApiError::bad_request(format!("{name}: `{v}` starts with `-`")).hint(format!(
                "{name} names a revision, branch or remote, not an option"
            )),
        );
    }
    text_field(name, v, MAX_FIELD)
}

/// Free text: no NUL, bounded.
fn text_field(name: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{name}: contains a NUL byte"
        )));
    }
    if v.len() > max {
        return Err(ApiError::bad_request(format!(
            "{name}: longer than {max} bytes"
        )));
    }
    if name != "message" && (v.contains('\n') || v.contains('\r')) {
        return Err(ApiError::bad_request(format!(
            "{name}: contains a line break"
        )));
    }
    Ok(())
}

/// The repository directory from `path` (none: the workspace folder).
fn repo_dir(path: &Option<String>) -> ApiResult<Option<String>> {
    match path {
        None => Ok(None),
        Some(p) if p.is_empty() => Err(ApiError::bad_request("path: must not be empty")
            .hint("leave `path` out for the workspace folder")),
        Some(p) => {
            text_field("path", p, MAX_FIELD)?;
            Ok(Some(p.clone()))
        }
    }
}

fn timeout_field(t: &Option<String>, default: Duration) -> ApiResult<Duration> {
    let Some(t) = t else {
        return Ok(default);
    };
    let d = warren_api::template::parse_duration(t)
        .map_err(|e| ApiError::bad_request(format!("timeout `{t}`: {e}")))?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(ApiError::bad_request(format!(
            "timeout `{t}`: must be between 1s and 1h"
        )));
    }
    Ok(d)
}

/// `url` without the userinfo of its authority (`https://user:token@host/x` → `https://host/x`).
pub fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

/// Every URL in `text` without its userinfo (for git's messages).
fn strip_userinfo_in(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                // Quotes and punctuation around a URL stay as they are.
                let start = w.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                let (pre, url) = w.split_at(start);
                format!("{pre}{}", strip_userinfo(url))
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `url` carries credentials (`https://user[:secret]@host`).
fn has_userinfo(url: &str) -> bool {
    strip_userinfo(url) != url
}

/// The directory `git clone URL` makes by default: the URL's last path part without `.git`.
fn default_clone_dir(url: &str) -> String {
    let u = url.trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u).trim_end_matches('/');
    let last = u.rsplit(['/', ':']).next().unwrap_or(u);
    if last.is_empty() {
        "repo".to_string()
    } else {
        last.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing git's output.

fn change_word(c: char) -> &'static str {
    match c {
        '.' | ' ' => "unmodified",
        'M' => "modified",
        'T' => "type_changed",
        'A' => "added",
        'D' => "deleted",
        'R' => "renamed",
        'C' => "copied",
        'U' => "unmerged",
        '?' => "untracked",
        '!' => "ignored",
        _ => "unknown",
    }
}

/// Parses `git status --porcelain=v2 --branch -z`.
fn parse_status(out: &str) -> GitStatus {
    let mut st = GitStatus {
        branch: None,
        commit: None,
        upstream: None,
        ahead: 0,
        behind: 0,
        clean: true,
        files: Vec::new(),
    };
    let mut entries = out.split('\0').filter(|e| !e.is_empty());
    while let Some(e) = entries.next() {
        if let Some(h) = e.strip_prefix("# ") {
            let (k, v) = h.split_once(' ').unwrap_or((h, ""));
            match k {
                "branch.oid" if v != "(initial)" => st.commit = Some(v.to_string()),
                "branch.head" if v != "(detached)" => st.branch = Some(v.to_string()),
                "branch.upstream" => st.upstream = Some(v.to_string()),
                "branch.ab" => {
                    for part in v.split(' ') {
                        if let Some(n) = part.strip_prefix('+') {
                            st.ahead = n.parse().unwrap_or(0);
                        } else if let Some(n) = part.strip_prefix('-') {
                            st.behind = n.parse().unwrap_or(0);
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let xy = |s: &str| {
            let mut c = s.chars();
            (
                change_word(c.next().unwrap_or('.')).to_string(),
                change_word(c.next().unwrap_or('.')).to_string(),
            )
        };
        let file = match e.as_bytes().first() {
            Some(b'1') => {
                let f: Vec<&str> = e.splitn(9, ' ').collect();
                f.get(8).map(|p| {
                    let (index, worktree) = xy(f[1]);
                    GitFileStatus {
                        path: p.to_string(),
                        orig_path: None,
                        index,
                        worktree,
                    }
                })
            }
            Some(b'2') => {
                let f: Vec<&str> = e.splitn(10, ' ').collect();
                let orig = entries.next().map(str::to_string);
                f.get(9).map(|p| {
                    let (index, worktree) = xy(f[1]);
                    GitFileStatus {
                        path: p.to_string(),
                        orig_path: orig,
                        index,
                        worktree,
                    }
                })
            }
            Some(b'u') => {
                let f: Vec<&str> = e.splitn(11, ' ').collect();
                f.get(10).map(|p| GitFileStatus {
                    path: p.to_string(),
                    orig_path: None,
                    index: "unmerged".into(),
                    worktree: "unmerged".into(),
                })
            }
            Some(b'?') => Some(GitFileStatus {
                path: e[2..].to_string(),
                orig_path: None,
                index: "untracked".into(),
                worktree: "untracked".into(),
            }),
            _ => None,
        };
        if let Some(f) = file {
            st.files.push(f);
        }
    }
    st.clean = st.files.is_empty();
    st
}

/// Field and record separators of the formats below.
const US: char = '\u{1f}';
const RS: char = '\u{1e}';

fn parse_log(out: &str) -> Vec<GitLogEntry> {
    out.split(RS)
        .map(|r| r.trim_start_matches('\n'))
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let f: Vec<&str> = r.splitn(6, US).collect();
            (f.len() == 6).then(|| GitLogEntry {
                commit: f[0].to_string(),
                parents: f[1]
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
                author_name: f[2].to_string(),
                author_email: f[3].to_string(),
                date: f[4].to_string(),
                subject: f[5].trim_end_matches('\n').to_string(),
            })
        })
        .collect()
}

fn parse_branches(out: &str) -> Vec<GitBranchInfo> {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.splitn(4, US).collect();
        if f.len() < 4 {
            continue;
        }
        let (refname, commit, upstream, head) = (f[0], f[1], f[2], f[3]);
        if let Some(name) = refname.strip_prefix("refs/heads/") {
            local.push(GitBranchInfo {
                name: name.to_string(),
                commit: commit.to_string(),
                upstream: (!upstream.is_empty()).then(|| upstream.to_string()),
                current: head.trim() == "*",
                remote: false,
            });
        } else if let Some(name) = refname.strip_prefix("refs/remotes/") {
            if name.ends_with("/HEAD") {
                continue;
            }
            remote.push(GitBranchInfo {
                name: name.to_string(),
                commit: commit.to_string(),
                upstream: None,
                current: false,
                remote: true,
            });
        }
    }
    local.extend(remote);
    local
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// The audit note of a git operation on `rec`.
fn note(rec: &WorkspaceRecord, op: &str, details: serde_json::Value) -> AuditNote {
    let mut n = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    n.action = Some(format!("workspace.git.{op}"));
    n.details_json = Some(details.to_string());
    n
}

async fn workspace(state: &AppState, caller: &Caller, ws: &str) -> ApiResult<WorkspaceRecord> {
    find_workspace(state, caller, ws, Op::WorkspaceExec).await
}

/// Clones a repository into the workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/clone", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitCloneRequest,
    responses((status = 201, body = GitHead), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_clone(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitCloneRequest>,
) -> ApiResult<Response> {
    arg_field("url", &body.url)?;
    if has_userinfo(&body.url) {
        return Err(
            ApiError::bad_request("url: it carries credentials, which git would keep in the repository's configuration")
                .hint("give the URL without `user:password@`; store the credential as a git secret for its host"),
        );
    }
    if let Some(b) = &body.branch {
        arg_field("branch", b)?;
    }
    if body.depth == Some(0) {
        return Err(ApiError::bad_request("depth: must be at least 1")
            .hint("leave `depth` out for the whole history"));
    }
    let dir = match repo_dir(&body.path)? {
        Some(d) => d,
        None => default_clone_dir(&body.url),
    };
    let timeout = timeout_field(&body.timeout, REMOTE_TIMEOUT)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, None);
    let depth = body.depth.map(|d| d.to_string());
    let mut args = vec!["clone", "--quiet"];
    if let Some(d) = &depth {
        args.extend(["--depth", d]);
    }
    if let Some(b) = &body.branch {
        args.extend(["--branch", b]);
    }
    args.extend(["--", &body.url, &dir]);
    git.must("clone", &args, timeout).await?;
    let head = Git::new(&state, &caller, &rec, Some(dir.clone()))
        .head(true)
        .await?;
    let n = note(
        &rec,
        "clone",
        serde_json::json!({"url": strip_userinfo(&body.url), "path": head.path, "branch": head.branch, "commit": head.commit}),
    );
    Ok((StatusCode::CREATED, axum::Extension(n), Json(head)).into_response())
}

/// The repository's branch, upstream and changed files.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/git/status", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), GitPathQuery),
    responses((status = 200, body = GitStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn git_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<GitPathQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<GitStatus>> {
    let Query(q) = q.map_err(bad_query)?;
    let dir = repo_dir(&q.path)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let st = Git::new(&state, &caller, &rec, dir).status(true).await?;
    Ok(Json(st))
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
}

/// The diff of the work tree (or the index with `staged`, or against `base`), as text.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/git/diff", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), GitDiffQuery),
    responses((status = 200, description = "text/plain: the unified diff (at most 1 MiB, then a marker line)"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn git_diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<GitDiffQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let dir = repo_dir(&q.path)?;
    if let Some(b) = &q.base {
        arg_field("base", b)?;
    }
    let rec = workspace(&state, &caller, &ws).await?;
    let mut args = vec!["diff", "--no-color", "--no-ext-diff"];
    if q.staged.unwrap_or(false) {
        args.push("--cached");
    }
    if let Some(b) = &q.base {
        args.push(b);
    }
    args.push("--");
    let r = Git::new(&state, &caller, &rec, dir)
        .must("diff", &args, LOCAL_TIMEOUT)
        .await?;
    let mut text = r.stdout;
    if r.stdout_dropped > 0 {
        text.extend_from_slice(
            format!(
                "\n[warren: output truncated: {} bytes dropped]\n",
                r.stdout_dropped
            )
            .as_bytes(),
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Stages files (default: every change); answers the status after.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/add", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitAddRequest,
    responses((status = 200, body = GitStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn git_add(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitAddRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    let files = body.files.clone().unwrap_or_else(|| vec![".".into()]);
    if files.is_empty() {
        return Err(ApiError::bad_request("files: name at least one file")
            .hint("leave `files` out to stage every change"));
    }
    for f in &files {
        if f.is_empty() {
            return Err(ApiError::bad_request("files: an empty path"));
        }
        text_field("files", f, MAX_FIELD)?;
    }
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let mut args = vec!["add", "--all", "--"];
    args.extend(files.iter().map(String::as_str));
    git.must("add", &args, LOCAL_TIMEOUT).await?;
    let st = git.status(true).await?;
    let n = note(
        &rec,
        "add",
        serde_json::json!({"path": body.path, "files": files}),
    );
    Ok((axum::Extension(n), Json(st)).into_response())
}

/// Commits what is staged, as the given author or the workspace owner.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/commit", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitCommitRequest,
    responses((status = 201, body = GitCommitted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitCommitRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    if body.message.trim().is_empty() {
        return Err(ApiError::bad_request("message: must not be empty"));
    }
    text_field("message", &body.message, MAX_MESSAGE)?;
    for (name, v) in [
        ("author_name", &body.author_name),
        ("author_email", &body.author_email),
    ] {
        if let Some(v) = v {
            if v.trim().is_empty() || v.contains(['<', '>']) {
                return Err(ApiError::bad_request(format!(
                    "{name}: must not be empty or hold `<` or `>`"
                )));
            }
            text_field(name, v, 256)?;
        }
    }
    let rec = workspace(&state, &caller, &ws).await?;
    let owner = state
        .store
        .user(&rec.ownership.owner_id)
        .await?
        .map(|u| u.username)
        .unwrap_or_else(|| "warren".into());
    let name = body.author_name.clone().unwrap_or_else(|| owner.clone());
    let email = body
        .author_email
        .clone()
        .unwrap_or_else(|| format!("{owner}@users.warren.invalid"));
    let env: BTreeMap<String, String> = [
        ("GIT_AUTHOR_NAME", &name),
        ("GIT_AUTHOR_EMAIL", &email),
        ("GIT_COMMITTER_NAME", &name),
        ("GIT_COMMITTER_EMAIL", &email),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    let git = Git::new(&state, &caller, &rec, dir);
    let mut args = vec!["commit", "--quiet", "--file=-"];
    if body.allow_empty.unwrap_or(false) {
        args.push("--allow-empty");
    }
    let r = git
        .run_with(&args, env, Some(body.message.clone()), LOCAL_TIMEOUT)
        .await?;
    check("commit", r)?;
    let head = git.head(false).await?;
    let commit = head
        .commit
        .ok_or_else(|| ApiError::internal("no HEAD after a commit"))?;
    let n = note(
        &rec,
        "commit",
        serde_json::json!({"path": body.path, "commit": commit, "branch": head.branch, "author": format!("{name} <{email}>")}),
    );
    Ok((
        StatusCode::CREATED,
        axum::Extension(n),
        Json(GitCommitted {
            commit,
            branch: head.branch,
            author: format!("{name} <{email}>"),
        }),
    )
        .into_response())
}

/// Local and remote-tracking branches.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/git/branches", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), GitPathQuery),
    responses((status = 200, body = GitBranches), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn git_branches(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<GitPathQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<GitBranches>> {
    let Query(q) = q.map_err(bad_query)?;
    let dir = repo_dir(&q.path)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let r = git
        .must(
            "for-each-ref",
            &[
                "for-each-ref",
                "--format=%(refname)%1f%(objectname)%1f%(upstream:short)%1f%(HEAD)",
                "refs/heads",
                "refs/remotes",
            ],
            LOCAL_TIMEOUT,
        )
        .await?;
    let branches = parse_branches(&r.stdout());
    let current = branches.iter().find(|b| b.current).map(|b| b.name.clone());
    // An unborn branch (no commit yet) has no ref but is current.
    let current = match current {
        Some(c) => Some(c),
        None => git.status(false).await?.branch,
    };
    Ok(Json(GitBranches { current, branches }))
}

/// Creates a branch (without switching to it).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/branch", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitBranchRequest,
    responses((status = 201, body = GitBranchCreated), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_branch(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitBranchRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    arg_field("name", &body.name)?;
    if let Some(s) = &body.start_point {
        arg_field("start_point", s)?;
    }
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let mut args = vec!["branch", "--no-track", &body.name];
    if let Some(s) = &body.start_point {
        args.push(s);
    }
    git.must("branch", &args, LOCAL_TIMEOUT).await?;
    let full = format!("refs/heads/{}", body.name);
    let r = git
        .must(
            "rev-parse",
            &["rev-parse", "--verify", "--quiet", &full],
            LOCAL_TIMEOUT,
        )
        .await?;
    let commit = r.stdout().trim().to_string();
    let n = note(
        &rec,
        "branch",
        serde_json::json!({"path": body.path, "name": body.name, "commit": commit}),
    );
    Ok((
        StatusCode::CREATED,
        axum::Extension(n),
        Json(GitBranchCreated {
            name: body.name,
            commit,
        }),
    )
        .into_response())
}

/// Switches to a branch (creating it with `create`).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/checkout", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitCheckoutRequest,
    responses((status = 200, body = GitHead), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_checkout(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitCheckoutRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    arg_field("branch", &body.branch)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let mut args = vec!["switch", "--quiet"];
    if body.create.unwrap_or(false) {
        args.push("--create");
    }
    args.push(&body.branch);
    git.must("checkout", &args, LOCAL_TIMEOUT).await?;
    let head = git.head(false).await?;
    let n = note(
        &rec,
        "checkout",
        serde_json::json!({"path": body.path, "branch": head.branch, "commit": head.commit}),
    );
    Ok((axum::Extension(n), Json(head)).into_response())
}

/// Pushes a branch to a remote.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/push", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitPushRequest,
    responses((status = 200, body = GitPushed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_push(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitPushRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    let remote = body.remote.clone().unwrap_or_else(|| "origin".into());
    arg_field("remote", &remote)?;
    if has_userinfo(&remote) {
        return Err(ApiError::bad_request("remote: it carries credentials")
            .hint("give the URL without `user:password@`; store the credential as a git secret for its host"));
    }
    if let Some(b) = &body.branch {
        arg_field("branch", b)?;
    }
    let timeout = timeout_field(&body.timeout, REMOTE_TIMEOUT)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let branch = match &body.branch {
        Some(b) => b.clone(),
        None => git.status(false).await?.branch.ok_or_else(|| {
            ApiError::bad_request("HEAD is detached: there is no current branch to push")
                .hint("give `branch`, or check out a branch first")
        })?,
    };
    let local = format!("refs/heads/{branch}");
    let r = git
        .run(&["rev-parse", "--verify", "--quiet", &local], LOCAL_TIMEOUT)
        .await?;
    if !r.ok() {
        return Err(
            ApiError::bad_request(format!("branch: there is no local branch `{branch}`"))
                .hint("GET toolbox/git/branches lists them"),
        );
    }
    let commit = r.stdout().trim().to_string();
    let url = match git
        .run(&["remote", "get-url", "--push", &remote], LOCAL_TIMEOUT)
        .await?
    {
        r if r.ok() => strip_userinfo(r.stdout().trim()),
        _ => strip_userinfo(&remote),
    };
    let refspec = format!("{local}:{local}");
    let mut args = vec!["push", "--quiet", "--porcelain"];
    if body.set_upstream.unwrap_or(false) {
        args.push("--set-upstream");
    }
    args.extend(["--", &remote, &refspec]);
    git.must("push", &args, timeout).await?;
    let pushed = GitPushed {
        remote: strip_userinfo(&remote),
        url,
        branch,
        commit,
    };
    record_push(&state, &caller, &rec, &pushed).await;
    let n = note(
        &rec,
        "push",
        serde_json::json!({"remote": pushed.remote, "url": pushed.url, "branch": pushed.branch, "commit": pushed.commit}),
    );
    Ok((axum::Extension(n), Json(pushed)).into_response())
}

/// Records a push in the workspace's session audit (`session.git_push`).
async fn record_push(state: &AppState, caller: &Caller, rec: &WorkspaceRecord, p: &GitPushed) {
    crate::session_audit::record(
        state,
        rec,
        Some(caller),
        crate::session_audit::SessionEvent::GitPushed {
            remote: p.url.clone(),
            branch: p.branch.clone(),
            commit: Some(p.commit.clone()),
        },
    )
    .await;
}

/// Fetches and merges (or rebases onto) a remote branch.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/toolbox/git/pull", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = GitPullRequest,
    responses((status = 200, body = GitPulled), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn git_pull(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<GitPullRequest>,
) -> ApiResult<Response> {
    let dir = repo_dir(&body.path)?;
    if let Some(r) = &body.remote {
        arg_field("remote", r)?;
        if has_userinfo(r) {
            return Err(ApiError::bad_request("remote: it carries credentials")
                .hint("give the URL without `user:password@`; store the credential as a git secret for its host"));
        }
    }
    if let Some(b) = &body.branch {
        arg_field("branch", b)?;
        if body.remote.is_none() {
            return Err(ApiError::bad_request("branch: needs `remote` too")
                .hint(r#"e.g. {"remote": "origin", "branch": "main"}"#));
        }
    }
    let timeout = timeout_field(&body.timeout, REMOTE_TIMEOUT)?;
    let rec = workspace(&state, &caller, &ws).await?;
    let owner = state
        .store
        .user(&rec.ownership.owner_id)
        .await?
        .map(|u| u.username)
        .unwrap_or_else(|| "warren".into());
    // A merge commit needs a committer: the owner, unless the repository or user says otherwise.
    let env: BTreeMap<String, String> = [
        ("GIT_COMMITTER_NAME", owner.clone()),
        (
            "GIT_COMMITTER_EMAIL",
            format!("{owner}@users.warren.invalid"),
        ),
        ("GIT_AUTHOR_NAME", owner.clone()),
        ("GIT_AUTHOR_EMAIL", format!("{owner}@users.warren.invalid")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let git = Git::new(&state, &caller, &rec, dir);
    let before = git.status(false).await?.commit;
    let mut args = vec!["pull", "--quiet", "--no-edit"];
    args.push(if body.rebase.unwrap_or(false) {
        "--rebase"
    } else {
        "--no-rebase"
    });
    if let Some(r) = &body.remote {
        args.push(r);
        if let Some(b) = &body.branch {
            args.push(b);
        }
    }
    let r = git.run_with(&args, env, None, timeout).await?;
    check("pull", r)?;
    let head = git.head(false).await?;
    let updated = head.commit != before;
    let n = note(
        &rec,
        "pull",
        serde_json::json!({"path": body.path, "remote": body.remote, "branch": head.branch, "commit": head.commit}),
    );
    Ok((
        axum::Extension(n),
        Json(GitPulled {
            branch: head.branch,
            commit: head.commit,
            updated,
        }),
    )
        .into_response())
}

/// The newest commits.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/toolbox/git/log", tag = "toolbox", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), GitLogQuery),
    responses((status = 200, body = [GitLogEntry]), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn git_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<GitLogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<GitLogEntry>>> {
    let Query(q) = q.map_err(bad_query)?;
    let dir = repo_dir(&q.path)?;
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: 1 to 1000"
        )));
    }
    if let Some(r) = &q.rev {
        arg_field("rev", r)?;
    }
    let rec = workspace(&state, &caller, &ws).await?;
    let git = Git::new(&state, &caller, &rec, dir);
    let n = limit.to_string();
    let mut args = vec![
        "log",
        "--format=%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%s%x1e",
        "-n",
        &n,
    ];
    if let Some(r) = &q.rev {
        args.push(r);
    }
    args.push("--");
    let r = git.run(&args, LOCAL_TIMEOUT).await?;
    if !r.ok() && q.rev.is_none() && r.stderr().contains("does not have any commits yet") {
        return Ok(Json(Vec::new()));
    }
    let r = check("log", r)?;
    Ok(Json(parse_log(&r.stdout())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped_from_urls_and_messages() {
        assert_eq!(
            strip_userinfo("https://bot:s3cret@git.example.com/o/r.git"),
            "https://git.example.com/o/r.git"
        );
        assert_eq!(
            strip_userinfo("https://tok@host:8443/x?y=a@b"),
            "https://host:8443/x?y=a@b"
        );
        assert_eq!(
            strip_userinfo("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(strip_userinfo("https://host/a@b"), "https://host/a@b");
        assert!(has_userinfo("http://u:p@h/"));
        assert!(!has_userinfo("ssh://h/x"));
        assert_eq!(
            strip_userinfo_in("fatal: unable to access 'http://u:p@h/r.git/': 403"),
            "fatal: unable to access 'http://h/r.git/': 403"
        );
    }

    #[test]
    fn clone_directories_are_named_as_git_names_them() {
        assert_eq!(default_clone_dir("https://h/o/repo.git"), "repo");
        assert_eq!(default_clone_dir("https://h/o/repo/"), "repo");
        assert_eq!(default_clone_dir("git@h:repo.git"), "repo");
    }

    #[test]
    fn porcelain_v2_status_is_parsed() {
        let out = "# branch.oid 0123\0# branch.head main\0# branch.upstream origin/main\0# branch.ab +2 -1\0\
            1 .M N... 100644 100644 100644 aaa aaa a file.txt\0\
            2 R. N... 100644 100644 100644 bbb bbb R100 new name\0old name\0\
            u UU N... 100644 100644 100644 100644 c d e conflict.txt\0\
            ? new dir/x\0";
        let st = parse_status(out);
        assert_eq!(st.branch.as_deref(), Some("main"));
        assert_eq!(st.commit.as_deref(), Some("0123"));
        assert_eq!(st.upstream.as_deref(), Some("origin/main"));
        assert_eq!((st.ahead, st.behind), (2, 1));
        assert!(!st.clean);
        assert_eq!(st.files.len(), 4);
        assert_eq!(st.files[0].path, "a file.txt");
        assert_eq!(
            (st.files[0].index.as_str(), st.files[0].worktree.as_str()),
            ("unmodified", "modified")
        );
        assert_eq!(st.files[1].path, "new name");
        assert_eq!(st.files[1].orig_path.as_deref(), Some("old name"));
        assert_eq!(st.files[1].index, "renamed");
        assert_eq!(st.files[2].index, "unmerged");
        assert_eq!(st.files[3].path, "new dir/x");
        assert_eq!(st.files[3].worktree, "untracked");
        let st = parse_status("# branch.oid (initial)\0# branch.head (detached)\0");
        assert!(st.branch.is_none() && st.commit.is_none() && st.clean);
    }

    #[test]
    fn log_and_branches_are_parsed() {
        let log = "c1\u{1f}p1 p2\u{1f}A B\u{1f}a@b\u{1f}2026-01-01T00:00:00+00:00\u{1f}subject: one\u{1e}\n\
            c2\u{1f}\u{1f}C\u{1f}c@d\u{1f}2026-01-01T00:00:00+00:00\u{1f}root\u{1e}\n";
        let l = parse_log(log);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].parents, vec!["p1", "p2"]);
        assert_eq!(l[0].subject, "subject: one");
        assert!(l[1].parents.is_empty());
        let b = parse_branches(
            "refs/heads/main\u{1f}c1\u{1f}origin/main\u{1f}*\n\
             refs/heads/dev\u{1f}c2\u{1f}\u{1f} \n\
             refs/remotes/origin/HEAD\u{1f}c1\u{1f}\u{1f} \n\
             refs/remotes/origin/main\u{1f}c1\u{1f}\u{1f} \n",
        );
        assert_eq!(b.len(), 3);
        assert!(b[0].current && b[0].upstream.as_deref() == Some("origin/main"));
        assert!(!b[1].current && b[1].upstream.is_none());
        assert!(b[2].remote && b[2].name == "origin/main");
    }
}
