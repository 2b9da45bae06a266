//! The MCP tools. Each one calls the REST API in-process ([`ToolCtx`]) with the caller's token, so
//! what a tool may do is what the token may do through the API, and the API audits it.
//!
//! Tool errors (the API refused, the workspace is not running, a file is missing) are results
//! with `isError: true` carrying the API's message and hint; malformed arguments and unknown
//! tools are JSON-RPC errors (`-32602`).
//!
//! Files go through the toolbox's file routes (`.../toolbox/files`, `warren __toolbox` inside
//! the workspace); git runs as an ordinary exec (`POST /workspaces/{ws}/exec`) of the image's own
//! `git` as the workspace's remote user, with names as positional arguments of a fixed `sh -c`
//! script, never inside the script.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;
use warren_api::v1::ExecEvent;

use super::RpcError;

/// Output kept per stream of a command; the rest is dropped and counted.
pub const OUTPUT_LIMIT: usize = 1 << 20;
/// The largest file `read_file` returns.
pub const READ_LIMIT: usize = 4 << 20;
/// The largest JSON answer read from the API.
const ANSWER_LIMIT: usize = 16 << 20;
/// A command's time limit when the caller gives none.
const DEFAULT_TIMEOUT: &str = "10m";
/// How long `create_workspace` and `delete_workspace` wait for their job.
const JOB_WAIT: Duration = Duration::from_secs(30 * 60);

/// Who calls, and the API they call.
pub struct ToolCtx {
    /// The API router (with the API's middleware).
    pub api: Router,
    /// The caller's `Authorization` header, passed on as is.
    pub authorization: HeaderValue,
    /// The caller's address (for the audit log).
    pub remote: Option<SocketAddr>,
    /// The caller's `User-Agent`, marked as coming through MCP.
    pub user_agent: HeaderValue,
    /// The caller's user name (the default git author).
    pub username: String,
    /// Whether results carry `structuredContent` (protocol 2025-06-18).
    pub structured: bool,
    /// `-c credential.helper=...` for git command lines: credentials come from Warren's helper
    /// (the workspace's requested git secrets), never from the repository's configuration.
    pub git_helper: Vec<String>,
}

/// An API answer that is not a success: its code, message and hint.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Stable code (`not_found`...).
    pub code: String,
    /// One line.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>, hint: Option<&str>) -> Self {
        Failure {
            code: code.into(),
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ToolCtx {
    /// Sends one API request in-process, with a JSON body if any.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<axum::response::Response, Failure> {
        let body = body.map(|b| ("application/json", Body::from(b.to_string())));
        self.send_body(method, path, body).await
    }

    /// Sends one API request in-process, with a body of a content type if any.
    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Body)>,
    ) -> Result<axum::response::Response, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::USER_AGENT, self.user_agent.clone());
        let body = match body {
            Some((ct, b)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                b
            }
            None => Body::empty(),
        };
        let mut req = req
            .body(body)
            .map_err(|e| Failure::new("internal", format!("bad request: {e}"), None))?;
        if let Some(a) = self.remote {
            req.extensions_mut().insert(ConnectInfo(a));
        }
        match self.api.clone().oneshot(req).await {
            Ok(r) => Ok(r),
            Err(e) => match e {},
        }
    }

    /// An API call with a JSON answer; a non-success answer is its [`Failure`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|e| Failure::new("internal", format!("reading the answer: {e}"), None))?;
        if !status.is_success() {
            return Err(failure_of(status, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::new("internal", format!("unexpected answer: {e}"), None))
    }

    /// Runs a command through `POST /workspaces/{ws}/exec` and collects its output (up to
    /// [`OUTPUT_LIMIT`] per stream).
    async fn exec(&self, ws: &str, req: &Value) -> Result<Ran, Failure> {
        let resp = self
            .send(
                Method::POST,
                &format!("/api/v1/workspaces/{}/exec", seg(ws)),
                Some(req),
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
                .await
                .unwrap_or_default();
            return Err(failure_of(status, &bytes));
        }
        let mut ran = Ran::default();
        let mut stream = resp.into_body().into_data_stream();
        let mut line: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::new("internal", format!("the command's output broke: {e}"), None)
            })?;
            for &b in chunk.iter() {
                if b == b'\n' {
                    ran.event(&line);
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            ran.event(&line);
        }
        Ok(ran)
    }

    /// Runs `sh -c SCRIPT sh ARGS...` (names as positional arguments, never in the script).
    async fn script(
        &self,
        ws: &str,
        script: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: BTreeMap<String, String>,
    ) -> Result<Ran, Failure> {
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            script.into(),
            "sh".into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut req = json!({"command": argv, "timeout": DEFAULT_TIMEOUT, "env": env});
        if let Some(s) = stdin {
            req["stdin"] = json!(s);
        }
        self.exec(ws, &req).await
    }

    /// Waits for job `id` to end; its last state.
    async fn wait_job(&self, id: &str) -> Result<Value, Failure> {
        let t0 = tokio::time::Instant::now();
        loop {
            let job = self
                .call(Method::GET, &format!("/api/v1/jobs/{}", seg(id)), None)
                .await?;
            let status = job["status"].as_str().unwrap_or("");
            if !matches!(status, "pending" | "running") || t0.elapsed() > JOB_WAIT {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The [`Failure`] of an error answer.
fn failure_of(status: StatusCode, body: &[u8]) -> Failure {
    #[derive(Deserialize)]
    struct E {
        code: String,
        message: String,
        #[serde(default)]
        hint: Option<String>,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => Failure {
            code: e.code,
            message: e.message,
            hint: e.hint,
        },
        Err(_) => Failure::new(
            "internal",
            format!("the API answered {status}"),
            Some("the server log has the details"),
        ),
    }
}

/// A finished command: output (bounded), exit code, errors.
#[derive(Debug, Default)]
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_dropped: u64,
    stderr_dropped: u64,
    exit_code: Option<i32>,
    error: Option<String>,
    timed_out: bool,
}

impl Ran {
    fn event(&mut self, line: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<ExecEvent>(line) else {
            return;
        };
        match ev {
            ExecEvent::Stdout { text, base64 } => {
                let b = bytes_of(text, base64);
                keep(&mut self.stdout, &mut self.stdout_dropped, &b);
            }
            ExecEvent::Stderr { text, base64 } => {
                let b = bytes_of(text, base64);
                keep(&mut self.stderr, &mut self.stderr_dropped, &b);
            }
            ExecEvent::Exit { code } => self.exit_code = Some(code),
            ExecEvent::Error { message } => {
                if message.contains("timed out") {
                    self.timed_out = true;
                }
                self.error = Some(message);
            }
            ExecEvent::Heartbeat => {}
        }
    }

    fn text(b: &[u8], dropped: u64) -> String {
        let mut s = String::from_utf8_lossy(b).into_owned();
        if dropped > 0 {
            if !s.ends_with('\n') && !s.is_empty() {
                s.push('\n');
            }
            s.push_str(&format!(
                "[warren: output truncated: {dropped} bytes dropped]\n"
            ));
        }
        s
    }

    fn stdout_text(&self) -> String {
        Self::text(&self.stdout, self.stdout_dropped)
    }

    fn stderr_text(&self) -> String {
        Self::text(&self.stderr, self.stderr_dropped)
    }

    /// The last line of stderr (or the exec's error), for a tool error.
    fn why(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        err.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .or_else(|| self.error.clone())
            .unwrap_or_else(|| format!("exit code {}", self.exit_code.unwrap_or(-1)))
    }

    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

fn bytes_of(text: Option<String>, b64: Option<String>) -> Vec<u8> {
    match (text, b64) {
        (Some(t), _) => t.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
        (None, None) => vec![],
    }
}

fn keep(buf: &mut Vec<u8>, dropped: &mut u64, b: &[u8]) {
    let room = OUTPUT_LIMIT.saturating_sub(buf.len());
    let n = room.min(b.len());
    buf.extend_from_slice(&b[..n]);
    *dropped += (b.len() - n) as u64;
}

/// A tool's result.
fn result(ctx: &ToolCtx, text: String, structured: Value) -> Value {
    let mut r = json!({"content": [{"type": "text", "text": text}], "isError": false});
    if ctx.structured && structured.is_object() {
        r["structuredContent"] = structured;
    }
    r
}

/// A tool's failure: the API's message and hint.
fn failed(ctx: &ToolCtx, f: &Failure) -> Value {
    let mut text = f.message.clone();
    if let Some(h) = &f.hint {
        text.push_str("\nhint: ");
        text.push_str(h);
    }
    let mut r = json!({"content": [{"type": "text", "text": text}], "isError": true});
    if ctx.structured {
        r["structuredContent"] =
            json!({"error": {"code": f.code, "message": f.message, "hint": f.hint}});
    }
    r
}

/// Parses a tool's arguments; errors name the field.
fn args<T: DeserializeOwned>(v: Value) -> Result<T, RpcError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        if path.is_empty() || path == "." {
            RpcError::params(format!("Invalid arguments: {inner}"))
        } else {
            RpcError::params(format!("Invalid arguments: {path}: {inner}"))
        }
    })
}

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn ws_prop() -> Value {
    json!({"type": "string", "description": "The workspace's name (`name.user` for another user's)."})
}

fn repo_prop() -> Value {
    json!({"type": "string", "description": "The repository's directory (relative to the workspace folder, or absolute). Default: the workspace folder."})
}

/// `tools/list`: every tool with its JSON Schema.
pub fn list() -> Vec<Value> {
    let ro = json!({"readOnlyHint": true, "openWorldHint": false});
    vec![
        json!({
            "name": "list_workspaces",
            "title": "List workspaces",
            "description": "Lists your workspaces on the Warren server: name, state, image.",
            "inputSchema": schema(json!({}), &[]),
            "annotations": ro,
        }),
        json!({
            "name": "create_workspace",
            "title": "Create a workspace",
            "description": "Creates a workspace from a template and waits until it runs (or its creation failed).",
            "inputSchema": schema(json!({
                "name": {"type": "string", "description": "Name: lowercase letters, digits and dashes, unique among your workspaces."},
                "template": {"type": "string", "description": "The template to create it from (see the server's templates)."},
                "parameters": {"type": "object", "description": "The template's parameter values.", "additionalProperties": true},
                "ttl": {"type": "string", "description": "Delete it this long after creation, e.g. `8h`."},
                "wait": {"type": "boolean", "description": "Wait until it runs (default true).", "default": true},
            }), &["name", "template"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
        }),
        json!({
            "name": "delete_workspace",
            "title": "Delete a workspace",
            "description": "Deletes a workspace and everything in it (stopping it first), and waits until it is gone.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "wait": {"type": "boolean", "description": "Wait until it is gone (default true).", "default": true},
            }), &["workspace"]),
            "annotations": {"destructiveHint": true, "idempotentHint": true, "openWorldHint": false},
        }),
        json!({
            "name": "run_command",
            "title": "Run a command",
            "description": "Runs a command in a running workspace as its user and returns its exit code, stdout and stderr (each kept up to 1 MiB). Give `command` (a shell command line, run by /bin/sh -c) or `argv`.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "command": {"type": "string", "description": "A shell command line (run by /bin/sh -c)."},
                "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "The program and its arguments, instead of `command`."},
                "cwd": {"type": "string", "description": "Working directory (default: the workspace folder)."},
                "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra environment variables."},
                "stdin": {"type": "string", "description": "Text given on standard input."},
                "user": {"type": "string", "description": "Run as this user (default: the workspace's remote user)."},
                "timeout": {"type": "string", "description": "Kill it after this long, e.g. `30s`, `5m` (default 10m)."},
            }), &["workspace"]),
            "annotations": {"destructiveHint": true, "openWorldHint": true},
        }),
        json!({
            "name": "read_file",
            "title": "Read a file",
            "description": "Reads a file of a running workspace (up to 4 MiB; text, or base64 when it is not UTF-8).",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": {"type": "string", "description": "The file (relative to the workspace folder, or absolute)."},
            }), &["workspace", "path"]),
            "annotations": ro,
        }),
        json!({
            "name": "write_file",
            "title": "Write a file",
            "description": "Writes text to a file of a running workspace, replacing it whole (written to a temporary file, then renamed; the mode of a file replaced is kept).",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": {"type": "string", "description": "The file (relative to the workspace folder, or absolute)."},
                "content": {"type": "string", "description": "The file's new content."},
                "mkdir": {"type": "boolean", "description": "Create missing parent directories (default true).", "default": true},
            }), &["workspace", "path", "content"]),
            "annotations": {"destructiveHint": true, "idempotentHint": true, "openWorldHint": false},
        }),
        json!({
            "name": "list_files",
            "title": "List files",
            "description": "Lists a directory of a running workspace (kind, mode, size, path; symlinks with their target), or with `recursive` everything below it.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": {"type": "string", "description": "The directory (default: the workspace folder)."},
                "recursive": {"type": "boolean", "description": "Everything below it (default false).", "default": false},
            }), &["workspace"]),
            "annotations": ro,
        }),
        json!({
            "name": "git_status",
            "title": "Git status",
            "description": "The branch and changed files of a git repository in a workspace (`git status`).",
            "inputSchema": schema(json!({"workspace": ws_prop(), "path": repo_prop()}), &["workspace"]),
            "annotations": ro,
        }),
        json!({
            "name": "git_diff",
            "title": "Git diff",
            "description": "The changes of a git repository in a workspace (`git diff`), staged ones with `staged`, or against `base`.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "staged": {"type": "boolean", "description": "Staged changes (default false).", "default": false},
                "base": {"type": "string", "description": "Compare with this commit or branch instead."},
            }), &["workspace"]),
            "annotations": ro,
        }),
        json!({
            "name": "git_commit",
            "title": "Git commit",
            "description": "Commits in a git repository of a workspace: every change (`git add -A`) unless `all` is false.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "message": {"type": "string", "description": "The commit message."},
                "all": {"type": "boolean", "description": "Stage every change first (default true).", "default": true},
                "author_name": {"type": "string", "description": "Author name (default: the repository's, else your Warren user name)."},
                "author_email": {"type": "string", "description": "Author email (default: the repository's, else USER@warren.invalid)."},
            }), &["workspace", "message"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
        }),
        json!({
            "name": "git_push",
            "title": "Git push",
            "description": "Pushes a branch of a git repository in a workspace to its remote.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "remote": {"type": "string", "description": "Remote (default origin)."},
                "branch": {"type": "string", "description": "Branch (default: the current one)."},
                "set_upstream": {"type": "boolean", "description": "Set the remote branch as upstream (default false).", "default": false},
            }), &["workspace"]),
            "annotations": {"destructiveHint": false, "openWorldHint": true},
        }),
        json!({
            "name": "git_clone",
            "title": "Git clone",
            "description": "Clones a git repository into a workspace.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "url": {"type": "string", "description": "The repository's URL."},
                "path": {"type": "string", "description": "Where to clone it (default: a directory named after the repository, in the workspace folder)."},
                "branch": {"type": "string", "description": "Branch to check out."},
                "depth": {"type": "integer", "minimum": 1, "description": "Shallow clone of this many commits."},
            }), &["workspace", "url"]),
            "annotations": {"destructiveHint": false, "openWorldHint": true},
        }),
        json!({
            "name": "preview_url",
            "title": "Preview URL of a port",
            "description": "The URL at which a port a server listens on in the workspace can be reached (through Warren, with your credentials).",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "The TCP port."},
            }), &["workspace", "port"]),
            "annotations": ro,
        }),
    ]
}

/// The names of every tool.
pub fn names() -> Vec<String> {
    list()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    name: String,
    template: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default = "yes")]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteArgs {
    workspace: String,
    #[serde(default = "yes")]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    workspace: String,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    argv: Option<Vec<String>>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    workspace: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    workspace: String,
    path: String,
    content: String,
    #[serde(default = "yes")]
    mkdir: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    staged: bool,
    #[serde(default)]
    base: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    message: String,
    #[serde(default = "yes")]
    all: bool,
    #[serde(default)]
    author_name: Option<String>,
    #[serde(default)]
    author_email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    set_upstream: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneArgs {
    workspace: String,
    url: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewArgs {
    workspace: String,
    port: u16,
}

fn yes() -> bool {
    true
}

fn nonempty(field: &str, v: &str) -> Result<(), RpcError> {
    if v.is_empty() || v.contains('\0') {
        return Err(RpcError::params(format!(
            "Invalid arguments: {field}: must be a non-empty string without NUL"
        )));
    }
    Ok(())
}

/// `tools/call`: runs tool `name` with `arguments`.
pub async fn call(ctx: &ToolCtx, name: &str, arguments: Value) -> Result<Value, RpcError> {
    if !arguments.is_object() && !arguments.is_null() {
        return Err(RpcError::params(
            "Invalid params: `arguments` must be an object",
        ));
    }
    let out = match name {
        "list_workspaces" => {
            let NoArgs {} = args(arguments)?;
            list_workspaces(ctx).await
        }
        "create_workspace" => create_workspace(ctx, args(arguments)?).await,
        "delete_workspace" => delete_workspace(ctx, args(arguments)?).await,
        "run_command" => run_command(ctx, args(arguments)?).await?,
        "read_file" => {
            let a: ReadArgs = args(arguments)?;
            nonempty("path", &a.path)?;
            read_file(ctx, a).await
        }
        "write_file" => {
            let a: WriteArgs = args(arguments)?;
            nonempty("path", &a.path)?;
            write_file(ctx, a).await
        }
        "list_files" => list_files(ctx, args(arguments)?).await,
        "git_status" => git_status(ctx, args(arguments)?).await,
        "git_diff" => git_diff(ctx, args(arguments)?).await,
        "git_commit" => {
            let a: CommitArgs = args(arguments)?;
            nonempty("message", &a.message)?;
            git_commit(ctx, a).await
        }
        "git_push" => git_push(ctx, args(arguments)?).await,
        "git_clone" => {
            let a: CloneArgs = args(arguments)?;
            nonempty("url", &a.url)?;
            git_clone(ctx, a).await
        }
        "preview_url" => {
            let a: PreviewArgs = args(arguments)?;
            if a.port == 0 {
                return Err(RpcError::params(
                    "Invalid arguments: port: must be between 1 and 65535",
                ));
            }
            preview_url(ctx, a).await
        }
        other => {
            return Err(RpcError::params(format!(
                "Unknown tool: {other} (tools/list lists them)"
            )))
        }
    };
    Ok(match out {
        Ok(v) => v,
        Err(f) => failed(ctx, &f),
    })
}

type Out = Result<Value, Failure>;

fn summary(w: &Value) -> String {
    format!(
        "{}  {}  image={}",
        w["name"].as_str().unwrap_or("?"),
        w["state"].as_str().unwrap_or("?"),
        w["image"].as_str().unwrap_or("-"),
    )
}

async fn list_workspaces(ctx: &ToolCtx) -> Out {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/workspaces?cursor={}", seg(c)),
            None => "/api/v1/workspaces".to_string(),
        };
        let page = ctx.call(Method::GET, &path, None).await?;
        all.extend(page["workspaces"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) if all.len() < 10_000 => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    let text = if all.is_empty() {
        "no workspaces".to_string()
    } else {
        all.iter().map(summary).collect::<Vec<_>>().join("\n")
    };
    Ok(result(ctx, text, json!({"workspaces": all})))
}

async fn create_workspace(ctx: &ToolCtx, a: CreateArgs) -> Out {
    let mut body = json!({"name": a.name, "template": a.template, "parameters": a.parameters});
    if let Some(t) = &a.ttl {
        body["ttl"] = json!(t);
    }
    let accepted = ctx
        .call(Method::POST, "/api/v1/workspaces", Some(&body))
        .await?;
    let job_id = accepted["job"]["id"].as_str().unwrap_or("").to_string();
    if !a.wait {
        return Ok(result(
            ctx,
            format!("creating workspace {} (job {job_id})", a.name),
            accepted,
        ));
    }
    let job = ctx.wait_job(&job_id).await?;
    finish_job(ctx, &job, &a.name, "create").await
}

/// The result of a workspace job that ended (or is still running after the wait).
async fn finish_job(ctx: &ToolCtx, job: &Value, ws: &str, what: &str) -> Out {
    let id = job["id"].as_str().unwrap_or("");
    match job["status"].as_str().unwrap_or("") {
        "succeeded" if what == "delete" => Ok(result(
            ctx,
            format!("workspace {ws} deleted"),
            json!({"job": job}),
        )),
        "succeeded" => {
            let wid = job["workspace_id"].as_str().unwrap_or(ws);
            let w = ctx
                .call(
                    Method::GET,
                    &format!("/api/v1/workspaces/{}", seg(wid)),
                    None,
                )
                .await?;
            Ok(result(
                ctx,
                format!("workspace {} is {}", ws, w["state"].as_str().unwrap_or("?")),
                json!({"workspace": w, "job": job}),
            ))
        }
        "pending" | "running" => Ok(result(
            ctx,
            format!("the {what} job {id} of workspace {ws} is still running"),
            json!({"job": job}),
        )),
        status => Err(Failure {
            code: "job_failed".into(),
            message: format!(
                "the {what} job of workspace {ws} {status}: {}",
                job["error"].as_str().unwrap_or("no reason given")
            ),
            hint: Some(format!(
                "its log: GET /api/v1/jobs/{id}/logs (warren logs --job {id})"
            )),
        }),
    }
}

async fn delete_workspace(ctx: &ToolCtx, a: DeleteArgs) -> Out {
    let accepted = ctx
        .call(
            Method::DELETE,
            &format!("/api/v1/workspaces/{}", seg(&a.workspace)),
            None,
        )
        .await?;
    let job_id = accepted["job"]["id"].as_str().unwrap_or("").to_string();
    if !a.wait {
        return Ok(result(
            ctx,
            format!("deleting workspace {} (job {job_id})", a.workspace),
            accepted,
        ));
    }
    let job = ctx.wait_job(&job_id).await?;
    finish_job(ctx, &job, &a.workspace, "delete").await
}

async fn run_command(ctx: &ToolCtx, a: RunArgs) -> Result<Out, RpcError> {
    let argv = match (a.command, a.argv) {
        (Some(c), None) => {
            nonempty("command", &c)?;
            vec!["/bin/sh".to_string(), "-c".into(), c]
        }
        (None, Some(v)) if !v.is_empty() && !v[0].is_empty() => v,
        (None, Some(_)) => {
            return Err(RpcError::params(
                "Invalid arguments: argv: give the program and its arguments",
            ))
        }
        _ => return Err(RpcError::params(
            "Invalid arguments: give exactly one of `command` (a shell command line) and `argv`",
        )),
    };
    let mut req = json!({
        "command": argv,
        "env": a.env,
        "timeout": a.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT),
    });
    for (k, v) in [("cwd", a.cwd), ("stdin", a.stdin), ("user", a.user)] {
        if let Some(v) = v {
            req[k] = json!(v);
        }
    }
    let ran = match ctx.exec(&a.workspace, &req).await {
        Ok(r) => r,
        Err(f) => return Ok(Err(f)),
    };
    let stdout = ran.stdout_text();
    let stderr = ran.stderr_text();
    let mut text = match (ran.exit_code, &ran.error) {
        (_, Some(e)) if ran.timed_out => format!("{e}\n"),
        (Some(c), _) => format!("exit code {c}\n"),
        (None, Some(e)) => format!("the command could not run: {e}\n"),
        (None, None) => "the command ended without an exit code\n".to_string(),
    };
    if !stdout.is_empty() {
        text.push_str("--- stdout ---\n");
        text.push_str(&stdout);
        if !stdout.ends_with('\n') {
            text.push('\n');
        }
    }
    if !stderr.is_empty() {
        text.push_str("--- stderr ---\n");
        text.push_str(&stderr);
    }
    let structured = json!({
        "exit_code": ran.exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": ran.stdout_dropped > 0,
        "stderr_truncated": ran.stderr_dropped > 0,
        "timed_out": ran.timed_out,
    });
    // A command that ran and failed is a result (its exit code says so); one that could not
    // run is an error.
    if ran.exit_code.is_none() && !ran.timed_out {
        let mut r = result(ctx, text, structured);
        r["isError"] = json!(true);
        return Ok(Ok(r));
    }
    Ok(Ok(result(ctx, text, structured)))
}

/// A failed file or git command as a tool error.
fn command_failure(what: &str, ran: &Ran) -> Failure {
    let why = ran.why();
    let (code, hint) = if ran.exit_code == Some(127) || why.contains("not found") {
        (
            "invalid_request",
            Some("the program is not installed in the workspace image"),
        )
    } else if why.contains("ermission denied") {
        ("permission_denied", None)
    } else if why.contains("No such file") || why.contains("not exist") {
        ("not_found", None)
    } else {
        ("invalid_request", None)
    };
    Failure::new(code, format!("{what}: {why}"), hint)
}

/// `.../toolbox/files...` of workspace `ws`.
fn files_path(ws: &str, sub: &str, query: &[(&str, &str)]) -> String {
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", seg(v)))
        .collect();
    format!(
        "/api/v1/workspaces/{}/toolbox/files{sub}?{}",
        seg(ws),
        q.join("&")
    )
}

async fn read_file(ctx: &ToolCtx, a: ReadArgs) -> Out {
    let resp = ctx
        .send(
            Method::GET,
            &files_path(&a.workspace, "", &[("path", &a.path)]),
            None,
        )
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
            .await
            .unwrap_or_default();
        return Err(failure_of(status, &bytes));
    }
    // Up to the limit and one byte more (to tell a truncated file); dropping the rest ends the
    // reader in the workspace.
    let mut bytes: Vec<u8> = Vec::new();
    let mut stream = resp.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Failure::new("internal", format!("reading {}: {e}", a.path), None))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() > READ_LIMIT {
            break;
        }
    }
    let truncated = bytes.len() > READ_LIMIT;
    bytes.truncate(READ_LIMIT);
    match String::from_utf8(bytes) {
        Ok(text) => {
            let structured = json!({"path": a.path, "size": text.len(), "truncated": truncated, "encoding": "utf-8"});
            let mut shown = text;
            if truncated {
                shown.push_str(&format!(
                    "\n[warren: file truncated at {READ_LIMIT} bytes]\n"
                ));
            }
            Ok(result(ctx, shown, structured))
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let structured = json!({"path": a.path, "size": bytes.len(), "truncated": truncated, "encoding": "base64"});
            Ok(result(
                ctx,
                format!(
                    "{} is not UTF-8 text ({} bytes); its content in base64:\n{b64}",
                    a.path,
                    bytes.len()
                ),
                structured,
            ))
        }
    }
}

async fn write_file(ctx: &ToolCtx, a: WriteArgs) -> Out {
    let mkdir = if a.mkdir { "true" } else { "false" };
    let resp = ctx
        .send_body(
            Method::PUT,
            &files_path(&a.workspace, "", &[("path", &a.path), ("mkdir", mkdir)]),
            Some(("application/octet-stream", Body::from(a.content.clone()))),
        )
        .await?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
        .await
        .unwrap_or_default();
    if !status.is_success() {
        return Err(failure_of(status, &bytes));
    }
    let written: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(result(
        ctx,
        format!(
            "wrote {} bytes to {}",
            written["size"].as_u64().unwrap_or(a.content.len() as u64),
            written["path"].as_str().unwrap_or(&a.path)
        ),
        written,
    ))
}

async fn list_files(ctx: &ToolCtx, a: ListArgs) -> Out {
    let path = a.path.unwrap_or_else(|| ".".into());
    let rec = if a.recursive { "true" } else { "false" };
    let resp = ctx
        .send(
            Method::GET,
            &files_path(
                &a.workspace,
                "/list",
                &[("path", &path), ("recursive", rec)],
            ),
            None,
        )
        .await?;
    let status = resp.status();
    let truncated = resp
        .headers()
        .get("x-warren-truncated")
        .is_some_and(|v| v == "true");
    let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
        .await
        .map_err(|e| Failure::new("internal", format!("reading the listing: {e}"), None))?;
    if !status.is_success() {
        return Err(failure_of(status, &bytes));
    }
    let entries: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut text = String::new();
    for e in &entries {
        text.push_str(&format!(
            "{:<7} {} {:>10}  {}",
            e["kind"].as_str().unwrap_or("?"),
            e["mode"].as_str().unwrap_or("?"),
            e["size"].as_u64().unwrap_or(0),
            e["path"].as_str().unwrap_or("?"),
        ));
        if let Some(t) = e["target"].as_str() {
            text.push_str(&format!(" -> {t}"));
        }
        text.push('\n');
    }
    if entries.is_empty() {
        text.push_str("(empty)\n");
    }
    if truncated {
        text.push_str("[warren: listing truncated]\n");
    }
    Ok(result(
        ctx,
        text,
        json!({"path": path, "entries": entries, "truncated": truncated}),
    ))
}

/// Runs git in the repository `path` with `args`; stdout on success.
async fn git(
    ctx: &ToolCtx,
    ws: &str,
    script: &str,
    args: &[&str],
    env: BTreeMap<String, String>,
    what: &str,
) -> Result<Ran, Failure> {
    let ran = ctx.script(ws, script, args, None, env).await?;
    if ran.exit_code == Some(127) {
        return Err(Failure::new(
            "invalid_request",
            "git is not installed in the workspace image",
            Some("use a template whose image has git"),
        ));
    }
    if !ran.ok() {
        return Err(command_failure(what, &ran));
    }
    Ok(ran)
}

const STATUS: &str = r#"exec git -C "$1" status --porcelain=v1 --branch"#;

async fn git_status(ctx: &ToolCtx, a: RepoArgs) -> Out {
    let path = a.path.unwrap_or_else(|| ".".into());
    let ran = git(
        ctx,
        &a.workspace,
        STATUS,
        &[&path],
        BTreeMap::new(),
        "git status",
    )
    .await?;
    let out = ran.stdout_text();
    let mut lines = out.lines();
    let branch = lines
        .next()
        .and_then(|l| l.strip_prefix("## "))
        .unwrap_or("")
        .to_string();
    let files: Vec<Value> = lines
        .filter(|l| l.len() > 3)
        .map(|l| json!({"index": &l[0..1], "worktree": &l[1..2], "path": &l[3..]}))
        .collect();
    let text = if files.is_empty() {
        format!("## {branch}\nnothing changed")
    } else {
        out.clone()
    };
    Ok(result(ctx, text, json!({"branch": branch, "files": files})))
}

const DIFF: &str = r#"r="$1"; shift; exec git -C "$r" diff "$@""#;

async fn git_diff(ctx: &ToolCtx, a: DiffArgs) -> Out {
    let path = a.path.unwrap_or_else(|| ".".into());
    let mut args: Vec<&str> = vec![&path];
    if a.staged {
        args.push("--staged");
    }
    if let Some(b) = &a.base {
        if b.starts_with('-') {
            return Err(Failure::new(
                "invalid_request",
                format!("base `{b}` is not a commit or branch"),
                None,
            ));
        }
        args.push(b);
    }
    args.push("--");
    let ran = git(ctx, &a.workspace, DIFF, &args, BTreeMap::new(), "git diff").await?;
    let diff = ran.stdout_text();
    let text = if diff.is_empty() {
        "no changes".to_string()
    } else {
        diff.clone()
    };
    Ok(result(ctx, text, json!({"diff": diff})))
}

const COMMIT: &str = r#"r="$1"; msg="$2"; all="$3"; name="$4"; email="$5"
git -C "$r" config user.name >/dev/null 2>&1 || { export GIT_AUTHOR_NAME="$name" GIT_COMMITTER_NAME="$name"; }
git -C "$r" config user.email >/dev/null 2>&1 || { export GIT_AUTHOR_EMAIL="$email" GIT_COMMITTER_EMAIL="$email"; }
if [ "$all" = 1 ]; then git -C "$r" add -A || exit $?; fi
git -C "$r" commit -q -m "$msg" || exit $?
exec git -C "$r" log -1 --format=%H"#;

async fn git_commit(ctx: &ToolCtx, a: CommitArgs) -> Out {
    let path = a.path.unwrap_or_else(|| ".".into());
    let all = if a.all { "1" } else { "0" };
    let default_email = format!("{}@warren.invalid", ctx.username);
    let name = a
        .author_name
        .clone()
        .unwrap_or_else(|| ctx.username.clone());
    let email = a.author_email.clone().unwrap_or(default_email);
    let mut env = BTreeMap::new();
    // Given explicitly, they win over the repository's configuration.
    if let Some(n) = &a.author_name {
        env.insert("GIT_AUTHOR_NAME".to_string(), n.clone());
        env.insert("GIT_COMMITTER_NAME".to_string(), n.clone());
    }
    if let Some(e) = &a.author_email {
        env.insert("GIT_AUTHOR_EMAIL".to_string(), e.clone());
        env.insert("GIT_COMMITTER_EMAIL".to_string(), e.clone());
    }
    let ran = git(
        ctx,
        &a.workspace,
        COMMIT,
        &[&path, &a.message, all, &name, &email],
        env,
        "git commit",
    )
    .await?;
    let commit = ran.stdout_text().trim().to_string();
    Ok(result(
        ctx,
        format!("committed {commit}"),
        json!({"commit": commit}),
    ))
}

const PUSH: &str = r#"exec git "$@" 2>&1"#;

async fn git_push(ctx: &ToolCtx, a: PushArgs) -> Out {
    let path = a.path.unwrap_or_else(|| ".".into());
    let remote = a.remote.unwrap_or_else(|| "origin".into());
    let mut args: Vec<&str> = ctx.git_helper.iter().map(String::as_str).collect();
    args.extend(["-C", path.as_str(), "push"]);
    if a.set_upstream {
        args.push("--set-upstream");
    }
    for v in [Some(&remote), a.branch.as_ref()].into_iter().flatten() {
        if v.starts_with('-') {
            return Err(Failure::new(
                "invalid_request",
                format!("`{v}` is not a remote or branch name"),
                None,
            ));
        }
    }
    args.push("--");
    args.push(&remote);
    if let Some(b) = &a.branch {
        args.push(b);
    }
    let ran = match ctx
        .script(&a.workspace, PUSH, &args, None, BTreeMap::new())
        .await
    {
        Ok(r) => r,
        Err(f) => return Err(f),
    };
    if ran.exit_code == Some(127) {
        return Err(Failure::new(
            "invalid_request",
            "git is not installed in the workspace image",
            Some("use a template whose image has git"),
        ));
    }
    let out = ran.stdout_text();
    if !ran.ok() {
        let last = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git push failed");
        return Err(Failure::new(
            "invalid_request",
            format!("git push: {}", last.trim()),
            None,
        ));
    }
    Ok(result(ctx, out.clone(), json!({"output": out})))
}

const CLONE: &str = r#"exec git "$@" 2>&1"#;

async fn git_clone(ctx: &ToolCtx, a: CloneArgs) -> Out {
    let depth = a.depth.map(|d| d.to_string());
    let mut args: Vec<&str> = ctx.git_helper.iter().map(String::as_str).collect();
    args.push("clone");
    if let Some(b) = &a.branch {
        args.push("--branch");
        args.push(b);
    }
    if let Some(d) = &depth {
        args.push("--depth");
        args.push(d);
    }
    args.push("--");
    args.push(&a.url);
    if let Some(p) = &a.path {
        args.push(p);
    }
    let ran = ctx
        .script(&a.workspace, CLONE, &args, None, BTreeMap::new())
        .await?;
    if ran.exit_code == Some(127) {
        return Err(Failure::new(
            "invalid_request",
            "git is not installed in the workspace image",
            Some("use a template whose image has git"),
        ));
    }
    let out = ran.stdout_text();
    if !ran.ok() {
        let last = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("git clone failed");
        return Err(Failure::new(
            "invalid_request",
            format!("git clone: {}", last.trim()),
            None,
        ));
    }
    Ok(result(
        ctx,
        format!("cloned {}\n{out}", a.url),
        json!({"url": a.url, "output": out}),
    ))
}

async fn preview_url(ctx: &ToolCtx, a: PreviewArgs) -> Out {
    let list = ctx
        .call(
            Method::GET,
            &format!("/api/v1/workspaces/{}/ports", seg(&a.workspace)),
            None,
        )
        .await?;
    let ports = list["ports"].as_array().cloned().unwrap_or_default();
    let listening: Vec<String> = ports
        .iter()
        .filter(|p| p["listening"] == true)
        .filter_map(|p| p["port"].as_u64().map(|n| n.to_string()))
        .collect();
    let Some(p) = ports.iter().find(|p| p["port"] == a.port) else {
        return Err(not_listening(&a, &list, &listening));
    };
    if p["listening"] != true {
        return Err(not_listening(&a, &list, &listening));
    }
    let urls: Vec<String> = p["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    let url = urls.first().cloned().unwrap_or_default();
    Ok(result(
        ctx,
        format!(
            "{url}\n(sharing: {}; requests need your Warren token unless the port is shared)",
            p["sharing"].as_str().unwrap_or("owner")
        ),
        json!({"url": url, "urls": urls, "port": p}),
    ))
}

fn not_listening(a: &PreviewArgs, list: &Value, listening: &[String]) -> Failure {
    if list["running"] != true {
        return Failure::new(
            "workspace_not_running",
            format!("workspace {} is not running", a.workspace),
            Some("start it (warren start) and the server in it"),
        );
    }
    let now = if listening.is_empty() {
        "nothing listens yet".to_string()
    } else {
        format!("listening now: {}", listening.join(", "))
    };
    Failure::new(
        "port_not_listening",
        format!(
            "nothing listens on port {} in workspace {}",
            a.port, a.workspace
        ),
        Some(&format!(
            "start a server on that port in the workspace first ({now})"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_closed_object_schema() {
        let tools = list();
        assert_eq!(tools.len(), 13);
        for t in &tools {
            let s = &t["inputSchema"];
            assert_eq!(s["type"], "object", "{t}");
            assert_eq!(s["additionalProperties"], false, "{t}");
            for r in s["required"].as_array().unwrap() {
                assert!(s["properties"][r.as_str().unwrap()].is_object(), "{t}");
            }
            assert!(t["description"].as_str().unwrap().len() > 10);
        }
    }

    #[test]
    fn arguments_are_checked_and_errors_name_the_field() {
        let e = args::<RunArgs>(json!({"workspace": 5})).err().unwrap();
        assert!(e.message.contains("workspace"), "{e:?}");
        let e = args::<RunArgs>(json!({"workspace": "w", "frob": 1}))
            .err()
            .unwrap();
        assert!(e.message.contains("frob"), "{e:?}");
        let e = args::<PreviewArgs>(json!({"workspace": "w", "port": 70000}))
            .err()
            .unwrap();
        assert!(e.message.contains("port"), "{e:?}");
        assert!(args::<NoArgs>(Value::Null).is_ok());
    }

    #[test]
    fn output_is_bounded_with_a_marker() {
        let mut r = Ran::default();
        let big = "x".repeat(OUTPUT_LIMIT / 2 + 10);
        for _ in 0..3 {
            r.event(
                serde_json::to_string(&ExecEvent::Stdout {
                    text: Some(big.clone()),
                    base64: None,
                })
                .unwrap()
                .as_bytes(),
            );
        }
        assert_eq!(r.stdout.len(), OUTPUT_LIMIT);
        let dropped = 3 * big.len() - OUTPUT_LIMIT;
        assert!(r.stdout_text().ends_with(&format!(
            "[warren: output truncated: {dropped} bytes dropped]\n"
        )));
    }
}
