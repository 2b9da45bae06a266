//! Users, teams, tokens and `/me`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Op, Owner, Role, ScopeSet};
use warren_api::v1::{
    CreateTeam, CreateToken, CreateUser, CreatedToken, Me, Team, Token, UpdateUser, User,
};
use warren_api::{ErrorCode, WorkspaceName};
use warren_store::{TokenRecord, UserRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{mint, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_teams, create_team))
        .routes(routes!(delete_team))
        .routes(routes!(add_team_member, remove_team_member))
}

/// The API view of a user.
pub fn user_view(u: &UserRecord) -> User {
    User {
        id: u.id.clone(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role.parse().unwrap_or(Role::Member),
        suspended: u.suspended,
        created_at: u.created_at.clone(),
    }
}

/// The API view of a token.
pub fn token_view(t: &TokenRecord) -> Token {
    Token {
        id: t.id.clone(),
        name: t.name.clone(),
        user_id: t.user_id.clone(),
        scopes: serde_json::from_str::<ScopeSet>(&t.scopes_json)
            .map(|s| s.0.into_iter().collect())
            .unwrap_or_default(),
        workspaces: t
            .workspaces_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok()),
        created_at: t.created_at.clone(),
        expires_at: t.expires_at.clone(),
        last_used_at: t.last_used_at.clone(),
        revoked_at: t.revoked_at.clone(),
    }
}

fn validate_username(name: &str) -> ApiResult<()> {
    WorkspaceName::new(name).map(|_| ()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
            e.to_string().replace("workspace name", "username"),
        )
    })
}

/// The caller, their token and organization.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("token" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, caller: Caller) -> Json<Me> {
    Json(Me {
        user: user_view(&caller.user),
        token: token_view(&caller.token),
        organization: state.org.name.clone(),
    })
}

/// Every user (admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("token" = [])),
    responses((status = 200, body = [User]), (status = 403, body = ErrorBody)))]
async fn list_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    caller.require(Op::UserAdmin)?;
    Ok(Json(
        state.store.users().await?.iter().map(user_view).collect(),
    ))
}

/// Creates a user (admins; only owners may create owners).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("token" = [])), request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::UserAdmin)?;
    validate_username(&body.username)?;
    let role = body.role.unwrap_or(Role::Member);
    if matches!(role, Role::Owner) {
        caller.require(Op::OwnerAdmin)?;
    }
    let u = state
        .store
        .create_user(
            &state.org.id,
            &body.username,
            body.display_name.as_deref(),
            role.as_str(),
        )
        .await?;
    let note = AuditNote::target("user", &u.id, &u.username);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(user_view(&u)),
    ))
}

/// The user `key` names (username or id), or 404.
pub(crate) async fn user_for(state: &AppState, key: &str) -> ApiResult<UserRecord> {
    let u = match state.store.user_by_name(key).await? {
        Some(u) => Some(u),
        None => state.store.user(key).await?,
    };
    u.ok_or_else(|| ApiError::not_found("user", key))
}

/// A user by username or id (admins, or oneself).
#[utoipa::path(get, path = "/api/v1/users/{user}", tag = "users", security(("token" = [])),
    params(("user" = String, Path, description = "username or id")),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<User>> {
    if key == caller.user.username || key == caller.user.id {
        return Ok(Json(user_view(&caller.user)));
    }
    caller.require(Op::UserAdmin)?;
    Ok(Json(user_view(&user_for(&state, &key).await?)))
}

/// Changes a user's role, suspension or display name (admins; owners for the owner role).
#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "users", security(("token" = [])), request_body = UpdateUser,
    params(("user" = String, Path, description = "username or id")),
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::UserAdmin)?;
    let u = user_for(&state, &key).await?;
    let old_role: Role = u.role.parse().unwrap_or(Role::Member);
    if body.role == Some(Role::Owner) || old_role == Role::Owner {
        caller.require(Op::OwnerAdmin)?;
    }
    let demotes_owner = old_role == Role::Owner
        && (body.role.is_some_and(|r| r != Role::Owner) || body.suspended == Some(true));
    if demotes_owner && state.store.count_role("owner").await? <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!("`{}` is the last owner", u.username),
        )
        .hint("make another user owner first"));
    }
    let new = state
        .store
        .update_user(
            &u.id,
            body.role.map(|r| r.as_str()),
            body.suspended,
            body.display_name.as_deref(),
        )
        .await?;
    // This replica at once (the request's own answer must not see a stale entry), every replica
    // through the notice.
    state.tokens.forget_user(&u.id);
    state
        .pubsub
        .publish(crate::coord::Notice::UserChanged(u.id.clone()));
    let old_v = serde_json::to_value(user_view(&u)).unwrap_or_default();
    let new_v = serde_json::to_value(user_view(&new)).unwrap_or_default();
    let mut note = AuditNote::target("user", &u.id, &u.username);
    note.diff_json = warren_store::field_diff(&old_v, &new_v);
    Ok((axum::Extension(note), Json(user_view(&new))))
}

/// The caller's tokens (admins may pass `?user=`).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("token" = [])),
    params(("user" = Option<String>, Query, description = "another user's tokens (admins)")),
    responses((status = 200, body = [Token])))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Vec<Token>>> {
    crate::secrets::refuse_workspace_credential(&state, &caller).await?;
    let user_id = match q.get("user") {
        Some(u) if u != &caller.user.username && u != &caller.user.id => {
            caller.require(Op::TokenAdmin)?;
            user_for(&state, u).await?.id
        }
        _ => caller.user.id.clone(),
    };
    Ok(Json(
        state
            .store
            .tokens_of(&user_id)
            .await?
            .iter()
            .map(token_view)
            .collect(),
    ))
}

/// Creates a token. Its scopes, workspaces and lifetime never exceed the caller's token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("token" = [])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> ApiResult<impl IntoResponse> {
    crate::secrets::refuse_workspace_credential(&state, &caller).await?;
    let for_user = match &body.user {
        Some(u) if u != &caller.user.username && u != &caller.user.id => {
            // A token for someone else acts as them: only owners may mint one, or an admin could
            // become an owner through an owner's token.
            caller.require(Op::OwnerAdmin)?;
            user_for(&state, u).await?
        }
        _ => caller.user.clone(),
    };
    let role: Role = for_user.role.parse().unwrap_or(Role::Member);
    let scopes = match &body.scopes {
        Some(s) => ScopeSet(s.iter().copied().collect()),
        None => ScopeSet(
            caller
                .principal
                .scopes
                .0
                .intersection(&role.scopes().0)
                .copied()
                .collect(),
        ),
    };
    if scopes.0.is_empty() {
        return Err(ApiError::bad_request("a token needs at least one scope"));
    }
    if !scopes.is_subset(&caller.principal.scopes) {
        let extra: Vec<String> = scopes
            .0
            .difference(&caller.principal.scopes.0)
            .map(|s| s.to_string())
            .collect();
        return Err(ApiError::forbidden(format!(
            "a token cannot grant scopes its creator's token lacks: {}",
            extra.join(", ")
        )));
    }
    // Workspace restriction: names of the new token owner's workspaces, or ids.
    let workspaces: Option<BTreeSet<String>> = match &body.workspaces {
        None => caller.principal.workspaces.clone(),
        Some(list) => {
            let mut ids = BTreeSet::new();
            for key in list {
                let rec = match state.store.get_by_name(&for_user.id, key).await? {
                    Some(r) => r,
                    None => {
                        crate::routes::find_workspace(&state, &caller, key, Op::WorkspaceRead)
                            .await?
                    }
                };
                if rec.ownership.owner_id != for_user.id {
                    caller.require(Op::WorkspaceRead(Owner::Other))?;
                }
                ids.insert(rec.id);
            }
            if let Some(mine) = &caller.principal.workspaces {
                if !ids.is_subset(mine) {
                    return Err(ApiError::forbidden(
                        "a token cannot reach workspaces its creator's token cannot",
                    ));
                }
            }
            Some(ids)
        }
    };
    let lifetime = match &body.lifetime {
        Some(l) => warren_api::template::parse_duration(l)
            .map_err(|e| ApiError::bad_request(format!("lifetime `{l}`: {e}")))?,
        None => state.cfg.token_default_ttl,
    };
    if lifetime > state.cfg.token_max_ttl {
        return Err(ApiError::bad_request(format!(
            "lifetime {} exceeds the server's maximum token lifetime {}",
            warren_api::template::format_duration(lifetime),
            warren_api::template::format_duration(state.cfg.token_max_ttl)
        ))
        .hint("ask for a shorter --lifetime"));
    }
    let mut expires = expires_at(lifetime);
    if expires > caller.token.expires_at {
        expires = caller.token.expires_at.clone();
    }
    let name = body.name.clone().unwrap_or_else(|| "token".into());
    let minted = mint(&for_user.id, &name, &scopes, workspaces.as_ref(), expires);
    state.store.create_token(&minted.record).await?;
    let note = AuditNote::target("token", &minted.record.id, &name);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(CreatedToken {
            token: minted.token,
            info: token_view(&minted.record),
        }),
    ))
}

/// `now + d` in the store's time format.
pub fn expires_at(d: Duration) -> String {
    warren_store::format_time(time::OffsetDateTime::now_utc() + d)
}

/// Revokes a token at once (own tokens; admins any).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("token" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    crate::secrets::refuse_workspace_credential(&state, &caller).await?;
    let t = state
        .store
        .token(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("token", &id))?;
    if t.user_id != caller.user.id
        && caller.check(Op::TokenAdmin, None) != warren_api::auth::Decision::Allow
    {
        return Err(ApiError::not_found("token", &id));
    }
    state.store.revoke_token(&id).await?;
    state.tokens.forget_token(&id);
    state
        .pubsub
        .publish(crate::coord::Notice::TokenRevoked(id.clone()));
    let note = AuditNote::target("token", &t.id, &t.name);
    Ok((StatusCode::NO_CONTENT, axum::Extension(note)))
}

async fn team_view(state: &AppState, t: warren_store::TeamRecord) -> ApiResult<Team> {
    let mut members = Vec::new();
    for id in &t.members {
        if let Some(u) = state.store.user(id).await? {
            members.push(u.username);
        }
    }
    members.sort();
    Ok(Team {
        id: t.id,
        name: t.name,
        members,
        created_at: t.created_at,
    })
}

/// Every team (any signed-in user).
#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", security(("token" = [])),
    responses((status = 200, body = [Team])))]
async fn list_teams(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<Team>>> {
    let mut out = Vec::new();
    for t in state.store.teams(&state.org.id).await? {
        out.push(team_view(&state, t).await?);
    }
    Ok(Json(out))
}

/// Creates a team (admins).
#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", security(("token" = [])), request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTeam>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::UserAdmin)?;
    validate_username(&body.name).map_err(|e| {
        ApiError::new(
            e.status,
            e.body.code,
            e.body.message.replace("username", "team name"),
        )
    })?;
    let t = state.store.create_team(&state.org.id, &body.name).await?;
    let note = AuditNote::target("team", &t.id, &t.name);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(team_view(&state, t).await?),
    ))
}

async fn team_for(state: &AppState, name: &str) -> ApiResult<warren_store::TeamRecord> {
    state
        .store
        .team(&state.org.id, name)
        .await?
        .ok_or_else(|| ApiError::not_found("team", name))
}

/// Deletes a team (admins).
#[utoipa::path(delete, path = "/api/v1/teams/{team}", tag = "teams", security(("token" = [])),
    params(("team" = String, Path, description = "team name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::UserAdmin)?;
    let t = team_for(&state, &name).await?;
    state.store.delete_team(&t.id).await?;
    // Its quota goes with it (its workspaces keep their history, charged to the old id).
    state.store.delete_quota("team", &t.id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(AuditNote::target("team", &t.id, &t.name)),
    ))
}

/// Adds a member (admins).
#[utoipa::path(put, path = "/api/v1/teams/{team}/members/{user}", tag = "teams", security(("token" = [])),
    params(("team" = String, Path, description = "team name"), ("user" = String, Path, description = "username")),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
async fn add_team_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((team, user)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    member(state, caller, team, user, true).await
}

/// Removes a member (admins).
#[utoipa::path(delete, path = "/api/v1/teams/{team}/members/{user}", tag = "teams", security(("token" = [])),
    params(("team" = String, Path, description = "team name"), ("user" = String, Path, description = "username")),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
async fn remove_team_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((team, user)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    member(state, caller, team, user, false).await
}

async fn member(
    state: AppState,
    caller: Caller,
    team: String,
    user: String,
    add: bool,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::UserAdmin)?;
    let t = team_for(&state, &team).await?;
    let u = user_for(&state, &user).await?;
    state.store.set_team_member(&t.id, &u.id, add).await?;
    let mut note = AuditNote::target("team", &t.id, &t.name);
    note.details_json = Some(serde_json::json!({ "member": u.username, "added": add }).to_string());
    let t = team_for(&state, &team).await?;
    Ok((axum::Extension(note), Json(team_view(&state, t).await?)))
}
