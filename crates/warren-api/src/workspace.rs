//! The workspace record as reported by the store, `warren list --json` and the API.

use serde::{Deserialize, Serialize};

use crate::{WorkspaceName, WorkspaceState};

/// A workspace as shown to users. Timestamps are RFC 3339 UTC strings with millisecond
/// precision (`2024-05-01T12:00:00.000Z`), so they sort chronologically as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    /// Opaque unique id.
    pub id: String,
    /// Unique, validated name.
    #[schema(value_type = String)]
    pub name: WorkspaceName,
    /// Current lifecycle state.
    pub state: WorkspaceState,
    /// The container image the workspace runs.
    pub image: String,
    /// The project folder on the host.
    pub project_dir: String,
    /// When the workspace was created.
    pub created_at: String,
    /// When the workspace record last changed.
    pub updated_at: String,
    /// Optimistic-concurrency counter, bumped by every change.
    pub generation: i64,
    /// The last error recorded by the engine, if any.
    pub last_error: Option<String>,
    /// The owning user's id; empty for a host-local workspace made by the embedded CLI.
    #[serde(default)]
    pub owner_id: String,
    /// The template it was built from, if any.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The template version it was built from, if any.
    #[serde(default)]
    pub template_version_id: Option<String>,
    /// When it is due to stop (RFC 3339), if a deadline is set.
    #[serde(default)]
    pub deadline_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let ws = Workspace {
            id: "abc".into(),
            name: WorkspaceName::new("demo").unwrap(),
            state: WorkspaceState::Running,
            image: "debian:12".into(),
            project_dir: "/src/demo".into(),
            created_at: "2024-05-01T12:00:00.000Z".into(),
            updated_at: "2024-05-01T12:00:01.000Z".into(),
            generation: 3,
            last_error: None,
            owner_id: String::new(),
            template_id: None,
            template_version_id: None,
            deadline_at: None,
        };
        let json = serde_json::to_value(&ws).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "abc", "name": "demo", "state": "running", "image": "debian:12",
                "project_dir": "/src/demo", "created_at": "2024-05-01T12:00:00.000Z",
                "updated_at": "2024-05-01T12:00:01.000Z", "generation": 3, "last_error": null,
                "owner_id": "", "template_id": null, "template_version_id": null, "deadline_at": null
            })
        );
        assert_eq!(serde_json::from_value::<Workspace>(json).unwrap(), ws);
    }
}
