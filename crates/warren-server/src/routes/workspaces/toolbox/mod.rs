//! The toolbox API (`/api/v1/workspaces/{ws}/toolbox/...`): what an agent needs to work in a
//! workspace without a shell of its own (processes, files, git). Everything runs inside the
//! workspace as an ordinary exec.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub mod files;
pub mod git;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(files::router())
        .merge(git::router())
}
