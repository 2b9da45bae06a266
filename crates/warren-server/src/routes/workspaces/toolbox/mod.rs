//! The toolbox: a headless API for agents working in a workspace (processes, files, git), all
//! under `/api/v1/workspaces/{ws}/toolbox/`. Everything runs inside the workspace through an
//! ordinary exec, with the same authorization as the rest of the API (`Op::WorkspaceExec`).

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub mod files;
pub mod git;
pub mod process;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(process::router())
        .merge(files::router())
        .merge(git::router())
}
