#![forbid(unsafe_code)]
//! Shared API types for Warren: the workspace state machine, workspace names, stable error codes
//! and the workspace record printed by the CLI and API, and the template model (parameters,
//! ceilings, policy defaults, the manifest), autostart schedules, and network policies (`net`).
//! This crate performs no I/O (the time zone database `schedule` uses is compiled in).

pub mod activity;
pub mod auth;
mod error;
pub mod git;
mod name;
pub mod net;
pub mod policy;
pub mod ports;
pub mod schedule;
pub mod ssh_key;
mod state;
pub mod task;
pub mod template;
pub mod toolbox_files;
pub mod v1;
pub mod webhook;
mod workspace;

pub use error::ErrorCode;
pub use name::{workspace_name_from_dir, InvalidWorkspaceName, WorkspaceName, MAX_NAME_LEN};
pub use state::{
    transition, Action, Event, InvalidTransition, UnknownEvent, UnknownState, WorkspaceState,
};
pub use template::{
    Ceilings, Monotonic, ParamError, ParamSpec, ParamType, ParamValue, PolicyDefaults,
    TemplateManifest, Validation,
};
pub use workspace::Workspace;
