//! Events and metering: what happened to workspaces (with why), and how long each ran or sat
//! stopped at which rate. Transitions write both in the transaction that changes the state
//! ([`Store::apply`]), so neither misses nor doubles one, whatever crashes when.

use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use warren_api::{Event, WorkspaceState};

use crate::clock::Clock;
use crate::{format_time, Store, StoreError, WorkspaceRecord};

/// An event to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEvent {
    /// Stable dotted kind (`workspace.stopped`, `workspace.stop_warning`, `budget.warning`).
    pub kind: String,
    /// The workspace it is about, if any.
    pub workspace_id: Option<String>,
    /// Its name then.
    pub workspace_name: Option<String>,
    /// The user it concerns (the workspace's owner, or the user whose budget it is).
    pub owner_id: Option<String>,
    /// The team it concerns, if any.
    pub team_id: Option<String>,
    /// Who caused it (a user id); none for the system.
    pub actor_id: Option<String>,
    /// Why (`idle`, `deadline`, `budget`, ...).
    pub reason: Option<String>,
    /// One line for people.
    pub message: String,
    /// Details (a JSON object).
    pub data: serde_json::Value,
    /// An event with a key is recorded at most once: later inserts with the same key are ignored.
    pub dedupe_key: Option<String>,
}

impl NewEvent {
    /// An event of `kind` about workspace `rec`.
    pub fn about(kind: &str, rec: &WorkspaceRecord, message: String) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            workspace_id: Some(rec.id.clone()),
            workspace_name: Some(rec.name.to_string()),
            owner_id: Some(rec.ownership.owner_id.clone()).filter(|o| !o.is_empty()),
            team_id: rec.ownership.team_id.clone(),
            message,
            data: serde_json::json!({}),
            ..Default::default()
        }
    }
}

/// A recorded event: the API's view of it, which the store reads and the server answers as is.
pub type EventEntry = warren_api::v1::EventView;

impl NewEvent {
    /// The event as recorded with `id` at `at`.
    pub fn recorded(&self, id: i64, at: String) -> EventEntry {
        EventEntry {
            id,
            at,
            kind: self.kind.clone(),
            workspace_id: self.workspace_id.clone(),
            workspace_name: self.workspace_name.clone(),
            owner_id: self.owner_id.clone(),
            team_id: self.team_id.clone(),
            actor_id: self.actor_id.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            data: self.data.clone(),
        }
    }
}

/// Which events [`Store::list_events`] returns, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this workspace's.
    pub workspace_id: Option<String>,
    /// Only these workspaces' (a workspace-restricted token's view; empty: none).
    pub workspace_ids: Option<Vec<String>>,
    /// Only those concerning this user or one of these teams (a member's view).
    pub visible_to: Option<(String, Vec<String>)>,
    /// Only kinds starting with this (`workspace.`, `budget.`).
    pub kind_prefix: Option<String>,
    /// Only events after this id.
    pub after_id: Option<i64>,
    /// At most this many (the newest of them when `newest` is set, else the oldest).
    pub limit: u32,
    /// Take the newest `limit` events (still returned oldest first).
    pub newest: bool,
}

/// A stretch of time a workspace spent in one usage class at one rate.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSegment {
    /// Row id.
    pub id: i64,
    /// The workspace.
    pub workspace_id: String,
    /// Its name then.
    pub workspace_name: String,
    /// Its owner.
    pub owner_id: String,
    /// The team it was charged to.
    pub team_id: Option<String>,
    /// Its template.
    pub template_id: Option<String>,
    /// `running` or `stopped`.
    pub class: String,
    /// Cost units per hour.
    pub rate_per_hour: f64,
    /// CPUs it was limited to, if any.
    pub cpus: Option<f64>,
    /// Memory it was limited to, if any.
    pub memory_mb: Option<i64>,
    /// Start.
    pub started_at: String,
    /// End; none while it lasts.
    pub ended_at: Option<String>,
}

/// What lifecycle policies read of a workspace: a narrow row, so a pass over a large fleet
/// stays cheap.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner (empty for host-local).
    pub owner_id: String,
    /// Charged team.
    pub team_id: Option<String>,
    /// State.
    pub state: WorkspaceState,
    /// Generation.
    pub generation: i64,
    /// Created.
    pub created_at: String,
    /// Current or last run's start.
    pub started_at: Option<String>,
    /// Last stop or failure.
    pub stopped_at: Option<String>,
    /// Explicit deadline (`extend`).
    pub deadline_at: Option<String>,
    /// The workspace's own policy values (JSON).
    pub policy_json: Option<String>,
    /// The template version it was made from.
    pub template_version_id: Option<String>,
    /// Its change sequence number when read (0 when built from a record).
    pub change_seq: i64,
}

/// What [`Store::policy_changes`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChanges {
    /// Rows changed (or all, on a first read), as they are now.
    pub rows: Vec<PolicyRow>,
    /// Ids of records removed.
    pub removed: Vec<String>,
    /// The sequence number the answer is complete up to: pass it as `after` next time.
    pub seq: i64,
}

impl From<&WorkspaceRecord> for PolicyRow {
    fn from(r: &WorkspaceRecord) -> Self {
        PolicyRow {
            id: r.id.clone(),
            name: r.name.to_string(),
            owner_id: r.ownership.owner_id.clone(),
            team_id: r.ownership.team_id.clone(),
            state: r.state,
            generation: r.generation,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            stopped_at: r.stopped_at.clone(),
            deadline_at: r.ownership.deadline_at.clone(),
            policy_json: r.ownership.policy_json.clone(),
            template_version_id: r.ownership.template_version_id.clone(),
            change_seq: 0,
        }
    }
}

/// The usage class of a state: what the workspace costs while in it.
pub fn usage_class(state: WorkspaceState) -> Option<&'static str> {
    match state {
        WorkspaceState::Starting | WorkspaceState::Running | WorkspaceState::Stopping => {
            Some("running")
        }
        WorkspaceState::Pending | WorkspaceState::Stopped | WorkspaceState::Failed => {
            Some("stopped")
        }
        WorkspaceState::Deleting | WorkspaceState::Deleted => None,
    }
}

const EVENT_COLUMNS: &str = "id, at, kind, workspace_id, workspace_name, owner_id, team_id, \
    actor_id, reason, message, data_json";

const SEGMENT_COLUMNS: &str = "id, workspace_id, workspace_name, owner_id, team_id, template_id, \
    class, rate_per_hour, cpus, memory_mb, started_at, ended_at";

impl Store {
    /// Replaces the clock of every clone of this store (tests drive time with a fake one).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write().unwrap_or_else(|p| p.into_inner()) = clock;
    }

    /// The store's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The store clock's time now.
    pub fn now_time(&self) -> time::OffsetDateTime {
        self.clock().now()
    }

    /// The store clock's time now, in the stored format.
    pub fn now(&self) -> String {
        format_time(self.now_time())
    }

    /// Follows the id of the latest event this process recorded (transitions and
    /// [`insert_event`](Self::insert_event)); followers then read [`list_events`](Self::list_events) after
    /// the id they saw last.
    pub fn events_watch(&self) -> tokio::sync::watch::Receiver<i64> {
        self.events_tx.subscribe()
    }

    pub(crate) fn notify_event(&self, id: Option<i64>) {
        if let Some(id) = id {
            self.events_tx.send_if_modified(|v| {
                let newer = id > *v;
                if newer {
                    *v = id;
                }
                newer
            });
        }
    }

    /// Every workspace that is not deleted, narrowly (see [`PolicyRow`]). Host-local workspaces
    /// (no owner) are left out: lifecycle policies are the server's.
    pub async fn policy_rows(&self) -> Result<Vec<PolicyRow>, StoreError> {
        Ok(self
            .policy_changes(-1)
            .await?
            .rows
            .into_iter()
            .filter(|r| r.state != WorkspaceState::Deleted)
            .collect())
    }

    /// What changed among server workspaces after change sequence number `after` (all of them
    /// for a negative `after`): their rows as they are now (deleted ones included, so a reader
    /// drops them), the ids of records removed since, and the sequence number this answer is
    /// complete up to. One transaction, so the three agree.
    pub async fn policy_changes(&self, after: i64) -> Result<PolicyChanges, StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq: i64 = sqlx::query("SELECT n FROM change_seq WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(
            "SELECT id, name, owner_id, team_id, state, generation, created_at, started_at, \
             stopped_at, deadline_at, policy_json, template_version_id, change_seq \
             FROM workspaces WHERE owner_id != '' AND change_seq > ?",
        )
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let removed = sqlx::query("SELECT workspace_id FROM workspace_removals WHERE seq > ?")
            .bind(after.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let rows = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let state: String = r.try_get("state")?;
                let state = state.parse().map_err(|e| crate::corrupt(&id, e))?;
                Ok(PolicyRow {
                    name: r.try_get("name")?,
                    owner_id: r.try_get("owner_id")?,
                    team_id: r.try_get("team_id")?,
                    state,
                    generation: r.try_get("generation")?,
                    created_at: r.try_get("created_at")?,
                    started_at: r.try_get("started_at")?,
                    stopped_at: r.try_get("stopped_at")?,
                    deadline_at: r.try_get("deadline_at")?,
                    policy_json: r.try_get("policy_json")?,
                    template_version_id: r.try_get("template_version_id")?,
                    change_seq: r.try_get("change_seq")?,
                    id,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let removed = if after < 0 {
            Vec::new()
        } else {
            removed
                .iter()
                .map(|r| r.try_get("workspace_id"))
                .collect::<Result<Vec<String>, _>>()?
        };
        Ok(PolicyChanges { rows, removed, seq })
    }

    /// A workspace's change sequence number now (none: no such record).
    pub async fn change_seq_of(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query("SELECT change_seq FROM workspaces WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("change_seq"))
                .transpose()?,
        )
    }

    /// Forgets removals numbered `seq` or less (a reader that has applied them).
    pub async fn prune_removals(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workspace_removals WHERE seq <= ?")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The ids of the teams `user_id` is a member of.
    pub async fn team_ids_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT team_id FROM team_members WHERE user_id = ? ORDER BY team_id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("team_id")?)).collect()
    }

    /// Sets a workspace's own policy values (JSON; none: the template's).
    pub async fn set_policy_json(&self, id: &str, json: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET policy_json = ?, updated_at = ? WHERE id = ?")
            .bind(json)
            .bind(self.now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the reason and initiator of the operation about to run on a workspace (a job's),
    /// which the transitions that carry it out report. Not a state change: no generation bump.
    pub async fn set_op(
        &self,
        id: &str,
        reason: &str,
        actor: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET op_reason = ?, op_actor = ? WHERE id = ?")
            .bind(reason)
            .bind(actor)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an event, unless one with the same `dedupe_key` exists (then `None`).
    pub async fn insert_event(&self, e: &NewEvent) -> Result<Option<EventEntry>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = self.now();
        let id = insert_event(&mut tx, e, &at).await?;
        tx.commit().await?;
        self.notify_event(id);
        Ok(id.map(|id| e.recorded(id, at)))
    }

    /// Removes events recorded before `before` (retention); returns how many.
    pub async fn prune_events(&self, before: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM events WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Events matching `filter`, oldest first.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventEntry>, StoreError> {
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(ws) = &filter.workspace_id {
            sql.push_str(" AND workspace_id = ?");
            binds.push(ws.clone());
        }
        if let Some(ids) = &filter.workspace_ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND workspace_id IN (");
            for (i, id) in ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                binds.push(id.clone());
            }
            sql.push(')');
        }
        if let Some((user, teams)) = &filter.visible_to {
            sql.push_str(" AND (owner_id = ?");
            binds.push(user.clone());
            for t in teams {
                sql.push_str(" OR team_id = ?");
                binds.push(t.clone());
            }
            sql.push(')');
        }
        if let Some(prefix) = &filter.kind_prefix {
            sql.push_str(" AND substr(kind, 1, ?) = ?");
            binds.push(prefix.len().to_string());
            binds.push(prefix.clone());
        }
        if let Some(after) = filter.after_id {
            sql.push_str(" AND id > ?");
            binds.push(after.to_string());
        }
        let order = if filter.newest { "DESC" } else { "ASC" };
        sql.push_str(&format!(
            " ORDER BY id {order} LIMIT {}",
            filter.limit.max(1)
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let mut out = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if filter.newest {
            out.reverse();
        }
        Ok(out)
    }

    /// Usage segments that overlap `[from, to)` (open ones included), oldest first.
    pub async fn usage_segments(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageSegment>, StoreError> {
        self.usage_segments_of(from, to, None).await
    }

    /// Like [`Store::usage_segments`], but with `Some((owner, teams))` only the segments of
    /// workspaces `owner` owns or that are charged to one of `teams`: the filter is in the query,
    /// so a member's report does not load everyone's segments.
    pub async fn usage_segments_of(
        &self,
        from: &str,
        to: &str,
        only: Option<(&str, &[String])>,
    ) -> Result<Vec<UsageSegment>, StoreError> {
        let filter = match only {
            None => String::new(),
            Some((_, teams)) => format!(
                " AND (owner_id = ?{})",
                if teams.is_empty() {
                    String::new()
                } else {
                    format!(" OR team_id IN ({})", vec!["?"; teams.len()].join(", "))
                }
            ),
        };
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM usage_segments \
             WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?){filter} ORDER BY id"
        );
        let mut q = sqlx::query(&sql).bind(to).bind(from);
        if let Some((owner, teams)) = only {
            q = q.bind(owner);
            for t in teams {
                q = q.bind(t);
            }
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(segment_from_row)
            .collect()
    }
}

/// The `changes()` of the last statement: whether an `INSERT OR IGNORE` inserted.
pub(crate) async fn insert_event(
    tx: &mut Transaction<'_, Sqlite>,
    e: &NewEvent,
    at: &str,
) -> Result<Option<i64>, StoreError> {
    let r = sqlx::query(
        "INSERT INTO events (at, kind, workspace_id, workspace_name, owner_id, team_id, actor_id, \
         reason, message, data_json, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(at)
    .bind(&e.kind)
    .bind(&e.workspace_id)
    .bind(&e.workspace_name)
    .bind(&e.owner_id)
    .bind(&e.team_id)
    .bind(&e.actor_id)
    .bind(&e.reason)
    .bind(&e.message)
    .bind(e.data.to_string())
    .bind(&e.dedupe_key)
    .execute(&mut **tx)
    .await?;
    Ok((r.rows_affected() == 1).then(|| r.last_insert_rowid()))
}

fn event_from_row(r: &SqliteRow) -> Result<EventEntry, StoreError> {
    let data: String = r.try_get("data_json")?;
    Ok(EventEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        workspace_id: r.try_get("workspace_id")?,
        workspace_name: r.try_get("workspace_name")?,
        owner_id: r.try_get("owner_id")?,
        team_id: r.try_get("team_id")?,
        actor_id: r.try_get("actor_id")?,
        reason: r.try_get("reason")?,
        message: r.try_get("message")?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    })
}

fn segment_from_row(r: &SqliteRow) -> Result<UsageSegment, StoreError> {
    Ok(UsageSegment {
        id: r.try_get("id")?,
        workspace_id: r.try_get("workspace_id")?,
        workspace_name: r.try_get("workspace_name")?,
        owner_id: r.try_get("owner_id")?,
        team_id: r.try_get("team_id")?,
        template_id: r.try_get("template_id")?,
        class: r.try_get("class")?,
        rate_per_hour: r.try_get("rate_per_hour")?,
        cpus: r.try_get("cpus")?,
        memory_mb: r.try_get("memory_mb")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

/// The memory limit in MiB of stored limits: `memory_mb`, or the engine's `memory_bytes`.
pub fn memory_mb_of(limits: &serde_json::Value) -> Option<i64> {
    limits
        .get("memory_mb")
        .and_then(|v| v.as_i64())
        .or_else(|| {
            limits
                .get("memory_bytes")
                .and_then(|v| v.as_i64())
                .map(|b| b >> 20)
        })
}

/// The hourly rate of `class` in a workspace's `cost_json` (0 without one).
fn rate(cost_json: Option<&str>, class: &str) -> f64 {
    let Some(v) = cost_json.and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) else {
        return 0.0;
    };
    let key = if class == "running" {
        "running_per_hour"
    } else {
        "stopped_per_hour"
    };
    v.get(key).and_then(|r| r.as_f64()).unwrap_or(0.0)
}

/// Closes the workspace's open usage segment at `at` and opens one of `class` (if any).
pub(crate) async fn switch_segment(
    tx: &mut Transaction<'_, Sqlite>,
    rec: &WorkspaceRecord,
    class: Option<&str>,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE usage_segments SET ended_at = ? WHERE workspace_id = ? AND ended_at IS NULL",
    )
    .bind(at)
    .bind(&rec.id)
    .execute(&mut **tx)
    .await?;
    let Some(class) = class else {
        return Ok(());
    };
    let limits: serde_json::Value =
        serde_json::from_str(&rec.ownership.limits_json).unwrap_or_default();
    sqlx::query(
        "INSERT INTO usage_segments (workspace_id, workspace_name, owner_id, team_id, \
         template_id, class, rate_per_hour, cpus, memory_mb, started_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&rec.id)
    .bind(rec.name.as_str())
    .bind(&rec.ownership.owner_id)
    .bind(&rec.ownership.team_id)
    .bind(&rec.ownership.template_id)
    .bind(class)
    .bind(rate(rec.ownership.cost_json.as_deref(), class))
    .bind(limits.get("cpus").and_then(|v| v.as_f64()))
    .bind(memory_mb_of(&limits))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new workspace: the `workspace.created` event and its first usage segment.
pub(crate) async fn on_create(
    tx: &mut Transaction<'_, Sqlite>,
    rec: &WorkspaceRecord,
) -> Result<Option<i64>, StoreError> {
    switch_segment(tx, rec, usage_class(rec.state), &rec.created_at).await?;
    let e = NewEvent::about(
        "workspace.created",
        rec,
        format!("workspace `{}` created", rec.name),
    );
    insert_event(tx, &e, &rec.created_at).await
}

/// The part of a transition that concerns events and metering, in its transaction: the
/// operation's reason (from [`Store::set_op`], `user` when none was set), the event for a
/// changed state, the run's start and stop times, and the usage segment. Returns the record
/// with those times and the event's id.
pub(crate) async fn on_transition(
    tx: &mut Transaction<'_, Sqlite>,
    current: WorkspaceRecord,
    to: WorkspaceState,
    event: Event,
    message: Option<&str>,
    now: &str,
) -> Result<(WorkspaceRecord, Option<i64>), StoreError> {
    let from = current.state;
    if from == to {
        return Ok((current, None));
    }
    let row = sqlx::query("SELECT op_reason, op_actor FROM workspaces WHERE id = ?")
        .bind(&current.id)
        .fetch_one(&mut **tx)
        .await?;
    let op_reason: Option<String> = row.try_get("op_reason")?;
    let actor: Option<String> = row.try_get("op_actor")?;
    let op_reason = op_reason.unwrap_or_else(|| "user".to_owned());
    let mut rec = current;
    let name = rec.name.to_string();
    let (kind, reason, text) = match to {
        WorkspaceState::Starting => ("workspace.starting", op_reason.clone(), "starting"),
        WorkspaceState::Running => ("workspace.started", op_reason.clone(), "started"),
        WorkspaceState::Stopping => ("workspace.stopping", op_reason.clone(), "stopping"),
        WorkspaceState::Stopped => ("workspace.stopped", op_reason.clone(), "stopped"),
        WorkspaceState::Deleting => ("workspace.deleting", op_reason.clone(), "being deleted"),
        WorkspaceState::Deleted => ("workspace.deleted", op_reason.clone(), "deleted"),
        WorkspaceState::Failed => {
            let why = if event == Event::Exited {
                "exited"
            } else if op_reason == "start_timeout" {
                "start_timeout"
            } else {
                "error"
            };
            ("workspace.failed", why.to_owned(), "failed")
        }
        WorkspaceState::Pending => ("workspace.pending", op_reason.clone(), "pending"),
    };
    // Which columns this transition sets.
    let finished = matches!(
        to,
        WorkspaceState::Stopped
            | WorkspaceState::Failed
            | WorkspaceState::Deleted
            | WorkspaceState::Running
    );
    match to {
        WorkspaceState::Running => rec.started_at = Some(now.to_owned()),
        WorkspaceState::Stopped | WorkspaceState::Failed => {
            rec.stopped_at = Some(now.to_owned());
            rec.stop_reason = Some(reason.clone());
        }
        _ => {}
    }
    let (op_reason_col, op_actor_col) = if finished {
        (None, None)
    } else {
        (Some(op_reason.clone()), actor.clone())
    };
    // An extension belongs to its run: a new run starts with the policy's deadline.
    if to == WorkspaceState::Starting {
        rec.ownership.deadline_at = None;
    }
    sqlx::query(
        "UPDATE workspaces SET started_at = ?, stopped_at = ?, stop_reason = ?, op_reason = ?, \
         op_actor = ?, deadline_at = ? WHERE id = ?",
    )
    .bind(&rec.started_at)
    .bind(&rec.stopped_at)
    .bind(&rec.stop_reason)
    .bind(op_reason_col)
    .bind(op_actor_col)
    .bind(&rec.ownership.deadline_at)
    .bind(&rec.id)
    .execute(&mut **tx)
    .await?;
    if usage_class(from) != usage_class(to) {
        switch_segment(tx, &rec, usage_class(to), now).await?;
    }
    let mut text = format!("workspace `{name}` {text}");
    if reason != "user" {
        text.push_str(&format!(" ({})", reason.replace('_', " ")));
    }
    let mut e = NewEvent::about(kind, &rec, text);
    e.reason = Some(reason);
    e.actor_id = actor;
    e.data = serde_json::json!({ "from": from.as_str(), "to": to.as_str() });
    if let Some(m) = message.filter(|_| to == WorkspaceState::Failed) {
        e.data["error"] = serde_json::Value::String(m.to_owned());
    }
    let id = insert_event(tx, &e, now).await?;
    Ok((rec, id))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::FakeClock;
    use crate::{NewWorkspace, Ownership};

    async fn store_with_ws(cost: Option<&str>) -> (Store, Arc<FakeClock>, WorkspaceRecord) {
        let store = Store::open_in_memory().await.unwrap();
        let clock = FakeClock::starting_now();
        store.set_clock(clock.clone());
        let rec = store
            .create_workspace(NewWorkspace {
                name: warren_api::WorkspaceName::new("w").unwrap(),
                project_dir: "/p".into(),
                config_path: "/p/.devcontainer/devcontainer.json".into(),
                image: "img".into(),
                spec_json: "{}".into(),
                ownership: Ownership {
                    owner_id: "u1".into(),
                    cost_json: cost.map(str::to_owned),
                    limits_json: r#"{"cpus": 2, "memory_mb": 1024}"#.into(),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        (store, clock, rec)
    }

    async fn step(store: &Store, id: &str, event: Event) -> WorkspaceRecord {
        let rec = store.get(id).await.unwrap().unwrap();
        store
            .apply(id, rec.generation, event, None)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn policy_changes_are_read_incrementally_and_removals_are_seen() {
        let (store, _clock, rec) = store_with_ws(None).await;
        let all = store.policy_changes(-1).await.unwrap();
        assert_eq!(all.rows.len(), 1);
        assert!(all.removed.is_empty());
        // Nothing changed: nothing read.
        let none = store.policy_changes(all.seq).await.unwrap();
        assert_eq!((none.rows.len(), none.seq), (0, all.seq));
        // A transition and a policy change are seen, once each.
        step(&store, &rec.id, Event::Start).await;
        let c1 = store.policy_changes(all.seq).await.unwrap();
        assert_eq!(c1.rows[0].state, WorkspaceState::Starting);
        store.set_policy_json(&rec.id, Some("{}")).await.unwrap();
        let c2 = store.policy_changes(c1.seq).await.unwrap();
        assert_eq!(c2.rows[0].policy_json.as_deref(), Some("{}"));
        assert!(c2.seq > c1.seq);
        // A removed record is reported as removed.
        step(&store, &rec.id, Event::Fail).await;
        step(&store, &rec.id, Event::Delete).await;
        step(&store, &rec.id, Event::Deleted).await;
        store.delete_record(&rec.id).await.unwrap();
        let c3 = store.policy_changes(c2.seq).await.unwrap();
        assert!(c3.rows.is_empty());
        assert_eq!(c3.removed, vec![rec.id.clone()]);
        store.prune_removals(c3.seq).await.unwrap();
        assert!(store
            .policy_changes(c2.seq)
            .await
            .unwrap()
            .removed
            .is_empty());
        assert!(store.policy_rows().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn transitions_record_events_with_the_operations_reason() {
        let (store, clock, rec) = store_with_ws(None).await;
        step(&store, &rec.id, Event::Start).await;
        let r = step(&store, &rec.id, Event::Started).await;
        assert_eq!(r.started_at.as_deref(), Some(store.now().as_str()));
        clock.advance(Duration::from_secs(60));
        store.set_op(&rec.id, "idle", None).await.unwrap();
        step(&store, &rec.id, Event::Stop).await;
        let r = step(&store, &rec.id, Event::Stopped).await;
        assert_eq!(r.stop_reason.as_deref(), Some("idle"));
        // The stored record agrees with the returned one.
        assert_eq!(store.get(&rec.id).await.unwrap().unwrap(), r);
        // The next operation without a reason is the user's.
        step(&store, &rec.id, Event::Start).await;
        let events = store
            .list_events(&EventFilter {
                workspace_id: Some(rec.id.clone()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let seen: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.reason.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("workspace.created", None),
                ("workspace.starting", Some("user")),
                ("workspace.started", Some("user")),
                ("workspace.stopping", Some("idle")),
                ("workspace.stopped", Some("idle")),
                ("workspace.starting", Some("user")),
            ]
        );
        assert_eq!(events[4].message, "workspace `w` stopped (idle)");
        // A transition that keeps the state records no event.
        let r = store.get(&rec.id).await.unwrap().unwrap();
        store
            .apply(&rec.id, r.generation, Event::Start, None)
            .await
            .unwrap();
        let again = store
            .list_events(&EventFilter {
                workspace_id: Some(rec.id.clone()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(again.len(), events.len());
    }

    #[tokio::test]
    async fn a_deduplicated_event_is_recorded_once() {
        let (store, _clock, rec) = store_with_ws(None).await;
        let mut e = NewEvent::about("workspace.stop_warning", &rec, "soon".into());
        e.dedupe_key = Some("k1".into());
        let mut watch = store.events_watch();
        let first = store.insert_event(&e).await.unwrap().unwrap();
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), first.id);
        assert_eq!(store.insert_event(&e).await.unwrap(), None);
        // Retention removes what is older than its cutoff, nothing newer.
        assert_eq!(
            store
                .prune_events("2000-01-01T00:00:00.000Z")
                .await
                .unwrap(),
            0
        );
        let visible = store
            .list_events(&EventFilter {
                visible_to: Some(("u1".into(), vec![])),
                kind_prefix: Some("workspace.stop".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(visible, vec![first]);
        let others = store
            .list_events(&EventFilter {
                visible_to: Some(("u2".into(), vec![])),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(others.is_empty());
    }

    #[tokio::test]
    async fn usage_segments_follow_the_usage_class_at_the_declared_rates() {
        let (store, clock, rec) = store_with_ws(Some(
            r#"{"running_per_hour": 2.5, "stopped_per_hour": 0.1}"#,
        ))
        .await;
        let t0 = store.now();
        clock.advance(Duration::from_secs(600));
        step(&store, &rec.id, Event::Start).await;
        let t1 = store.now();
        step(&store, &rec.id, Event::Started).await;
        clock.advance(Duration::from_secs(3600));
        step(&store, &rec.id, Event::Stop).await;
        clock.advance(Duration::from_secs(5));
        let t2 = store.now();
        step(&store, &rec.id, Event::Stopped).await;
        clock.advance(Duration::from_secs(60));
        step(&store, &rec.id, Event::Delete).await;
        let t3 = store.now();
        step(&store, &rec.id, Event::Deleted).await;
        let segs = store
            .usage_segments("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z")
            .await
            .unwrap();
        let seen: Vec<(&str, f64, &str, Option<&str>)> = segs
            .iter()
            .map(|s| {
                (
                    s.class.as_str(),
                    s.rate_per_hour,
                    s.started_at.as_str(),
                    s.ended_at.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("stopped", 0.1, t0.as_str(), Some(t1.as_str())),
                ("running", 2.5, t1.as_str(), Some(t2.as_str())),
                ("stopped", 0.1, t2.as_str(), Some(t3.as_str())),
            ]
        );
        assert_eq!(segs[1].cpus, Some(2.0));
        assert_eq!(segs[1].memory_mb, Some(1024));
    }
}
