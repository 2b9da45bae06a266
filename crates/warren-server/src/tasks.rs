//! Tasks (issue 8): the scheduler and the runner.
//!
//! The scheduler ([`run`], spawned by `serve`) admits queued tasks in FIFO order (oldest first)
//! while the concurrency limits allow (`max_tasks_per_user`, `max_tasks_per_team`, `max_tasks`:
//! tasks in provisioning, running or collecting count), counted from the store on every pass, so
//! a pass is idempotent. Each admitted task gets a runner (a tokio task of this process):
//!
//! 1. provisioning: a workspace `task-<short id>` made by the same code as `POST /workspaces`
//!    (quotas, template, parameters, network, policy) as the task's owner; its create job waited
//!    for; the repository cloned into `<workspace folder>/repo` at the base branch and the task's
//!    branch created (git runs inside the workspace, as its remote user, through exec);
//! 2. running: the command as the remote user in the repository, with `WARREN_TASK_ID`,
//!    `WARREN_TASK_BRANCH`, `WARREN_BASE_BRANCH`; its output goes to `STATE/tasks/<id>/log`
//!    (bounded, then a marker line). The time limit (from the start of the run) and the idle
//!    limit (no output and no other activity on the workspace) kill it: SIGTERM, then SIGKILL
//!    after a grace. An interactive task has no command: it runs until the agent calls
//!    `complete`, or a limit or a cancel ends it;
//! 3. collecting: exit code, `git diff BASE...HEAD` (bounded), the pushed branch (`git
//!    ls-remote --heads origin BRANCH` equal to the local HEAD), the artifacts (a tar made inside
//!    the workspace of the files the globs match, kept as `STATE/tasks/<id>/artifacts.tar` and
//!    never unpacked on the host); then the workspace is deleted (unless `keep`) and the task's
//!    workspace credential revoked.
//!
//! Restart: a runner lives in the server process. At start, tasks a dead server left in
//! provisioning, running or collecting are failed with reason `server restarted` and their
//! workspaces deleted (unless `keep`); they are not re-attached, because the command's exec
//! (its pipes and exit status) died with the server.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use warren_api::auth::{Principal, Role};
use warren_api::policy::Reason;
use warren_api::task::{Outcome, TaskEvent, TaskState};
use warren_api::v1::{CreateWorkspace, ExecRequest};
use warren_store::{NewEvent, TaskPatch, TaskRecord, WorkspaceRecord};

use crate::session_audit::{SessionEvent, Via};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Largest task log kept; the rest is counted and dropped.
pub const LOG_MAX: u64 = 8 << 20;
/// Largest diff kept.
pub const DIFF_MAX: usize = 1 << 20;
/// Largest artifacts tar kept.
pub const ARTIFACTS_MAX: u64 = 64 << 20;
/// Grace between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long each collection step may take.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a runner is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A user canceled the task.
    Cancel,
    /// The interactive agent completed it with this exit code.
    Complete(i32),
}

/// The runners of this process and the scheduler's wake-up.
#[derive(Default)]
pub struct Tasks {
    wake: tokio::sync::Notify,
    runners: Mutex<HashMap<String, watch::Sender<Option<Stop>>>>,
    handles: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Tasks {
    /// Runs a scheduler pass soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the runner of task `id` to stop; false when this process runs no such task.
    pub fn stop(&self, id: &str, why: Stop) -> bool {
        let map = self.runners.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(tx) => {
                tx.send_if_modified(|cur| {
                    if cur.is_none() {
                        *cur = Some(why);
                        true
                    } else {
                        false
                    }
                });
                true
            }
            None => false,
        }
    }

    /// Stops every runner (the server is shutting down): their commands are hung up, and the
    /// next start fails their tasks.
    pub fn abort_all(&self) {
        for h in self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
        self.runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Runners alive now.
    pub fn running(&self) -> usize {
        self.runners.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The directory of a task's log and artifacts.
pub fn task_dir(state: &AppState, id: &str) -> PathBuf {
    state.cfg.state_dir.join("tasks").join(id)
}

/// The scheduler: recovers what a dead server left, then admits queued tasks whenever woken
/// (a task created, one finished) or every second.
pub async fn run(state: AppState) {
    recover(&state).await;
    loop {
        if state.shutting_down() {
            return;
        }
        if let Err(e) = pass(&state).await {
            crate::error::tracing_log(&format!("task scheduler: {e}"));
        }
        tokio::select! {
            () = state.tasks.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Fails the tasks a previous server process was running (see the module documentation).
async fn recover(state: &AppState) {
    let Ok(orphans) = state
        .store
        .tasks_in(&[
            TaskState::Provisioning,
            TaskState::Running,
            TaskState::Collecting,
        ])
        .await
    else {
        return;
    };
    for t in orphans {
        let running_here = state
            .tasks
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&t.id);
        if running_here {
            continue;
        }
        let patch = TaskPatch {
            reason: Some("server restarted".into()),
            ..Default::default()
        };
        if let Ok(Ok(rec)) = state
            .store
            .task_apply(&t.id, TaskEvent::Abort, &patch)
            .await
        {
            event(state, &rec, "task.failed", "server restarted").await;
            let st = state.clone();
            tokio::spawn(async move { release(&st, &rec).await });
        }
    }
}

/// One scheduler pass: admits queued tasks, oldest first, within the limits.
pub async fn pass(state: &AppState) -> Result<usize, warren_store::StoreError> {
    let limits = state.cfg.task_limits;
    let active = state
        .store
        .tasks_in(&[
            TaskState::Provisioning,
            TaskState::Running,
            TaskState::Collecting,
        ])
        .await?;
    let mut total = active.len() as u32;
    let mut per_user: HashMap<String, u32> = HashMap::new();
    let mut per_team: HashMap<String, u32> = HashMap::new();
    for t in &active {
        *per_user.entry(t.owner_id.clone()).or_default() += 1;
        if let Some(team) = &t.team_id {
            *per_team.entry(team.clone()).or_default() += 1;
        }
    }
    let mut admitted = 0;
    for t in state.store.tasks_in(&[TaskState::Queued]).await? {
        if total >= limits.total || state.shutting_down() {
            break;
        }
        if per_user.get(&t.owner_id).copied().unwrap_or(0) >= limits.per_user {
            continue;
        }
        if let Some(team) = &t.team_id {
            if per_team.get(team).copied().unwrap_or(0) >= limits.per_team {
                continue;
            }
        }
        let Ok(Ok(rec)) = state
            .store
            .task_apply(&t.id, TaskEvent::Admit, &TaskPatch::default())
            .await
        else {
            continue; // canceled meanwhile
        };
        total += 1;
        *per_user.entry(t.owner_id.clone()).or_default() += 1;
        if let Some(team) = &t.team_id {
            *per_team.entry(team.clone()).or_default() += 1;
        }
        admitted += 1;
        spawn_runner(state, rec);
    }
    Ok(admitted)
}

fn spawn_runner(state: &AppState, task: TaskRecord) {
    let (tx, rx) = watch::channel(None);
    state
        .tasks
        .runners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(task.id.clone(), tx);
    let st = state.clone();
    let h = tokio::spawn(async move {
        let id = task.id.clone();
        runner(&st, task, rx).await;
        st.tasks
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        st.tasks.wake();
    });
    let mut handles = state
        .tasks
        .handles
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    handles.retain(|h| !h.is_finished());
    handles.push(h.abort_handle());
}

/// Records a `task.*` event (webhooks, the events feed).
pub async fn event(state: &AppState, t: &TaskRecord, kind: &str, message: &str) {
    let _ = state
        .store
        .insert_event(&NewEvent {
            kind: kind.into(),
            workspace_id: t.workspace_id.clone(),
            workspace_name: None,
            owner_id: Some(t.owner_id.clone()),
            team_id: t.team_id.clone(),
            actor_id: None,
            reason: t.reason.clone(),
            message: format!("task {}: {message}", t.id),
            data: serde_json::json!({
                "task_id": t.id, "state": t.state.as_str(), "exit_code": t.exit_code,
                "pushed_branch": t.pushed_branch,
            }),
            dedupe_key: Some(format!("{}:{kind}:{}", t.id, t.generation)),
        })
        .await;
}

/// The task log: bounded, then counted.
pub struct TaskLog {
    file: Mutex<(std::fs::File, u64, u64)>,
}

impl TaskLog {
    fn open(path: &std::path::Path) -> std::io::Result<TaskLog> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(TaskLog {
            file: Mutex::new((f, len, 0)),
        })
    }

    /// Appends bytes (what fits under [`LOG_MAX`]).
    pub fn write(&self, b: &[u8]) {
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let room = LOG_MAX.saturating_sub(g.1) as usize;
        let n = room.min(b.len());
        if n > 0 && g.0.write_all(&b[..n]).is_ok() {
            g.1 += n as u64;
        }
        g.2 += (b.len() - n) as u64;
    }

    /// A line of Warren's own (`[warren] ...`).
    pub fn note(&self, line: &str) {
        self.write(format!("[warren] {line}\n").as_bytes());
    }

    /// The truncation marker, if anything was dropped.
    fn finish(&self) {
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if g.2 > 0 {
            let marker = format!("\n[warren: output truncated: {} bytes dropped]\n", g.2);
            let _ = g.0.write_all(marker.as_bytes());
        }
    }
}

/// The owner of a task as a caller: their role's scopes, no workspace restriction (the task
/// was authorized when it was created).
async fn owner_caller(state: &AppState, t: &TaskRecord) -> Result<Caller, String> {
    let user = state
        .store
        .user(&t.owner_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its owner no longer exists")?;
    if user.suspended {
        return Err("its owner is suspended".into());
    }
    let role = user.role.parse::<Role>().map_err(|e| e.to_string())?;
    let scopes = role.scopes();
    let token = warren_store::TokenRecord {
        id: format!("task-{}", t.id),
        user_id: user.id.clone(),
        name: format!("task {}", t.id),
        secret_sha256: String::new(),
        scopes_json: serde_json::to_string(&scopes).unwrap_or_default(),
        workspaces_json: None,
        created_at: t.created_at.clone(),
        expires_at: String::new(),
        last_used_at: None,
        revoked_at: None,
    };
    Ok(Caller {
        user,
        token,
        principal: Principal {
            role,
            scopes,
            workspaces: None,
        },
    })
}

fn short(id: &str) -> &str {
    let s = id.strip_prefix("t_").unwrap_or(id);
    &s[..s.len().min(10)]
}

/// What the run phase ended with.
struct Ended {
    outcome: Outcome,
    reason: String,
    exit_code: Option<i32>,
}

async fn runner(state: &AppState, task: TaskRecord, mut stop: watch::Receiver<Option<Stop>>) {
    let log = match TaskLog::open(&task_dir(state, &task.id).join("log")) {
        Ok(l) => l,
        Err(e) => {
            let _ = fail_now(state, &task, &format!("cannot write its log: {e}")).await;
            return;
        }
    };
    let mut task = task;
    let ended = match provision(state, &mut task, &log, &mut stop).await {
        Ok(Some((rec, caller))) => {
            run_phase(state, &mut task, &rec, &caller, &log, &mut stop).await
        }
        Ok(None) => Ended {
            outcome: Outcome::Canceled,
            reason: "canceled".into(),
            exit_code: None,
        },
        Err(why) => {
            log.note(&format!("error: {why}"));
            Ended {
                outcome: Outcome::Failed,
                reason: why,
                exit_code: None,
            }
        }
    };
    // Collecting.
    let patch = TaskPatch {
        reason: Some(ended.reason.clone()),
        exit_code: ended.exit_code,
        ..Default::default()
    };
    if let Ok(Ok(t)) = state
        .store
        .task_apply(&task.id, TaskEvent::Collect, &patch)
        .await
    {
        task = t;
    }
    log.note(&format!("collecting ({})", ended.reason));
    let mut patch = TaskPatch::default();
    if let Some(ws) = task.workspace_id.clone() {
        if let Ok(Some(rec)) = state.store.get(&ws).await {
            if rec.state == warren_api::WorkspaceState::Running {
                collect(state, &task, &rec, &log, &mut patch).await;
            }
        }
    }
    let _ = state.store.task_update(&task.id, &patch).await;
    if let Ok(Some(t)) = state.store.task(&task.id).await {
        task = t;
    }
    release(state, &task).await;
    log.note(&format!("done: {}", outcome_name(ended.outcome)));
    log.finish();
    let outcome = if ended.outcome == Outcome::Succeeded && task.exit_code.unwrap_or(0) != 0 {
        Outcome::Failed
    } else {
        ended.outcome
    };
    if let Ok(Ok(t)) = state
        .store
        .task_apply(
            &task.id,
            TaskEvent::Collected(outcome),
            &TaskPatch::default(),
        )
        .await
    {
        let kind = match t.state {
            TaskState::Succeeded => "task.succeeded",
            TaskState::TimedOut => "task.timed_out",
            TaskState::Canceled => "task.canceled",
            _ => "task.failed",
        };
        event(state, &t, kind, &ended.reason).await;
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::TimedOut => "timed-out",
        Outcome::Canceled => "canceled",
    }
}

async fn fail_now(state: &AppState, task: &TaskRecord, why: &str) -> Result<(), ApiError> {
    let patch = TaskPatch {
        reason: Some(why.into()),
        ..Default::default()
    };
    if let Ok(Ok(t)) = state
        .store
        .task_apply(&task.id, TaskEvent::Abort, &patch)
        .await
    {
        event(state, &t, "task.failed", why).await;
    }
    Ok(())
}

/// Deletes the task's workspace (unless kept) and revokes its credential.
async fn release(state: &AppState, task: &TaskRecord) {
    if let Some(tok) = &task.credential_token_id {
        let _ = state.store.revoke_token(tok).await;
        state.tokens.forget_token(tok);
        state
            .pubsub
            .publish(crate::coord::Notice::TokenRevoked(tok.clone()));
    }
    if task.keep {
        return;
    }
    let Some(ws) = &task.workspace_id else {
        return;
    };
    // Wait for a job in flight (its create), then delete.
    for _ in 0..3000 {
        match state.store.active_job(ws).await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => break,
        }
    }
    let Ok(Some(rec)) = state.store.get(ws).await else {
        return;
    };
    if rec.state == warren_api::WorkspaceState::Deleted {
        return;
    }
    match crate::routes::workspaces::spawn_delete(state, &rec, Some(&task.owner_id), Reason::User)
        .await
    {
        Ok(job) => {
            wait_job(state, &job.id, None).await;
        }
        Err(e) => crate::error::tracing_log(&format!(
            "task {}: cannot delete workspace {ws}: {}",
            task.id, e.body.message
        )),
    }
}

/// Waits for a job to finish: its status and error (None when `stop` fired first).
async fn wait_job(
    state: &AppState,
    id: &str,
    mut stop: Option<&mut watch::Receiver<Option<Stop>>>,
) -> Option<(String, Option<String>)> {
    loop {
        if let Ok(Some(j)) = state.store.job(id).await {
            if !matches!(j.status.as_str(), "pending" | "running" | "canceling") {
                return Some((j.status, j.error));
            }
        }
        match stop.as_deref_mut() {
            Some(rx) if rx.borrow().is_some() => return None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Provisioning: the workspace, the credential, the clone. `Ok(None)`: canceled.
async fn provision(
    state: &AppState,
    task: &mut TaskRecord,
    log: &TaskLog,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Result<Option<(WorkspaceRecord, Caller)>, String> {
    let caller = owner_caller(state, task).await?;
    let team = match &task.team_id {
        Some(id) => state
            .store
            .teams(&state.org.id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|t| &t.id == id)
            .map(|t| t.name),
        None => None,
    };
    let parameters: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&task.params_json).unwrap_or_default();
    let body = CreateWorkspace {
        name: format!("task-{}", short(&task.id)),
        template: Some(task.template.clone()),
        template_version: task.template_version,
        parameters,
        team,
        secrets: serde_json::from_str(&task.secrets_json).unwrap_or_default(),
        ..Default::default()
    };
    log.note(&format!("creating workspace {}", body.name));
    let (rec, job, _) = crate::routes::workspaces::create(state, &caller, body)
        .await
        .map_err(|e| format!("cannot create its workspace: {}", e.body.message))?;
    let patch = TaskPatch {
        workspace_id: Some(rec.id.clone()),
        ..Default::default()
    };
    let _ = state.store.task_update(&task.id, &patch).await;
    task.workspace_id = Some(rec.id.clone());
    match wait_job(state, &job.id, Some(stop)).await {
        None => return Ok(None),
        Some((s, _)) if s == "succeeded" => {}
        Some((s, err)) => {
            return Err(format!(
                "its workspace did not start ({s}: {})",
                err.unwrap_or_default()
            ))
        }
    }
    let rec = state
        .store
        .get(&rec.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its workspace is gone")?;
    let folder = serde_json::from_str::<warren_engine::WsSpec>(&rec.spec_json)
        .map(|s| s.workspace_folder)
        .unwrap_or_else(|_| "/workspaces".into());
    // The credential: an interactive task's was minted at create, restricted to no workspace
    // yet; now it names this one.
    if let Some(tok) = &task.credential_token_id {
        let ws = serde_json::json!([rec.id]).to_string();
        state
            .store
            .set_token_workspaces(tok, &ws)
            .await
            .map_err(|e| e.to_string())?;
        state.tokens.forget_token(tok);
    }
    // The workspace credential (`/run/secrets/warren-token`): what Warren's git credential
    // helper presents on the agent socket. It outlives the run by the collection's time at most
    // and is revoked when the workspace goes.
    let ttl = Duration::from_secs(task.time_limit_s.max(1) as u64) + COLLECT_TIMEOUT;
    crate::secrets::mint_workspace_credential(state, &rec, ttl)
        .await
        .map_err(|e| format!("cannot mint its credential: {}", e.body.message))?;
    let repo_dir = if task.repo_url.is_some() {
        format!("{}/repo", folder.trim_end_matches('/'))
    } else {
        folder.clone()
    };
    let patch = TaskPatch {
        repo_dir: Some(repo_dir.clone()),
        ..Default::default()
    };
    let _ = state.store.task_update(&task.id, &patch).await;
    task.repo_dir = Some(repo_dir.clone());
    if let Some(url) = &task.repo_url {
        let mut argv = vec!["clone".to_string(), "--quiet".into()];
        if let Some(b) = &task.base_branch {
            argv.extend(["--branch".into(), b.clone()]);
        }
        argv.extend(["--".into(), url.clone(), repo_dir.clone()]);
        log.note(&format!("git clone {} ({})", strip_userinfo(url), repo_dir));
        let out = git(state, task, &rec, &folder, &argv, Some(log)).await?;
        if out.code != Some(0) {
            return Err(format!("git clone failed: {}", last_line(&out.stderr)));
        }
        let out = git(
            state,
            task,
            &rec,
            &repo_dir,
            &[
                "checkout".into(),
                "--quiet".into(),
                "-b".into(),
                task.branch.clone(),
            ],
            Some(log),
        )
        .await?;
        if out.code != Some(0) {
            return Err(format!(
                "cannot create branch {}: {}",
                task.branch,
                last_line(&out.stderr)
            ));
        }
    }
    if stop.borrow().is_some() {
        return Ok(None);
    }
    match state
        .store
        .task_apply(&task.id, TaskEvent::Started, &TaskPatch::default())
        .await
    {
        Ok(Ok(t)) => {
            *task = t;
            event(state, task, "task.started", "running").await;
        }
        _ => return Ok(None),
    }
    Ok(Some((rec, caller)))
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

/// A URL without its `user:password@`.
pub fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The output of a command run to its end.
struct Output {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    truncated: bool,
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The environment of git and the agent's command: the task's variables and an identity for
/// commits (the owner's username, `<username>@warren.invalid`) unless the repo sets one.
fn task_env(task: &TaskRecord, username: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("WARREN_TASK_ID".into(), task.id.clone());
    env.insert("WARREN_TASK_BRANCH".into(), task.branch.clone());
    env.insert(
        "WARREN_BASE_BRANCH".into(),
        task.base_branch.clone().unwrap_or_default(),
    );
    for k in ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"] {
        env.insert(k.into(), username.into());
    }
    for k in ["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"] {
        env.insert(k.into(), format!("{username}@warren.invalid"));
    }
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    env
}

/// The agent command's git asks Warren's credential helper (and no other) through git's
/// `GIT_CONFIG_COUNT` environment: nothing is written to the repository's config.
fn git_helper_env(engine: &warren_engine::Engine) -> BTreeMap<String, String> {
    let args = crate::secrets::git_helper_args(engine);
    let pairs: Vec<(&str, &str)> = args
        .chunks(2)
        .filter_map(|c| c.get(1)?.split_once('='))
        .collect();
    let mut env = BTreeMap::new();
    env.insert("GIT_CONFIG_COUNT".into(), pairs.len().to_string());
    for (i, (k, v)) in pairs.iter().enumerate() {
        env.insert(format!("GIT_CONFIG_KEY_{i}"), (*k).to_string());
        env.insert(format!("GIT_CONFIG_VALUE_{i}"), (*v).to_string());
    }
    env
}

/// Runs `git ARGS` in the workspace as its remote user in `cwd`. The one place the runner calls
/// git: credentials (Warren's credential helper) plug in here.
async fn git(
    state: &AppState,
    task: &TaskRecord,
    rec: &WorkspaceRecord,
    cwd: &str,
    args: &[String],
    log: Option<&TaskLog>,
) -> Result<Output, String> {
    let username = state
        .store
        .user(&task.owner_id)
        .await
        .ok()
        .flatten()
        .map(|u| u.username)
        .unwrap_or_else(|| "warren".into());
    let mut argv = vec!["git".to_string()];
    argv.extend(crate::secrets::git_helper_args(&state.engine));
    argv.extend(args.iter().cloned());
    let req = ExecRequest {
        command: argv,
        env: task_env(task, &username),
        cwd: Some(cwd.into()),
        ..Default::default()
    };
    let out = capture(state, task, rec, &req, 1 << 20, COLLECT_TIMEOUT).await?;
    if let Some(log) = log {
        if !out.stderr.trim().is_empty() {
            log.write(out.stderr.as_bytes());
        }
    }
    Ok(out)
}

/// Runs a command to its end (killed after `timeout`), keeping at most `max` bytes of stdout.
async fn capture(
    state: &AppState,
    task: &TaskRecord,
    rec: &WorkspaceRecord,
    req: &ExecRequest,
    max: usize,
    timeout: Duration,
) -> Result<Output, String> {
    let mut started = crate::routes::workspaces::exec::start(state, &task.owner_id, rec, req)
        .await
        .map_err(|e| e.body.message)?;
    drop(started.stdin.take());
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let code = loop {
        tokio::select! {
            Some((chan, b)) = started.out.recv() => {
                let buf = if chan == 2 { &mut stderr } else { &mut stdout };
                let room = max.saturating_sub(buf.len());
                if b.len() > room { truncated = true; }
                buf.extend_from_slice(&b[..room.min(b.len())]);
            }
            r = &mut started.exit => break r.ok().and_then(|r| r.ok()),
            () = &mut deadline => {
                let _ = started.signaller.signal(9);
                deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    // What is still in the pipes.
    while let Ok(Some((chan, b))) =
        tokio::time::timeout(crate::routes::workspaces::exec::DRAIN, started.out.recv()).await
    {
        let buf = if chan == 2 { &mut stderr } else { &mut stdout };
        let room = max.saturating_sub(buf.len());
        if b.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&b[..room.min(b.len())]);
    }
    Ok(Output {
        code,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated,
    })
}

fn parse_at(s: &str) -> Option<time::OffsetDateTime> {
    warren_store::clock::parse_time(s)
}

/// The latest activity on the workspace (any kind), as the store's clock has it.
fn latest_activity(state: &AppState, ws: &str) -> Option<time::OffsetDateTime> {
    state
        .activity
        .with_latest(|m| m.get(ws).cloned())
        .and_then(|s| parse_at(&s))
}

/// Running: the command (or the interactive agent) until it ends or a limit or cancel hits.
async fn run_phase(
    state: &AppState,
    task: &mut TaskRecord,
    rec: &WorkspaceRecord,
    caller: &Caller,
    log: &TaskLog,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Ended {
    let limit = Duration::from_secs(task.time_limit_s.max(1) as u64);
    let idle = Duration::from_secs(task.idle_limit_s.max(1) as u64);
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_output = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Activity is timed by the store's clock: idle is measured against it too.
    let idle_since = |last_output: tokio::time::Instant| {
        let quiet = last_output.elapsed();
        let act = latest_activity(state, &rec.id)
            .map(|t| {
                let d = state.store.now_time() - t;
                Duration::from_secs_f64(d.as_seconds_f64().max(0.0))
            })
            .unwrap_or(quiet);
        quiet.min(act)
    };
    let argv: Option<Vec<String>> = match (&task.command_json, &task.shell) {
        (Some(c), _) => serde_json::from_str(c).ok(),
        (None, Some(s)) => Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        (None, None) => None,
    };
    let Some(argv) = argv else {
        // Interactive: wait for the agent.
        log.note("interactive: waiting for the agent to complete the task");
        loop {
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Ended { outcome: Outcome::TimedOut, reason: "time limit".into(), exit_code: None };
                }
                _ = tick.tick() => {
                    if idle_since(last_output) >= idle {
                        return Ended { outcome: Outcome::TimedOut, reason: "idle".into(), exit_code: None };
                    }
                }
            }
            let why = *stop.borrow();
            match why {
                Some(Stop::Cancel) => {
                    return Ended {
                        outcome: Outcome::Canceled,
                        reason: "canceled".into(),
                        exit_code: None,
                    }
                }
                Some(Stop::Complete(code)) => {
                    last_output = tokio::time::Instant::now();
                    let _ = last_output;
                    return Ended {
                        outcome: if code == 0 {
                            Outcome::Succeeded
                        } else {
                            Outcome::Failed
                        },
                        reason: format!("completed with exit code {code}"),
                        exit_code: Some(code),
                    };
                }
                None => {}
            }
        }
    };
    let cwd = task.repo_dir.clone();
    let mut env = task_env(task, &caller.user.username);
    env.extend(git_helper_env(&state.engine));
    let req = ExecRequest {
        command: argv.clone(),
        env,
        cwd: cwd.clone(),
        ..Default::default()
    };
    log.note(&format!(
        "running {}",
        serde_json::to_string(&argv).unwrap_or_default()
    ));
    let mut started =
        match crate::routes::workspaces::exec::start(state, &task.owner_id, rec, &req).await {
            Ok(s) => s,
            Err(e) => {
                return Ended {
                    outcome: Outcome::Failed,
                    reason: format!("cannot start the command: {}", e.body.message),
                    exit_code: None,
                }
            }
        };
    drop(started.stdin.take());
    let pid = crate::session_audit::process_id();
    let started_at = crate::session_audit::now();
    crate::session_audit::record(
        state,
        rec,
        Some(caller),
        SessionEvent::ProcessStarted {
            id: pid.clone(),
            argv: argv.clone(),
            cwd: cwd.clone(),
            user: None,
            via: Via::Task,
        },
    )
    .await;
    let mut killed: Option<(Outcome, String, tokio::time::Instant)> = None;
    let kill_now = |started: &crate::routes::workspaces::exec::Started, sig: i32| {
        let _ = started.signaller.signal(sig);
    };
    let code = loop {
        let kill_at = killed.as_ref().map(|k| k.2);
        tokio::select! {
            Some((_, b)) = started.out.recv() => {
                last_output = tokio::time::Instant::now();
                log.write(&b);
            }
            r = &mut started.exit => break r.ok().and_then(|r| r.ok()),
            _ = stop.changed(), if killed.is_none() => {
                if *stop.borrow() == Some(Stop::Cancel) {
                    log.note("canceled: stopping the command");
                    kill_now(&started, 15);
                    killed = Some((Outcome::Canceled, "canceled".into(), tokio::time::Instant::now() + KILL_GRACE));
                }
            }
            () = tokio::time::sleep_until(deadline), if killed.is_none() => {
                log.note("time limit reached: stopping the command");
                kill_now(&started, 15);
                killed = Some((Outcome::TimedOut, "time limit".into(), tokio::time::Instant::now() + KILL_GRACE));
            }
            _ = tick.tick(), if killed.is_none() => {
                if idle_since(last_output) >= idle {
                    log.note("idle limit reached: stopping the command");
                    kill_now(&started, 15);
                    killed = Some((Outcome::TimedOut, "idle".into(), tokio::time::Instant::now() + KILL_GRACE));
                }
            }
            () = async { match kill_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                kill_now(&started, 9);
                if let Some(k) = killed.as_mut() { k.2 = tokio::time::Instant::now() + Duration::from_secs(3600); }
            }
        }
    };
    while let Ok(Some((_, b))) =
        tokio::time::timeout(crate::routes::workspaces::exec::DRAIN, started.out.recv()).await
    {
        log.write(&b);
    }
    drop(started);
    crate::session_audit::record(
        state,
        rec,
        Some(caller),
        SessionEvent::ProcessEnded {
            id: pid,
            argv: argv.clone(),
            cwd: cwd.clone(),
            user: None,
            via: Via::Task,
            started_at,
            ended_at: crate::session_audit::now(),
            exit_code: code,
            timed_out: killed.as_ref().is_some_and(|k| k.0 == Outcome::TimedOut),
        },
    )
    .await;
    log.note(&match code {
        Some(c) => format!("the command exited with code {c}"),
        None => "the command ended without an exit code".into(),
    });
    match killed {
        Some((outcome, reason, _)) => Ended {
            outcome,
            reason,
            exit_code: code,
        },
        None => match code {
            Some(0) => Ended {
                outcome: Outcome::Succeeded,
                reason: "exit code 0".into(),
                exit_code: Some(0),
            },
            Some(c) => Ended {
                outcome: Outcome::Failed,
                reason: format!("exit code {c}"),
                exit_code: Some(c),
            },
            None => Ended {
                outcome: Outcome::Failed,
                reason: "lost track of the command".into(),
                exit_code: None,
            },
        },
    }
}

/// Collects the diff, the pushed branch and the artifacts into `patch`.
async fn collect(
    state: &AppState,
    task: &TaskRecord,
    rec: &WorkspaceRecord,
    log: &TaskLog,
    patch: &mut TaskPatch,
) {
    let Some(repo) = task.repo_dir.clone() else {
        return;
    };
    if task.repo_url.is_some() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The base: where the clone started (the remote-tracking branch of the base).
        let base = match &task.base_branch {
            Some(b) => format!("origin/{b}"),
            None => "origin/HEAD".into(),
        };
        if let Ok(out) = git(
            state,
            task,
            rec,
            &repo,
            &s(&["diff", "--no-color", &format!("{base}...HEAD")]),
            None,
        )
        .await
        {
            if out.code == Some(0) {
                let mut d = out.text();
                if out.truncated || d.len() > DIFF_MAX {
                    d.truncate(DIFF_MAX);
                    while !d.is_char_boundary(d.len()) {
                        d.pop();
                    }
                    d.push_str("\n[warren: diff truncated]\n");
                }
                patch.diff = Some(d);
            } else {
                log.note(&format!("git diff: {}", last_line(&out.stderr)));
            }
        }
        let head = git(state, task, rec, &repo, &s(&["rev-parse", "HEAD"]), None)
            .await
            .ok()
            .filter(|o| o.code == Some(0))
            .map(|o| o.text().trim().to_string());
        let remote = git(
            state,
            task,
            rec,
            &repo,
            &s(&["ls-remote", "--heads", "origin", &task.branch]),
            None,
        )
        .await;
        if let (Some(head), Ok(remote)) = (head, remote) {
            let pushed = remote
                .text()
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .any(|(sha, r)| sha == head && r == format!("refs/heads/{}", task.branch));
            if pushed {
                log.note(&format!("branch {} is pushed at {head}", task.branch));
                patch.pushed_branch = Some(task.branch.clone());
                crate::session_audit::record(
                    state,
                    rec,
                    None,
                    SessionEvent::GitPushed {
                        remote: task
                            .repo_url
                            .as_deref()
                            .map(strip_userinfo)
                            .unwrap_or_default(),
                        branch: task.branch.clone(),
                        commit: Some(head.clone()),
                    },
                )
                .await;
            }
        }
    }
    let globs: Vec<String> = serde_json::from_str(&task.artifacts_json).unwrap_or_default();
    if !globs.is_empty() {
        match artifacts(state, task, rec, &repo, &globs).await {
            Ok(list) => {
                log.note(&format!("collected {} artifact(s)", list.len()));
                patch.collected_json = Some(serde_json::to_string(&list).unwrap_or_default());
            }
            Err(e) => log.note(&format!("artifacts: {e}")),
        }
    }
}

/// Makes a tar of the files the globs match inside the workspace, keeps it (bounded) as
/// `STATE/tasks/<id>/artifacts.tar`, and lists its regular files.
async fn artifacts(
    state: &AppState,
    task: &TaskRecord,
    rec: &WorkspaceRecord,
    repo: &str,
    globs: &[String],
) -> Result<Vec<warren_api::task::Artifact>, String> {
    // The shell expands the globs (as the remote user, inside the workspace); only what exists
    // goes into the tar.
    let script = r#"set -- $(for g in "$@"; do for f in $g; do [ -f "$f" ] && printf '%s\n' "$f"; done; done)
[ $# -gt 0 ] || exit 3
exec tar -cf - -- "$@""#;
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        script.into(),
        "sh".into(),
    ];
    argv.extend(globs.iter().cloned());
    let req = ExecRequest {
        command: argv,
        cwd: Some(repo.into()),
        ..Default::default()
    };
    let out = capture(
        state,
        task,
        rec,
        &req,
        ARTIFACTS_MAX as usize,
        COLLECT_TIMEOUT,
    )
    .await?;
    if out.code == Some(3) {
        return Ok(vec![]);
    }
    if out.code != Some(0) {
        return Err(format!("tar failed: {}", last_line(&out.stderr)));
    }
    if out.truncated {
        return Err(format!(
            "the artifacts are larger than {} MiB",
            ARTIFACTS_MAX >> 20
        ));
    }
    let path = task_dir(state, &task.id).join("artifacts.tar");
    std::fs::write(&path, &out.stdout).map_err(|e| e.to_string())?;
    list_tar(&out.stdout)
}

/// The regular files of a tar (path, size).
pub fn list_tar(bytes: &[u8]) -> Result<Vec<warren_api::task::Artifact>, String> {
    let mut ar = tar::Archive::new(bytes);
    let mut list = vec![];
    for e in ar.entries().map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path().map_err(|e| e.to_string())?;
        list.push(warren_api::task::Artifact {
            path: path.to_string_lossy().into_owned(),
            size: e.size(),
        });
    }
    Ok(list)
}

/// One file of a task's artifacts tar.
pub fn read_artifact(state: &AppState, id: &str, name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(task_dir(state, id).join("artifacts.tar")).ok()?;
    let mut ar = tar::Archive::new(f);
    for e in ar.entries().ok()? {
        let mut e = e.ok()?;
        if e.header().entry_type() == tar::EntryType::Regular
            && e.path().ok()?.to_string_lossy() == name
        {
            let mut v = vec![];
            e.read_to_end(&mut v).ok()?;
            return Some(v);
        }
    }
    None
}
