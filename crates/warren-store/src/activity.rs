//! Workspace activity: the last time each kind of activity was seen on a workspace.

use sqlx::Row;

use crate::{Store, StoreError};

impl Store {
    /// Records activity: for each (workspace id, kind, time), keeps the later of the stored and the
    /// given time. Workspaces deleted meanwhile are skipped.
    pub async fn record_activity(
        &self,
        seen: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (ws, kind, at) in seen {
            let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?")
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                continue;
            }
            sqlx::query(
                "INSERT INTO workspace_activity (workspace_id, kind, last_at) VALUES (?, ?, ?) \
                 ON CONFLICT (workspace_id, kind) DO UPDATE SET last_at = excluded.last_at \
                 WHERE excluded.last_at > workspace_activity.last_at",
            )
            .bind(ws)
            .bind(kind)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last time of each kind of activity on a workspace, by kind name.
    pub async fn activity(&self, workspace_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, last_at FROM workspace_activity WHERE workspace_id = ? ORDER BY kind",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("last_at")?)))
            .collect()
    }

    /// The latest activity of any kind on every workspace that has some (workspace id, time).
    pub async fn last_activity_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT workspace_id, MAX(last_at) AS last_at FROM workspace_activity \
             GROUP BY workspace_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("workspace_id")?, r.try_get("last_at")?)))
            .collect()
    }
}
