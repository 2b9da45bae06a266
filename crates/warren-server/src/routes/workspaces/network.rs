//! A workspace's network policy: `GET|PUT|DELETE /workspaces/{ws}/network`. The base policy (its
//! template's, or the server's default) always applies; the workspace's own policy applies on top
//! (a connection must pass both), so an owner can narrow what the workspace reaches but never
//! widen it past the template. Changes take effect at the next connection and name lookup,
//! without a restart.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::net::NetworkPolicy;
use warren_api::v1::NetworkStatus;
use warren_store::WorkspaceRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::net;
use crate::routes::find_workspace;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_network, put_network, delete_network))
}

async fn status(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<NetworkStatus> {
    let (base, source) = net::base_policy(state, rec).await?;
    let own = net::own_policy(state, rec).await?;
    let att = state
        .engine
        .attachment(warren_engine::WsRef::Id(rec.id.clone()))
        .await?;
    Ok(NetworkStatus {
        base,
        base_source: source.into(),
        own,
        address: att.as_ref().map(|(a, _)| a.address.to_string()),
        denied_connections: att.map(|(_, c)| c.denied_connections).unwrap_or(0),
    })
}

/// What the workspace may reach (its base and own policies), its address, and how many
/// connection attempts were refused.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/network", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = NetworkStatus), (status = 404, body = ErrorBody)))]
async fn get_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<NetworkStatus>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    Ok(Json(status(&state, &rec).await?))
}

/// Sets the workspace's own network policy (replacing the previous one), applied on top of its
/// base policy. Bad rules are refused with 400 naming the rule. A running workspace follows it
/// from its next connection and name lookup.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/network", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = NetworkPolicy,
    responses((status = 200, body = NetworkStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<NetworkPolicy>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    set(&state, &rec, Some(body)).await
}

/// Removes the workspace's own network policy: its base policy alone applies.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/network", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = NetworkStatus), (status = 404, body = ErrorBody)))]
async fn delete_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    set(&state, &rec, None).await
}

async fn set(
    state: &AppState,
    rec: &WorkspaceRecord,
    own: Option<NetworkPolicy>,
) -> ApiResult<Response> {
    let before = net::own_policy(state, rec).await?;
    let (base, _) = net::base_policy(state, rec).await?;
    let plan = net::plan(state, net::Owner::of(rec), &base, own.as_ref(), true).await?;
    let own_json = own
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(crate::error::ApiError::internal)?;
    state.engine.set_network(rec, own_json, &plan).await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.diff_json = warren_store::field_diff(
        &serde_json::json!({ "network": before }),
        &serde_json::json!({ "network": own }),
    );
    Ok((axum::Extension(note), Json(status(state, rec).await?)).into_response())
}
