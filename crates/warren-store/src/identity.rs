//! Identity: organizations, users, memberships (roles), teams, API tokens and device codes.
//!
//! Token secrets never reach the database: callers pass the SHA-256 of the secret, and lookups
//! compare hashes.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, now, Store, StoreError};

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: String,
}

/// A user and their role in the (default) organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Id.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Display name.
    pub display_name: Option<String>,
    /// A suspended user's tokens stop working.
    pub suspended: bool,
    /// Organization id of the membership below.
    pub org_id: String,
    /// Role in that organization (`owner`, `admin`...).
    pub role: String,
    /// Creation time.
    pub created_at: String,
}

/// A team (group of users) in an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    /// Id.
    pub id: String,
    /// Organization.
    pub org_id: String,
    /// Name, unique in the organization.
    pub name: String,
    /// Member user ids.
    pub members: Vec<String>,
    /// Creation time.
    pub created_at: String,
}

/// An API token (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Id (also the public prefix of the token string).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Human label.
    pub name: String,
    /// SHA-256 (hex) of the secret part.
    pub secret_sha256: String,
    /// JSON array of scope names.
    pub scopes_json: String,
    /// JSON array of workspace ids, or None for no restriction.
    pub workspaces_json: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry time.
    pub expires_at: String,
    /// Last use (updated at most once a minute).
    pub last_used_at: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
}

/// A pending or approved device login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodeRecord {
    /// SHA-256 of the device code the CLI holds.
    pub device_sha256: String,
    /// The short code the user approves.
    pub user_code: String,
    /// Expiry.
    pub expires_at: String,
    /// The approving user.
    pub approved_by: Option<String>,
    /// Whether a token was already issued for it.
    pub consumed: bool,
    /// The approving token's expiry: the issued token expires no later.
    pub approved_expires_at: Option<String>,
}

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.suspended, u.created_at, \
    m.org_id, m.role";
const TOKEN_COLUMNS: &str = "id, user_id, name, secret_sha256, scopes_json, workspaces_json, \
    created_at, expires_at, last_used_at, revoked_at";

fn user_from_row(r: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        suspended: r.try_get::<i64, _>("suspended")? != 0,
        created_at: r.try_get("created_at")?,
        org_id: r.try_get("org_id")?,
        role: r.try_get("role")?,
    })
}

fn token_from_row(r: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        secret_sha256: r.try_get("secret_sha256")?,
        scopes_json: r.try_get("scopes_json")?,
        workspaces_json: r.try_get("workspaces_json")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn unique(e: sqlx::Error, what: &str, name: &str) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists {
            what: what.to_owned(),
            name: name.to_owned(),
        },
        e => e.into(),
    }
}

impl Store {
    /// The organization named `name`, created if missing.
    pub async fn ensure_org(&self, name: &str) -> Result<OrgRecord, StoreError> {
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(new_id())
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        let r = sqlx::query("SELECT id, name, created_at FROM organizations WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(OrgRecord {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
        })
    }

    /// Number of users.
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Creates a user with `role` in `org_id`.
    pub async fn create_user(
        &self,
        org_id: &str,
        username: &str,
        display_name: Option<&str>,
        role: &str,
    ) -> Result<UserRecord, StoreError> {
        let id = new_id();
        let now = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO users (id, username, display_name, suspended, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)")
            .bind(&id)
            .bind(username)
            .bind(display_name)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, "user", username))?;
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(org_id)
        .bind(&id)
        .bind(role)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UserRecord {
            id,
            username: username.to_owned(),
            display_name: display_name.map(str::to_owned),
            suspended: false,
            org_id: org_id.to_owned(),
            role: role.to_owned(),
            created_at: now,
        })
    }

    /// A user (with membership) by id.
    pub async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN memberships m ON m.user_id = u.id WHERE u.id = ? LIMIT 1"
        );
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(user_from_row).transpose()
    }

    /// A user (with membership) by username.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN memberships m ON m.user_id = u.id WHERE u.username = ? LIMIT 1"
        );
        let r = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(user_from_row).transpose()
    }

    /// Every user, by username.
    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN memberships m ON m.user_id = u.id ORDER BY u.username"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Changes a user's role and/or suspension. Returns the updated user.
    pub async fn update_user(
        &self,
        id: &str,
        role: Option<&str>,
        suspended: Option<bool>,
        display_name: Option<&str>,
    ) -> Result<UserRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(role) = role {
            sqlx::query("UPDATE memberships SET role = ? WHERE user_id = ?")
                .bind(role)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(s) = suspended {
            sqlx::query("UPDATE users SET suspended = ?, updated_at = ? WHERE id = ?")
                .bind(i64::from(s))
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(d) = display_name {
            sqlx::query("UPDATE users SET display_name = ?, updated_at = ? WHERE id = ?")
                .bind(d)
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.user(id).await?.ok_or_else(|| StoreError::Missing {
            what: "user".into(),
            name: id.into(),
        })
    }

    /// Number of users with `role`.
    pub async fn count_role(&self, role: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.role = ? AND u.suspended = 0")
                .bind(role)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    // ---- teams ----

    /// Creates a team.
    pub async fn create_team(&self, org_id: &str, name: &str) -> Result<TeamRecord, StoreError> {
        let id = new_id();
        let now = now();
        sqlx::query("INSERT INTO teams (id, org_id, name, created_at) VALUES (?, ?, ?, ?)")
            .bind(&id)
            .bind(org_id)
            .bind(name)
            .bind(&now)
            .execute(&self.pool)
            .await
            .map_err(|e| unique(e, "team", name))?;
        Ok(TeamRecord {
            id,
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            members: vec![],
            created_at: now,
        })
    }

    /// Every team of the organization with its members.
    pub async fn teams(&self, org_id: &str) -> Result<Vec<TeamRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, name, created_at FROM teams WHERE org_id = ? ORDER BY name",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let members = self.team_members(&id).await?;
            out.push(TeamRecord {
                id,
                org_id: r.try_get("org_id")?,
                name: r.try_get("name")?,
                members,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    /// A team by name.
    pub async fn team(&self, org_id: &str, name: &str) -> Result<Option<TeamRecord>, StoreError> {
        Ok(self
            .teams(org_id)
            .await?
            .into_iter()
            .find(|t| t.name == name))
    }

    async fn team_members(&self, team_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT user_id FROM team_members WHERE team_id = ? ORDER BY user_id")
                .bind(team_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get("user_id").map_err(StoreError::from))
            .collect()
    }

    /// Adds (`add = true`) or removes a member; idempotent.
    pub async fn set_team_member(
        &self,
        team_id: &str,
        user_id: &str,
        add: bool,
    ) -> Result<(), StoreError> {
        let sql = if add {
            "INSERT INTO team_members (team_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM team_members WHERE team_id = ? AND user_id = ?"
        };
        sqlx::query(sql)
            .bind(team_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a team.
    pub async fn delete_team(&self, team_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM teams WHERE id = ?")
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- tokens ----

    /// Records a token. `secret_sha256` is the hash of the secret, never the secret.
    pub async fn create_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(&sql)
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A token by id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(token_from_row).transpose()
    }

    /// A user's tokens, newest first.
    pub async fn tokens_of(&self, user_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = ? ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token (idempotent: the first revocation time is kept).
    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a use of the token.
    pub async fn touch_token(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- device codes ----

    /// Records a new device login.
    pub async fn create_device_code(
        &self,
        device_sha256: &str,
        user_code: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO device_codes (device_sha256, user_code, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(device_sha256)
            .bind(user_code)
            .bind(now())
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(|e| unique(e, "device code", user_code))?;
        Ok(())
    }

    /// A device login by the hash of its device code.
    pub async fn device_code(
        &self,
        device_sha256: &str,
    ) -> Result<Option<DeviceCodeRecord>, StoreError> {
        let r = sqlx::query("SELECT device_sha256, user_code, expires_at, approved_by, consumed, approved_expires_at FROM device_codes WHERE device_sha256 = ?")
            .bind(device_sha256)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| {
            Ok(DeviceCodeRecord {
                device_sha256: r.try_get("device_sha256")?,
                user_code: r.try_get("user_code")?,
                expires_at: r.try_get("expires_at")?,
                approved_by: r.try_get("approved_by")?,
                consumed: r.try_get::<i64, _>("consumed")? != 0,
                approved_expires_at: r.try_get("approved_expires_at")?,
            })
        })
        .transpose()
    }

    /// Approves a pending, unexpired device login by its user code. Returns false if there is
    /// none.
    pub async fn approve_device_code(
        &self,
        user_code: &str,
        user_id: &str,
        token_expires_at: &str,
    ) -> Result<bool, StoreError> {
        // Expired codes are of no use to anyone: drop them on the way.
        sqlx::query("DELETE FROM device_codes WHERE expires_at <= ?")
            .bind(now())
            .execute(&self.pool)
            .await?;
        let n = sqlx::query("UPDATE device_codes SET approved_by = ?, approved_expires_at = ? WHERE user_code = ? AND approved_by IS NULL AND consumed = 0 AND expires_at > ?")
            .bind(user_id)
            .bind(token_expires_at)
            .bind(user_code)
            .bind(now())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Marks an approved device login consumed; true only for the one caller that wins.
    pub async fn consume_device_code(
        &self,
        device_sha256: &str,
        token_id: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE device_codes SET consumed = 1, token_id = ? WHERE device_sha256 = ? AND consumed = 0 AND approved_by IS NOT NULL")
            .bind(token_id)
            .bind(device_sha256)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_roles_teams_tokens() {
        let s = Store::open_in_memory().await.unwrap();
        let org = s.ensure_org("default").await.unwrap();
        assert_eq!(s.ensure_org("default").await.unwrap(), org);
        let alice = s
            .create_user(&org.id, "alice", Some("Alice"), "owner")
            .await
            .unwrap();
        assert!(matches!(
            s.create_user(&org.id, "alice", None, "member").await,
            Err(StoreError::Exists { .. })
        ));
        let bob = s.create_user(&org.id, "bob", None, "member").await.unwrap();
        assert_eq!(s.user_count().await.unwrap(), 2);
        assert_eq!(s.user_by_name("bob").await.unwrap().unwrap(), bob);
        let bob2 = s
            .update_user(&bob.id, Some("auditor"), Some(true), None)
            .await
            .unwrap();
        assert_eq!((bob2.role.as_str(), bob2.suspended), ("auditor", true));
        assert_eq!(s.count_role("owner").await.unwrap(), 1);

        let team = s.create_team(&org.id, "infra").await.unwrap();
        s.set_team_member(&team.id, &alice.id, true).await.unwrap();
        s.set_team_member(&team.id, &alice.id, true).await.unwrap();
        assert_eq!(
            s.team(&org.id, "infra").await.unwrap().unwrap().members,
            vec![alice.id.clone()]
        );
        s.set_team_member(&team.id, &alice.id, false).await.unwrap();
        assert!(s.teams(&org.id).await.unwrap()[0].members.is_empty());

        let t = TokenRecord {
            id: "t1".into(),
            user_id: alice.id.clone(),
            name: "cli".into(),
            secret_sha256: "ab".into(),
            scopes_json: "[]".into(),
            workspaces_json: None,
            created_at: now(),
            expires_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        s.create_token(&t).await.unwrap();
        assert_eq!(s.token("t1").await.unwrap().unwrap(), t);
        s.revoke_token("t1").await.unwrap();
        let first = s.token("t1").await.unwrap().unwrap().revoked_at;
        assert!(first.is_some());
        s.revoke_token("t1").await.unwrap();
        assert_eq!(s.token("t1").await.unwrap().unwrap().revoked_at, first);
        assert_eq!(s.tokens_of(&alice.id).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn device_codes_are_approved_once_and_consumed_once() {
        let s = Store::open_in_memory().await.unwrap();
        let org = s.ensure_org("default").await.unwrap();
        let u = s.create_user(&org.id, "u", None, "member").await.unwrap();
        s.create_device_code("h1", "ABCD-EFGH", "9999-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert!(!s.consume_device_code("h1", "t").await.unwrap());
        assert!(s
            .approve_device_code("ABCD-EFGH", &u.id, "9999-01-01T00:00:00.000Z")
            .await
            .unwrap());
        assert!(!s
            .approve_device_code("ABCD-EFGH", &u.id, "9999-01-01T00:00:00.000Z")
            .await
            .unwrap());
        assert!(s.consume_device_code("h1", "t").await.unwrap());
        assert!(!s.consume_device_code("h1", "t").await.unwrap());
        s.create_device_code("h2", "OLD", "2000-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert!(!s
            .approve_device_code("OLD", &u.id, "9999-01-01T00:00:00.000Z")
            .await
            .unwrap());
    }
}
