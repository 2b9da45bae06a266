//! Users' SSH public keys. The store keeps what the API validated (`warren_api::ssh_key`): the
//! canonical key text and its fingerprint, unique across the server, so the SSH gateway finds a
//! key's one user by its fingerprint.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, now, Store, StoreError};

/// A registered SSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    /// Id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`...
    pub key_type: String,
    /// Canonical OpenSSH text, `type base64` without a comment.
    pub public_key: String,
    /// `SHA256:...`, unique across the server.
    pub fingerprint: String,
    /// Creation time.
    pub created_at: String,
    /// Last authentication with it.
    pub last_used_at: Option<String>,
    /// When its user proved holding the private key; only verified keys authenticate.
    pub verified_at: Option<String>,
}

/// A key about to be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSshKey<'a> {
    /// Owner.
    pub user_id: &'a str,
    /// Label.
    pub name: &'a str,
    /// Key type.
    pub key_type: &'a str,
    /// Canonical OpenSSH text.
    pub public_key: &'a str,
    /// Fingerprint.
    pub fingerprint: &'a str,
}

const COLUMNS: &str =
    "id, user_id, name, key_type, public_key, fingerprint, created_at, last_used_at, verified_at";

fn from_row(r: &SqliteRow) -> Result<SshKeyRecord, StoreError> {
    Ok(SshKeyRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        key_type: r.try_get("key_type")?,
        public_key: r.try_get("public_key")?,
        fingerprint: r.try_get("fingerprint")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        verified_at: r.try_get("verified_at")?,
    })
}

impl Store {
    /// Registers a key. A fingerprint already registered (by anyone) is `StoreError::Exists`.
    pub async fn add_ssh_key(&self, k: NewSshKey<'_>) -> Result<SshKeyRecord, StoreError> {
        let rec = SshKeyRecord {
            id: new_id(),
            user_id: k.user_id.to_owned(),
            name: k.name.to_owned(),
            key_type: k.key_type.to_owned(),
            public_key: k.public_key.to_owned(),
            fingerprint: k.fingerprint.to_owned(),
            created_at: now(),
            last_used_at: None,
            verified_at: None,
        };
        // Taken once someone has proven it; unverified copies do not block anyone.
        let verified =
            sqlx::query("SELECT 1 FROM ssh_keys WHERE fingerprint = ? AND verified_at IS NOT NULL")
                .bind(k.fingerprint)
                .fetch_optional(&self.pool)
                .await?;
        if verified.is_some() {
            return Err(StoreError::Exists {
                what: "SSH key".into(),
                name: k.fingerprint.to_owned(),
            });
        }
        let sql = format!("INSERT INTO ssh_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        sqlx::query(&sql)
            .bind(&rec.id)
            .bind(&rec.user_id)
            .bind(&rec.name)
            .bind(&rec.key_type)
            .bind(&rec.public_key)
            .bind(&rec.fingerprint)
            .bind(&rec.created_at)
            .bind(&rec.last_used_at)
            .bind(&rec.verified_at)
            .execute(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists {
                    what: "SSH key".into(),
                    name: k.fingerprint.to_owned(),
                },
                e => e.into(),
            })?;
        Ok(rec)
    }

    /// A user's keys, oldest first.
    pub async fn ssh_keys_of(&self, user_id: &str) -> Result<Vec<SshKeyRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM ssh_keys WHERE user_id = ? ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// A key by id.
    pub async fn ssh_key(&self, id: &str) -> Result<Option<SshKeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM ssh_keys WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// The verified key with this fingerprint (`SHA256:...`), whoever owns it: the SSH gateway's
    /// lookup. Unverified keys authenticate nobody.
    pub async fn ssh_key_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<SshKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE fingerprint = ? AND verified_at IS NOT NULL"
        );
        let r = sqlx::query(&sql)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// `user_id`'s key with this fingerprint, verified or not.
    pub async fn ssh_key_of_user(
        &self,
        user_id: &str,
        fingerprint: &str,
    ) -> Result<Option<SshKeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM ssh_keys WHERE user_id = ? AND fingerprint = ?");
        let r = sqlx::query(&sql)
            .bind(user_id)
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(from_row).transpose()
    }

    /// Marks `user_id`'s key `id` verified (its user proved holding the private key) and removes
    /// other users' unverified copies of it. `Exists` if someone else verified it first.
    pub async fn verify_ssh_key(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<SshKeyRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE ssh_keys SET verified_at = ? WHERE id = ? AND user_id = ? AND verified_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists {
                what: "SSH key".into(),
                name: id.to_owned(),
            },
            e => e.into(),
        })?;
        let sql = format!("SELECT {COLUMNS} FROM ssh_keys WHERE id = ? AND user_id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: id.to_owned() })?;
        let rec = from_row(&row)?;
        sqlx::query(
            "DELETE FROM ssh_keys WHERE fingerprint = ? AND user_id != ? AND verified_at IS NULL",
        )
        .bind(&rec.fingerprint)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Deletes `user_id`'s key `id`. False when that user has no such key (someone else's key
    /// is never deleted through another user's id).
    pub async fn delete_ssh_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM ssh_keys WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Records an authentication with the key.
    pub async fn touch_ssh_key(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE ssh_keys SET last_used_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(user_id: &'a str, name: &'a str, fp: &'a str) -> NewSshKey<'a> {
        NewSshKey {
            user_id,
            name,
            key_type: "ssh-ed25519",
            public_key: "ssh-ed25519 AAAA",
            fingerprint: fp,
        }
    }

    #[tokio::test]
    async fn keys_are_added_listed_found_touched_and_deleted() {
        let s = Store::open_in_memory().await.unwrap();
        let org = s.ensure_org("default").await.unwrap();
        let alice = s
            .create_user(&org.id, "alice", None, "member")
            .await
            .unwrap();
        let bob = s.create_user(&org.id, "bob", None, "member").await.unwrap();

        let a1 = s
            .add_ssh_key(key(&alice.id, "laptop", "SHA256:a1"))
            .await
            .unwrap();
        let a2 = s
            .add_ssh_key(key(&alice.id, "desktop", "SHA256:a2"))
            .await
            .unwrap();
        let b1 = s
            .add_ssh_key(key(&bob.id, "laptop", "SHA256:b1"))
            .await
            .unwrap();
        // Oldest first; keys made in the same millisecond in id order.
        let mut want = vec![a1.clone(), a2.clone()];
        want.sort_by(|x, y| (&x.created_at, &x.id).cmp(&(&y.created_at, &y.id)));
        assert_eq!(s.ssh_keys_of(&alice.id).await.unwrap(), want);
        assert_eq!(s.ssh_keys_of(&bob.id).await.unwrap(), vec![b1.clone()]);
        assert_eq!(s.ssh_key(&a2.id).await.unwrap(), Some(a2.clone()));
        assert_eq!(s.ssh_key("nope").await.unwrap(), None);

        // Unproven, a key blocks nobody but its own user's second copy; the gateway does not see it.
        let e = s
            .add_ssh_key(key(&alice.id, "again", "SHA256:a1"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Exists { .. }), "{e}");
        let copy = s
            .add_ssh_key(key(&bob.id, "copy", "SHA256:a1"))
            .await
            .unwrap();
        assert_eq!(s.ssh_key_by_fingerprint("SHA256:a1").await.unwrap(), None);
        // Proven: the key is alice's alone; bob's unproven copy goes, and a new one is refused.
        let a1 = s.verify_ssh_key(&alice.id, &a1.id).await.unwrap();
        assert!(a1.verified_at.is_some());
        assert_eq!(s.ssh_key(&copy.id).await.unwrap(), None);
        let e = s
            .add_ssh_key(key(&bob.id, "again", "SHA256:a1"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Exists { .. }), "{e}");
        assert_eq!(s.ssh_keys_of(&bob.id).await.unwrap().len(), 1);
        // Verifying through another user's id finds nothing.
        assert!(s.verify_ssh_key(&bob.id, &a2.id).await.is_err());

        // The gateway's lookup: proven keys only.
        assert_eq!(s.ssh_key_by_fingerprint("SHA256:b1").await.unwrap(), None);
        let b1 = s.verify_ssh_key(&bob.id, &b1.id).await.unwrap();
        assert_eq!(
            s.ssh_key_by_fingerprint("SHA256:b1").await.unwrap(),
            Some(b1.clone())
        );
        assert_eq!(s.ssh_key_by_fingerprint("SHA256:zz").await.unwrap(), None);
        s.touch_ssh_key(&b1.id, "2026-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert_eq!(
            s.ssh_key(&b1.id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
                .as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );

        // Deleting through another user's id does nothing.
        assert!(!s.delete_ssh_key(&bob.id, &a1.id).await.unwrap());
        assert!(s.ssh_key(&a1.id).await.unwrap().is_some());
        assert!(s.delete_ssh_key(&alice.id, &a1.id).await.unwrap());
        assert!(!s.delete_ssh_key(&alice.id, &a1.id).await.unwrap());
        assert_eq!(s.ssh_keys_of(&alice.id).await.unwrap(), vec![a2]);
        // A deleted key's fingerprint is free again.
        let moved = s
            .add_ssh_key(key(&bob.id, "moved", "SHA256:a1"))
            .await
            .unwrap();
        s.verify_ssh_key(&bob.id, &moved.id).await.unwrap();
        assert_eq!(
            s.ssh_key_by_fingerprint("SHA256:a1")
                .await
                .unwrap()
                .unwrap()
                .user_id,
            bob.id
        );
    }

    #[tokio::test]
    async fn a_key_needs_an_existing_user() {
        let s = Store::open_in_memory().await.unwrap();
        assert!(s.add_ssh_key(key("ghost", "k", "SHA256:g")).await.is_err());
    }
}
