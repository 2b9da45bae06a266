//! SSH access tokens: `POST /workspaces/{ws}/ssh-access` makes a short-lived token that logs in
//! to the SSH gateway as its user name (`ssh TOKEN@HOST -p PORT`), with no key, for one workspace
//! (Daytona's `ssh <token>@host`, for agents and one-off sessions).
//!
//! A token reaches only its workspace and only for exec (no start on connect, nothing else); it
//! acts as the user who made it and stops working when that user is suspended, when it expires
//! (default 60 minutes) or is revoked, or when the workspace is deleted. It never outlives the
//! API token that made it. Only its SHA-256 is stored; it is shown once.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rand::RngCore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::v1::{CreateSshAccess, CreatedSshAccess, SshAccess};
use warren_store::SshAccessRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{hash_secret, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;
use crate::routes::users::expires_at;

/// What every access token starts with (how the gateway tells one from a workspace name, which
/// cannot contain `_`).
pub const PREFIX: &str = "wsa_";

/// Default and longest lifetimes.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_access, create_access))
        .routes(routes!(revoke_access))
}

/// A new token: the prefix and 32 characters of `[a-z0-9]` (165 bits), safe as an SSH user name.
fn new_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::from(PREFIX);
    let mut buf = [0u8; 64];
    while out.len() < PREFIX.len() + 32 {
        rand::rngs::OsRng.fill_bytes(&mut buf);
        // 252 = 7 × 36: rejecting larger bytes keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == PREFIX.len() + 32 {
                break;
            }
            out.push(ALPHABET[usize::from(*b % 36)] as char);
        }
    }
    out
}

fn view(r: &SshAccessRecord) -> SshAccess {
    SshAccess {
        id: r.id.clone(),
        workspace_id: r.workspace_id.clone(),
        user_id: r.user_id.clone(),
        created_at: r.created_at.clone(),
        expires_at: r.expires_at.clone(),
        revoked_at: r.revoked_at.clone(),
        last_used_at: r.last_used_at.clone(),
    }
}

/// Makes an SSH access token for the workspace (shown once).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/ssh-access", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = CreateSshAccess,
    responses((status = 201, body = CreatedSshAccess), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<CreateSshAccess>,
) -> ApiResult<impl IntoResponse> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let lifetime = match &body.lifetime {
        Some(l) => warren_api::template::parse_duration(l)
            .map_err(|e| ApiError::bad_request(format!("lifetime `{l}`: {e}")))?,
        None => DEFAULT_LIFETIME,
    };
    if lifetime > MAX_LIFETIME {
        return Err(ApiError::bad_request(format!(
            "lifetime {} is longer than an SSH access token may live ({})",
            warren_api::template::format_duration(lifetime),
            warren_api::template::format_duration(MAX_LIFETIME)
        ))
        .hint("register an SSH key for lasting access: `warren ssh-key add`"));
    }
    let mut expires = expires_at(lifetime);
    if expires > caller.token.expires_at {
        expires = caller.token.expires_at.clone();
    }
    let token = new_token();
    let made = state
        .store
        .create_ssh_access(
            &hash_secret(&token),
            &caller.user.id,
            &rec.id,
            Some(&caller.token.id),
            &expires,
        )
        .await?;
    let port = state
        .ssh_addr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map(|a| a.port());
    let host = url_host(&state.cfg.public_url);
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_ref());
    note.details_json =
        Some(serde_json::json!({"ssh_access": made.id, "expires_at": made.expires_at}).to_string());
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(CreatedSshAccess {
            ssh_command: port.map(|p| format!("ssh -p {p} {token}@{host}")),
            token,
            info: view(&made),
        }),
    ))
}

/// The host part of the server's public URL (`localhost` if it has none).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        "localhost".into()
    } else {
        host.into()
    }
}

/// The workspace's SSH access tokens (without their secrets), revoked and expired ones too.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ssh-access", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = [SshAccess]), (status = 404, body = ErrorBody)))]
async fn list_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<SshAccess>>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let all = state.store.ssh_access_for(&rec.id).await?;
    Ok(Json(all.iter().map(view).collect()))
}

/// Revokes one of the workspace's SSH access tokens at once (connections it opened stay until
/// they end; new ones are refused).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/ssh-access/{id}", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("id" = String, Path, description = "token id")),
    responses((status = 200, body = SshAccess), (status = 404, body = ErrorBody)))]
async fn revoke_access(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let revoked = state
        .store
        .revoke_ssh_access(&rec.id, &id)
        .await
        .map_err(|e| match e {
            warren_store::StoreError::NotFound { .. } => {
                ApiError::not_found("SSH access token", &id)
                    .hint(format!("`warren ssh-access list {}` shows them", rec.name))
            }
            e => e.into(),
        })?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_ref());
    note.details_json = Some(serde_json::json!({"ssh_access": revoked.id}).to_string());
    Ok((axum::Extension(note), Json(view(&revoked))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_safe_user_names() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 32);
        assert!(a[PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        // Never a valid workspace name, so the gateway cannot mistake one for the other.
        assert!(warren_api::WorkspaceName::new(&a).is_err());
    }

    #[test]
    fn host_of_public_urls() {
        for (url, host) in [
            ("https://warren.example.com", "warren.example.com"),
            ("http://127.0.0.1:7080/", "127.0.0.1"),
            ("https://[::1]:7443/x", "::1"),
            ("https://user@h.example:1/", "h.example"),
            ("", "localhost"),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }
}
