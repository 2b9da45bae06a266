//! `POST /workspaces/{ws}/credential`: mints the workspace's credential, a token of the caller
//! with `workspace:read` and `workspace:exec` restricted to it (default 8 h, at most 24 h, never
//! past the asking token), also written to `/run/secrets/warren-token` inside it (now if it
//! runs, and at every start while it works). Deleting the workspace revokes it.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Forbidden, Op, Scope};
use warren_api::v1::{CreateCredential, WorkspaceCredential};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use crate::secrets::{CREDENTIAL_DEFAULT_TTL, CREDENTIAL_MAX_TTL};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_credential))
}

/// Mints a credential restricted to the workspace (shown once).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/credential", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = CreateCredential,
    responses((status = 201, body = WorkspaceCredential), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_credential(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<CreateCredential>,
) -> ApiResult<impl IntoResponse> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    // A token never makes one broader than itself.
    for s in [Scope::WorkspaceRead, Scope::WorkspaceExec] {
        if !caller.principal.scopes.0.contains(&s) {
            return Err(crate::auth::forbidden(Forbidden::Scope(s)));
        }
    }
    let lifetime: Duration = match &body.lifetime {
        Some(l) => warren_api::template::parse_duration(l)
            .map_err(|e| ApiError::bad_request(format!("lifetime `{l}`: {e}")))?,
        None => CREDENTIAL_DEFAULT_TTL,
    };
    if lifetime > CREDENTIAL_MAX_TTL || lifetime.is_zero() {
        return Err(ApiError::bad_request(format!(
            "lifetime: a workspace credential lives more than 0 and at most {}",
            warren_api::template::format_duration(CREDENTIAL_MAX_TTL)
        ))
        .hint("mint a new one when it expires"));
    }
    // The owner's token, whoever asks: the workspace's processes act as its owner, never as an
    // administrator who minted it (they could read it from /run/secrets).
    let (token, record) = crate::secrets::mint_credential(
        &state,
        &rec,
        &rec.ownership.owner_id,
        lifetime,
        Some(&caller.token.expires_at),
    )
    .await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_ref());
    note.details_json = Some(
        serde_json::json!({ "credential": record.id, "expires_at": record.expires_at }).to_string(),
    );
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(WorkspaceCredential {
            token,
            id: record.id,
            workspace_id: rec.id.clone(),
            expires_at: record.expires_at,
        }),
    ))
}
