//! Network policies of workspaces (migration 16): each workspace's own policy as written and the plan
//! in force the control plane computed, and the `kv` table of small values kept between runs.

use sqlx::Row;

use crate::{Store, StoreError};

/// A workspace's network columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkColumns {
    /// Its own policy as written (`warren_api::net::NetworkPolicy` JSON), if any.
    pub own: Option<String>,
    /// The plan in force (`warren_runtime::network::EgressPlan` JSON), if computed.
    pub plan: Option<String>,
}

impl Store {
    /// A workspace's own network policy and plan in force (`None`: no such workspace).
    pub async fn network_columns(&self, id: &str) -> Result<Option<NetworkColumns>, StoreError> {
        let row = sqlx::query("SELECT network_json, egress_json FROM workspaces WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(NetworkColumns {
                own: r.try_get("network_json")?,
                plan: r.try_get("egress_json")?,
            })
        })
        .transpose()
    }

    /// Sets a workspace's own network policy (none: its template's alone) and the plan in force.
    pub async fn set_network_columns(
        &self,
        id: &str,
        cols: &NetworkColumns,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workspaces SET network_json = ?, egress_json = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&cols.own)
        .bind(&cols.plan)
        .bind(self.now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ids of the workspaces of `owner_id` whose own policy names another workspace
    /// (`workspace:NAME` rules), whose plans change when that workspace goes or comes.
    pub async fn workspaces_naming_siblings(
        &self,
        owner_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM workspaces WHERE owner_id = ? AND network_json LIKE '%workspace:%' \
             ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    /// A value of the `kv` table.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM kv WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("value").map_err(StoreError::from))
            .transpose()
    }

    /// Sets a value of the `kv` table.
    pub async fn kv_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO kv (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_columns_and_kv_round_trip() {
        let store = Store::open_in_memory().await.unwrap();
        let rec = store
            .create_workspace(crate::NewWorkspace {
                name: warren_api::WorkspaceName::new("a").unwrap(),
                project_dir: "/p".into(),
                config_path: "/p/.devcontainer/devcontainer.json".into(),
                image: "img".into(),
                spec_json: "{}".into(),
                ownership: crate::Ownership {
                    owner_id: "u1".into(),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        assert_eq!(
            store.network_columns(&rec.id).await.unwrap(),
            Some(NetworkColumns::default())
        );
        assert_eq!(store.network_columns("nope").await.unwrap(), None);
        let cols = NetworkColumns {
            own: Some(r#"{"allow":["workspace:b"]}"#.into()),
            plan: Some("{}".into()),
        };
        store.set_network_columns(&rec.id, &cols).await.unwrap();
        assert_eq!(store.network_columns(&rec.id).await.unwrap(), Some(cols));
        assert_eq!(
            store.workspaces_naming_siblings("u1").await.unwrap(),
            vec![rec.id.clone()]
        );
        assert!(store
            .workspaces_naming_siblings("u2")
            .await
            .unwrap()
            .is_empty());

        assert_eq!(store.kv_get("k").await.unwrap(), None);
        store.kv_set("k", "1").await.unwrap();
        store.kv_set("k", "2").await.unwrap();
        assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("2"));
    }
}
