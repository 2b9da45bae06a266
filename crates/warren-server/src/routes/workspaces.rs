//! TODO
use crate::app::AppState;
use utoipa_axum::router::OpenApiRouter;
/// r
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
