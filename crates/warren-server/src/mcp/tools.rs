//! The MCP tools. Each one calls the REST API in-process ([`ToolCtx`]) with the caller's token, so
//! what a tool may do is what the token may do through the API, and the API audits it.
//!
//! Tool errors (the API refused, the workspace is not running, a file is missing) are results
//! with `isError: true` carrying the API's message and hint; malformed arguments and unknown
//! tools are JSON-RPC errors (`-32602`).
//!
//! Commands go through the toolbox's `POST .../toolbox/process/run` (buffered, each stream
//! bounded by the API), files through its file routes (`.../toolbox/files`, `warren __toolbox`
//! inside the workspace) and git through its git routes (`.../toolbox/git/...`: the image's own
//! `git` as the workspace's remote user, credentials from Warren's helper, pushes recorded as
//! `session.git_push`).

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

use super::RpcError;

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
    /// Whether results carry `structuredContent` (protocol 2025-06-18).
    pub structured: bool,
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
            "description": "Commits in a git repository of a workspace: every change (staged first, as `git add -A`) unless `all` is false.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "message": {"type": "string", "description": "The commit message."},
                "all": {"type": "boolean", "description": "Stage every change first (default true).", "default": true},
                "author_name": {"type": "string", "description": "Author and committer name (default: the workspace owner's Warren user name)."},
                "author_email": {"type": "string", "description": "Author and committer email (default: OWNER@users.warren.invalid)."},
            }), &["workspace", "message"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
        }),
        json!({
            "name": "git_push",
            "title": "Git push",
            "description": "Pushes a branch of a git repository in a workspace to its remote (credentials: the workspace's git secrets, through Warren's credential helper).",
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
            "description": "Clones a git repository into a workspace (credentials: the workspace's git secrets; a URL carrying `user:password@` is refused).",
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
            "name": "git_add",
            "title": "Git add",
            "description": "Stages files of a git repository in a workspace (default: every change, deletions included); answers the status after.",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "files": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "Files or directories to stage, relative to the repository (default: every change)."},
            }), &["workspace"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
        }),
        json!({
            "name": "git_branch",
            "title": "Git branch",
            "description": "Creates a branch in a git repository of a workspace (without switching to it: see git_checkout).",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "name": {"type": "string", "description": "The new branch's name."},
                "start_point": {"type": "string", "description": "Where it starts (default: HEAD)."},
            }), &["workspace", "name"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
        }),
        json!({
            "name": "git_checkout",
            "title": "Git checkout",
            "description": "Switches a git repository of a workspace to a branch (with `create`, a new one at HEAD).",
            "inputSchema": schema(json!({
                "workspace": ws_prop(),
                "path": repo_prop(),
                "branch": {"type": "string", "description": "The branch (a remote-tracking branch's name makes a local one tracking it)."},
                "create": {"type": "boolean", "description": "Create it at HEAD first (default false).", "default": false},
            }), &["workspace", "branch"]),
            "annotations": {"destructiveHint": false, "openWorldHint": false},
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
struct AddArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    files: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BranchArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    name: String,
    #[serde(default)]
    start_point: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutArgs {
    workspace: String,
    #[serde(default)]
    path: Option<String>,
    branch: String,
    #[serde(default)]
    create: bool,
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
        "git_add" => git_add(ctx, args(arguments)?).await,
        "git_branch" => {
            let a: BranchArgs = args(arguments)?;
            nonempty("name", &a.name)?;
            git_branch(ctx, a).await
        }
        "git_checkout" => {
            let a: CheckoutArgs = args(arguments)?;
            nonempty("branch", &a.branch)?;
            git_checkout(ctx, a).await
        }
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
    let mut req = match (a.command, a.argv) {
        (Some(c), None) => {
            nonempty("command", &c)?;
            json!({"shell": c})
        }
        (None, Some(v)) if !v.is_empty() && !v[0].is_empty() => json!({"command": v}),
        (None, Some(_)) => {
            return Err(RpcError::params(
                "Invalid arguments: argv: give the program and its arguments",
            ))
        }
        _ => return Err(RpcError::params(
            "Invalid arguments: give exactly one of `command` (a shell command line) and `argv`",
        )),
    };
    let timeout = a.timeout.unwrap_or_else(|| DEFAULT_TIMEOUT.to_string());
    req["env"] = json!(a.env);
    req["timeout"] = json!(timeout);
    for (k, v) in [("cwd", a.cwd), ("stdin", a.stdin), ("user", a.user)] {
        if let Some(v) = v {
            req[k] = json!(v);
        }
    }
    let path = format!(
        "/api/v1/workspaces/{}/toolbox/process/run",
        seg(&a.workspace)
    );
    let ran = match ctx.call(Method::POST, &path, Some(&req)).await {
        Ok(r) => r,
        Err(f) => return Ok(Err(f)),
    };
    // The API bounds each stream (1 MiB) and ends a cut one with its marker line.
    let stdout = ran["stdout"].as_str().unwrap_or("").to_string();
    let stderr = ran["stderr"].as_str().unwrap_or("").to_string();
    let exit_code = ran["exit_code"].as_i64();
    let timed_out = ran["timed_out"] == true;
    let mut text = match exit_code {
        _ if timed_out => format!("the command timed out after {timeout} and was killed\n"),
        Some(c) => format!("exit code {c}\n"),
        None => {
            "the command ended without an exit code (the workspace stopped under it?)\n".to_string()
        }
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
        "exit_code": exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": ran["stdout_truncated"] == true,
        "stderr_truncated": ran["stderr_truncated"] == true,
        "timed_out": timed_out,
        "duration_ms": ran["duration_ms"],
    });
    // A command that ran and failed is a result (its exit code says so); one that ended
    // without an exit code and not by its time limit is an error.
    let mut r = result(ctx, text, structured);
    if exit_code.is_none() && !timed_out {
        r["isError"] = json!(true);
    }
    Ok(Ok(r))
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

/// `.../toolbox/git/{op}` of workspace `ws`, with a query.
fn git_path(ws: &str, op: &str, query: &[(&str, &str)]) -> String {
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", seg(v)))
        .collect();
    let mut p = format!("/api/v1/workspaces/{}/toolbox/git/{op}", seg(ws));
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.join("&"));
    }
    p
}

/// A JSON body of the fields that are set.
fn body_of(fields: &[(&str, Option<Value>)]) -> Value {
    let mut b = serde_json::Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            b.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(b)
}

/// One line of [`git_status`]'s text.
fn status_line(f: &Value) -> String {
    let mut line = format!(
        "{:<10} {:<10} {}",
        f["index"].as_str().unwrap_or("?"),
        f["worktree"].as_str().unwrap_or("?"),
        f["path"].as_str().unwrap_or("?"),
    );
    if let Some(o) = f["orig_path"].as_str() {
        line.push_str(&format!(" (from {o})"));
    }
    line
}

async fn git_status(ctx: &ToolCtx, a: RepoArgs) -> Out {
    let mut q = Vec::new();
    if let Some(p) = &a.path {
        q.push(("path", p.as_str()));
    }
    let st = ctx
        .call(Method::GET, &git_path(&a.workspace, "status", &q), None)
        .await?;
    let branch = st["branch"].as_str().unwrap_or("(detached HEAD)");
    let mut text = format!("on branch {branch}");
    if let Some(c) = st["commit"].as_str() {
        text.push_str(&format!(" at {}", &c[..c.len().min(12)]));
    }
    if let Some(u) = st["upstream"].as_str() {
        text.push_str(&format!(
            ", upstream {u} (ahead {}, behind {})",
            st["ahead"].as_u64().unwrap_or(0),
            st["behind"].as_u64().unwrap_or(0)
        ));
    }
    text.push('\n');
    let files = st["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        text.push_str("nothing changed\n");
    } else {
        text.push_str(&format!("{:<10} {:<10} path\n", "index", "worktree"));
        for f in &files {
            text.push_str(&status_line(f));
            text.push('\n');
        }
    }
    Ok(result(ctx, text, st))
}

async fn git_diff(ctx: &ToolCtx, a: DiffArgs) -> Out {
    let mut q = Vec::new();
    if let Some(p) = &a.path {
        q.push(("path", p.as_str()));
    }
    if a.staged {
        q.push(("staged", "true"));
    }
    if let Some(b) = &a.base {
        q.push(("base", b.as_str()));
    }
    let resp = ctx
        .send(Method::GET, &git_path(&a.workspace, "diff", &q), None)
        .await?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
        .await
        .map_err(|e| Failure::new("internal", format!("reading the diff: {e}"), None))?;
    if !status.is_success() {
        return Err(failure_of(status, &bytes));
    }
    let diff = String::from_utf8_lossy(&bytes).into_owned();
    let text = if diff.is_empty() {
        "no changes".to_string()
    } else {
        diff.clone()
    };
    Ok(result(ctx, text, json!({"diff": diff})))
}

async fn git_add(ctx: &ToolCtx, a: AddArgs) -> Out {
    let body = body_of(&[
        ("path", a.path.map(Value::from)),
        ("files", a.files.map(|f| json!(f))),
    ]);
    let st = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "add", &[]),
            Some(&body),
        )
        .await?;
    let staged: Vec<String> = st["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| !matches!(f["index"].as_str(), Some("unmodified" | "untracked")))
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    let text = if staged.is_empty() {
        "nothing staged".to_string()
    } else {
        format!("staged:\n{}\n", staged.join("\n"))
    };
    Ok(result(ctx, text, st))
}

async fn git_commit(ctx: &ToolCtx, a: CommitArgs) -> Out {
    if a.all {
        let body = body_of(&[("path", a.path.clone().map(Value::from))]);
        ctx.call(
            Method::POST,
            &git_path(&a.workspace, "add", &[]),
            Some(&body),
        )
        .await?;
    }
    let body = body_of(&[
        ("path", a.path.map(Value::from)),
        ("message", Some(Value::from(a.message))),
        ("author_name", a.author_name.map(Value::from)),
        ("author_email", a.author_email.map(Value::from)),
    ]);
    let c = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "commit", &[]),
            Some(&body),
        )
        .await?;
    let text = format!(
        "committed {} on {} as {}",
        c["commit"].as_str().unwrap_or("?"),
        c["branch"].as_str().unwrap_or("(detached HEAD)"),
        c["author"].as_str().unwrap_or("?"),
    );
    Ok(result(ctx, text, c))
}

async fn git_push(ctx: &ToolCtx, a: PushArgs) -> Out {
    let body = body_of(&[
        ("path", a.path.map(Value::from)),
        ("remote", a.remote.map(Value::from)),
        ("branch", a.branch.map(Value::from)),
        ("set_upstream", a.set_upstream.then_some(Value::Bool(true))),
    ]);
    let p = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "push", &[]),
            Some(&body),
        )
        .await?;
    let text = format!(
        "pushed {} to {} ({}) at {}",
        p["branch"].as_str().unwrap_or("?"),
        p["remote"].as_str().unwrap_or("?"),
        p["url"].as_str().unwrap_or("?"),
        p["commit"].as_str().unwrap_or("?"),
    );
    Ok(result(ctx, text, p))
}

async fn git_clone(ctx: &ToolCtx, a: CloneArgs) -> Out {
    let body = body_of(&[
        ("url", Some(Value::from(a.url.clone()))),
        ("path", a.path.map(Value::from)),
        ("branch", a.branch.map(Value::from)),
        ("depth", a.depth.map(Value::from)),
    ]);
    let h = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "clone", &[]),
            Some(&body),
        )
        .await?;
    let text = format!(
        "cloned {} into {} (branch {}, commit {})",
        a.url,
        h["path"].as_str().unwrap_or("?"),
        h["branch"].as_str().unwrap_or("(detached HEAD)"),
        h["commit"].as_str().unwrap_or("none"),
    );
    Ok(result(ctx, text, h))
}

async fn git_branch(ctx: &ToolCtx, a: BranchArgs) -> Out {
    let body = body_of(&[
        ("path", a.path.map(Value::from)),
        ("name", Some(Value::from(a.name))),
        ("start_point", a.start_point.map(Value::from)),
    ]);
    let b = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "branch", &[]),
            Some(&body),
        )
        .await?;
    let text = format!(
        "created branch {} at {}",
        b["name"].as_str().unwrap_or("?"),
        b["commit"].as_str().unwrap_or("?"),
    );
    Ok(result(ctx, text, b))
}

async fn git_checkout(ctx: &ToolCtx, a: CheckoutArgs) -> Out {
    let body = body_of(&[
        ("path", a.path.map(Value::from)),
        ("branch", Some(Value::from(a.branch))),
        ("create", a.create.then_some(Value::Bool(true))),
    ]);
    let h = ctx
        .call(
            Method::POST,
            &git_path(&a.workspace, "checkout", &[]),
            Some(&body),
        )
        .await?;
    let text = format!(
        "on branch {} at {}",
        h["branch"].as_str().unwrap_or("(detached HEAD)"),
        h["commit"].as_str().unwrap_or("none"),
    );
    Ok(result(ctx, text, h))
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
        assert_eq!(tools.len(), 16);
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
}
