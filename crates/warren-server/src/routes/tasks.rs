//! Tasks: `POST /tasks` queues work in a fresh workspace (see [`crate::tasks`]); list, show,
//! logs (text, or Server-Sent Events while following), cancel, complete (interactive tasks),
//! artifacts and the session audit of the task's workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Decision, Op, Owner, ScopeSet};
use warren_api::task::{check_label, Artifact, TaskEvent, TaskState};
use warren_api::v1::{CompleteTask, CreateTask, TaskCreated, TaskList, TaskView};
use warren_api::ErrorCode;
use warren_store::{TaskPatch, TaskRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{forbidden, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::tasks::Stop;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(task_logs))
        .routes(routes!(cancel_task))
        .routes(routes!(complete_task))
        .routes(routes!(task_artifacts))
        .routes(routes!(task_artifact))
        .routes(routes!(task_audit))
}

/// Default and largest time limits, default idle limit.
const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(3600);
const MAX_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How many labels, artifact globs a task may have.
const MAX_LABELS: usize = 32;
const MAX_GLOBS: usize = 32;

fn bad(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {msg}"))
}

/// A branch name git accepts, without surprises: `[A-Za-z0-9._/-]`, no leading `-` or `/`, no
/// `..`, `//`, `@{`, trailing `/`, `.` or `.lock`, at most 200 characters.
pub fn check_branch(field: &str, b: &str) -> ApiResult<()> {
    let ok = !b.is_empty()
        && b.len() <= 200
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._/-".contains(&c))
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(bad(field, format!("`{b}` is not a usable branch name"))
            .hint("letters, digits, `.`, `_`, `-` and `/` between names, e.g. `warren/fix-42`"))
    }
}

/// A repository URL: `http(s)://`, `git://` or `ssh://` (no local paths, `file://` or git's
/// `ext::` transport).
fn check_repo(url: &str) -> ApiResult<()> {
    let ok = ["http://", "https://", "git://", "ssh://"]
        .iter()
        .any(|p| url.starts_with(p) && url.len() > p.len())
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(bad("repo", format!("`{url}` is not a repository URL"))
            .hint("use an http://, https://, git:// or ssh:// URL"));
    }
    // Credentials never travel in the URL (it is stored, logged and shown): a user name is only
    // allowed for ssh://, a password never.
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if !url.starts_with("ssh://") || userinfo.contains(':') {
            return Err(bad(
                "repo",
                "the URL carries credentials (`user:password@`)",
            )
            .hint("store them as a git secret (`warren secret set NAME --git-host HOST --username USER`) and pass `--secret NAME`"));
        }
    }
    Ok(())
}

fn limit_of(field: &str, v: Option<&str>, default: Duration) -> ApiResult<Duration> {
    let Some(s) = v else { return Ok(default) };
    let d = warren_api::template::parse_duration(s).map_err(|e| bad(field, e))?;
    if d.is_zero() {
        return Err(bad(field, "must be longer than 0s"));
    }
    if d > MAX_TIME_LIMIT {
        return Err(bad(field, "at most 24h"));
    }
    Ok(d)
}

/// A glob relative to the repository: no absolute path, no `..`, no NUL.
fn check_glob(g: &str) -> ApiResult<()> {
    if g.is_empty()
        || g.starts_with('/')
        || g.contains('\0')
        || g.chars().any(|c| c.is_control())
        || g.split('/').any(|p| p == "..")
    {
        return Err(bad(
            "artifacts",
            format!("`{g}` is not a glob inside the repository"),
        )
        .hint("relative paths and globs such as `out/*.txt`"));
    }
    Ok(())
}

/// The API view of a task.
pub async fn view(state: &AppState, t: &TaskRecord) -> TaskView {
    let owner = state
        .store
        .user(&t.owner_id)
        .await
        .ok()
        .flatten()
        .map(|u| u.username)
        .unwrap_or_default();
    TaskView {
        id: t.id.clone(),
        owner,
        state: t.state,
        reason: t.reason.clone(),
        template: t.template.clone(),
        parameters: serde_json::from_str(&t.params_json).unwrap_or_default(),
        repo: t.repo_url.clone(),
        base_branch: t.base_branch.clone(),
        branch: t.branch.clone(),
        command: t
            .command_json
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        shell: t.shell.clone(),
        interactive: t.interactive,
        time_limit_s: t.time_limit_s as u64,
        idle_limit_s: t.idle_limit_s as u64,
        labels: serde_json::from_str(&t.labels_json).unwrap_or_default(),
        secrets: serde_json::from_str(&t.secrets_json).unwrap_or_default(),
        artifacts: serde_json::from_str(&t.artifacts_json).unwrap_or_default(),
        keep: t.keep,
        workspace_id: t.workspace_id.clone(),
        repo_dir: t.repo_dir.clone(),
        exit_code: t.exit_code,
        pushed_branch: t.pushed_branch.clone(),
        diff: t.diff.clone(),
        collected: serde_json::from_str::<Vec<Artifact>>(&t.collected_json).unwrap_or_default(),
        created_at: t.created_at.clone(),
        started_at: t.started_at.clone(),
        finished_at: t.finished_at.clone(),
    }
}

/// Queues a task: a fresh workspace from a template, the repository cloned, the command run,
/// results collected, the workspace destroyed.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", security(("token" = [])),
    request_body = CreateTask,
    responses((status = 201, body = TaskCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTask>,
) -> ApiResult<Response> {
    for op in [
        Op::WorkspaceWrite(Owner::Own),
        Op::WorkspaceExec(Owner::Own),
    ] {
        caller.require(op)?;
    }
    if caller.principal.workspaces.is_some() {
        return Err(ApiError::forbidden(
            "a token restricted to named workspaces cannot create tasks",
        ));
    }
    // What runs: exactly one of command, shell, interactive.
    let given = [
        body.command.is_some(),
        body.shell.is_some(),
        body.interactive,
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(
            ApiError::bad_request("command: give exactly one of `command`, `shell` and `interactive`")
                .hint(r#"e.g. {"command": ["make", "test"]} or {"shell": "make test"} or {"interactive": true}"#),
        );
    }
    if let Some(c) = &body.command {
        if c.is_empty() || c[0].is_empty() || c.iter().any(|a| a.contains('\0')) {
            return Err(bad("command", "give the program and its arguments")
                .hint(r#"e.g. {"command": ["sh", "-c", "make test"]}"#));
        }
    }
    if let Some(s) = &body.shell {
        if s.trim().is_empty() || s.contains('\0') {
            return Err(bad("shell", "empty command"));
        }
    }
    match &body.repo {
        Some(r) => check_repo(r)?,
        None if !body.interactive => {
            return Err(bad("repo", "a task with a command needs a repository")
                .hint("`--repo URL`; only interactive tasks may go without one"))
        }
        None => {}
    }
    if body.repo.is_none() && (body.base_branch.is_some() || body.branch.is_some()) {
        return Err(bad("branch", "branches need a `repo`"));
    }
    if let Some(b) = &body.base_branch {
        check_branch("base_branch", b)?;
    }
    if let Some(b) = &body.branch {
        check_branch("branch", b)?;
    }
    let time_limit = limit_of("time_limit", body.time_limit.as_deref(), DEFAULT_TIME_LIMIT)?;
    let idle_limit = limit_of("idle_limit", body.idle_limit.as_deref(), DEFAULT_IDLE_LIMIT)?;
    if body.labels.len() > MAX_LABELS {
        return Err(bad("labels", format!("at most {MAX_LABELS}")));
    }
    for (k, v) in &body.labels {
        check_label(k, v).map_err(|e| bad("labels", e))?;
    }
    if body.artifacts.len() > MAX_GLOBS {
        return Err(bad("artifacts", format!("at most {MAX_GLOBS} globs")));
    }
    for g in &body.artifacts {
        check_glob(g)?;
    }
    // The template and its parameters, checked now so that a typo is a 400, not a failed task.
    let (template, version) =
        crate::routes::templates::resolve_version(&state, &body.template, body.template_version)
            .await
            .map_err(|e| {
                if e.status == StatusCode::NOT_FOUND {
                    bad("template", e.body.message)
                        .hint("`warren template list` shows the templates")
                } else {
                    e
                }
            })?;
    let specs: Vec<warren_api::ParamSpec> = serde_json::from_str(&version.parameters_json)
        .map_err(|e| ApiError::internal(format!("version {}: {e}", version.id)))?;
    warren_api::template::resolve(&specs, &body.parameters, None)?;
    // The secrets its workspace will ask for: resolved as a workspace's are.
    crate::secrets::check_requested(&state, &caller.user.id, Some(&template.id), &body.secrets)
        .await?;
    let team_id =
        crate::routes::workspaces::charged_team(&state, &caller, body.team.as_deref()).await?;
    let id = format!("t_{}", uuid::Uuid::new_v4().simple());
    let short = &id[2..12];
    let branch = body
        .branch
        .clone()
        .unwrap_or_else(|| format!("warren/task-{short}"));
    // An interactive agent's credential: restricted to the task's workspace (named once it
    // exists; until then to nothing), expiring with the task.
    let mut credential = None;
    let mut credential_token_id = None;
    if body.interactive {
        let scopes =
            ScopeSet::parse(["workspace:read", "workspace:exec"]).map_err(ApiError::internal)?;
        let slack = Duration::from_secs(3600);
        let mut expires = crate::routes::users::expires_at(time_limit + slack);
        if caller.token.expires_at < expires && !caller.token.expires_at.is_empty() {
            expires = caller.token.expires_at.clone();
        }
        let none: BTreeSet<String> = [id.clone()].into();
        let minted = crate::auth::mint(
            &caller.user.id,
            &format!("task {id}"),
            &scopes,
            Some(&none),
            expires,
        );
        state.store.create_token(&minted.record).await?;
        credential_token_id = Some(minted.record.id.clone());
        credential = Some(minted.token);
    }
    let rec = TaskRecord {
        id: id.clone(),
        owner_id: caller.user.id.clone(),
        team_id,
        template: body.template.clone(),
        template_version: body.template_version,
        params_json: serde_json::to_string(&body.parameters).map_err(ApiError::internal)?,
        repo_url: body.repo.clone(),
        base_branch: body.base_branch.clone(),
        branch,
        command_json: body
            .command
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(ApiError::internal)?,
        shell: body.shell.clone(),
        interactive: body.interactive,
        time_limit_s: time_limit.as_secs() as i64,
        idle_limit_s: idle_limit.as_secs() as i64,
        labels_json: serde_json::to_string(&body.labels).map_err(ApiError::internal)?,
        secrets_json: serde_json::to_string(&body.secrets).map_err(ApiError::internal)?,
        artifacts_json: serde_json::to_string(&body.artifacts).map_err(ApiError::internal)?,
        keep: body.keep,
        state: TaskState::Queued,
        reason: None,
        workspace_id: None,
        repo_dir: None,
        credential_token_id,
        exit_code: None,
        pushed_branch: None,
        diff: None,
        collected_json: "[]".into(),
        created_at: state.store.now(),
        started_at: None,
        finished_at: None,
        generation: 1,
    };
    state.store.insert_task(&rec).await?;
    crate::tasks::event(&state, &rec, "task.created", "queued").await;
    state.tasks.wake();
    let mut note = AuditNote::target("task", &id, &id);
    note.details_json = Some(
        serde_json::json!({
            "template": body.template, "repo": body.repo.as_deref().map(crate::tasks::strip_userinfo),
            "interactive": body.interactive, "labels": body.labels,
        })
        .to_string(),
    );
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(TaskCreated {
            task: view(&state, &rec).await,
            credential,
        }),
    )
        .into_response())
}

/// Finds task `id` for `caller` and checks `op` on it (anything the caller may not see is
/// "not found").
async fn find_task(
    state: &AppState,
    caller: &Caller,
    id: &str,
    op: fn(Owner) -> Op,
) -> ApiResult<TaskRecord> {
    let not_found = || ApiError::not_found("task", id).hint("`warren task list` shows your tasks");
    let t = state.store.task(id).await?.ok_or_else(not_found)?;
    let owner = if t.owner_id == caller.user.id {
        Owner::Own
    } else {
        Owner::Other
    };
    // A token restricted to workspaces sees the tasks of those workspaces only.
    let ws = match (&caller.principal.workspaces, &t.workspace_id) {
        (Some(_), None) => Some(t.id.as_str()),
        (_, w) => w.as_deref(),
    };
    match caller.check(op(owner), ws) {
        Decision::Allow => Ok(t),
        Decision::Hidden => Err(not_found()),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}

/// Query of `GET /tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this state.
    state: Option<String>,
    /// Only tasks with this label (`key=value`).
    label: Option<String>,
    /// `me` (default), `all` (admins), or a username.
    owner: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

/// Lists tasks, newest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", security(("token" = [])),
    params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<TaskList>> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let st = q
        .state
        .as_deref()
        .map(|s| s.parse::<TaskState>().map_err(|e| bad("state", e)))
        .transpose()?;
    let label = match q.label.as_deref() {
        Some(l) => {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| bad("label", format!("`{l}`: expected key=value")))?;
            check_label(k, v).map_err(|e| bad("label", e))?;
            Some((k.to_string(), v.to_string()))
        }
        None => None,
    };
    let owner = match q.owner.as_deref() {
        None | Some("me") => {
            caller.require(Op::WorkspaceRead(Owner::Own))?;
            Some(caller.user.id.clone())
        }
        Some("all") => {
            caller.require(Op::WorkspaceRead(Owner::Other))?;
            None
        }
        Some(name) => {
            let (u, own) = crate::routes::user_named(&state, &caller, name).await?;
            caller.require(Op::WorkspaceRead(own))?;
            Some(u.id)
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.tasks(owner.as_deref(), st, limit).await?;
    let mut tasks = vec![];
    for t in rows {
        if let Some((k, v)) = &label {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&t.labels_json).unwrap_or_default();
            if labels.get(k) != Some(v) {
                continue;
            }
        }
        if let Some(ws) = &caller.principal.workspaces {
            if !t.workspace_id.as_ref().is_some_and(|w| ws.contains(w)) {
                continue;
            }
        }
        tasks.push(view(&state, &t).await);
    }
    Ok(Json(TaskList { tasks }))
}

/// A task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let t = find_task(&state, &caller, &id, Op::WorkspaceRead).await?;
    Ok(Json(view(&state, &t).await))
}

/// Query of `GET /tasks/{id}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Follow as Server-Sent Events (`data: {"text": ...}` chunks, then `event: end` with
    /// `{"state", "exit_code"}`) until the task ends.
    follow: Option<bool>,
}

/// A task's log (its command's output and Warren's notes): text, or Server-Sent Events with
/// `follow=true`.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id"), LogQuery),
    responses((status = 200, description = "text/plain, or text/event-stream with follow=true"), (status = 404, body = ErrorBody)))]
async fn task_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let t = find_task(&state, &caller, &id, Op::WorkspaceRead).await?;
    let path = crate::tasks::task_dir(&state, &t.id).join("log");
    if !q.follow.unwrap_or(false) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            String::from_utf8_lossy(&bytes).into_owned(),
        )
            .into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    let st = state.clone();
    tokio::spawn(async move {
        use std::io::{Read, Seek, SeekFrom};
        let mut offset = 0u64;
        let mut pending: Vec<u8> = vec![];
        let mut beat = 0u32;
        loop {
            // Whether it had ended before this read: then what the read gets is everything.
            let done = match st.store.task(&t.id).await {
                Ok(Some(t)) if t.state.is_terminal() => Some(t),
                Ok(Some(_)) => None,
                _ => return,
            };
            if let Ok(mut f) = std::fs::File::open(&path) {
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    let mut buf = vec![];
                    let _ = f.by_ref().take(1 << 20).read_to_end(&mut buf);
                    offset += buf.len() as u64;
                    pending.extend_from_slice(&buf);
                }
            }
            // Send whole UTF-8 characters only.
            let cut = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            if cut > 0 {
                let text = String::from_utf8_lossy(&pending[..cut]).into_owned();
                pending.drain(..cut);
                let ev = format!("data: {}\n\n", serde_json::json!({ "text": text }));
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
                beat = 0;
                continue;
            }
            if let Some(t) = done {
                let ev = format!(
                    "event: end\ndata: {}\n\n",
                    serde_json::json!({"state": t.state, "exit_code": t.exit_code, "reason": t.reason})
                );
                let _ = tx.send(Ok(ev)).await;
                return;
            }
            beat += 1;
            if beat >= 20 {
                beat = 0;
                if tx.send(Ok(": keepalive\n\n".into())).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
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

/// Cancels a task: a queued one at once; a running one's process is killed, its results
/// collected and its workspace destroyed. Canceling a finished task is a 409.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id")),
    responses((status = 202, body = TaskView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = find_task(&state, &caller, &id, Op::WorkspaceWrite).await?;
    let patch = TaskPatch {
        reason: Some("canceled".into()),
        ..Default::default()
    };
    let t = if t.state == TaskState::Queued {
        match state
            .store
            .task_apply(&t.id, TaskEvent::Cancel, &patch)
            .await?
        {
            Ok(t) => {
                if let Some(tok) = &t.credential_token_id {
                    let _ = state.store.revoke_token(tok).await;
                    state.tokens.forget_token(tok);
                }
                crate::tasks::event(&state, &t, "task.canceled", "canceled while queued").await;
                t
            }
            // Admitted meanwhile: its runner stops it.
            Err(_) => {
                state.tasks.stop(&t.id, Stop::Cancel);
                state.store.task(&t.id).await?.unwrap_or(t)
            }
        }
    } else if t.state.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!("task {} has finished ({})", t.id, t.state),
        ));
    } else {
        if !state.tasks.stop(&t.id, Stop::Cancel) {
            // No runner here (another replica, or one that just finished): fail it so that it
            // does not stay active forever; the next start cleans up.
            let _ = state
                .store
                .task_apply(&t.id, TaskEvent::Abort, &patch)
                .await?;
        }
        t
    };
    let note = AuditNote::target("task", &t.id, &t.id);
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note),
        Json(view(&state, &t).await),
    )
        .into_response())
}

/// An interactive task is done: the agent says so (with an exit code; default 0). Results are
/// collected and the workspace destroyed as for a command.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id")), request_body = CompleteTask,
    responses((status = 202, body = TaskView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn complete_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<CompleteTask>,
) -> ApiResult<Response> {
    let t = find_task(&state, &caller, &id, Op::WorkspaceWrite).await?;
    if !t.interactive {
        return Err(ApiError::bad_request(
            "this task runs a command: it completes when the command ends",
        )
        .hint("cancel it with `warren task cancel` instead"));
    }
    if t.state != TaskState::Running
        || !state
            .tasks
            .stop(&t.id, Stop::Complete(body.exit_code.unwrap_or(0)))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!("task {} is {}, not running", t.id, t.state),
        )
        .hint("an interactive task can be completed once its workspace runs"));
    }
    let note = AuditNote::target("task", &t.id, &t.id);
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note),
        Json(view(&state, &t).await),
    )
        .into_response())
}

/// The artifacts collected from a task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = Vec<Artifact>), (status = 404, body = ErrorBody)))]
async fn task_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Artifact>>> {
    let t = find_task(&state, &caller, &id, Op::WorkspaceRead).await?;
    Ok(Json(
        serde_json::from_str(&t.collected_json).unwrap_or_default(),
    ))
}

/// One artifact's bytes (`name` as listed, URL-encoded).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts/{name}", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id"), ("name" = String, Path, description = "artifact path")),
    responses((status = 200, description = "the file"), (status = 404, body = ErrorBody)))]
async fn task_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let t = find_task(&state, &caller, &id, Op::WorkspaceRead).await?;
    let bytes = crate::tasks::read_artifact(&state, &t.id, &name).ok_or_else(|| {
        ApiError::not_found("artifact", &name).hint("`GET /tasks/{id}/artifacts` lists them")
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Query of `GET /tasks/{id}/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// `json` (default) or `jsonl` (one record per line, for a SIEM).
    format: Option<String>,
}

/// The session audit of the task's workspace (`session.*` records: processes, pushes...).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/audit", tag = "tasks", security(("token" = [])),
    params(("id" = String, Path, description = "task id"), AuditQuery),
    responses((status = 200, description = "JSON array of audit records, or JSON lines"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn task_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let t = find_task(&state, &caller, &id, Op::WorkspaceRead).await?;
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(f) => return Err(bad("format", format!("`{f}`: expected json or jsonl"))),
    };
    let mut records = vec![];
    if let Some(ws) = &t.workspace_id {
        let mut after = None;
        loop {
            let page = state
                .store
                .query_audit(&warren_store::AuditQuery {
                    action: Some("session.*".into()),
                    target: Some(ws.clone()),
                    after_id: after,
                    limit: 0,
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            records.extend(page);
        }
    }
    if jsonl {
        let mut out = String::new();
        for r in &records {
            out.push_str(&serde_json::to_string(r).map_err(ApiError::internal)?);
            out.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response());
    }
    Ok(Json(records).into_response())
}
