//! Tasks (migration 18): work run in a fresh workspace. State changes go through
//! [`warren_api::task::transition`] with a compare-and-set on the row's generation, so two
//! writers (a cancel and the runner) never both win.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use warren_api::task::{transition, InvalidTaskTransition, TaskEvent, TaskState};

use crate::{Store, StoreError};

const COLUMNS: &str = "id, owner_id, team_id, template, template_version, params_json, repo_url, \
    base_branch, branch, command_json, shell, interactive, time_limit_s, idle_limit_s, labels_json, \
    secrets_json, artifacts_json, keep, state, reason, workspace_id, repo_dir, credential_token_id, \
    exit_code, pushed_branch, diff, collected_json, created_at, started_at, finished_at, generation";

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// `t_...`.
    pub id: String,
    /// Owner (user id).
    pub owner_id: String,
    /// Team charged, if any (its name as given; resolved at workspace creation).
    pub team_id: Option<String>,
    /// Template name.
    pub template: String,
    /// Template version asked for.
    pub template_version: Option<i64>,
    /// Parameters (JSON object).
    pub params_json: String,
    /// Repository URL.
    pub repo_url: Option<String>,
    /// Base branch.
    pub base_branch: Option<String>,
    /// The task's branch.
    pub branch: String,
    /// argv (JSON array), if any.
    pub command_json: Option<String>,
    /// Shell command, if any.
    pub shell: Option<String>,
    /// Interactive.
    pub interactive: bool,
    /// Time limit (s).
    pub time_limit_s: i64,
    /// Idle limit (s).
    pub idle_limit_s: i64,
    /// Labels (JSON object).
    pub labels_json: String,
    /// Secret names (JSON array).
    pub secrets_json: String,
    /// Artifact globs (JSON array).
    pub artifacts_json: String,
    /// Keep the workspace.
    pub keep: bool,
    /// State.
    pub state: TaskState,
    /// Why.
    pub reason: Option<String>,
    /// Its workspace.
    pub workspace_id: Option<String>,
    /// The repository's directory inside the workspace.
    pub repo_dir: Option<String>,
    /// The workspace credential's token id.
    pub credential_token_id: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Pushed branch.
    pub pushed_branch: Option<String>,
    /// Bounded diff.
    pub diff: Option<String>,
    /// Collected artifacts (JSON array of `{path, size}`).
    pub collected_json: String,
    /// Created.
    pub created_at: String,
    /// Admitted.
    pub started_at: Option<String>,
    /// Finished.
    pub finished_at: Option<String>,
    /// Bumped by every change.
    pub generation: i64,
}

/// Fields a transition sets along with the state (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    /// Reason.
    pub reason: Option<String>,
    /// Workspace.
    pub workspace_id: Option<String>,
    /// Repository directory.
    pub repo_dir: Option<String>,
    /// Credential token id.
    pub credential_token_id: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Pushed branch.
    pub pushed_branch: Option<String>,
    /// Diff.
    pub diff: Option<String>,
    /// Collected artifacts.
    pub collected_json: Option<String>,
}

fn from_row(r: &SqliteRow) -> Result<TaskRecord, StoreError> {
    let id: String = r.try_get("id")?;
    let state: String = r.try_get("state")?;
    let state = state.parse().map_err(|e: String| StoreError::Corrupt {
        id: id.clone(),
        detail: e,
    })?;
    Ok(TaskRecord {
        owner_id: r.try_get("owner_id")?,
        team_id: r.try_get("team_id")?,
        template: r.try_get("template")?,
        template_version: r.try_get("template_version")?,
        params_json: r.try_get("params_json")?,
        repo_url: r.try_get("repo_url")?,
        base_branch: r.try_get("base_branch")?,
        branch: r.try_get("branch")?,
        command_json: r.try_get("command_json")?,
        shell: r.try_get("shell")?,
        interactive: r.try_get::<i64, _>("interactive")? != 0,
        time_limit_s: r.try_get("time_limit_s")?,
        idle_limit_s: r.try_get("idle_limit_s")?,
        labels_json: r.try_get("labels_json")?,
        secrets_json: r.try_get("secrets_json")?,
        artifacts_json: r.try_get("artifacts_json")?,
        keep: r.try_get::<i64, _>("keep")? != 0,
        state,
        reason: r.try_get("reason")?,
        workspace_id: r.try_get("workspace_id")?,
        repo_dir: r.try_get("repo_dir")?,
        credential_token_id: r.try_get("credential_token_id")?,
        exit_code: r
            .try_get::<Option<i64>, _>("exit_code")?
            .and_then(|c| i32::try_from(c).ok()),
        pushed_branch: r.try_get("pushed_branch")?,
        diff: r.try_get("diff")?,
        collected_json: r.try_get("collected_json")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        generation: r.try_get("generation")?,
        id,
    })
}

impl Store {
    /// Records a new task (its `state` is `queued`).
    pub async fn insert_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO tasks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(&sql)
            .bind(&t.id)
            .bind(&t.owner_id)
            .bind(&t.team_id)
            .bind(&t.template)
            .bind(t.template_version)
            .bind(&t.params_json)
            .bind(&t.repo_url)
            .bind(&t.base_branch)
            .bind(&t.branch)
            .bind(&t.command_json)
            .bind(&t.shell)
            .bind(i64::from(t.interactive))
            .bind(t.time_limit_s)
            .bind(t.idle_limit_s)
            .bind(&t.labels_json)
            .bind(&t.secrets_json)
            .bind(&t.artifacts_json)
            .bind(i64::from(t.keep))
            .bind(t.state.as_str())
            .bind(&t.reason)
            .bind(&t.workspace_id)
            .bind(&t.repo_dir)
            .bind(&t.credential_token_id)
            .bind(t.exit_code.map(i64::from))
            .bind(&t.pushed_branch)
            .bind(&t.diff)
            .bind(&t.collected_json)
            .bind(&t.created_at)
            .bind(&t.started_at)
            .bind(&t.finished_at)
            .bind(t.generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A task by id.
    pub async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// Tasks, newest first: of one owner (or everyone's), in one state (or any), at most `limit`.
    pub async fn tasks(
        &self,
        owner_id: Option<&str>,
        state: Option<TaskState>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE (?1 IS NULL OR owner_id = ?1) \
             AND (?2 IS NULL OR state = ?2) ORDER BY created_at DESC, id DESC LIMIT ?3"
        );
        let rows = sqlx::query(&sql)
            .bind(owner_id)
            .bind(state.map(|s| s.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Tasks in any of `states`, oldest first (the scheduler's FIFO order).
    pub async fn tasks_in(&self, states: &[TaskState]) -> Result<Vec<TaskRecord>, StoreError> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE state IN ({}) ORDER BY created_at, id",
            list.join(", ")
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The task of a workspace, if it belongs to one.
    pub async fn task_of_workspace(&self, ws: &str) -> Result<Option<TaskRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tasks WHERE workspace_id = ? LIMIT 1");
        let r = sqlx::query(&sql)
            .bind(ws)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// Applies `event` to task `id` with `patch`: the new record, or the refusal when the event
    /// does not apply to its state. Entering `provisioning` sets `started_at`, a terminal state
    /// `finished_at`. Retries when another writer changed the row in between.
    pub async fn task_apply(
        &self,
        id: &str,
        event: TaskEvent,
        patch: &TaskPatch,
    ) -> Result<Result<TaskRecord, InvalidTaskTransition>, StoreError> {
        loop {
            let cur = self
                .task(id)
                .await?
                .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
            let next = match transition(cur.state, event) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            let now = self.now();
            let started = (next == TaskState::Provisioning).then(|| now.clone());
            let finished = next.is_terminal().then(|| now.clone());
            let done = sqlx::query(
                "UPDATE tasks SET state = ?, generation = generation + 1, \
                 reason = COALESCE(?, reason), workspace_id = COALESCE(?, workspace_id), \
                 repo_dir = COALESCE(?, repo_dir), \
                 credential_token_id = COALESCE(?, credential_token_id), \
                 exit_code = COALESCE(?, exit_code), pushed_branch = COALESCE(?, pushed_branch), \
                 diff = COALESCE(?, diff), collected_json = COALESCE(?, collected_json), \
                 started_at = COALESCE(started_at, ?), finished_at = COALESCE(?, finished_at) \
                 WHERE id = ? AND generation = ?",
            )
            .bind(next.as_str())
            .bind(&patch.reason)
            .bind(&patch.workspace_id)
            .bind(&patch.repo_dir)
            .bind(&patch.credential_token_id)
            .bind(patch.exit_code.map(i64::from))
            .bind(&patch.pushed_branch)
            .bind(&patch.diff)
            .bind(&patch.collected_json)
            .bind(started)
            .bind(finished)
            .bind(id)
            .bind(cur.generation)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                let rec = self
                    .task(id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
                return Ok(Ok(rec));
            }
        }
    }

    /// Sets fields of a task without changing its state.
    pub async fn task_update(&self, id: &str, patch: &TaskPatch) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tasks SET generation = generation + 1, \
             reason = COALESCE(?, reason), workspace_id = COALESCE(?, workspace_id), \
             repo_dir = COALESCE(?, repo_dir), \
             credential_token_id = COALESCE(?, credential_token_id), \
             exit_code = COALESCE(?, exit_code), pushed_branch = COALESCE(?, pushed_branch), \
             diff = COALESCE(?, diff), collected_json = COALESCE(?, collected_json) WHERE id = ?",
        )
        .bind(&patch.reason)
        .bind(&patch.workspace_id)
        .bind(&patch.repo_dir)
        .bind(&patch.credential_token_id)
        .bind(patch.exit_code.map(i64::from))
        .bind(&patch.pushed_branch)
        .bind(&patch.diff)
        .bind(&patch.collected_json)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the workspaces a token is restricted to (a task's credential, minted before its
    /// workspace existed).
    pub async fn set_token_workspaces(
        &self,
        token_id: &str,
        workspaces_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET workspaces_json = ? WHERE id = ?")
            .bind(workspaces_json)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
