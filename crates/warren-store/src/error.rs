//! Errors returned by the store.

use warren_api::{ErrorCode, InvalidTransition, WorkspaceState};

/// Everything that can go wrong in a [`Store`](crate::Store) call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another workspace already has this name.
    #[error("a workspace named {name:?} already exists")]
    NameTaken {
        /// The requested name.
        name: String,
    },
    /// No workspace has this id.
    #[error("workspace {id} not found")]
    NotFound {
        /// The requested id.
        id: String,
    },
    /// The caller's view of the workspace is stale: someone else changed it first.
    #[error("workspace {id} was changed concurrently (expected generation {expected}, found {actual}); reload and retry")]
    Conflict {
        /// The workspace id.
        id: String,
        /// The generation the caller based its change on.
        expected: i64,
        /// The generation currently stored.
        actual: i64,
    },
    /// The event is not allowed in the workspace's current state.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// Only deleted workspaces may have their record removed.
    #[error("workspace {id} is {state}; only a deleted workspace's record can be removed")]
    NotDeleted {
        /// The workspace id.
        id: String,
        /// Its current state.
        state: WorkspaceState,
    },
    /// A stored row could not be decoded.
    #[error("workspace {id} has invalid stored data: {detail}")]
    Corrupt {
        /// The workspace id.
        id: String,
        /// What was wrong.
        detail: String,
    },
    /// The database directory could not be created.
    #[error("cannot create database directory {path}: {error}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// An object with this name already exists (user, team...).
    #[error("a {what} named {name:?} already exists")]
    Exists {
        /// What kind of object.
        what: String,
        /// Its name.
        name: String,
    },
    /// An object that should exist does not.
    #[error("no {what} {name:?}")]
    Missing {
        /// What kind of object.
        what: String,
        /// Its name or id.
        name: String,
    },
    /// The workspace already has an active job.
    #[error("workspace {workspace_id} has a transition in progress: job {job}")]
    Busy {
        /// The workspace.
        workspace_id: String,
        /// The active job.
        job: String,
    },
    /// Applying schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The stable machine-readable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NameTaken { .. } | Self::Exists { .. } => ErrorCode::NameTaken,
            Self::Missing { .. } => ErrorCode::NotFound,
            Self::Busy { .. } => ErrorCode::TransitionInProgress,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::InvalidTransition(e) => e.code(),
            Self::NotDeleted { .. } => ErrorCode::InvalidState,
            Self::Corrupt { .. }
            | Self::CreateDir { .. }
            | Self::Migrate(_)
            | Self::Database(_) => ErrorCode::Internal,
        }
    }
}
