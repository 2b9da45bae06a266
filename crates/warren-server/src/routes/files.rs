//! TODO(helper): files routes.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The files routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
