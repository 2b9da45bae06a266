//! The toolbox: a headless API for agents working in a workspace (processes, files, git), under
//! `/api/v1/workspaces/{ws}/toolbox/`. Everything runs inside the workspace through exec.

pub mod git;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The toolbox routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(git::router())
}
