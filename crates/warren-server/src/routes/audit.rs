//! TODO(helper): audit routes.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
