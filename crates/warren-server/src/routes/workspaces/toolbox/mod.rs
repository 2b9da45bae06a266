//! The toolbox API (`/api/v1/workspaces/{ws}/toolbox/...`): what an agent needs to work in a
//! workspace without a shell of its own. Everything runs inside the workspace as an ordinary exec.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub mod files;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(files::router())
}
