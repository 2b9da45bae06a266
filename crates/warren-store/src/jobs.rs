//! Jobs: each workspace transition requested through the API (create, start, stop, restart,
//! delete) is a job with a status, timestamps and a log, like Coder's builds. At most one job per
//! workspace is active at a time; the database enforces it.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, Store, StoreError};

/// A job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Id.
    pub id: String,
    /// The workspace it acts on.
    pub workspace_id: String,
    /// `create`, `start`, `stop`, `restart` or `delete`.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// Who asked for it.
    pub initiator_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was requested.
    pub created_at: String,
    /// When it began.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

impl JobRecord {
    /// Whether the job has not finished.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "running" | "canceling")
    }
}

const JOB_COLUMNS: &str =
    "id, workspace_id, kind, status, initiator_id, error, created_at, started_at, finished_at";

fn job_from_row(r: &SqliteRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: r.try_get("id")?,
        workspace_id: r.try_get("workspace_id")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        initiator_id: r.try_get("initiator_id")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Store {
    /// Records a pending job, unless the workspace already has an active one:
    /// [`StoreError::Busy`] then names it.
    pub async fn create_job(
        &self,
        workspace_id: &str,
        kind: &str,
        initiator_id: Option<&str>,
    ) -> Result<JobRecord, StoreError> {
        let rec = JobRecord {
            id: new_id(),
            workspace_id: workspace_id.to_owned(),
            kind: kind.to_owned(),
            status: "pending".into(),
            initiator_id: initiator_id.map(str::to_owned),
            error: None,
            created_at: self.now(),
            started_at: None,
            finished_at: None,
        };
        let sql = format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let res = sqlx::query(&sql)
            .bind(&rec.id)
            .bind(&rec.workspace_id)
            .bind(&rec.kind)
            .bind(&rec.status)
            .bind(&rec.initiator_id)
            .bind(&rec.error)
            .bind(&rec.created_at)
            .bind(&rec.started_at)
            .bind(&rec.finished_at)
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(rec),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let active = self.active_job(workspace_id).await?;
                Err(StoreError::Busy {
                    workspace_id: workspace_id.to_owned(),
                    job: active
                        .map(|j| format!("{} ({})", j.id, j.kind))
                        .unwrap_or_default(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The workspace's active job, if any.
    pub async fn active_job(&self, workspace_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE workspace_id = ? AND status IN ('pending', 'running', 'canceling') LIMIT 1"
        );
        let r = sqlx::query(&sql)
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(job_from_row).transpose()
    }

    /// Every active job (pending, running or canceling).
    pub async fn active_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('pending', 'running', 'canceling')"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// A job by id.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(job_from_row).transpose()
    }

    /// A workspace's jobs, newest first.
    pub async fn jobs_of(&self, workspace_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE workspace_id = ? ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Marks a pending job running.
    pub async fn job_started(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'pending'")
            .bind(self.now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finishes an active job with `status` (`succeeded`, `failed`, `canceled`). Returns false if
    /// it had already finished (a cancel and a completion race: the first one wins).
    pub async fn job_finished(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ?, started_at = COALESCE(started_at, ?) \
             WHERE id = ? AND status IN ('pending', 'running')",
        )
        .bind(status)
        .bind(error)
        .bind(self.now())
        .bind(self.now())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Starts canceling an active job: it stays active (`canceling`) so nothing else starts on its
    /// workspace, and its own completion can no longer record an outcome. True for the one caller
    /// that wins against the job's completion.
    pub async fn job_canceling(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET status = 'canceling' WHERE id = ? AND status IN ('pending', 'running')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Finishes a cancellation begun by [`Store::job_canceling`].
    pub async fn job_canceled(&self, id: &str, why: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = 'canceled', error = ?, finished_at = ?, started_at = COALESCE(started_at, ?) \
             WHERE id = ? AND status = 'canceling'",
        )
        .bind(why)
        .bind(self.now())
        .bind(self.now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Fails every active job: called at server start, when no job of a previous process can
    /// still be running. Returns the jobs it failed.
    pub async fn fail_orphaned_jobs(&self, reason: &str) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('pending', 'running', 'canceling')"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let jobs: Vec<JobRecord> = rows.iter().map(job_from_row).collect::<Result<_, _>>()?;
        for j in &jobs {
            sqlx::query(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
            )
            .bind(reason)
            .bind(self.now())
            .bind(&j.id)
            .execute(&self.pool)
            .await?;
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_active_job_per_workspace() {
        let s = Store::open_in_memory().await.unwrap();
        let j = s.create_job("w1", "start", Some("u")).await.unwrap();
        assert!(matches!(
            s.create_job("w1", "stop", None).await,
            Err(StoreError::Busy { .. })
        ));
        // Other workspaces are not affected.
        s.create_job("w2", "stop", None).await.unwrap();
        s.job_started(&j.id).await.unwrap();
        assert_eq!(s.job(&j.id).await.unwrap().unwrap().status, "running");
        assert!(s.job_finished(&j.id, "succeeded", None).await.unwrap());
        assert!(!s.job_finished(&j.id, "canceled", None).await.unwrap());
        assert_eq!(s.job(&j.id).await.unwrap().unwrap().status, "succeeded");
        let j2 = s.create_job("w1", "stop", None).await.unwrap();
        assert_eq!(s.active_job("w1").await.unwrap().unwrap().id, j2.id);
        assert_eq!(s.jobs_of("w1").await.unwrap().len(), 2);
        let orphans = s.fail_orphaned_jobs("server restarted").await.unwrap();
        assert_eq!(orphans.len(), 2);
        assert!(s.active_job("w1").await.unwrap().is_none());
        assert_eq!(
            s.job(&j2.id).await.unwrap().unwrap().error.as_deref(),
            Some("server restarted")
        );
    }
}
