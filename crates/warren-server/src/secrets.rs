//! Secrets and workspace credentials (issue 8).
//!
//! - Values are encrypted at rest with AES-256-GCM (`ring`) under the server key (`STATE/secret.key`,
//!   32 random bytes, 0600, made at the first start; `secret_key_file` overrides where it is). Each
//!   value has a fresh random nonce, and the associated data binds `scope|scope_id|name`, so a
//!   ciphertext copied to another row does not decrypt. The API never returns a value.
//! - A workspace's requested secrets are resolved (the owner's own, then their teams', then the
//!   workspace's template's) at create, to refuse unknown names, and again at every start, when
//!   [`Source`] hands them to the engine, which writes them as files in `/run/secrets`.
//! - A workspace credential is a token of the workspace's owner with `workspace:read` and
//!   `workspace:exec`, restricted to that workspace and marked `workspace_credential`; it is kept
//!   encrypted as the workspace's own `warren-token` secret, so that a restart writes it again.
//!   Deleting the workspace revokes every one of them ([`revoke_workspace`]).
//! - The agent socket (`STATE/workspaces/<id>/agent/agent.sock`, `/run/warren/agent.sock` inside):
//!   one JSON request per connection. `git-credential` answers a `git` secret the workspace asked
//!   for whose host matches, only for a live credential of exactly that workspace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_api::auth::{Scope, ScopeSet};
use warren_engine::{SecretFiles, SecretSource};
use warren_store::{SecretRecord, WorkspaceRecord};

use crate::app::AppState;
use crate::error::{tracing_log, ApiError, ApiResult};

/// The largest secret value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// The most secrets a workspace may ask for.
pub const MAX_PER_WORKSPACE: usize = 32;
/// The file (and the workspace's own secret) holding its credential.
pub const TOKEN_NAME: &str = "warren-token";
/// The default and longest lifetime of a workspace credential.
pub const CREDENTIAL_DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// The longest lifetime of a workspace credential.
pub const CREDENTIAL_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The socket's file name in the agent directory.
pub const AGENT_SOCKET: &str = "agent.sock";

/// The server key.
pub struct Keyring {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Keyring {
    /// Reads the key at `path`, making it (32 random bytes, 0600) when there is none.
    pub fn open(path: &Path) -> Result<Keyring, String> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                rng.fill(&mut b)
                    .map_err(|_| "no randomness for the secret key".to_string())?;
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
                f.write_all(&b)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
                // Never replace a key another process made meanwhile.
                std::fs::hard_link(&tmp, path).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(format!("cannot create {}: {e}", path.display()))
                    }
                })?;
                let _ = std::fs::remove_file(&tmp);
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the secret key {}: {e}",
                    path.display()
                ))
            }
        };
        if bytes.len() != 32 {
            return Err(format!(
                "the secret key {} must hold exactly 32 bytes (it has {})",
                path.display(),
                bytes.len()
            ));
        }
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| "the secret key is not a valid AES-256 key".to_string())?;
        Ok(Keyring {
            key: LessSafeKey::new(key),
            rng,
        })
    }

    fn aad(scope: &str, scope_id: &str, name: &str) -> Vec<u8> {
        format!("{scope}|{scope_id}|{name}").into_bytes()
    }

    /// Encrypts `value` for the row (scope, scope_id, name): (nonce, ciphertext with tag).
    pub fn seal(
        &self,
        scope: &str,
        scope_id: &str,
        name: &str,
        value: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ApiError::internal("no randomness"))?;
        let mut buf = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(scope, scope_id, name)),
                &mut buf,
            )
            .map_err(|_| ApiError::internal("encryption failed"))?;
        Ok((nonce.to_vec(), buf))
    }

    /// Decrypts a stored secret (fails if it was moved to another row or altered).
    pub fn open_secret(&self, s: &SecretRecord) -> Result<Vec<u8>, String> {
        let nonce = Nonce::try_assume_unique_for_key(&s.nonce)
            .map_err(|_| format!("secret {}: bad nonce", s.id))?;
        let mut buf = s.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(Self::aad(&s.scope, &s.scope_id, &s.name)),
                &mut buf,
            )
            .map_err(|_| {
                format!(
                    "secret {} does not decrypt (another server key, or altered)",
                    s.id
                )
            })?;
        Ok(plain.to_vec())
    }
}

/// The server's secrets state: the key and the agent sockets it serves.
pub struct Secrets {
    /// The key.
    pub keyring: Keyring,
    agents: Mutex<HashMap<String, AgentListener>>,
}

struct AgentListener {
    path: PathBuf,
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Secrets {
    /// Opens the key at `key_file`.
    pub fn open(key_file: &Path) -> Result<Secrets, String> {
        Ok(Secrets {
            keyring: Keyring::open(key_file)?,
            agents: Mutex::new(HashMap::new()),
        })
    }

    /// Stops serving a workspace's agent socket and removes it.
    pub fn stop_agent(&self, ws_id: &str) {
        let gone = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ws_id);
        if let Some(l) = gone {
            l.task.abort();
            let _ = std::fs::remove_file(&l.path);
        }
    }

    /// Stops every agent socket (shutdown).
    pub fn stop_all_agents(&self) {
        let all: Vec<AgentListener> = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in all {
            l.task.abort();
        }
    }
}

/// The engine's [`SecretSource`]: the server's store and key.
pub struct Source(pub AppState);

impl SecretSource for Source {
    fn secrets_for<'a>(
        &'a self,
        rec: &'a WorkspaceRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<SecretFiles, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let state = &self.0;
            ensure_agent(state, rec);
            files_for(state, rec).await.map_err(|e| e.body.message)
        })
    }
}

async fn files_for(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<SecretFiles> {
    let mut out = SecretFiles::default();
    for name in state.store.workspace_secrets(&rec.id).await? {
        match resolve(state, rec, &name).await? {
            Some(s) => {
                let value = state
                    .secrets
                    .keyring
                    .open_secret(&s)
                    .map_err(ApiError::internal)?;
                out.files.push((name, value));
            }
            None => out.warnings.push(format!(
                "secret `{name}` no longer exists: /run/secrets/{name} is not written"
            )),
        }
    }
    // Its credential, while it works.
    if let Some(s) = state.store.secret("workspace", &rec.id, TOKEN_NAME).await? {
        if let Ok(value) = state.secrets.keyring.open_secret(&s) {
            let live = match std::str::from_utf8(&value)
                .ok()
                .and_then(crate::auth::parse_token)
            {
                Some((id, _)) => credential_live(state, id, &rec.id).await,
                None => false,
            };
            if live {
                out.files.push((TOKEN_NAME.to_string(), value));
            }
        }
    }
    Ok(out)
}

/// Refuses a workspace credential (a token Warren minted for a workspace's own processes):
/// it must not see, make or revoke its owner's tokens, so code in the workspace cannot copy it
/// into a token that outlives the workspace, or revoke the owner's other tokens.
pub async fn refuse_workspace_credential(
    state: &AppState,
    caller: &crate::auth::Caller,
) -> ApiResult<()> {
    if caller.principal.workspaces.is_some()
        && state
            .store
            .token_workspace_credential(&caller.token.id)
            .await?
            .is_some()
    {
        return Err(ApiError::forbidden(
            "a workspace credential cannot list, create or revoke tokens",
        )
        .hint("use your own token (warren login)"));
    }
    Ok(())
}

/// Whether token `id` is a live credential of workspace `ws_id`.
async fn credential_live(state: &AppState, id: &str, ws_id: &str) -> bool {
    let Ok(caller) = crate::auth::caller_for_token_id(state, id).await else {
        return false;
    };
    restricted_to(&caller, ws_id)
        && matches!(state.store.token_workspace_credential(id).await, Ok(Some(w)) if w == ws_id)
}

fn restricted_to(caller: &crate::auth::Caller, ws_id: &str) -> bool {
    matches!(&caller.principal.workspaces, Some(w) if w.len() == 1 && w.contains(ws_id))
}

/// A secret name a workspace may ask for: `[A-Za-z0-9._-]`, 1 to 64, not starting with a dot, not
/// Warren's own `warren-token`.
pub fn check_name(name: &str) -> ApiResult<()> {
    if !warren_engine::secrets::valid_secret_name(name) {
        return Err(ApiError::bad_request(format!(
            "invalid secret name `{name}`: use 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.`"
        ))
        .hint("the name is also the file name under /run/secrets"));
    }
    if name == TOKEN_NAME {
        return Err(ApiError::bad_request(format!(
            "`{TOKEN_NAME}` is reserved for the workspace's own credential"
        ))
        .hint("pick another name"));
    }
    Ok(())
}

/// The secret `name` as workspace `rec` sees it: its owner's own, else their teams' (by team
/// name), else its template's.
pub async fn resolve(
    state: &AppState,
    rec: &WorkspaceRecord,
    name: &str,
) -> ApiResult<Option<SecretRecord>> {
    resolve_for(
        state,
        &rec.ownership.owner_id,
        rec.ownership.template_id.as_deref(),
        name,
    )
    .await
}

async fn resolve_for(
    state: &AppState,
    owner_id: &str,
    template_id: Option<&str>,
    name: &str,
) -> ApiResult<Option<SecretRecord>> {
    if let Some(s) = state.store.secret("user", owner_id, name).await? {
        return Ok(Some(s));
    }
    let mut teams = state.store.teams(&state.org.id).await?;
    teams.sort_by(|a, b| a.name.cmp(&b.name));
    for t in teams
        .iter()
        .filter(|t| t.members.iter().any(|m| m == owner_id))
    {
        if let Some(s) = state.store.secret("team", &t.id, name).await? {
            return Ok(Some(s));
        }
    }
    if let Some(tid) = template_id {
        if let Some(s) = state.store.secret("template", tid, name).await? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Checks the names a new workspace asks for (valid, distinct, at most 32, each one that its
/// owner may use); 400 naming the first unknown one.
pub async fn check_requested(
    state: &AppState,
    owner_id: &str,
    template_id: Option<&str>,
    names: &[String],
) -> ApiResult<()> {
    if names.len() > MAX_PER_WORKSPACE {
        return Err(ApiError::bad_request(format!(
            "secrets: at most {MAX_PER_WORKSPACE} per workspace ({} given)",
            names.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        check_name(n).map_err(|e| ApiError::bad_request(format!("secrets: {}", e.body.message)))?;
        if !seen.insert(n) {
            return Err(ApiError::bad_request(format!(
                "secrets: `{n}` is named twice"
            )));
        }
        if resolve_for(state, owner_id, template_id, n)
            .await?
            .is_none()
        {
            return Err(ApiError::bad_request(format!("secrets: no secret named `{n}`"))
                .hint("`warren secret list` shows the secrets you can use (yours, your teams', the template's)"));
        }
    }
    Ok(())
}

/// Mints a credential for workspace `rec`: a token of its owner with `workspace:read` and
/// `workspace:exec`, restricted to it, expiring after `ttl` (at most 24 h). It is kept (encrypted)
/// as the workspace's `warren-token`, written to `/run/secrets/warren-token` now if the
/// workspace runs and at every later start.
pub async fn mint_workspace_credential(
    state: &AppState,
    rec: &WorkspaceRecord,
    ttl: Duration,
) -> ApiResult<String> {
    let owner = rec.ownership.owner_id.clone();
    Ok(mint_credential(state, rec, &owner, ttl, None).await?.0)
}

/// [`mint_workspace_credential`] as user `user_id` (who must be allowed to read and exec in the
/// workspace), never outliving `not_after` (the asking token's expiry): the token string and
/// its record.
pub async fn mint_credential(
    state: &AppState,
    rec: &WorkspaceRecord,
    user_id: &str,
    ttl: Duration,
    not_after: Option<&str>,
) -> ApiResult<(String, warren_store::TokenRecord)> {
    let ttl = ttl.min(CREDENTIAL_MAX_TTL);
    let mut expires = crate::routes::users::expires_at(ttl);
    if let Some(cap) = not_after {
        if cap < expires.as_str() {
            expires = cap.to_string();
        }
    }
    let scopes = ScopeSet(
        [Scope::WorkspaceRead, Scope::WorkspaceExec]
            .into_iter()
            .collect(),
    );
    let only: std::collections::BTreeSet<String> = [rec.id.clone()].into_iter().collect();
    let minted = crate::auth::mint(
        user_id,
        &format!("workspace credential: {}", rec.name),
        &scopes,
        Some(&only),
        expires,
    );
    state
        .store
        .create_workspace_credential(&minted.record, &rec.id)
        .await?;
    let (nonce, ciphertext) =
        state
            .secrets
            .keyring
            .seal("workspace", &rec.id, TOKEN_NAME, minted.token.as_bytes())?;
    state
        .store
        .put_secret(&SecretRecord {
            id: String::new(),
            name: TOKEN_NAME.into(),
            scope: "workspace".into(),
            scope_id: rec.id.clone(),
            kind: "generic".into(),
            git_host: None,
            username: None,
            nonce,
            ciphertext,
            created_by: None,
            created_at: String::new(),
            updated_at: String::new(),
        })
        .await?;
    if let Ok(fresh) = state
        .engine
        .get(warren_engine::WsRef::Id(rec.id.clone()))
        .await
    {
        if fresh.state == warren_api::WorkspaceState::Running {
            state
                .engine
                .put_secret(&fresh, TOKEN_NAME, minted.token.as_bytes())
                .await?;
        }
    }
    Ok((minted.token, minted.record))
}

/// Revokes every credential of a workspace (the token cache forgets them at once), removes its
/// own secrets and stops its agent socket: the first step of deleting it.
pub async fn revoke_workspace(state: &AppState, ws_id: &str) -> ApiResult<()> {
    let ids = state.store.revoke_workspace_credentials(ws_id).await?;
    for id in ids {
        state.tokens.forget_token(&id);
        state.pubsub.publish(crate::coord::Notice::TokenRevoked(id));
    }
    state.store.delete_secrets_of("workspace", ws_id).await?;
    state.secrets.stop_agent(ws_id);
    Ok(())
}

/// The git arguments that make git ask Warren's credential helper, and no other (`-c
/// credential.helper=` clears the configured ones): put them right after `git`.
pub fn git_helper_args(engine: &warren_engine::Engine) -> Vec<String> {
    let argv = engine.tool_command(&[crate::secrets::GIT_CREDENTIAL]);
    let cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    vec![
        "-c".into(),
        "credential.helper=".into(),
        "-c".into(),
        format!("credential.helper=!{}", cmd.join(" ")),
    ]
}

/// The in-workspace subcommand implementing git's credential-helper protocol.
pub const GIT_CREDENTIAL: &str = "__git-credential";

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---- the agent socket ----

/// Serves the agent socket of a workspace (idempotent: a listener whose socket file is still in
/// place is kept). Nothing happens when its directory does not exist (not created on this host,
/// or a gVisor workspace).
pub fn ensure_agent(state: &AppState, rec: &WorkspaceRecord) {
    if rec.ownership.owner_id.is_empty() {
        return;
    }
    let dir = state
        .cfg
        .state_dir
        .join("workspaces")
        .join(&rec.id)
        .join("agent");
    if !dir.is_dir() {
        return;
    }
    let path = dir.join(AGENT_SOCKET);
    let mut agents = state
        .secrets
        .agents
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(l) = agents.get(&rec.id) {
        let same = std::fs::symlink_metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == l.inode)
            .unwrap_or(false);
        if same && !l.task.is_finished() {
            return;
        }
        l.task.abort();
    }
    agents.remove(&rec.id);
    let _ = std::fs::remove_file(&path);
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing_log(&format!("agent socket {}: {e}", path.display()));
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
    }
    let inode = std::fs::symlink_metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
        return;
    };
    let (st, ws_id) = (state.clone(), rec.id.clone());
    let task = tokio::spawn(async move {
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                drop(conn);
                continue;
            };
            let (st, ws_id) = (st.clone(), ws_id.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), serve_conn(&st, &ws_id, conn))
                        .await;
            });
        }
    });
    agents.insert(rec.id.clone(), AgentListener { path, inode, task });
}

/// Serves the agent sockets of every workspace of this server whose directory exists (at start).
pub async fn ensure_all_agents(state: &AppState) {
    let Ok(all) = state.store.list().await else {
        return;
    };
    for rec in all.iter().filter(|r| !r.ownership.owner_id.is_empty()) {
        ensure_agent(state, rec);
    }
}

#[derive(serde::Deserialize)]
struct AgentRequest {
    op: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    host: String,
}

async fn serve_conn(state: &AppState, ws_id: &str, mut conn: tokio::net::UnixStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() <= 64 * 1024 && !buf.contains(&b'\n') {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = match serde_json::from_slice::<AgentRequest>(
        buf.split(|b| *b == b'\n').next().unwrap_or_default(),
    ) {
        Ok(req) if req.op == "git-credential" => git_credential(state, ws_id, &req).await,
        Ok(req) => serde_json::json!({ "error": format!("unknown op `{}`", req.op) }),
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let _ = conn.write_all(answer.to_string().as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// A host name git could send: `name[:port]`, at most 253 + 6 characters of `[a-z0-9.-]`.
fn plausible_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Refusals recorded per workspace and minute: a workspace asking in a loop gets this many
/// `session.credential_use` refusals in the audit log a minute, not one per request.
const REFUSALS_PER_MINUTE: u32 = 30;

/// Whether one more refusal of workspace `ws_id` is recorded this minute.
fn refusal_recorded(ws_id: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<String, (u64, u32)>>> = Mutex::new(None);
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0);
    let mut g = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    map.retain(|_, (m, _)| *m == minute);
    let e = map.entry(ws_id.to_string()).or_insert((minute, 0));
    e.1 += 1;
    e.1 <= REFUSALS_PER_MINUTE
}

async fn git_credential(state: &AppState, ws_id: &str, req: &AgentRequest) -> serde_json::Value {
    use crate::session_audit::SessionEvent;
    let nothing = serde_json::json!({});
    let host = req.host.trim().to_ascii_lowercase();
    let Ok(Some(rec)) = state.store.get(ws_id).await else {
        return nothing;
    };
    // Git sends a host name (and maybe a port); anything else is not git's, and is not worth a
    // record in the audit log a workspace could otherwise fill with whatever it likes.
    if !plausible_host(&host) {
        return nothing;
    }
    let refused = |caller: Option<crate::auth::Caller>| {
        let (rec, host) = (rec.clone(), host.clone());
        async move {
            if !refusal_recorded(&rec.id) {
                return;
            }
            crate::session_audit::record(
                state,
                &rec,
                caller.as_ref(),
                SessionEvent::CredentialUsed {
                    host,
                    secret: None,
                    granted: false,
                },
            )
            .await;
        }
    };
    // A live (unrevoked, unexpired, its user active) credential of exactly this workspace.
    let token = req.token.trim();
    let Some((id, _)) = crate::auth::parse_token(token) else {
        refused(None).await;
        return nothing;
    };
    let Ok(caller) = crate::auth::authenticate(state, token).await else {
        refused(None).await;
        return nothing;
    };
    if !credential_live(state, id, ws_id).await || host.is_empty() {
        refused(Some(caller)).await;
        return nothing;
    }
    let names = state
        .store
        .workspace_secrets(ws_id)
        .await
        .unwrap_or_default();
    for name in names {
        let Ok(Some(s)) = resolve(state, &rec, &name).await else {
            continue;
        };
        if s.kind != "git"
            || s.git_host.as_deref().map(str::to_ascii_lowercase) != Some(host.clone())
        {
            continue;
        }
        let Ok(value) = state.secrets.keyring.open_secret(&s) else {
            continue;
        };
        let Ok(password) = String::from_utf8(value) else {
            continue;
        };
        crate::session_audit::record(
            state,
            &rec,
            Some(&caller),
            SessionEvent::CredentialUsed {
                host: host.clone(),
                secret: Some(name.clone()),
                granted: true,
            },
        )
        .await;
        return serde_json::json!({
            "username": s.username.clone().unwrap_or_else(|| "x-access-token".into()),
            "password": password,
        });
    }
    refused(Some(caller)).await;
    nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_names_git_could_send_are_considered() {
        for ok in ["github.com", "git.example.org:8443", "198.19.1.2", "a-b.c"] {
            assert!(plausible_host(ok), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            ":80",
            "h:",
            "h:123456",
            "h:8x",
            "UPPER.com",
            "a b",
            "a/b",
            &long,
        ] {
            assert!(!plausible_host(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_are_recorded_a_bounded_number_of_times_a_minute() {
        let ws = format!("ws-{}", uuid::Uuid::new_v4().simple());
        let recorded = (0..100).filter(|_| refusal_recorded(&ws)).count();
        // At most the limit (fewer only if the minute turned meanwhile, then at most twice it).
        assert!(
            (REFUSALS_PER_MINUTE as usize..=2 * REFUSALS_PER_MINUTE as usize).contains(&recorded),
            "{recorded}"
        );
        assert!(refusal_recorded("another-workspace"));
    }
}
