//! Short-lived SSH access tokens: `ssh TOKEN@gateway` into one workspace, with no key. Only the
//! token's SHA-256 is stored.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, now, Store, StoreError};

/// An SSH access token (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccessRecord {
    /// Id.
    pub id: String,
    /// Who made it; the gateway acts as this user.
    pub user_id: String,
    /// The one workspace it reaches.
    pub workspace_id: String,
    /// The API token that made it; it stops working when that one is revoked or expires.
    pub token_id: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Last authentication with it.
    pub last_used_at: Option<String>,
}

const COLUMNS: &str =
    "id, user_id, workspace_id, token_id, created_at, expires_at, revoked_at, last_used_at";

fn from_row(r: &SqliteRow) -> Result<SshAccessRecord, StoreError> {
    Ok(SshAccessRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        workspace_id: r.try_get("workspace_id")?,
        token_id: r.try_get("token_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

impl Store {
    /// Records a token by the SHA-256 of its secret.
    pub async fn create_ssh_access(
        &self,
        token_sha256: &str,
        user_id: &str,
        workspace_id: &str,
        token_id: Option<&str>,
        expires_at: &str,
    ) -> Result<SshAccessRecord, StoreError> {
        let rec = SshAccessRecord {
            id: new_id(),
            user_id: user_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            token_id: token_id.map(str::to_owned),
            created_at: now(),
            expires_at: expires_at.to_owned(),
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO ssh_access_tokens (id, token_sha256, user_id, workspace_id, token_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rec.id)
        .bind(token_sha256)
        .bind(&rec.user_id)
        .bind(&rec.workspace_id)
        .bind(&rec.token_id)
        .bind(&rec.created_at)
        .bind(&rec.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(rec)
    }

    /// The token whose secret hashes to `token_sha256`, if neither it nor the API token that
    /// made it is revoked or expired; its use is recorded.
    pub async fn use_ssh_access(
        &self,
        token_sha256: &str,
    ) -> Result<Option<SshAccessRecord>, StoreError> {
        let t = now();
        let sql = format!(
            "SELECT {COLUMNS} FROM ssh_access_tokens \
             WHERE token_sha256 = ? AND revoked_at IS NULL AND expires_at > ? \
             AND (token_id IS NULL OR EXISTS (SELECT 1 FROM api_tokens p WHERE p.id = token_id \
                  AND p.revoked_at IS NULL AND p.expires_at > ?))"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(token_sha256)
            .bind(&t)
            .bind(&t)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut rec = from_row(&row)?;
        sqlx::query("UPDATE ssh_access_tokens SET last_used_at = ? WHERE id = ?")
            .bind(&t)
            .bind(&rec.id)
            .execute(&self.pool)
            .await?;
        rec.last_used_at = Some(t);
        Ok(Some(rec))
    }

    /// A workspace's tokens, newest first, revoked and expired ones included.
    pub async fn ssh_access_for(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<SshAccessRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ssh_access_tokens WHERE workspace_id = ? ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes one of a workspace's tokens (idempotent); `NotFound` if it has no such token.
    pub async fn revoke_ssh_access(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<SshAccessRecord, StoreError> {
        sqlx::query(
            "UPDATE ssh_access_tokens SET revoked_at = ? \
             WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .bind(workspace_id)
        .execute(&self.pool)
        .await?;
        let sql =
            format!("SELECT {COLUMNS} FROM ssh_access_tokens WHERE id = ? AND workspace_id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: id.to_owned() })?;
        from_row(&row)
    }
}
