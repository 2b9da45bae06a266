//! Templates, their immutable versions, and uploaded files.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{new_id, now, Store, StoreError};

/// A template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// Id.
    pub id: String,
    /// Organization.
    pub org_id: String,
    /// Name, unique in the organization.
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// The version new workspaces get.
    pub active_version_id: Option<String>,
    /// When archived (archived templates take no new workspaces).
    pub archived_at: Option<String>,
    /// Creator's user id.
    pub created_by: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// An immutable template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// Id.
    pub id: String,
    /// Template, or None for an ad-hoc version.
    pub template_id: Option<String>,
    /// 1, 2, 3... per template (1 for ad-hoc versions).
    pub number: i64,
    /// Push message.
    pub message: Option<String>,
    /// The devcontainer.json text.
    pub devcontainer_json: String,
    /// The uploaded folder archive, if any.
    pub file_id: Option<String>,
    /// JSON array of parameter specs.
    pub parameters_json: String,
    /// JSON resource ceilings.
    pub ceilings_json: String,
    /// JSON policy defaults.
    pub policy_json: String,
    /// JSON hourly cost rates (`{}`: free).
    pub cost_json: String,
    /// Creator.
    pub created_by: String,
    /// Creation time.
    pub created_at: String,
}

/// What a new version holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewVersion {
    /// Push message.
    pub message: Option<String>,
    /// The devcontainer.json text.
    pub devcontainer_json: String,
    /// Uploaded folder archive.
    pub file_id: Option<String>,
    /// JSON array of parameter specs.
    pub parameters_json: String,
    /// JSON ceilings.
    pub ceilings_json: String,
    /// JSON policy defaults.
    pub policy_json: String,
    /// JSON hourly cost rates (empty: free).
    pub cost_json: String,
    /// Creator.
    pub created_by: String,
}

impl NewVersion {
    /// The record of this version as number `number` of `template_id`, with a new id.
    fn into_record(self, template_id: Option<&str>, number: i64) -> VersionRecord {
        VersionRecord {
            id: new_id(),
            template_id: template_id.map(str::to_owned),
            number,
            message: self.message,
            devcontainer_json: self.devcontainer_json,
            file_id: self.file_id,
            parameters_json: self.parameters_json,
            ceilings_json: self.ceilings_json,
            policy_json: self.policy_json,
            cost_json: if self.cost_json.is_empty() {
                "{}".to_owned()
            } else {
                self.cost_json
            },
            created_by: self.created_by,
            created_at: now(),
        }
    }
}

const TEMPLATE_COLUMNS: &str = "id, org_id, name, display_name, description, active_version_id, \
    archived_at, created_by, created_at, updated_at";
const VERSION_COLUMNS: &str = "id, template_id, number, message, devcontainer_json, file_id, \
    parameters_json, ceilings_json, policy_json, cost_json, created_by, created_at";

fn template_from_row(r: &SqliteRow) -> Result<TemplateRecord, StoreError> {
    Ok(TemplateRecord {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        active_version_id: r.try_get("active_version_id")?,
        archived_at: r.try_get("archived_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_from_row(r: &SqliteRow) -> Result<VersionRecord, StoreError> {
    Ok(VersionRecord {
        id: r.try_get("id")?,
        template_id: r.try_get("template_id")?,
        number: r.try_get("number")?,
        message: r.try_get("message")?,
        devcontainer_json: r.try_get("devcontainer_json")?,
        file_id: r.try_get("file_id")?,
        parameters_json: r.try_get("parameters_json")?,
        ceilings_json: r.try_get("ceilings_json")?,
        policy_json: r.try_get("policy_json")?,
        cost_json: r.try_get("cost_json")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Records an uploaded file (idempotent: the id is the content hash).
    pub async fn put_file(&self, id: &str, size: i64, created_by: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO files (id, size, created_by, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(size)
            .bind(created_by)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a file is recorded.
    pub async fn has_file(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM files WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Forgets what no one needs any more: ad-hoc versions whose workspace is gone, then uploaded
    /// files created before `older_than` (RFC 3339) that no version references. Returns the ids
    /// of the files forgotten, whose content the caller removes.
    pub async fn collect_garbage(&self, older_than: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM template_versions WHERE template_id IS NULL AND id NOT IN \
             (SELECT template_version_id FROM workspaces WHERE template_version_id IS NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT id FROM files WHERE created_at < ? AND id NOT IN \
             (SELECT file_id FROM template_versions WHERE file_id IS NOT NULL)",
        )
        .bind(older_than)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for id in &ids {
            sqlx::query("DELETE FROM files WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Creates a template, or updates its display name and description when it exists (and is not
    /// archived). Returns it.
    pub async fn upsert_template(
        &self,
        org_id: &str,
        name: &str,
        display_name: Option<&str>,
        description: Option<&str>,
        created_by: &str,
    ) -> Result<TemplateRecord, StoreError> {
        let now = now();
        sqlx::query(
            "INSERT INTO templates (id, org_id, name, display_name, description, created_by, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (org_id, name) DO UPDATE SET \
               display_name = COALESCE(excluded.display_name, templates.display_name), \
               description = COALESCE(excluded.description, templates.description), \
               updated_at = excluded.updated_at",
        )
        .bind(new_id())
        .bind(org_id)
        .bind(name)
        .bind(display_name)
        .bind(description)
        .bind(created_by)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        self.template(org_id, name)
            .await?
            .ok_or_else(|| StoreError::Missing {
                what: "template".into(),
                name: name.into(),
            })
    }

    /// A template by name.
    pub async fn template(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE org_id = ? AND name = ?");
        let r = sqlx::query(&sql)
            .bind(org_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(template_from_row).transpose()
    }

    /// A template by id.
    pub async fn template_by_id(&self, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(template_from_row).transpose()
    }

    /// The organization's templates by name; archived ones only when asked.
    pub async fn templates(
        &self,
        org_id: &str,
        include_archived: bool,
    ) -> Result<Vec<TemplateRecord>, StoreError> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE org_id = ? AND (? OR archived_at IS NULL) ORDER BY name"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(include_archived)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// Adds a version (numbered next) to a template; when `activate`, makes it the active one.
    pub async fn add_version(
        &self,
        template_id: &str,
        v: NewVersion,
        activate: bool,
    ) -> Result<VersionRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let number: i64 = sqlx::query(
            "SELECT COALESCE(MAX(number), 0) + 1 AS n FROM template_versions WHERE template_id = ?",
        )
        .bind(template_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let rec = v.into_record(Some(template_id), number);
        insert_version(&mut tx, &rec).await?;
        if activate {
            sqlx::query("UPDATE templates SET active_version_id = ?, updated_at = ? WHERE id = ?")
                .bind(&rec.id)
                .bind(now())
                .bind(template_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rec)
    }

    /// Records an ad-hoc version (no template), for one workspace made from a project folder.
    pub async fn add_adhoc_version(&self, v: NewVersion) -> Result<VersionRecord, StoreError> {
        let rec = v.into_record(None, 1);
        let mut tx = self.pool.begin().await?;
        insert_version(&mut tx, &rec).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// A version by id.
    pub async fn version(&self, id: &str) -> Result<Option<VersionRecord>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM template_versions WHERE id = ?");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(version_from_row).transpose()
    }

    /// A template's version by number.
    pub async fn version_by_number(
        &self,
        template_id: &str,
        number: i64,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM template_versions WHERE template_id = ? AND number = ?"
        );
        let r = sqlx::query(&sql)
            .bind(template_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(version_from_row).transpose()
    }

    /// A template's versions, newest first.
    pub async fn versions(&self, template_id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM template_versions WHERE template_id = ? ORDER BY number DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Makes a version the active one.
    pub async fn activate_version(
        &self,
        template_id: &str,
        version_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE templates SET active_version_id = ?, updated_at = ? WHERE id = ?")
            .bind(version_id)
            .bind(now())
            .bind(template_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Archives (or, with `false`, unarchives) a template.
    pub async fn archive_template(
        &self,
        template_id: &str,
        archive: bool,
    ) -> Result<(), StoreError> {
        let at = archive.then(now);
        sqlx::query("UPDATE templates SET archived_at = ?, updated_at = ? WHERE id = ?")
            .bind(at)
            .bind(now())
            .bind(template_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rec: &VersionRecord,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO template_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    sqlx::query(&sql)
        .bind(&rec.id)
        .bind(&rec.template_id)
        .bind(rec.number)
        .bind(&rec.message)
        .bind(&rec.devcontainer_json)
        .bind(&rec.file_id)
        .bind(&rec.parameters_json)
        .bind(&rec.ceilings_json)
        .bind(&rec.policy_json)
        .bind(&rec.cost_json)
        .bind(&rec.created_by)
        .bind(&rec.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_number_up_and_one_is_active() {
        let s = Store::open_in_memory().await.unwrap();
        let org = s.ensure_org("default").await.unwrap();
        let t = s
            .upsert_template(&org.id, "rust", Some("Rust"), None, "u1")
            .await
            .unwrap();
        let v = |m: &str| NewVersion {
            message: Some(m.into()),
            devcontainer_json: "{}".into(),
            parameters_json: "[]".into(),
            ceilings_json: "{}".into(),
            policy_json: "{}".into(),
            created_by: "u1".into(),
            ..Default::default()
        };
        let v1 = s.add_version(&t.id, v("one"), true).await.unwrap();
        let v2 = s.add_version(&t.id, v("two"), false).await.unwrap();
        assert_eq!((v1.number, v2.number), (1, 2));
        let t2 = s.template(&org.id, "rust").await.unwrap().unwrap();
        assert_eq!(t2.active_version_id.as_deref(), Some(v1.id.as_str()));
        s.activate_version(&t.id, &v2.id).await.unwrap();
        assert_eq!(
            s.template_by_id(&t.id)
                .await
                .unwrap()
                .unwrap()
                .active_version_id,
            Some(v2.id.clone())
        );
        assert_eq!(s.versions(&t.id).await.unwrap().len(), 2);
        assert_eq!(s.version_by_number(&t.id, 2).await.unwrap().unwrap(), v2);
        // Upsert keeps the id and the fields not given.
        let t3 = s
            .upsert_template(&org.id, "rust", None, Some("desc"), "u2")
            .await
            .unwrap();
        assert_eq!(t3.id, t.id);
        assert_eq!(t3.display_name.as_deref(), Some("Rust"));
        s.archive_template(&t.id, true).await.unwrap();
        assert!(s.templates(&org.id, false).await.unwrap().is_empty());
        assert_eq!(s.templates(&org.id, true).await.unwrap().len(), 1);
        let adhoc = s.add_adhoc_version(v("adhoc")).await.unwrap();
        assert_eq!(adhoc.template_id, None);
        assert_eq!(s.version(&adhoc.id).await.unwrap().unwrap(), adhoc);
    }

    #[tokio::test]
    async fn garbage_is_what_nothing_references() {
        let s = Store::open_in_memory().await.unwrap();
        let org = s.ensure_org("default").await.unwrap();
        let t = s
            .upsert_template(&org.id, "t", None, None, "u")
            .await
            .unwrap();
        for f in ["kept", "adhoc", "loose", "young"] {
            s.put_file(f, 1, "u").await.unwrap();
        }
        let v = |file: &str| NewVersion {
            devcontainer_json: "{}".into(),
            file_id: Some(file.into()),
            parameters_json: "[]".into(),
            ceilings_json: "{}".into(),
            policy_json: "{}".into(),
            created_by: "u".into(),
            ..Default::default()
        };
        s.add_version(&t.id, v("kept"), true).await.unwrap();
        let adhoc = s.add_adhoc_version(v("adhoc")).await.unwrap();
        // Nothing older than the distant past: nothing goes but the unreferenced ad-hoc version.
        assert!(s
            .collect_garbage("2000-01-01T00:00:00.000Z")
            .await
            .unwrap()
            .is_empty());
        assert!(
            s.version(&adhoc.id).await.unwrap().is_none(),
            "its workspace is gone"
        );
        let mut gone = s.collect_garbage("9999-01-01T00:00:00.000Z").await.unwrap();
        gone.sort();
        assert_eq!(gone, ["adhoc", "loose", "young"]);
        assert!(s.has_file("kept").await.unwrap());
    }
}
