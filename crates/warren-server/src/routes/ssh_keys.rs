//! Users' SSH public keys: `/me/ssh-keys` for one's own, `/users/{user}/ssh-keys` for admins.
//!
//! A key is a credential that outlives the token that registered it and reaches every workspace
//! its user can reach, so only a token with every scope of its user's role and no workspace
//! restriction may add one (as for approving a device login): a narrow agent token cannot turn
//! itself into a broad, lasting one. Listing and removing one's own keys needs no scope, as for
//! one's own tokens; other users' keys need `TokenAdmin`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::ssh_key;
use warren_api::v1::{AddSshKey, SshKey, VerifySshKey};
use warren_api::ErrorCode;
use warren_store::{NewSshKey, SshKeyRecord, StoreError, UserRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::users::user_for;

/// The longest key name, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_my_keys, add_my_key))
        .routes(routes!(delete_my_key))
        .routes(routes!(verify_my_key))
        .routes(routes!(list_user_keys))
        .routes(routes!(delete_user_key))
}

/// The API view of a key.
pub fn key_view(k: &SshKeyRecord) -> SshKey {
    SshKey {
        id: k.id.clone(),
        name: k.name.clone(),
        user_id: k.user_id.clone(),
        key_type: k.key_type.clone(),
        fingerprint: k.fingerprint.clone(),
        public_key: k.public_key.clone(),
        created_at: k.created_at.clone(),
        last_used_at: k.last_used_at.clone(),
        verified_at: k.verified_at.clone(),
    }
}

fn note(action: &str, k: &SshKeyRecord, owner: &UserRecord) -> AuditNote {
    // The fingerprint names the key; the key itself is not logged.
    let mut n = AuditNote::target("ssh-key", &k.id, &k.fingerprint);
    n.action = Some(action.into());
    n.details_json = Some(
        serde_json::json!({
            "user": owner.username,
            "name": k.name,
            "key_type": k.key_type,
            "fingerprint": k.fingerprint,
        })
        .to_string(),
    );
    n
}

fn key_name(body: &AddSshKey, comment: Option<&str>) -> ApiResult<String> {
    let Some(given) = &body.name else {
        return Ok(comment
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("key")
            .to_string());
    };
    let name = given.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "an SSH key name is 1 to {MAX_NAME_LEN} characters without control characters"
        ))
        .hint("pass another `name`, or none to use the key's comment"));
    }
    Ok(name.to_string())
}

/// The caller's SSH public keys.
#[utoipa::path(get, path = "/api/v1/me/ssh-keys", tag = "ssh-keys", security(("token" = [])),
    responses((status = 200, body = [SshKey]), (status = 401, body = ErrorBody)))]
async fn list_my_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SshKey>>> {
    let keys = state.store.ssh_keys_of(&caller.user.id).await?;
    Ok(Json(keys.iter().map(key_view).collect()))
}

/// Registers an SSH public key for the caller. Needs a token with every scope of the caller's
/// role and no workspace restriction. A key belongs to one user on the whole server.
#[utoipa::path(post, path = "/api/v1/me/ssh-keys", tag = "ssh-keys", security(("token" = [])), request_body = AddSshKey,
    responses((status = 201, body = SshKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_my_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<AddSshKey>,
) -> ApiResult<impl IntoResponse> {
    full_role_token(&caller)?;
    let parsed = ssh_key::parse(&body.public_key).map_err(|e| {
        let err = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidSshKey, e.message);
        match e.hint {
            Some(h) => err.hint(h),
            None => err,
        }
    })?;
    let name = key_name(&body, parsed.comment.as_deref())?;
    let fingerprint = parsed.fingerprint();
    let openssh = parsed.openssh();
    // The signature is checked before anything is stored: a bad one changes nothing.
    if let Some(sig) = &body.signature {
        check_proof(&caller.user.id, &openssh, &fingerprint, sig)?;
    }
    let mine = state
        .store
        .ssh_key_of_user(&caller.user.id, &fingerprint)
        .await?;
    let k = match mine {
        // Registered before without proof: this proves it.
        Some(k) if k.verified_at.is_none() && body.signature.is_some() => {
            verify(&state, &caller.user, &k).await?
        }
        Some(k) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SshKeyTaken,
                format!("the SSH key {fingerprint} is already registered"),
            )
            .hint(format!(
                "it is yours, named `{}`: `warren ssh-key list`",
                k.name
            )))
        }
        None => {
            let added = state
                .store
                .add_ssh_key(NewSshKey {
                    user_id: &caller.user.id,
                    name: &name,
                    key_type: parsed.key_type.as_str(),
                    public_key: &openssh,
                    fingerprint: &fingerprint,
                })
                .await;
            let k = match added {
                Ok(k) => k,
                Err(StoreError::Exists { .. }) => return Err(taken(&fingerprint)),
                Err(e) => return Err(e.into()),
            };
            if body.signature.is_some() {
                verify(&state, &caller.user, &k).await?
            } else {
                k
            }
        }
    };
    let note = note("ssh-key.create", &k, &caller.user);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(key_view(&k)),
    ))
}

/// Keys are credentials that outlive the token adding them: only a token with every scope of
/// its user's role and no workspace restriction may add or prove one.
fn full_role_token(caller: &Caller) -> Result<(), ApiError> {
    if !caller
        .principal
        .role
        .scopes()
        .is_subset(&caller.principal.scopes)
        || caller.principal.workspaces.is_some()
    {
        return Err(ApiError::forbidden(
            "only a token with every scope of your role can add an SSH key",
        )
        .hint(
            "an SSH key reaches every workspace you can; use your login token (`warren login`)",
        ));
    }
    Ok(())
}

fn taken(fingerprint: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::SshKeyTaken,
        format!("the SSH key {fingerprint} is already registered and proven by another user"),
    )
    .hint("a key belongs to one user; make another with `ssh-keygen -t ed25519`")
}

/// Checks that `signature` (an armored SSH signature) was made with the key `openssh` over the
/// key's proof message for `user_id`.
fn check_proof(
    user_id: &str,
    openssh: &str,
    fingerprint: &str,
    signature: &str,
) -> Result<(), ApiError> {
    use russh::keys::ssh_key::{PublicKey, SshSig};
    let refuse = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSshKey,
            format!("the signature does not prove holding the SSH key {fingerprint}: {why}"),
        )
        .hint(format!(
            "`warren ssh-key add` signs for you; by hand: sign the proof message with `ssh-keygen -Y sign -n {} -f KEY`",
            ssh_key::PROOF_NAMESPACE
        ))
    };
    if signature.len() > 64 * 1024 {
        return Err(refuse("it is too large"));
    }
    let sig = SshSig::from_pem(signature.trim()).map_err(|_| refuse("not an SSH signature"))?;
    let key = PublicKey::from_openssh(openssh).map_err(|_| refuse("unreadable key"))?;
    let msg = ssh_key::proof_message(user_id, fingerprint);
    key.verify(ssh_key::PROOF_NAMESPACE, msg.as_bytes(), &sig)
        .map_err(|e| refuse(&e.to_string()))
}

/// Marks the key verified (and drops other users' unverified copies), audited.
async fn verify(
    state: &AppState,
    owner: &UserRecord,
    k: &SshKeyRecord,
) -> Result<SshKeyRecord, ApiError> {
    match state.store.verify_ssh_key(&owner.id, &k.id).await {
        Ok(v) => Ok(v),
        Err(StoreError::Exists { .. }) => Err(taken(&k.fingerprint)),
        Err(e) => Err(e.into()),
    }
}

/// Proves holding the private key of one of the caller's keys, which the SSH gateway then
/// accepts. Needs a token with every scope of the caller's role, as adding does.
#[utoipa::path(post, path = "/api/v1/me/ssh-keys/{id}/verify", tag = "ssh-keys", security(("token" = [])),
    params(("id" = String, Path, description = "key id")), request_body = VerifySshKey,
    responses((status = 200, body = SshKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn verify_my_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<VerifySshKey>,
) -> ApiResult<impl IntoResponse> {
    full_role_token(&caller)?;
    let k = state
        .store
        .ssh_key(&id)
        .await?
        .filter(|k| k.user_id == caller.user.id)
        .ok_or_else(|| {
            ApiError::not_found("SSH key", &id)
                .hint("`warren ssh-key list` shows the keys and their ids")
        })?;
    check_proof(
        &caller.user.id,
        &k.public_key,
        &k.fingerprint,
        &body.signature,
    )?;
    let v = if k.verified_at.is_some() {
        k
    } else {
        verify(&state, &caller.user, &k).await?
    };
    let note = note("ssh-key.verify", &v, &caller.user);
    Ok((axum::Extension(note), Json(key_view(&v))))
}

async fn delete_key(
    state: &AppState,
    owner: &UserRecord,
    id: &str,
) -> ApiResult<impl IntoResponse> {
    let not_found = || {
        ApiError::not_found("SSH key", id)
            .hint("`warren ssh-key list` shows the keys and their ids")
    };
    let k = state
        .store
        .ssh_key(id)
        .await?
        .filter(|k| k.user_id == owner.id)
        .ok_or_else(not_found)?;
    if !state.store.delete_ssh_key(&owner.id, &k.id).await? {
        return Err(not_found());
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(note("ssh-key.delete", &k, owner)),
    ))
}

/// Removes one of the caller's SSH keys. Another user's key is "not found".
#[utoipa::path(delete, path = "/api/v1/me/ssh-keys/{id}", tag = "ssh-keys", security(("token" = [])),
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_my_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    delete_key(&state, &caller.user, &id).await
}

/// A user's SSH public keys (admins).
#[utoipa::path(get, path = "/api/v1/users/{user}/ssh-keys", tag = "ssh-keys", security(("token" = [])),
    params(("user" = String, Path, description = "username or id")),
    responses((status = 200, body = [SshKey]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_user_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<SshKey>>> {
    caller.require(Op::TokenAdmin)?;
    let u = user_for(&state, &user).await?;
    let keys = state.store.ssh_keys_of(&u.id).await?;
    Ok(Json(keys.iter().map(key_view).collect()))
}

/// Removes a user's SSH key (admins).
#[utoipa::path(delete, path = "/api/v1/users/{user}/ssh-keys/{id}", tag = "ssh-keys", security(("token" = [])),
    params(("user" = String, Path, description = "username or id"), ("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_user_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::TokenAdmin)?;
    let u = user_for(&state, &user).await?;
    delete_key(&state, &u, &id).await
}
