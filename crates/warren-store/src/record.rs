//! Typed rows of the store: workspaces, new workspaces and history events.

use warren_api::{Event, Workspace, WorkspaceName, WorkspaceState};

/// What the engine supplies to record a new workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkspace {
    /// Unique name.
    pub name: WorkspaceName,
    /// The project folder on the host.
    pub project_dir: String,
    /// The devcontainer.json the workspace was created from.
    pub config_path: String,
    /// The container image.
    pub image: String,
    /// Opaque JSON: the resolved configuration.
    pub spec_json: String,
}

/// A stored workspace. Timestamps use the store's RFC 3339 UTC millisecond format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// Opaque unique id (32 lowercase hex digits).
    pub id: String,
    /// Unique name.
    pub name: WorkspaceName,
    /// The project folder on the host.
    pub project_dir: String,
    /// The devcontainer.json the workspace was created from.
    pub config_path: String,
    /// The container image.
    pub image: String,
    /// Opaque JSON: the resolved configuration.
    pub spec_json: String,
    /// Current lifecycle state.
    pub state: WorkspaceState,
    /// Optimistic-concurrency counter; every change bumps it.
    pub generation: i64,
    /// The last error the engine recorded.
    pub last_error: Option<String>,
    /// Opaque JSON: which once-only lifecycle steps have run (`{}` initially).
    pub lifecycle_json: String,
    /// Opaque JSON: supervisor pid, paths and other runtime details (`{}` initially).
    pub runtime_json: String,
    /// When the workspace was created.
    pub created_at: String,
    /// When the record last changed.
    pub updated_at: String,
}

impl From<WorkspaceRecord> for Workspace {
    fn from(r: WorkspaceRecord) -> Self {
        Workspace {
            id: r.id,
            name: r.name,
            state: r.state,
            image: r.image,
            project_dir: r.project_dir,
            created_at: r.created_at,
            updated_at: r.updated_at,
            generation: r.generation,
            last_error: r.last_error,
        }
    }
}

impl WorkspaceRecord {
    /// The user-facing view of this record.
    pub fn to_api(&self) -> Workspace {
        self.clone().into()
    }
}

/// One entry of a workspace's append-only history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Increasing sequence number, global to the database.
    pub id: i64,
    /// The workspace the event belongs to.
    pub workspace_id: String,
    /// When the event was recorded.
    pub at: String,
    /// The state before the event.
    pub from_state: WorkspaceState,
    /// The state after the event.
    pub to_state: WorkspaceState,
    /// What happened.
    pub event: Event,
    /// Optional free-form detail supplied by the caller.
    pub message: Option<String>,
}
