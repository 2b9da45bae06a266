//! Secrets: `GET /secrets`, `PUT|DELETE /secrets/{scope}/{name}`. A scope is `user` (the
//! caller's own), `team:NAME` (a team the caller is a member of) or `template:NAME` (needs
//! `TemplateWrite`). Values are encrypted at rest and never returned; the audit log records the
//! scope, name, kind and host, never the value. Tokens restricted to workspaces (a workspace
//! credential among them) cannot read or write secrets.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Decision, Op, Owner};
use warren_api::v1::{PutSecret, SecretInfo, SecretList};
use warren_api::ErrorCode;
use warren_store::SecretRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{forbidden, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::secrets::{check_name, MAX_VALUE};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// A scope as stored: (`user`|`team`|`template`, id, the name shown).
struct Scoped {
    kind: &'static str,
    id: String,
    shown: String,
}

fn unrestricted(caller: &Caller) -> ApiResult<()> {
    if caller.principal.workspaces.is_some() {
        return Err(ApiError::forbidden(
            "a token restricted to named workspaces cannot read or write secrets",
        )
        .hint("use a token without a workspace restriction"));
    }
    Ok(())
}

fn require(caller: &Caller, op: Op) -> ApiResult<()> {
    match caller.check(op, None) {
        Decision::Allow => Ok(()),
        Decision::Hidden => Err(ApiError::forbidden("this token may not do that")),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}

/// Parses and authorizes a scope for writing.
async fn scope_for_write(state: &AppState, caller: &Caller, scope: &str) -> ApiResult<Scoped> {
    unrestricted(caller)?;
    let bad = || {
        ApiError::bad_request(format!(
            "invalid scope `{scope}`: use `user`, `team:NAME` or `template:NAME`"
        ))
        .hint("e.g. PUT /api/v1/secrets/user/gh-token")
    };
    if scope == "user" {
        require(caller, Op::WorkspaceWrite(Owner::Own))?;
        return Ok(Scoped {
            kind: "user",
            id: caller.user.id.clone(),
            shown: "user".into(),
        });
    }
    let (kind, name) = scope.split_once(':').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    match kind {
        "team" => {
            require(caller, Op::WorkspaceWrite(Owner::Own))?;
            let t = state.store.team(&state.org.id, name).await?;
            match t {
                Some(t) if t.members.contains(&caller.user.id) => Ok(Scoped {
                    kind: "team",
                    id: t.id,
                    shown: format!("team:{name}"),
                }),
                // Teams one is not in are not one's business.
                _ => Err(ApiError::not_found("team", name)
                    .hint("team secrets are written by the team's members")),
            }
        }
        "template" => {
            require(caller, Op::TemplateWrite)?;
            let t = state
                .store
                .template(&state.org.id, name)
                .await?
                .ok_or_else(|| ApiError::not_found("template", name))?;
            Ok(Scoped {
                kind: "template",
                id: t.id,
                shown: format!("template:{name}"),
            })
        }
        _ => Err(bad()),
    }
}

fn view(s: &SecretRecord, shown: &str) -> SecretInfo {
    SecretInfo {
        scope: shown.to_string(),
        name: s.name.clone(),
        kind: s.kind.clone(),
        git_host: s.git_host.clone(),
        username: s.username.clone(),
        // AES-GCM adds a 16-byte tag and no padding.
        size: s.ciphertext.len().saturating_sub(16) as u64,
        created_at: s.created_at.clone(),
        updated_at: s.updated_at.clone(),
    }
}

/// The secrets the caller may see (metadata only): their own, their teams', and the templates'
/// for template writers.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", security(("token" = [])),
    responses((status = 200, body = SecretList), (status = 403, body = ErrorBody)))]
async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<SecretList>> {
    unrestricted(&caller)?;
    require(&caller, Op::WorkspaceRead(Owner::Own))?;
    let mut out = Vec::new();
    for s in state.store.secrets_of("user", &caller.user.id).await? {
        out.push(view(&s, "user"));
    }
    let mut teams = state.store.teams(&state.org.id).await?;
    teams.sort_by(|a, b| a.name.cmp(&b.name));
    for t in teams.iter().filter(|t| t.members.contains(&caller.user.id)) {
        for s in state.store.secrets_of("team", &t.id).await? {
            out.push(view(&s, &format!("team:{}", t.name)));
        }
    }
    if caller.check(Op::TemplateWrite, None) == Decision::Allow {
        for t in state.store.templates(&state.org.id, true).await? {
            for s in state.store.secrets_of("template", &t.id).await? {
                out.push(view(&s, &format!("template:{}", t.name)));
            }
        }
    }
    Ok(Json(SecretList { secrets: out }))
}

/// Writes a secret (creates it or replaces its value). The value is encrypted at rest and never
/// returned.
#[utoipa::path(put, path = "/api/v1/secrets/{scope}/{name}", tag = "secrets", security(("token" = [])),
    params(("scope" = String, Path, description = "`user`, `team:NAME` or `template:NAME`"),
        ("name" = String, Path, description = "secret name")),
    request_body = PutSecret,
    responses((status = 200, body = SecretInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn put_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, name)): Path<(String, String)>,
    Json(body): Json<PutSecret>,
) -> ApiResult<impl IntoResponse> {
    let scoped = scope_for_write(&state, &caller, &scope).await?;
    check_name(&name)?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request("value: a secret cannot be empty")
            .hint("`warren secret rm` removes a secret"));
    }
    if body.value.len() > MAX_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!(
                "value: {} bytes is more than a secret may hold ({MAX_VALUE} bytes)",
                body.value.len()
            ),
        )
        .hint("store a key or token, not a file of data"));
    }
    let git_host = match body.git_host.as_deref().map(str::trim) {
        None => None,
        Some(h) => {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "git_host `{h}`: give a host name, optionally with `:PORT` (no scheme or path)"
                ))
                .hint("e.g. github.com or git.example.com:8443"));
            }
            if body.value.contains('\n') || body.value.contains('\0') {
                return Err(ApiError::bad_request(
                    "value: a git credential cannot contain a newline or NUL",
                )
                .hint("git's credential protocol is line based"));
            }
            Some(h.to_ascii_lowercase())
        }
    };
    if let Some(u) = &body.username {
        if git_host.is_none() {
            return Err(ApiError::bad_request(
                "username: only git credentials (with git_host) have one",
            ));
        }
        if u.is_empty() || u.len() > 256 || u.contains(['\n', '\0']) {
            return Err(ApiError::bad_request(
                "username: 1 to 256 characters, no newline or NUL",
            ));
        }
    }
    let (nonce, ciphertext) =
        state
            .secrets
            .keyring
            .seal(scoped.kind, &scoped.id, &name, body.value.as_bytes())?;
    let stored = state
        .store
        .put_secret(&SecretRecord {
            id: String::new(),
            name: name.clone(),
            scope: scoped.kind.into(),
            scope_id: scoped.id.clone(),
            kind: if git_host.is_some() { "git" } else { "generic" }.into(),
            git_host,
            username: body.username.clone(),
            nonce,
            ciphertext,
            created_by: Some(caller.user.id.clone()),
            created_at: String::new(),
            updated_at: String::new(),
        })
        .await?;
    let info = view(&stored, &scoped.shown);
    let mut note = AuditNote::target("secret", &stored.id, &format!("{}/{}", scoped.shown, name));
    note.details_json = Some(
        serde_json::json!({
            "scope": scoped.shown, "name": name, "kind": info.kind, "git_host": info.git_host,
        })
        .to_string(),
    );
    Ok((StatusCode::OK, axum::Extension(note), Json(info)))
}

/// Removes a secret. Workspaces that asked for it no longer get its file at their next start.
#[utoipa::path(delete, path = "/api/v1/secrets/{scope}/{name}", tag = "secrets", security(("token" = [])),
    params(("scope" = String, Path, description = "`user`, `team:NAME` or `template:NAME`"),
        ("name" = String, Path, description = "secret name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let scoped = scope_for_write(&state, &caller, &scope).await?;
    let Some(s) = state.store.secret(scoped.kind, &scoped.id, &name).await? else {
        return Err(
            ApiError::not_found("secret", &name).hint("`warren secret list` shows your secrets")
        );
    };
    state
        .store
        .delete_secret(scoped.kind, &scoped.id, &name)
        .await?;
    let mut note = AuditNote::target("secret", &s.id, &format!("{}/{}", scoped.shown, name));
    note.details_json =
        Some(serde_json::json!({ "scope": scoped.shown, "name": name }).to_string());
    Ok((StatusCode::NO_CONTENT, axum::Extension(note)))
}
