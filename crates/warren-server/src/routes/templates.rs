//! TODO(helper): templates routes.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The templates routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
