//! Authentication: API tokens (`wrn_<id>_<secret>`) presented as `Authorization: Bearer`, or,
//! on a WebSocket upgrade (browsers cannot set that header), as a `warren.bearer.<token>` entry of
//! `Sec-WebSocket-Protocol`.
//!
//! The secret is 32 random bytes; only its SHA-256 is stored, and it is compared in constant
//! time. A token works only while it is unexpired, unrevoked and its user is not suspended.
//! Lookups are cached for a few seconds; every change made through this server (revocation,
//! role change, suspension) invalidates the cache at once, so revocation is immediate.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warren_api::auth::{Decision, Forbidden, Op, Principal, Role, ScopeSet};
use warren_store::{TokenRecord, UserRecord};

use crate::app::AppState;
use crate::audit::ActorSlot;
use crate::error::ApiError;

/// Token strings start with this.
pub const TOKEN_PREFIX: &str = "wrn_";

/// How long a cached token lookup is trusted for changes made outside this process.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// A freshly minted token: its record and the one-time string shown to the user.
pub struct Minted {
    /// The stored record.
    pub record: TokenRecord,
    /// `wrn_<id>_<secret>`: shown once, never stored.
    pub token: String,
}

/// SHA-256 hex of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A random secret: 32 bytes, base64url without padding.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Builds a token record (not yet stored) for `user_id`.
pub fn mint(
    user_id: &str,
    name: &str,
    scopes: &ScopeSet,
    workspaces: Option<&BTreeSet<String>>,
    expires_at: String,
) -> Minted {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = random_secret();
    let record = TokenRecord {
        id: id.clone(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        secret_sha256: hash_secret(&secret),
        scopes_json: serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into()),
        workspaces_json: workspaces
            .map(|w| serde_json::to_string(w).unwrap_or_else(|_| "[]".into())),
        created_at: warren_store::now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    Minted {
        record,
        token: format!("{TOKEN_PREFIX}{id}_{secret}"),
    }
}

/// Splits a token string into (id, secret), or None when malformed.
pub fn parse_token(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_at_checked(32)?;
    let secret = secret.strip_prefix('_')?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return None;
    }
    Some((id, secret))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: UserRecord,
    /// The token used.
    pub token: TokenRecord,
    /// Role, scopes and workspace restriction.
    pub principal: Principal,
}

impl Caller {
    /// Decides `op` on the workspace owned by `owner_id` with id `ws_id` (or no workspace).
    pub fn check(&self, op: Op, ws_id: Option<&str>) -> Decision {
        warren_api::auth::decide(&self.principal, op, ws_id)
    }

    /// Requires `op` (not about a workspace), mapping refusals to 403.
    pub fn require(&self, op: Op) -> Result<(), ApiError> {
        match self.check(op, None) {
            Decision::Allow => Ok(()),
            Decision::Hidden => Err(ApiError::forbidden("this token may not do that")),
            Decision::Forbidden(f) => Err(forbidden(f)),
        }
    }
}

/// The 403 for a refusal.
pub fn forbidden(f: Forbidden) -> ApiError {
    match f {
        Forbidden::Role => ApiError::forbidden("your role does not permit this")
            .hint("an organization owner or admin can change roles (`warren user set-role`)"),
        Forbidden::Scope(s) => ApiError::forbidden(format!("this token lacks the `{s}` scope"))
            .hint(format!(
                "create a token with it: warren token create --scope {s}"
            )),
    }
}

/// Cache of token lookups.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, TokenRecord, UserRecord)>>,
}

impl TokenCache {
    fn get(&self, id: &str) -> Option<(TokenRecord, UserRecord)> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|(at, _, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, t, u)| (t.clone(), u.clone()))
    }
    fn put(&self, t: TokenRecord, u: UserRecord) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(t.id.clone(), (Instant::now(), t, u));
    }
    /// Forgets one token.
    pub fn forget_token(&self, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
    /// Forgets everything.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    /// Forgets every token of a user.
    pub fn forget_user(&self, user_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, _, u)| u.id != user_id);
    }
}

/// Authenticates a bearer token string.
pub async fn authenticate(state: &AppState, raw: &str) -> Result<Caller, ApiError> {
    let (id, secret) = parse_token(raw).ok_or_else(|| {
        ApiError::unauthenticated("malformed token: expected `wrn_` followed by an id and a secret")
    })?;
    let (token, user) = load(state, id).await?;
    let given = hash_secret(secret);
    if !bool::from(given.as_bytes().ct_eq(token.secret_sha256.as_bytes())) {
        return Err(ApiError::unauthenticated("unknown token"));
    }
    finish(state, token, user)
}

/// The caller of the token with id `id`, checked as [`authenticate`] checks it (unrevoked,
/// unexpired, active user) but without its secret: for credentials the server itself handed out
/// on the token's behalf (a preview session).
pub async fn caller_for_token_id(state: &AppState, id: &str) -> Result<Caller, ApiError> {
    let (token, user) = load(state, id).await?;
    finish(state, token, user)
}

async fn load(state: &AppState, id: &str) -> Result<(TokenRecord, UserRecord), ApiError> {
    Ok(match state.tokens.get(id) {
        Some(hit) => hit,
        None => {
            let token = state
                .store
                .token(id)
                .await?
                .ok_or_else(|| ApiError::unauthenticated("unknown token"))?;
            let user =
                state.store.user(&token.user_id).await?.ok_or_else(|| {
                    ApiError::unauthenticated("the token's user no longer exists")
                })?;
            state.tokens.put(token.clone(), user.clone());
            (token, user)
        }
    })
}

fn finish(state: &AppState, token: TokenRecord, user: UserRecord) -> Result<Caller, ApiError> {
    if token.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("this token was revoked"));
    }
    let now = warren_store::now();
    if token.expires_at <= now {
        return Err(ApiError::unauthenticated(format!(
            "this token expired at {}",
            token.expires_at
        )));
    }
    if user.suspended {
        return Err(ApiError::unauthenticated("this user is suspended"));
    }
    let role: Role = user
        .role
        .parse()
        .map_err(|e: String| ApiError::internal(format!("user {}: {e}", user.id)))?;
    let scopes: ScopeSet = serde_json::from_str(&token.scopes_json)
        .map_err(|e| ApiError::internal(format!("token {}: scopes: {e}", token.id)))?;
    let workspaces = match &token.workspaces_json {
        None => None,
        Some(j) => Some(
            serde_json::from_str::<BTreeSet<String>>(j)
                .map_err(|e| ApiError::internal(format!("token {}: workspaces: {e}", token.id)))?,
        ),
    };
    state.touch_token(&token.id, &now);
    Ok(Caller {
        principal: Principal {
            role,
            scopes,
            workspaces,
        },
        user,
        token,
    })
}

/// The `Sec-WebSocket-Protocol` entry that carries a token (`warren.bearer.<token>`), for
/// browsers: their WebSocket API cannot set `Authorization`, and a token in the URL would end up
/// in logs and history. The client offers it beside the route's real subprotocol, which is the
/// one the server selects, so the token is never echoed back.
pub const WS_BEARER_PROTOCOL_PREFIX: &str = "warren.bearer.";

/// The bearer token of a request, if any: `Authorization: Bearer`, or, on a WebSocket upgrade
/// without that header, a [`WS_BEARER_PROTOCOL_PREFIX`] subprotocol entry.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return websocket_bearer(parts);
    };
    let s = h.to_str().ok()?;
    s.strip_prefix("Bearer ")
        .or_else(|| s.strip_prefix("bearer "))
        .map(str::trim)
}

/// The token offered as a `warren.bearer.<token>` subprotocol of a WebSocket upgrade.
fn websocket_bearer(parts: &Parts) -> Option<&str> {
    use axum::http::header::{SEC_WEBSOCKET_PROTOCOL, UPGRADE};
    let upgrade = parts.headers.get(UPGRADE)?.to_str().ok()?;
    if parts.method != axum::http::Method::GET || !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    parts
        .headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_BEARER_PROTOCOL_PREFIX))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let raw = bearer(parts).ok_or_else(|| ApiError::unauthenticated("no API token given"))?;
        let caller = authenticate(state, raw).await?;
        if let Some(slot) = parts.extensions.get::<Arc<ActorSlot>>() {
            slot.set(&caller);
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_hash() {
        let m = mint(
            "u",
            "t",
            &Role::Member.scopes(),
            None,
            "9999-01-01T00:00:00.000Z".into(),
        );
        let (id, secret) = parse_token(&m.token).unwrap();
        assert_eq!(id, m.record.id);
        assert_eq!(hash_secret(secret), m.record.secret_sha256);
        assert!(!m.record.secret_sha256.contains(secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "wrn_",
            "token",
            "wrn_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "wrn_0123456789abcdef0123456789abcdef-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "wrn_0123456789abcdef0123456789abcdef_short",
            "wrn_é123456789abcdef0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}
