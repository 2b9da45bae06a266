#![forbid(unsafe_code)]
//! Persistent control-plane state for Warren: workspaces and their event history in SQLite.
//!
//! Several `warren` processes may share one database file: the store uses WAL mode, a busy
//! timeout, and optimistic concurrency. Every workspace row carries a `generation` that each
//! change bumps; writers state the generation they read and lose with [`StoreError::Conflict`]
//! when someone else changed the row first.
//!
//! Timestamps are stored as TEXT in RFC 3339 UTC with millisecond precision
//! (`2024-05-01T12:00:00.000Z`), which sorts chronologically as text on every backend.

mod activity;
mod audit;
pub mod clock;
mod error;
mod governance;
mod identity;
mod jobs;
mod network;
mod ports;
mod quotas;
mod record;
mod secrets;
pub mod session;
mod ssh_access;
mod ssh_keys;
mod tasks;
mod templates;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use warren_api::{transition, Action, Event, WorkspaceName, WorkspaceState};

pub use audit::*;
pub use error::StoreError;
pub use governance::{
    memory_mb_of, usage_class, EventEntry, EventFilter, NewEvent, PolicyChanges, PolicyRow,
    UsageSegment,
};
pub use identity::{DeviceCodeRecord, OrgRecord, TeamRecord, TokenRecord, UserRecord};
pub use jobs::JobRecord;
pub use network::NetworkColumns;
pub use quotas::{OverrideRecord, QuotaRecord, RunningRow, Spending};
pub use record::{EventRecord, NewWorkspace, Ownership, WorkspaceFilter, WorkspaceRecord};
pub use secrets::SecretRecord;
pub use ssh_access::SshAccessRecord;
pub use ssh_keys::{NewSshKey, SshKeyRecord};
pub use tasks::{TaskPatch, TaskRecord};
pub use templates::{NewVersion, TemplateRecord, VersionRecord};
pub use webhooks::{
    AttemptOutcome, DeliveryRecord, NewWebhook, WebhookRecord, WEBHOOK_DISABLED_KIND,
};

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at switching a new file to WAL mode: that takes a lock which the busy timeout
/// cannot wait for, so processes opening a fresh file at the same time retry instead.
const WAL_ATTEMPTS: u32 = 20;

/// Attempts at running migrations: processes opening a fresh file at the same time race to
/// create the schema, and the loser succeeds on retry once it sees the winner's work.
const MIGRATE_ATTEMPTS: u32 = 3;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const WORKSPACE_COLUMNS: &str = "id, name, project_dir, config_path, image, spec_json, state, \
    generation, last_error, lifecycle_json, runtime_json, created_at, updated_at, owner_id, org_id, \
    template_id, template_version_id, parameters_json, ttl_secs, deadline_at, limits_json, \
    team_id, policy_json, cost_json, started_at, stopped_at, stop_reason";

/// A handle to the control-plane database. Cheap to clone; clones share a connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    audit_lock: std::sync::Arc<tokio::sync::Mutex<()>>, // Serializes audit appends (audit.rs).
    /// The clock of time-driven records (transitions, events, metering); shared by clones.
    clock: std::sync::Arc<std::sync::RwLock<std::sync::Arc<dyn clock::Clock>>>,
    /// The id of the latest event this process wrote, for followers (`events_watch`).
    events_tx: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
}

impl Store {
    /// Opens (creating the file and its parent directories if needed) the database at `path`
    /// and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|error| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    error,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // WAL mode persists in the file, so one connection switching it on is enough; pool
        // connections then inherit it.
        retry_if_busy(|| async {
            let wal = options.clone().journal_mode(SqliteJournalMode::Wal);
            SqliteConnection::connect_with(&wal).await?.close().await
        })
        .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::migrate(pool).await
    }

    /// Opens a private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // A single connection that never expires: the database lives as long as it does.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrate(pool).await
    }

    /// Closes all connections, waiting for in-flight queries; later calls on any clone fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(pool: SqlitePool) -> Result<Store, StoreError> {
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&pool).await {
                Ok(()) => {
                    return Ok(Store {
                        pool,
                        audit_lock: Default::default(),
                        clock: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
                            clock::SystemClock,
                        ))),
                        events_tx: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
                    })
                }
                Err(_) if attempt < MIGRATE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Records a new workspace in state `pending`, generation 1.
    pub async fn create_workspace(&self, new: NewWorkspace) -> Result<WorkspaceRecord, StoreError> {
        let now = self.now();
        let mut new = new;
        for json in [
            &mut new.ownership.limits_json,
            &mut new.ownership.parameters_json,
        ] {
            if json.is_empty() {
                *json = "{}".to_owned();
            }
        }
        let record = WorkspaceRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: new.name,
            project_dir: new.project_dir,
            config_path: new.config_path,
            image: new.image,
            spec_json: new.spec_json,
            ownership: new.ownership,
            state: WorkspaceState::Pending,
            generation: 1,
            last_error: None,
            lifecycle_json: "{}".to_owned(),
            runtime_json: "{}".to_owned(),
            created_at: now.clone(),
            updated_at: now,
            started_at: None,
            stopped_at: None,
            stop_reason: None,
        };
        let sql = format!(
            "INSERT INTO workspaces ({WORKSPACE_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(&sql)
            .bind(&record.id)
            .bind(record.name.as_str())
            .bind(&record.project_dir)
            .bind(&record.config_path)
            .bind(&record.image)
            .bind(&record.spec_json)
            .bind(record.state.as_str())
            .bind(record.generation)
            .bind(&record.last_error)
            .bind(&record.lifecycle_json)
            .bind(&record.runtime_json)
            .bind(&record.created_at)
            .bind(&record.updated_at)
            .bind(&record.ownership.owner_id)
            .bind(&record.ownership.org_id)
            .bind(&record.ownership.template_id)
            .bind(&record.ownership.template_version_id)
            .bind(&record.ownership.parameters_json)
            .bind(record.ownership.ttl_secs)
            .bind(&record.ownership.deadline_at)
            .bind(&record.ownership.limits_json)
            .bind(&record.ownership.team_id)
            .bind(&record.ownership.policy_json)
            .bind(&record.ownership.cost_json)
            .bind(&record.started_at)
            .bind(&record.stopped_at)
            .bind(&record.stop_reason)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                let event = governance::on_create(&mut tx, &record).await?;
                tx.commit().await?;
                self.notify_event(event);
                Ok(record)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::NameTaken {
                    name: record.name.into_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The workspace with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.fetch_one_where("id = ?", &[id]).await
    }

    /// The workspace of `owner_id` (empty for host-local) with this name, if any.
    pub async fn get_by_name(
        &self,
        owner_id: &str,
        name: &str,
    ) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.fetch_one_where("owner_id = ? AND name = ?", &[owner_id, name])
            .await
    }

    /// The most recently created workspace of `owner_id` for this project folder, if any.
    pub async fn find_by_project_dir(
        &self,
        owner_id: &str,
        dir: &str,
    ) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.fetch_one_where(
            "owner_id = ? AND project_dir = ? ORDER BY created_at DESC, id",
            &[owner_id, dir],
        )
        .await
    }

    /// All workspaces, ordered by name.
    pub async fn list(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY name, owner_id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// A page of workspaces matching `filter`, ordered by (name, id); see [`WorkspaceFilter`].
    pub async fn list_filtered(
        &self,
        filter: &WorkspaceFilter,
    ) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let mut sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(owner) = &filter.owner_id {
            sql.push_str(" AND owner_id = ?");
            binds.push(owner.clone());
        }
        if let Some(state) = filter.state {
            sql.push_str(" AND state = ?");
            binds.push(state.as_str().to_owned());
        }
        if let Some(t) = &filter.template_id {
            sql.push_str(" AND template_id = ?");
            binds.push(t.clone());
        }
        if let Some(prefix) = &filter.name_prefix {
            // Names are [a-z0-9-]: no LIKE wildcards can occur in a valid prefix, but escape anyway.
            sql.push_str(" AND name LIKE ? ESCAPE '\\'");
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(format!("{escaped}%"));
        }
        if filter.exclude_local {
            sql.push_str(" AND owner_id <> ''");
        }
        if let Some(ids) = &filter.ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND id IN (");
            sql.push_str(&vec!["?"; ids.len()].join(", "));
            sql.push(')');
            binds.extend(ids.iter().cloned());
        }
        if let Some((name, id)) = &filter.after {
            sql.push_str(" AND (name > ? OR (name = ? AND id > ?))");
            binds.extend([name.clone(), name.clone(), id.clone()]);
        }
        sql.push_str(" ORDER BY name, id LIMIT ?");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Number of workspaces in each state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(WorkspaceState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM workspaces GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get("state")?;
                let st = WorkspaceState::from_str(&s).map_err(|e| corrupt("-", e))?;
                Ok((st, r.try_get("n")?))
            })
            .collect()
    }

    /// Sets the workspace's deadline (no generation check: deadlines are policy, not state).
    pub async fn set_deadline(
        &self,
        id: &str,
        deadline_at: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET deadline_at = ?, updated_at = ? WHERE id = ?")
            .bind(deadline_at)
            .bind(self.now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the template version and parameter values a workspace is built from.
    pub async fn set_template_version(
        &self,
        id: &str,
        template_version_id: &str,
        parameters_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspaces SET template_version_id = ?, parameters_json = ?, updated_at = ? WHERE id = ?",
        )
        .bind(template_version_id)
        .bind(parameters_json)
        .bind(self.now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn fetch_one_where(
        &self,
        condition: &str,
        values: &[&str],
    ) -> Result<Option<WorkspaceRecord>, StoreError> {
        let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE {condition} LIMIT 1");
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(*v);
        }
        let row = q.fetch_optional(&self.pool).await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Fetches a workspace and checks that the caller's generation is current.
    async fn current(&self, id: &str, expected: i64) -> Result<WorkspaceRecord, StoreError> {
        let record = self
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: id.to_owned() })?;
        if record.generation != expected {
            return Err(StoreError::Conflict {
                id: id.to_owned(),
                expected,
                actual: record.generation,
            });
        }
        Ok(record)
    }

    /// Applies [`warren_api::transition`] for `event` to the stored state, provided the stored
    /// generation is `expected_generation`. In one transaction it updates the state, bumps the
    /// generation and appends an event row (also for transitions that keep the state, so the
    /// history shows every accepted request). Returns the new record and the engine's actions.
    pub async fn apply(
        &self,
        id: &str,
        expected_generation: i64,
        event: Event,
        message: Option<&str>,
    ) -> Result<(WorkspaceRecord, Vec<Action>), StoreError> {
        let current = self.current(id, expected_generation).await?;
        let (to, actions) = transition(current.state, event)?;
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        // The generation guard makes this a compare-and-swap: if another writer got in between
        // our read and this write, nothing is updated and we report a conflict.
        let updated = sqlx::query(
            "UPDATE workspaces SET state = ?, generation = generation + 1, updated_at = ? \
             WHERE id = ? AND generation = ?",
        )
        .bind(to.as_str())
        .bind(&now)
        .bind(id)
        .bind(expected_generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Err(self.lost_race(id, expected_generation).await);
        }
        sqlx::query(
            "INSERT INTO workspace_events (workspace_id, at, from_state, to_state, event, message) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&now)
        .bind(current.state.as_str())
        .bind(to.as_str())
        .bind(event.as_str())
        .bind(message)
        .execute(&mut *tx)
        .await?;
        let (record, notice) =
            governance::on_transition(&mut tx, current, to, event, message, &now).await?;
        tx.commit().await?;
        self.notify_event(notice);
        let record = WorkspaceRecord {
            state: to,
            generation: expected_generation + 1,
            updated_at: now,
            ..record
        };
        Ok((record, actions))
    }

    /// Sets (or clears) the last error, if the generation is current; bumps it.
    pub async fn set_last_error(
        &self,
        id: &str,
        expected_generation: i64,
        last_error: Option<&str>,
    ) -> Result<WorkspaceRecord, StoreError> {
        self.cas_update(id, expected_generation, &[("last_error", last_error)])
            .await
    }

    /// Replaces the opaque lifecycle JSON, if the generation is current; bumps it.
    pub async fn set_lifecycle_json(
        &self,
        id: &str,
        expected_generation: i64,
        lifecycle_json: &str,
    ) -> Result<WorkspaceRecord, StoreError> {
        self.cas_update(
            id,
            expected_generation,
            &[("lifecycle_json", Some(lifecycle_json))],
        )
        .await
    }

    /// Replaces the opaque runtime JSON, if the generation is current; bumps it.
    pub async fn set_runtime_json(
        &self,
        id: &str,
        expected_generation: i64,
        runtime_json: &str,
    ) -> Result<WorkspaceRecord, StoreError> {
        self.cas_update(
            id,
            expected_generation,
            &[("runtime_json", Some(runtime_json))],
        )
        .await
    }

    /// Replaces the image and the opaque resolved spec, if the generation is current; bumps it.
    pub async fn set_spec(
        &self,
        id: &str,
        expected_generation: i64,
        image: &str,
        spec_json: &str,
    ) -> Result<WorkspaceRecord, StoreError> {
        self.cas_update(
            id,
            expected_generation,
            &[("image", Some(image)), ("spec_json", Some(spec_json))],
        )
        .await
    }

    /// Compare-and-swap update of text columns. Column names come from this crate only.
    async fn cas_update(
        &self,
        id: &str,
        expected: i64,
        columns: &[(&'static str, Option<&str>)],
    ) -> Result<WorkspaceRecord, StoreError> {
        let assignments: String = columns
            .iter()
            .map(|(column, _)| format!("{column} = ?, "))
            .collect();
        let sql = format!(
            "UPDATE workspaces SET {assignments}generation = generation + 1, updated_at = ? \
             WHERE id = ? AND generation = ? RETURNING {WORKSPACE_COLUMNS}"
        );
        let mut query = sqlx::query(&sql);
        for (_, value) in columns {
            query = query.bind(*value);
        }
        let row = query
            .bind(self.now())
            .bind(id)
            .bind(expected)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => record_from_row(&row),
            None => Err(self.lost_race(id, expected).await),
        }
    }

    /// Explains why a generation-guarded write matched no row.
    async fn lost_race(&self, id: &str, expected: i64) -> StoreError {
        match self.get(id).await {
            Ok(Some(record)) => StoreError::Conflict {
                id: id.to_owned(),
                expected,
                actual: record.generation,
            },
            Ok(None) => StoreError::NotFound { id: id.to_owned() },
            Err(e) => e,
        }
    }

    /// Removes the record of a workspace in state `deleted`. Its event history is kept.
    pub async fn delete_record(&self, id: &str) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM workspaces WHERE id = ? AND state = ?")
            .bind(id)
            .bind(WorkspaceState::Deleted.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 1 {
            return Ok(());
        }
        match self.get(id).await? {
            Some(record) => Err(StoreError::NotDeleted {
                id: id.to_owned(),
                state: record.state,
            }),
            None => Err(StoreError::NotFound { id: id.to_owned() }),
        }
    }

    /// The event history of a workspace, oldest first.
    pub async fn events(&self, id: &str) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, workspace_id, at, from_state, to_state, event, message \
             FROM workspace_events WHERE workspace_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// Runs `op`, retrying with a growing pause while SQLite reports the database busy or locked.
async fn retry_if_busy<F, Fut>(op: F) -> Result<(), sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(sqlx::Error::Database(e)) if attempt < WAL_ATTEMPTS && is_busy(e.as_ref()) => {
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), including their extended codes.
fn is_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// A new random id: 32 lowercase hex digits.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The current time in the stored timestamp format.
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// `t` in the stored timestamp format (RFC 3339 UTC, milliseconds).
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn corrupt(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        detail: detail.to_string(),
    }
}

fn record_from_row(row: &SqliteRow) -> Result<WorkspaceRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let name =
        WorkspaceName::new(row.try_get::<String, _>("name")?).map_err(|e| corrupt(&id, e))?;
    let state = WorkspaceState::from_str(row.try_get("state")?).map_err(|e| corrupt(&id, e))?;
    Ok(WorkspaceRecord {
        name,
        state,
        project_dir: row.try_get("project_dir")?,
        config_path: row.try_get("config_path")?,
        image: row.try_get("image")?,
        spec_json: row.try_get("spec_json")?,
        generation: row.try_get("generation")?,
        last_error: row.try_get("last_error")?,
        lifecycle_json: row.try_get("lifecycle_json")?,
        runtime_json: row.try_get("runtime_json")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ownership: Ownership {
            owner_id: row.try_get("owner_id")?,
            org_id: row.try_get("org_id")?,
            template_id: row.try_get("template_id")?,
            template_version_id: row.try_get("template_version_id")?,
            parameters_json: row.try_get("parameters_json")?,
            ttl_secs: row.try_get("ttl_secs")?,
            deadline_at: row.try_get("deadline_at")?,
            limits_json: row.try_get("limits_json")?,
            team_id: row.try_get("team_id")?,
            policy_json: row.try_get("policy_json")?,
            cost_json: row.try_get("cost_json")?,
        },
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
        stop_reason: row.try_get("stop_reason")?,
        id,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let workspace_id: String = row.try_get("workspace_id")?;
    let state = |column: &str| -> Result<WorkspaceState, StoreError> {
        WorkspaceState::from_str(row.try_get(column)?).map_err(|e| corrupt(&workspace_id, e))
    };
    Ok(EventRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        from_state: state("from_state")?,
        to_state: state("to_state")?,
        event: Event::from_str(row.try_get("event")?).map_err(|e| corrupt(&workspace_id, e))?,
        message: row.try_get("message")?,
        workspace_id,
    })
}
