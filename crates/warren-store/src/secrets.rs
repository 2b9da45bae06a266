//! Secrets (migration 17): encrypted values scoped to a user, a team, a template or (Warren's own)
//! a workspace; the secret names a workspace asked for; and which API tokens are minted workspace
//! credentials. The store never sees a plaintext value: callers pass the nonce and ciphertext.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, now, Store, StoreError, TokenRecord};

/// A stored secret (encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Id.
    pub id: String,
    /// Name, unique in its scope.
    pub name: String,
    /// `user`, `team`, `template` or `workspace`.
    pub scope: String,
    /// The user's, team's, template's or workspace's id.
    pub scope_id: String,
    /// `generic` or `git`.
    pub kind: String,
    /// The git host it answers for (`git` secrets).
    pub git_host: Option<String>,
    /// The user name git is given (`git` secrets).
    pub username: Option<String>,
    /// AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// AES-GCM ciphertext with its tag.
    pub ciphertext: Vec<u8>,
    /// Who wrote it (user id).
    pub created_by: Option<String>,
    /// First write.
    pub created_at: String,
    /// Latest write.
    pub updated_at: String,
}

const COLUMNS: &str = "id, name, scope, scope_id, kind, git_host, username, nonce, ciphertext, \
    created_by, created_at, updated_at";

fn from_row(r: &SqliteRow) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: r.try_get("scope")?,
        scope_id: r.try_get("scope_id")?,
        kind: r.try_get("kind")?,
        git_host: r.try_get("git_host")?,
        username: r.try_get("username")?,
        nonce: r.try_get("nonce")?,
        ciphertext: r.try_get("ciphertext")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Writes a secret: a new row, or a new value (and kind, host, user name) for the row of the
    /// same scope and name, which keeps its id and creation time. Returns the stored row.
    pub async fn put_secret(&self, s: &SecretRecord) -> Result<SecretRecord, StoreError> {
        let at = now();
        let sql = format!(
            "INSERT INTO secrets ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (scope, scope_id, name) DO UPDATE SET kind = excluded.kind, \
             git_host = excluded.git_host, username = excluded.username, nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, created_by = excluded.created_by, \
             updated_at = excluded.updated_at"
        );
        sqlx::query(&sql)
            .bind(new_id())
            .bind(&s.name)
            .bind(&s.scope)
            .bind(&s.scope_id)
            .bind(&s.kind)
            .bind(&s.git_host)
            .bind(&s.username)
            .bind(&s.nonce)
            .bind(&s.ciphertext)
            .bind(&s.created_by)
            .bind(&at)
            .bind(&at)
            .execute(&self.pool)
            .await?;
        self.secret(&s.scope, &s.scope_id, &s.name)
            .await?
            .ok_or_else(|| StoreError::Missing {
                what: "secret".into(),
                name: s.name.clone(),
            })
    }

    /// One secret by scope and name.
    pub async fn secret(
        &self,
        scope: &str,
        scope_id: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM secrets WHERE scope = ? AND scope_id = ? AND name = ?");
        let r = sqlx::query(&sql)
            .bind(scope)
            .bind(scope_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// The secrets of one scope, by name.
    pub async fn secrets_of(
        &self,
        scope: &str,
        scope_id: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM secrets WHERE scope = ? AND scope_id = ? ORDER BY name");
        let rows = sqlx::query(&sql)
            .bind(scope)
            .bind(scope_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Removes a secret; false when there was none.
    pub async fn delete_secret(
        &self,
        scope: &str,
        scope_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM secrets WHERE scope = ? AND scope_id = ? AND name = ?")
            .bind(scope)
            .bind(scope_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes every secret of a scope (a deleted workspace's own).
    pub async fn delete_secrets_of(&self, scope: &str, scope_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM secrets WHERE scope = ? AND scope_id = ?")
            .bind(scope)
            .bind(scope_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the secret names a workspace asked for.
    pub async fn set_workspace_secrets(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<(), StoreError> {
        let json = if names.is_empty() {
            None
        } else {
            Some(serde_json::to_string(names).expect("strings serialize"))
        };
        sqlx::query("UPDATE workspaces SET secrets_json = ? WHERE id = ?")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The secret names a workspace asked for (none for an unknown workspace).
    pub async fn workspace_secrets(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let j: Option<Option<String>> =
            sqlx::query_scalar("SELECT secrets_json FROM workspaces WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match j.flatten() {
            None => Ok(Vec::new()),
            Some(j) => serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                id: id.to_owned(),
                detail: format!("secrets_json: {e}"),
            }),
        }
    }

    /// Records a token minted as workspace `ws_id`'s credential (the token's record, with the
    /// workspace it belongs to), in one statement.
    pub async fn create_workspace_credential(
        &self,
        t: &TokenRecord,
        ws_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, secret_sha256, scopes_json, \
             workspaces_json, created_at, expires_at, last_used_at, revoked_at, \
             workspace_credential) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(&t.secret_sha256)
        .bind(&t.scopes_json)
        .bind(&t.workspaces_json)
        .bind(&t.created_at)
        .bind(&t.expires_at)
        .bind(&t.last_used_at)
        .bind(&t.revoked_at)
        .bind(ws_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The workspace a token is the credential of, if it is one.
    pub async fn token_workspace_credential(
        &self,
        token_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let r: Option<Option<String>> =
            sqlx::query_scalar("SELECT workspace_credential FROM api_tokens WHERE id = ?")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.flatten())
    }

    /// Revokes every credential of a workspace; returns the ids of all of them (revoked now or
    /// before), for caches to forget.
    pub async fn revoke_workspace_credentials(
        &self,
        ws_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) \
             WHERE workspace_credential = ?",
        )
        .bind(now())
        .bind(ws_id)
        .execute(&self.pool)
        .await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE workspace_credential = ?")
                .bind(ws_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids)
    }
}
