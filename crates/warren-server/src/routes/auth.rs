//! Browser-free device login (like OAuth's device authorization grant): the CLI asks for a code
//! pair, shows the short user code, and polls; the user approves the code from a session that is
//! already signed in (`warren login --approve CODE`, or the web UI later). The approving token
//! must carry every scope of its user's role, so a narrow token cannot mint a broad one.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rand::Rng;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Role;
use warren_api::v1::{CreatedToken, DeviceApprove, DevicePoll, DeviceStart};
use warren_api::ErrorCode;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{hash_secret, mint, random_secret, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::users::{expires_at, token_view};

const DEVICE_TTL: Duration = Duration::from_secs(600);
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(device_start))
        .routes(routes!(device_token))
        .routes(routes!(device_approve))
        // Anyone may call the first two: their bodies are a few dozen bytes.
        .layer(axum::extract::DefaultBodyLimit::max(4096))
}

fn user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let c: String = (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &c[..4], &c[4..])
}

/// Starts a device login (no authentication).
#[utoipa::path(post, path = "/api/v1/auth/device", tag = "auth",
    responses((status = 200, body = DeviceStart)))]
async fn device_start(State(state): State<AppState>) -> ApiResult<Json<DeviceStart>> {
    let device_code = random_secret();
    let mut last = None;
    for _ in 0..5 {
        let code = user_code();
        match state
            .store
            .create_device_code(&hash_secret(&device_code), &code, &expires_at(DEVICE_TTL))
            .await
        {
            Ok(()) => {
                last = Some(code);
                break;
            }
            Err(warren_store::StoreError::Exists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let user_code = last.ok_or_else(|| ApiError::internal("no free device user code"))?;
    Ok(Json(DeviceStart {
        device_code,
        verification_uri: format!("{}/api/v1/auth/device/approve", state.cfg.public_url),
        user_code,
        expires_in: DEVICE_TTL.as_secs(),
        interval: 2,
    }))
}

/// Polls a device login: `authorization_pending` until approved, then the token (once).
#[utoipa::path(post, path = "/api/v1/auth/device/token", tag = "auth", request_body = DevicePoll,
    responses((status = 200, body = CreatedToken), (status = 400, body = ErrorBody)))]
async fn device_token(
    State(state): State<AppState>,
    Json(body): Json<DevicePoll>,
) -> ApiResult<impl IntoResponse> {
    let h = hash_secret(&body.device_code);
    let d = state.store.device_code(&h).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ExpiredToken,
            "unknown device code",
        )
        .hint("start again with `warren login URL`")
    })?;
    if d.consumed || d.expires_at <= warren_store::now() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ExpiredToken,
            "this device code expired or was already used",
        )
        .hint("start again with `warren login URL`"));
    }
    let Some(user_id) = d.approved_by else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::AuthorizationPending,
            format!("waiting for code {} to be approved", d.user_code),
        )
        .hint(format!(
            "approve it from a signed-in session: warren login --approve {}",
            d.user_code
        )));
    };
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the approving user no longer exists"))?;
    if user.suspended {
        return Err(ApiError::unauthenticated("the approving user is suspended"));
    }
    let role: Role = user.role.parse().unwrap_or(Role::Member);
    // Never longer-lived than the token that approved it.
    let mut expires = expires_at(state.cfg.token_default_ttl);
    if let Some(cap) = d.approved_expires_at.as_ref().filter(|c| **c < expires) {
        expires = cap.clone();
    }
    let minted = mint(&user.id, "device login", &role.scopes(), None, expires);
    if !state
        .store
        .consume_device_code(&h, &minted.record.id)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ExpiredToken,
            "this device code was already used",
        ));
    }
    state.store.create_token(&minted.record).await?;
    let note = AuditNote::target("token", &minted.record.id, "device login");
    Ok((
        axum::Extension(note),
        Json(CreatedToken {
            token: minted.token,
            info: token_view(&minted.record),
        }),
    ))
}

/// Approves a device login for the caller.
#[utoipa::path(post, path = "/api/v1/auth/device/approve", tag = "auth", security(("token" = [])), request_body = DeviceApprove,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn device_approve(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DeviceApprove>,
) -> ApiResult<impl IntoResponse> {
    if !caller
        .principal
        .role
        .scopes()
        .is_subset(&caller.principal.scopes)
        || caller.principal.workspaces.is_some()
    {
        return Err(ApiError::forbidden(
            "only a token with every scope of your role can approve a login",
        ));
    }
    let code = body.user_code.trim().to_ascii_uppercase();
    if !state
        .store
        .approve_device_code(&code, &caller.user.id, &caller.token.expires_at)
        .await?
    {
        return Err(ApiError::not_found("pending device login", &code)
            .hint("codes expire after 10 minutes; start again with `warren login URL`"));
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(AuditNote::target("device", "", &code)),
    ))
}
