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
    /// Who owns it and what it was built from.
    pub ownership: Ownership,
}

/// Who owns a workspace and what it was built from. The default is a host-local workspace of
/// the embedded CLI: no owner (the empty string), no organization, no template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The owning user's id; empty for a host-local workspace.
    pub owner_id: String,
    /// The organization's id; empty for a host-local workspace.
    pub org_id: String,
    /// The template, if built from one.
    pub template_id: Option<String>,
    /// The template version (also set for ad-hoc versions made by `warren up` against a server).
    pub template_version_id: Option<String>,
    /// JSON object of parameter values.
    pub parameters_json: String,
    /// Time to live in seconds (delete after), enforced by the policies issue.
    pub ttl_secs: Option<i64>,
    /// When the workspace is due to stop (RFC 3339), extendable.
    pub deadline_at: Option<String>,
    /// JSON resource limits it was created with (`{}` or empty: none).
    pub limits_json: String,
    /// The team the workspace is charged to (quotas, budgets, cost reports), if any.
    pub team_id: Option<String>,
    /// JSON: the workspace's own lifecycle policy values, within its template's ceilings.
    pub policy_json: Option<String>,
    /// JSON: the hourly cost rates it was made with (`warren_api::template::CostRates`).
    pub cost_json: Option<String>,
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
    /// Who owns it and what it was built from.
    pub ownership: Ownership,
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
    /// When its current or last run started (entered `running`).
    pub started_at: Option<String>,
    /// When it last stopped (entered `stopped` or `failed`).
    pub stopped_at: Option<String>,
    /// Why it last stopped (`warren_api::policy::Reason`), if it did.
    pub stop_reason: Option<String>,
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
            owner_id: r.ownership.owner_id,
            template_id: r.ownership.template_id,
            template_version_id: r.ownership.template_version_id,
            deadline_at: r.ownership.deadline_at,
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

/// Filters and cursor of [`Store::list_filtered`](crate::Store::list_filtered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceFilter {
    /// Only this owner's workspaces.
    pub owner_id: Option<String>,
    /// Only workspaces in this state.
    pub state: Option<WorkspaceState>,
    /// Only workspaces built from this template.
    pub template_id: Option<String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Only these ids (a workspace-restricted token's view).
    pub ids: Option<Vec<String>>,
    /// Leave out host-local workspaces (the embedded CLI's, which have no owner).
    pub exclude_local: bool,
    /// Cursor: only workspaces after this (name, id).
    pub after: Option<(String, String)>,
    /// Page size.
    pub limit: u32,
}
