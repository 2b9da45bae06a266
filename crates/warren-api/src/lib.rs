#![forbid(unsafe_code)]
//! Shared API types for Warren: the workspace state machine, workspace names, stable error codes
//! and the workspace record printed by the CLI and API. This crate performs no I/O.

mod error;
mod name;
mod state;
mod workspace;

pub use error::ErrorCode;
pub use name::{workspace_name_from_dir, InvalidWorkspaceName, WorkspaceName, MAX_NAME_LEN};
pub use state::{
    transition, Action, Event, InvalidTransition, UnknownEvent, UnknownState, WorkspaceState,
};
pub use workspace::Workspace;
