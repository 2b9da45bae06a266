//! The API routes, one module per resource. Each module returns an `OpenApiRouter`, so the
//! OpenAPI document is generated from the handlers themselves.

pub mod audit;
pub mod auth;
pub mod events;
pub mod files;
pub mod health;
pub mod mcp;
pub mod quotas;
pub mod secrets;
pub mod ssh_keys;
pub mod tasks;
pub mod templates;
pub mod users;
pub mod webhooks;
pub mod workspaces;

use utoipa_axum::router::OpenApiRouter;
use warren_api::auth::{Decision, Op, Owner};
use warren_store::WorkspaceRecord;

use crate::app::AppState;
use crate::auth::{forbidden, Caller};
use crate::error::ApiError;

/// Every `/api/v1` route.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(workspaces::router())
        .merge(templates::router())
        .merge(files::router())
        .merge(users::router())
        .merge(ssh_keys::router())
        .merge(auth::router())
        .merge(audit::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(quotas::router())
        .merge(mcp::router())
        .merge(secrets::router())
        .merge(tasks::router())
}

/// The user named `name`, and whether it is the caller (how `owner=NAME` filters are checked).
pub async fn user_named(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<(warren_store::UserRecord, Owner), ApiError> {
    let u = state
        .store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found("user", name))?;
    let own = if u.id == caller.user.id {
        Owner::Own
    } else {
        Owner::Other
    };
    Ok((u, own))
}

/// Finds the workspace `key` names for `caller` and checks `op` on it: `key` is a workspace id,
/// the name of one of the caller's workspaces, or `name.username` (someone else's). Anything the
/// caller may not see is "not found".
pub async fn find_workspace(
    state: &AppState,
    caller: &Caller,
    key: &str,
    op: fn(Owner) -> Op,
) -> Result<WorkspaceRecord, ApiError> {
    let not_found =
        || ApiError::not_found("workspace", key).hint("`warren list` shows your workspaces");
    let rec = if let Some((name, user)) = key.split_once('.') {
        match state.store.user_by_name(user).await? {
            Some(u) => state.store.get_by_name(&u.id, name).await?,
            None => None,
        }
    } else {
        match state.store.get_by_name(&caller.user.id, key).await? {
            Some(r) => Some(r),
            None if key.len() == 32 => state.store.get(key).await?,
            None => None,
        }
    };
    // Host-local workspaces (the embedded CLI's, made by the host's root) are not the server's
    // to hand out: their configuration is trusted and may reach the host.
    let rec = rec
        .filter(|r| !r.ownership.owner_id.is_empty())
        .ok_or_else(not_found)?;
    let owner = if rec.ownership.owner_id == caller.user.id {
        Owner::Own
    } else {
        Owner::Other
    };
    let op = op(owner);
    match caller.check(op, Some(&rec.id)) {
        Decision::Allow => {
            // A call that uses or changes the workspace is activity (kind `api`); reading it
            // is not, so a dashboard left open never keeps a workspace alive.
            if matches!(op, Op::WorkspaceWrite(_) | Op::WorkspaceExec(_)) {
                state
                    .activity
                    .touch(&rec.id, warren_api::activity::ActivityKind::Api);
            }
            Ok(rec)
        }
        Decision::Hidden => Err(not_found()),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}
