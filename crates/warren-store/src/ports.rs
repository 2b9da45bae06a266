//! Port sharing: how widely each workspace port is shared through its preview URLs. Only levels
//! above the default (`owner`) are stored.

use sqlx::Row;

use crate::{Store, StoreError};

impl Store {
    /// The stored sharing levels of a workspace's ports (port, level), by port.
    pub async fn port_shares(&self, workspace_id: &str) -> Result<Vec<(u16, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT port, sharing FROM port_shares WHERE workspace_id = ? ORDER BY port",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let port: i64 = r.try_get("port")?;
                Ok((u16::try_from(port).unwrap_or(0), r.try_get("sharing")?))
            })
            .collect()
    }

    /// The stored sharing level of one port, if above the default.
    pub async fn port_share(
        &self,
        workspace_id: &str,
        port: u16,
    ) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT sharing FROM port_shares WHERE workspace_id = ? AND port = ?")
                .bind(workspace_id)
                .bind(i64::from(port))
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("sharing")?),
            None => None,
        })
    }

    /// Sets a port's level: `None` (the default, `owner`) removes the row. Returns the level
    /// stored before.
    pub async fn set_port_share(
        &self,
        workspace_id: &str,
        port: u16,
        sharing: Option<&str>,
        by_user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let old: Option<String> =
            sqlx::query("SELECT sharing FROM port_shares WHERE workspace_id = ? AND port = ?")
                .bind(workspace_id)
                .bind(i64::from(port))
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("sharing"))
                .transpose()?;
        match sharing {
            None => {
                sqlx::query("DELETE FROM port_shares WHERE workspace_id = ? AND port = ?")
                    .bind(workspace_id)
                    .bind(i64::from(port))
                    .execute(&mut *tx)
                    .await?;
            }
            Some(level) => {
                sqlx::query(
                    "INSERT INTO port_shares (workspace_id, port, sharing, updated_at, updated_by) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, port) DO UPDATE SET \
                     sharing = excluded.sharing, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by",
                )
                .bind(workspace_id)
                .bind(i64::from(port))
                .bind(level)
                .bind(crate::now())
                .bind(by_user_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(old)
    }
}
