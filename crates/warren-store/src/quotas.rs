//! Quotas, budgets and their overrides, what admission reads of running workspaces, and
//! re-pricing a workspace's open usage segment.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::governance::{switch_segment, usage_class};
use crate::{new_id, Store, StoreError};

/// A quota row: a user's (`user`, their id), a team's (`team`, its id) or the default of users
/// (`default`, empty id). Unset limits are unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaRecord {
    /// `user`, `team` or `default`.
    pub subject_kind: String,
    /// The user's or team's id; empty for the default.
    pub subject_id: String,
    /// Most workspaces running at once.
    pub max_workspaces: Option<i64>,
    /// Most CPUs of running workspaces together.
    pub max_cpus: Option<f64>,
    /// Most memory (MiB) of running workspaces together.
    pub max_memory_mb: Option<i64>,
    /// Cost units per period.
    pub budget: Option<f64>,
    /// `day`, `week` or `month`.
    pub budget_period: String,
    /// `refuse` or `stop`.
    pub on_exhausted: String,
    /// Who set it.
    pub updated_by: Option<String>,
    /// When.
    pub updated_at: String,
}

/// An override of a user's or team's limits, until `expires_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverrideRecord {
    /// Id.
    pub id: String,
    /// `user` or `team`.
    pub subject_kind: String,
    /// The user's or team's id.
    pub subject_id: String,
    /// Cost units added to the budget.
    pub extra_budget: Option<f64>,
    /// No limits at all.
    pub unlimited: bool,
    /// End.
    pub expires_at: String,
    /// Why.
    pub note: Option<String>,
    /// Who granted it (user id).
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// A workspace that counts against quotas: running (or starting, stopping), or with a start in
/// progress (an active create, start, restart or update job).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub owner_id: String,
    /// Charged team.
    pub team_id: Option<String>,
    /// Its resource limits (JSON, as stored).
    pub limits_json: String,
}

/// What an (owner, team) pair spent since each of several starts (see [`Store::spending`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Spending {
    /// The owner.
    pub owner_id: String,
    /// The charged team.
    pub team_id: Option<String>,
    /// Cost units since each start, in the order asked.
    pub spent: Vec<f64>,
}

const QUOTA_COLUMNS: &str = "subject_kind, subject_id, max_workspaces, max_cpus, max_memory_mb, \
    budget, budget_period, on_exhausted, updated_by, updated_at";
const OVERRIDE_COLUMNS: &str = "id, subject_kind, subject_id, extra_budget, unlimited, \
    expires_at, note, created_by, created_at, revoked_at";

fn quota_from_row(r: &SqliteRow) -> Result<QuotaRecord, StoreError> {
    Ok(QuotaRecord {
        subject_kind: r.try_get("subject_kind")?,
        subject_id: r.try_get("subject_id")?,
        max_workspaces: r.try_get("max_workspaces")?,
        max_cpus: r.try_get("max_cpus")?,
        max_memory_mb: r.try_get("max_memory_mb")?,
        budget: r.try_get("budget")?,
        budget_period: r.try_get("budget_period")?,
        on_exhausted: r.try_get("on_exhausted")?,
        updated_by: r.try_get("updated_by")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn override_from_row(r: &SqliteRow) -> Result<OverrideRecord, StoreError> {
    let unlimited: i64 = r.try_get("unlimited")?;
    Ok(OverrideRecord {
        id: r.try_get("id")?,
        subject_kind: r.try_get("subject_kind")?,
        subject_id: r.try_get("subject_id")?,
        extra_budget: r.try_get("extra_budget")?,
        unlimited: unlimited != 0,
        expires_at: r.try_get("expires_at")?,
        note: r.try_get("note")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Every quota row (users', teams' and the default).
    pub async fn quotas(&self) -> Result<Vec<QuotaRecord>, StoreError> {
        let sql = format!("SELECT {QUOTA_COLUMNS} FROM quotas ORDER BY subject_kind, subject_id");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(quota_from_row)
            .collect()
    }

    /// One quota row.
    pub async fn quota(&self, kind: &str, id: &str) -> Result<Option<QuotaRecord>, StoreError> {
        let sql =
            format!("SELECT {QUOTA_COLUMNS} FROM quotas WHERE subject_kind = ? AND subject_id = ?");
        sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(quota_from_row)
            .transpose()
    }

    /// Sets a quota row (replacing the subject's previous one); `updated_at` is the store's now.
    pub async fn put_quota(&self, q: &QuotaRecord) -> Result<QuotaRecord, StoreError> {
        let mut q = q.clone();
        q.updated_at = self.now();
        sqlx::query(
            "INSERT INTO quotas (subject_kind, subject_id, max_workspaces, max_cpus, \
             max_memory_mb, budget, budget_period, on_exhausted, updated_by, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject_kind, subject_id) DO UPDATE \
             SET max_workspaces = excluded.max_workspaces, max_cpus = excluded.max_cpus, \
             max_memory_mb = excluded.max_memory_mb, budget = excluded.budget, \
             budget_period = excluded.budget_period, on_exhausted = excluded.on_exhausted, \
             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        )
        .bind(&q.subject_kind)
        .bind(&q.subject_id)
        .bind(q.max_workspaces)
        .bind(q.max_cpus)
        .bind(q.max_memory_mb)
        .bind(q.budget)
        .bind(&q.budget_period)
        .bind(&q.on_exhausted)
        .bind(&q.updated_by)
        .bind(&q.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(q)
    }

    /// Removes a quota row; whether there was one.
    pub async fn delete_quota(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM quotas WHERE subject_kind = ? AND subject_id = ?")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records an override (a new id; `created_at` is the store's now).
    pub async fn add_override(&self, o: &OverrideRecord) -> Result<OverrideRecord, StoreError> {
        let mut o = o.clone();
        o.id = new_id();
        o.created_at = self.now();
        o.revoked_at = None;
        let sql = format!(
            "INSERT INTO quota_overrides ({OVERRIDE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(&sql)
            .bind(&o.id)
            .bind(&o.subject_kind)
            .bind(&o.subject_id)
            .bind(o.extra_budget)
            .bind(o.unlimited as i64)
            .bind(&o.expires_at)
            .bind(&o.note)
            .bind(&o.created_by)
            .bind(&o.created_at)
            .bind(&o.revoked_at)
            .execute(&self.pool)
            .await?;
        Ok(o)
    }

    /// A subject's overrides, newest first (revoked and expired ones included).
    pub async fn overrides_of(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let sql = format!(
            "SELECT {OVERRIDE_COLUMNS} FROM quota_overrides WHERE subject_kind = ? AND \
             subject_id = ? ORDER BY created_at DESC, id"
        );
        sqlx::query(&sql)
            .bind(kind)
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(override_from_row)
            .collect()
    }

    /// Every override in force at `at` (not revoked, not expired).
    pub async fn active_overrides(&self, at: &str) -> Result<Vec<OverrideRecord>, StoreError> {
        let sql = format!(
            "SELECT {OVERRIDE_COLUMNS} FROM quota_overrides WHERE revoked_at IS NULL AND \
             expires_at > ? ORDER BY created_at"
        );
        sqlx::query(&sql)
            .bind(at)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(override_from_row)
            .collect()
    }

    /// Revokes an override of the subject; whether it was in force... or at least not revoked.
    pub async fn revoke_override(
        &self,
        kind: &str,
        subject_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE quota_overrides SET revoked_at = ? WHERE id = ? AND subject_kind = ? AND \
             subject_id = ? AND revoked_at IS NULL",
        )
        .bind(self.now())
        .bind(id)
        .bind(kind)
        .bind(subject_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The workspaces of `owner_id`, or charged to `team_id`, that count against quotas now:
    /// running, starting or stopping, or with a start in progress (an active create, start,
    /// restart or update job).
    pub async fn running_for(
        &self,
        owner_id: &str,
        team_id: Option<&str>,
    ) -> Result<Vec<RunningRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT w.id, w.owner_id, w.team_id, w.limits_json FROM workspaces w \
             WHERE (w.owner_id = ? OR (? IS NOT NULL AND w.team_id = ?)) AND w.owner_id != '' \
             AND (w.state IN ('starting', 'running', 'stopping') OR EXISTS (SELECT 1 FROM jobs j \
             WHERE j.workspace_id = w.id AND j.status IN ('pending', 'running', 'canceling') \
             AND j.kind IN ('create', 'start', 'restart', 'update')))",
        )
        .bind(owner_id)
        .bind(team_id)
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningRow {
                    id: r.try_get("id")?,
                    owner_id: r.try_get("owner_id")?,
                    team_id: r.try_get("team_id")?,
                    limits_json: r.try_get("limits_json")?,
                })
            })
            .collect()
    }

    /// What was spent, per (owner, team) pair, from each of `froms` until `now`: the sum over
    /// usage segments of rate × overlap, computed by the database in whole milliseconds (the
    /// stored precision), so a pass over a large fleet reads a few rows, not every segment.
    /// Only pairs involving `owner` or `team`, when given.
    pub async fn spending(
        &self,
        froms: &[String],
        now: &str,
        owner: Option<&str>,
        team: Option<&str>,
    ) -> Result<Vec<Spending>, StoreError> {
        let Some(earliest) = froms.iter().min() else {
            return Ok(Vec::new());
        };
        // ?1 now, ?2 the earliest start, ?3.. each start, then the filter.
        let mut sql = String::from("SELECT owner_id, team_id");
        for i in 0..froms.len() {
            sql.push_str(&format!(
                ", SUM(rate_per_hour * MAX(0, ROUND((julianday(MIN(COALESCE(ended_at, ?1), ?1)) \
                 - julianday(MAX(started_at, ?{}))) * 86400000.0))) AS s{i}",
                i + 3
            ));
        }
        sql.push_str(
            " FROM usage_segments WHERE started_at < ?1 AND (ended_at IS NULL OR ended_at > ?2) \
             AND rate_per_hour > 0",
        );
        let n = froms.len() + 3;
        if owner.is_some() || team.is_some() {
            sql.push_str(&format!(" AND (owner_id = ?{n} OR team_id = ?{})", n + 1));
        }
        sql.push_str(" GROUP BY owner_id, team_id");
        let mut q = sqlx::query(&sql).bind(now).bind(earliest);
        for f in froms {
            q = q.bind(f);
        }
        if owner.is_some() || team.is_some() {
            q = q.bind(owner.unwrap_or("")).bind(team);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let mut spent = Vec::with_capacity(froms.len());
                for i in 0..froms.len() {
                    let rate_ms: Option<f64> = r.try_get(format!("s{i}").as_str())?;
                    spent.push(rate_ms.unwrap_or(0.0) / 3_600_000.0);
                }
                Ok(Spending {
                    owner_id: r.try_get("owner_id")?,
                    team_id: r.try_get("team_id")?,
                    spent,
                })
            })
            .collect()
    }

    /// Sets a workspace's cost rates (JSON), and re-prices its open
    /// usage segment at this instant (closed and reopened at the new rate), in one transaction.
    pub async fn reprice(&self, id: &str, cost_json: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = self.now();
        let sql = format!(
            "SELECT {} FROM workspaces WHERE id = ?",
            crate::WORKSPACE_COLUMNS
        );
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await? else {
            return Err(StoreError::NotFound { id: id.to_owned() });
        };
        let mut rec = crate::record_from_row(&row)?;
        if rec.ownership.cost_json.as_deref() == cost_json {
            return Ok(());
        }
        rec.ownership.cost_json = cost_json.map(str::to_owned);
        sqlx::query("UPDATE workspaces SET cost_json = ?, updated_at = ? WHERE id = ?")
            .bind(cost_json)
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        switch_segment(&mut tx, &rec, usage_class(rec.state), &now).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, FakeClock};
    use crate::{NewWorkspace, Ownership};

    #[tokio::test]
    async fn quotas_overrides_and_repricing() {
        let store = Store::open_in_memory().await.unwrap();
        let clock = FakeClock::starting_now();
        store.set_clock(clock.clone());
        let q = QuotaRecord {
            subject_kind: "user".into(),
            subject_id: "u1".into(),
            max_workspaces: Some(2),
            budget: Some(10.0),
            budget_period: "day".into(),
            on_exhausted: "refuse".into(),
            ..Default::default()
        };
        store.put_quota(&q).await.unwrap();
        let mut q2 = q.clone();
        q2.max_workspaces = Some(3);
        store.put_quota(&q2).await.unwrap();
        let got = store.quota("user", "u1").await.unwrap().unwrap();
        assert_eq!(got.max_workspaces, Some(3));
        assert_eq!(store.quotas().await.unwrap().len(), 1);
        assert!(store.delete_quota("user", "u1").await.unwrap());
        assert!(!store.delete_quota("user", "u1").await.unwrap());

        let soon = crate::format_time(store.now_time() + Duration::from_secs(60));
        let o = store
            .add_override(&OverrideRecord {
                subject_kind: "user".into(),
                subject_id: "u1".into(),
                extra_budget: Some(5.0),
                expires_at: soon,
                created_by: "admin".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            store.active_overrides(&store.now()).await.unwrap(),
            std::slice::from_ref(&o)
        );
        clock.advance(Duration::from_secs(61));
        assert!(store
            .active_overrides(&store.now())
            .await
            .unwrap()
            .is_empty());
        assert!(store.revoke_override("user", "u1", &o.id).await.unwrap());
        assert!(!store.revoke_override("user", "u1", &o.id).await.unwrap());
        assert_eq!(store.overrides_of("user", "u1").await.unwrap().len(), 1);

        let rec = store
            .create_workspace(NewWorkspace {
                name: warren_api::WorkspaceName::new("w").unwrap(),
                project_dir: "/p".into(),
                config_path: "/p/c.json".into(),
                image: "img".into(),
                spec_json: "{}".into(),
                ownership: Ownership {
                    owner_id: "u1".into(),
                    cost_json: Some(r#"{"stopped_per_hour": 1.0}"#.into()),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        clock.advance(Duration::from_secs(3600));
        let t1 = store.now();
        store
            .reprice(&rec.id, Some(r#"{"stopped_per_hour": 2.0}"#))
            .await
            .unwrap();
        let segs = store
            .usage_segments("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].ended_at.as_deref(), Some(t1.as_str()));
        assert_eq!((segs[0].rate_per_hour, segs[1].rate_per_hour), (1.0, 2.0));
        assert_eq!(segs[1].started_at, t1);
        // The same price again changes nothing.
        store
            .reprice(&rec.id, Some(r#"{"stopped_per_hour": 2.0}"#))
            .await
            .unwrap();
        assert_eq!(
            store
                .usage_segments("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z")
                .await
                .unwrap()
                .len(),
            2
        );
        // Spending: 1 unit/h for 1 h, then 2 units/h since; from two starts.
        clock.advance(Duration::from_secs(1800));
        let t0 = crate::format_time(clock.now() - Duration::from_secs(3 * 3600));
        let froms = [t0, t1.clone()];
        let sp = store
            .spending(&froms, &store.now(), None, None)
            .await
            .unwrap();
        assert_eq!(sp.len(), 1);
        assert_eq!(sp[0].owner_id, "u1");
        assert_eq!(sp[0].spent, [1.0 + 1.0, 1.0]);
        let none = store
            .spending(&froms, &store.now(), Some("u2"), Some("t9"))
            .await
            .unwrap();
        assert!(none.is_empty());
        // A stopped workspace does not count against quotas.
        assert!(store.running_for("u1", None).await.unwrap().is_empty());

        // The visibility filter is in the query: another owner's segments, charged to a team
        // the reader is not asking about, are not loaded.
        let other = store
            .create_workspace(NewWorkspace {
                name: warren_api::WorkspaceName::new("v").unwrap(),
                project_dir: "/q".into(),
                config_path: "/q/c.json".into(),
                image: "img".into(),
                spec_json: "{}".into(),
                ownership: Ownership {
                    owner_id: "u2".into(),
                    team_id: Some("t1".into()),
                    cost_json: Some(r#"{"stopped_per_hour": 1.0}"#.into()),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        let (from, to) = ("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z");
        let owners = |segs: Vec<crate::UsageSegment>| -> Vec<String> {
            segs.into_iter().map(|g| g.workspace_id).collect()
        };
        let all = owners(store.usage_segments_of(from, to, None).await.unwrap());
        assert_eq!(all.len(), 3);
        let mine = owners(
            store
                .usage_segments_of(from, to, Some(("u1", &[])))
                .await
                .unwrap(),
        );
        assert_eq!(mine, [rec.id.clone(), rec.id.clone()]);
        let with_team = owners(
            store
                .usage_segments_of(from, to, Some(("u1", &["t1".to_owned()])))
                .await
                .unwrap(),
        );
        assert_eq!(
            with_team,
            [rec.id.clone(), rec.id.clone(), other.id.clone()]
        );
        let nobody = store
            .usage_segments_of(from, to, Some(("u9", &["t9".to_owned()])))
            .await
            .unwrap();
        assert!(nobody.is_empty());
    }
}
