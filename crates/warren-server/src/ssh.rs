//! The SSH gateway: `ssh -p 2222 WORKSPACE@HOST` runs a shell or a command in one of the key
//! owner's workspaces, through the engine exactly as the API's exec does.
//!
//! - Authentication: a registered public key, looked up by its SHA-256 fingerprint; or an SSH
//!   access token (`wsa_…`, made through the API) as the user name, with the "none" method. The
//!   user must exist and not be suspended.
//! - Authorization: with a key, the SSH user name is `WORKSPACE` (the key's user's) or
//!   `WORKSPACE.OWNER` (another user's), and `warren_api::auth::decide` must allow
//!   `Op::WorkspaceExec` on it with the user's role and its default scopes (the rule the API
//!   applies). A token reaches only its own workspace, with the exec scope alone. Every failure
//!   is the same rejection.
//! - A stopped workspace is started by the first session that needs it, when its template allows
//!   (`start_on_connect`) and the user may start it; progress goes to the channel's stderr.
//! - `direct-tcpip` (`ssh -L`): to the workspace's own loopback only, connected inside its
//!   network namespace.
//! - Sessions: `exec` (`/bin/sh -c COMMAND`), `shell` (`/bin/sh -l`), `pty-req` (TERM and window
//!   size), `window-change`, `env` for an allowlist, `signal`, stdin with EOF, exit-status, and
//!   the `sftp` subsystem (see [`sftp`]); other subsystems are refused.
//! - The host key (ed25519) is made once and kept in `STATE/ssh_host_ed25519_key` (0600).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::{self, HashAlg, LineEnding, PrivateKey};
use russh::server::{Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Sig};
use tokio::sync::mpsc;
use warren_api::auth::{decide, Decision, Op, Owner, Principal, Role};
use warren_api::v1::ExecRequest;
use warren_api::WorkspaceState;
use warren_store::{AuditOutcome, NewAuditRecord, UserRecord, WorkspaceRecord};

use crate::app::AppState;
use crate::error::tracing_log;
use crate::routes::workspaces::exec::{self, hang_up, start, validate, DRAIN, GONE_GRACE};

mod sftp;

/// The host key's file name in the state directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Environment variables a client may set (`SendEnv`); `LC_*` too.
const ENV_ALLOWED: [&str; 3] = ["LANG", "TERM", "COLORTERM"];

/// Bytes of stdin a channel may have waiting for its process. The queue is not bounded by count:
/// a handler that waited on a slow process would stall the whole connection, its output too, and
/// a process that writes before it reads would never get its stdin. Past this, the client waits.
const STDIN_BUDGET: usize = 64 << 20;

/// Connections that have not authenticated yet, in all and from one address (as OpenSSH's
/// MaxStartups): past these, new connections are closed at once.
const MAX_UNAUTHENTICATED: usize = 128;
const MAX_UNAUTHENTICATED_PER_IP: usize = 16;

/// stdin for the writer thread (`None` is EOF), holding its share of the budget until written.
type StdinMsg = (Option<Vec<u8>>, Option<tokio::sync::OwnedSemaphorePermit>);

/// Channels one connection may have open at once.
const MAX_CHANNELS: usize = 16;

/// Port forwards (`direct-tcpip` channels) one connection may have open at once.
const MAX_FORWARDS: usize = 256;

/// How long connecting a forward to its port may take.
const FORWARD_CONNECT: Duration = Duration::from_secs(10);

/// Loads the gateway's host key, making it on first use.
pub fn host_key(state_dir: &Path) -> Result<PrivateKey, String> {
    let path = state_dir.join(HOST_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return PrivateKey::from_openssh(text.as_bytes())
                .map_err(|e| format!("SSH host key {}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("SSH host key {}: {e}", path.display())),
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("SSH host key: {e}"))?;
    let tmp = state_dir.join(format!("{HOST_KEY_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("SSH host key {}: {e}", path.display()))?;
    Ok(key)
}

/// The `SHA256:…` fingerprint of the gateway's host key, as `ssh-keygen -l` prints it.
pub fn host_fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// Binds the gateway's listener (when it is not `off`) and loads the host key.
pub async fn bind(
    state: &AppState,
) -> Result<Option<(tokio::net::TcpListener, PrivateKey)>, String> {
    let Some(addr) = state.cfg.ssh_listen else {
        return Ok(None);
    };
    let key = host_key(&state.cfg.state_dir)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("SSH gateway: cannot listen on {addr}: {e}"))?;
    if let Ok(a) = listener.local_addr() {
        *state.ssh_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
    }
    Ok(Some((listener, key)))
}

/// Accepts SSH connections until the task is aborted.
pub async fn run(state: AppState, listener: tokio::net::TcpListener, key: PrivateKey) {
    let mut methods = MethodSet::empty();
    // "none" is how an access token logs in: the token is the user name.
    methods.push(MethodKind::None);
    methods.push(MethodKind::PublicKey);
    let config = Arc::new(russh::server::Config {
        methods,
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        max_auth_attempts: 6,
        ..Default::default()
    });
    let unauthenticated: Arc<Unauthenticated> = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing_log(&format!("SSH accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(pending) = Pending::take(&unauthenticated, peer.ip()) else {
            tracing_log(&format!(
                "SSH {peer}: too many connections waiting to authenticate; closed"
            ));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let killer = std::os::fd::AsFd::as_fd(&stream)
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from);
        let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = Conn {
            pending: Some(pending),
            authenticated: authenticated.clone(),
            state: state.clone(),
            peer,
            who: None,
            activity: None,
            channels: HashMap::new(),
            forwards: Arc::default(),
            since: None,
            opened: (0, 0),
            client: None,
        };
        let config = config.clone();
        let grace = state.cfg.ssh_login_grace;
        tokio::spawn(async move {
            // A connection that has not authenticated within the grace period is dropped (as
            // OpenSSH's LoginGraceTime), so half-open or dribbling clients cannot pile up.
            let deadline = tokio::time::Instant::now() + grace;
            let running = match tokio::time::timeout_at(
                deadline,
                russh::server::run_stream(config, stream, handler),
            )
            .await
            {
                Ok(Ok(running)) => running,
                Ok(Err(e)) => return tracing_log(&format!("SSH {peer}: {e}")),
                Err(_) => {
                    return tracing_log(&format!("SSH {peer}: no SSH banner within {grace:?}"))
                }
            };
            let unauthenticated = async {
                tokio::time::sleep_until(deadline).await;
                if authenticated.load(std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = running => {}
                () = unauthenticated => {
                    tracing_log(&format!("SSH {peer}: not authenticated within {grace:?}; dropped"));
                    // The session may be waiting for a packet that never completes: shutting the
                    // socket down ends its reads and writes, and with them the session.
                    if let Some(k) = killer {
                        let _ = k.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        });
    }
}

/// Who authenticated, and where to.
struct Who {
    user: UserRecord,
    ws: WorkspaceRecord,
    /// What the user may do: the role's default scopes for a key, narrower for an access token.
    principal: Principal,
    /// How the connection authenticated, checked again before every channel and forward.
    cred: Cred,
    /// For an access token, the API token that made it (the audit's actor token).
    token_id: Option<String>,
}

/// A connection's credential.
#[derive(Clone)]
enum Cred {
    /// A registered key, by id.
    Key(String),
    /// An access token, by the SHA-256 of its secret.
    Token(String),
}

/// The connection's credential checked again, as at login, against the workspace it reached: it
/// must still be valid (key registered to the same user; token live, and its API token too), its
/// user active, and exec still allowed by the user's current role. Revocations, removed keys,
/// suspensions and role changes reach open connections at their next channel.
async fn recheck(state: &AppState, cred: &Cred, user_id: &str, ws_id: &str) -> Result<Who, String> {
    let who = match cred {
        Cred::Key(id) => {
            let k = state
                .store
                .ssh_key(id)
                .await
                .map_err(|e| e.to_string())?
                .filter(|k| k.user_id == user_id)
                .ok_or("the key was removed")?;
            let user = active_user(state, &k.user_id).await?;
            let principal = role_principal(&user)?;
            let ws = state
                .store
                .get(ws_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the workspace no longer exists")?;
            may_exec(&principal, &user, &ws)?;
            Who {
                user,
                ws,
                principal,
                cred: cred.clone(),
                token_id: None,
            }
        }
        Cred::Token(hash) => authorize_token_hash(state, hash).await?,
    };
    if who.ws.id != ws_id || who.user.id != user_id {
        return Err("the credential no longer names this workspace".into());
    }
    Ok(who)
}

/// The user's role with every scope it has (how a registered key acts).
fn role_principal(user: &UserRecord) -> Result<Principal, String> {
    let role: Role = user.role.parse()?;
    Ok(Principal {
        role,
        scopes: role.scopes(),
        workspaces: None,
    })
}

/// A session channel.
struct Chan {
    env: BTreeMap<String, String>,
    /// TERM and (rows, cols) from `pty-req`.
    pty: Option<(String, u16, u16)>,
    /// stdin for the process, queued from the moment it was asked for (the workspace may still
    /// be starting).
    stdin: Option<mpsc::UnboundedSender<StdinMsg>>,
    /// The process, once it runs; shared with the task that starts it.
    live: Arc<std::sync::Mutex<Live>>,
    started: bool,
    stdin_budget: Arc<tokio::sync::Semaphore>,
    /// The subsystem the channel runs (`sftp`), for the audit record.
    subsystem: Option<String>,
}

/// What the handler and the task running a channel's process share.
#[derive(Default)]
struct Live {
    pty_fd: Option<OwnedFd>,
    signaller: Option<warren_runtime::Signaller>,
    /// The latest window size asked for before the PTY existed.
    size: Option<(u16, u16)>,
    /// The process exited.
    exited: bool,
    /// The client closed the channel: a process not started yet must not start.
    gone: bool,
}

fn live(l: &std::sync::Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Chan {
    fn default() -> Chan {
        Chan {
            env: BTreeMap::new(),
            pty: None,
            stdin: None,
            live: Arc::default(),
            started: false,
            stdin_budget: Arc::new(tokio::sync::Semaphore::new(STDIN_BUDGET)),
            subsystem: None,
        }
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        // The client closed the channel or went away: hang up, as a closed terminal would, and
        // SIGKILL after a grace period a process that ignored it.
        let signaller = {
            let mut l = live(&self.live);
            l.gone = true;
            if l.exited {
                return;
            }
            l.signaller.take()
        };
        let Some(s) = signaller else { return };
        hang_up(&s, false);
        let shared = self.live.clone();
        std::thread::spawn(move || {
            std::thread::sleep(GONE_GRACE);
            if !live(&shared).exited {
                let _ = s.signal(9);
            }
        });
    }
}

/// Counts of connections not yet authenticated: in all, and by address.
#[derive(Default)]
struct Unauthenticated(std::sync::Mutex<HashMap<std::net::IpAddr, usize>>);

/// A connection's place among those not yet authenticated; given back on drop.
struct Pending {
    counts: Arc<Unauthenticated>,
    ip: std::net::IpAddr,
}

impl Pending {
    fn take(counts: &Arc<Unauthenticated>, ip: std::net::IpAddr) -> Option<Pending> {
        let mut m = counts.0.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = m.values().sum();
        let mine = m.get(&ip).copied().unwrap_or(0);
        if total >= MAX_UNAUTHENTICATED || mine >= MAX_UNAUTHENTICATED_PER_IP {
            return None;
        }
        *m.entry(ip).or_insert(0) += 1;
        Some(Pending {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// One SSH connection.
struct Conn {
    /// Held until the connection authenticates.
    pending: Option<Pending>,
    /// Set once a user authenticated (the login grace timer then stands down).
    authenticated: Arc<std::sync::atomic::AtomicBool>,
    state: AppState,
    peer: SocketAddr,
    who: Option<Who>,
    /// The connection as an open SSH session on its workspace (idle policies).
    activity: Option<crate::activity::Session>,
    channels: HashMap<ChannelId, Chan>,
    /// Port forwards open now.
    forwards: Arc<std::sync::atomic::AtomicUsize>,
    /// When authentication succeeded, for the session's audit record.
    since: Option<(std::time::Instant, String)>,
    /// Channels and forwards opened, and the client's version, for the same.
    opened: (u32, u32),
    client: Option<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // One record per connection when it ends: who, from where, with what, for how long.
        let (Some(who), Some((t0, at))) = (&self.who, &self.since) else {
            return;
        };
        let record = NewAuditRecord {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            actor_user_id: Some(who.user.id.clone()),
            actor_username: Some(who.user.username.clone()),
            actor_token_id: who.token_id.clone(),
            source_ip: Some(self.peer.ip().to_string()),
            user_agent: self.client.clone(),
            action: "workspace.ssh_session".into(),
            target_type: "workspace".into(),
            target_id: Some(who.ws.id.clone()),
            target_name: Some(who.ws.name.to_string()),
            outcome: AuditOutcome::Success,
            status: 200,
            diff_json: None,
            details_json: Some(
                serde_json::json!({
                    "connected_at": at,
                    "duration_ms": t0.elapsed().as_millis() as u64,
                    "channels": self.opened.0,
                    "forwards": self.opened.1,
                    "auth": if who.principal.workspaces.is_some() { "token" } else { "key" },
                })
                .to_string(),
            ),
        };
        let state = self.state.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { crate::audit::record(&state, record).await });
        }
    }
}

/// Authenticates a public key and authorizes its user for the workspace named by the SSH user
/// name. Why a connection is refused is logged, never told to the client.
async fn authorize_key(
    state: &AppState,
    ssh_user: &str,
    key: &ssh_key::PublicKey,
) -> Result<Who, String> {
    let blob = key.to_bytes().map_err(|e| format!("key: {e}"))?;
    let fp = warren_api::ssh_key::fingerprint(&blob);
    let k = state
        .store
        .ssh_key_by_fingerprint(&fp)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("unknown key {fp}"))?;
    let user = active_user(state, &k.user_id).await?;
    let principal = role_principal(&user)?;
    let ws = workspace_for(state, &user, &principal, ssh_user).await?;
    let _ = state.store.touch_ssh_key(&k.id, &warren_store::now()).await;
    Ok(Who {
        user,
        ws,
        principal,
        cred: Cred::Key(k.id),
        token_id: None,
    })
}

/// Authenticates an SSH access token (the user name): its user, acting only on its workspace and
/// only to exec there.
async fn authorize_token(state: &AppState, token: &str) -> Result<Who, String> {
    authorize_token_hash(state, &crate::auth::hash_secret(token)).await
}

async fn authorize_token_hash(state: &AppState, hash: &str) -> Result<Who, String> {
    let t = state
        .store
        .use_ssh_access(hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("unknown, expired or revoked SSH access token")?;
    let user = active_user(state, &t.user_id).await?;
    let role: Role = user.role.parse()?;
    let principal = Principal {
        role,
        scopes: warren_api::auth::ScopeSet([warren_api::auth::Scope::WorkspaceExec].into()),
        workspaces: Some([t.workspace_id.clone()].into()),
    };
    let ws = state
        .store
        .get(&t.workspace_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the token's workspace is gone")?;
    may_exec(&principal, &user, &ws)?;
    Ok(Who {
        user,
        ws,
        principal,
        cred: Cred::Token(hash.to_string()),
        token_id: t.token_id,
    })
}

/// Whether `principal` (acting as `user`) may exec in `ws`, by the API's rule.
fn may_exec(principal: &Principal, user: &UserRecord, ws: &WorkspaceRecord) -> Result<(), String> {
    let owner = if ws.ownership.owner_id == user.id {
        Owner::Own
    } else {
        Owner::Other
    };
    match decide(principal, Op::WorkspaceExec(owner), Some(&ws.id)) {
        Decision::Allow => Ok(()),
        d => Err(format!(
            "user {}: exec in `{}` refused ({d:?})",
            user.username, ws.name
        )),
    }
}

/// The user, unless unknown or suspended.
async fn active_user(state: &AppState, id: &str) -> Result<UserRecord, String> {
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("user {id}: no such user"))?;
    if user.suspended {
        return Err(format!("user {} is suspended", user.username));
    }
    Ok(user)
}

/// The workspace an SSH user name addresses: `NAME` (one of the user's own) or `NAME.OWNER`
/// (another user's, for those the policy lets exec in it), if `principal` may exec in it.
async fn workspace_for(
    state: &AppState,
    user: &UserRecord,
    principal: &Principal,
    ssh_user: &str,
) -> Result<WorkspaceRecord, String> {
    let (name, owner_id) = match ssh_user.split_once('.') {
        Some((name, owner)) => {
            let owner = state
                .store
                .user_by_name(owner)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no user `{owner}`"))?;
            (name, owner.id)
        }
        None => (ssh_user, user.id.clone()),
    };
    let ws = state
        .store
        .get_by_name(&owner_id, name)
        .await
        .map_err(|e| e.to_string())?
        // Host-local workspaces have no owner and are never the server's to hand out.
        .filter(|r| !r.ownership.owner_id.is_empty() && r.ownership.owner_id == owner_id)
        .ok_or_else(|| format!("user {}: no workspace `{ssh_user}`", user.username))?;
    may_exec(principal, user, &ws)?;
    Ok(ws)
}

fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => 6,
        Sig::ALRM => 14,
        Sig::FPE => 8,
        Sig::HUP => 1,
        Sig::ILL => 4,
        Sig::INT => 2,
        Sig::KILL => 9,
        Sig::PIPE => 13,
        Sig::QUIT => 3,
        Sig::SEGV => 11,
        Sig::TERM => 15,
        Sig::USR1 => 10,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => 12,
            "WINCH" => 28,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            _ => return None,
        },
    })
}

fn env_allowed(name: &str) -> bool {
    ENV_ALLOWED.contains(&name)
        || (name.starts_with("LC_")
            && name.len() > 3
            && name[3..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_'))
}

/// Sends `msg` on the channel's stderr, exit status 1, EOF and close.
async fn fail_now(handle: &russh::server::Handle, channel: ChannelId, msg: &str) {
    let _ = handle
        .extended_data(channel, 1, format!("warren: {msg}\r\n").into_bytes())
        .await;
    let _ = handle.exit_status_request(channel, 1).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

impl Conn {
    /// Starts `argv` on `channel` (an `exec`, `shell` or subsystem request). Replies at once; a
    /// task of its own then starts the workspace if it is stopped (progress on stderr), starts
    /// the process and relays it, so that the connection never waits on either.
    async fn run(
        &mut self,
        channel: ChannelId,
        argv: Vec<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let handle = session.handle();
        let (Some(who), Some(chan)) = (&self.who, self.channels.get_mut(&channel)) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if chan.started {
            session.channel_failure(channel)?;
            return Ok(());
        }
        chan.started = true;
        session.channel_success(channel)?;
        let mut env = chan.env.clone();
        if let Some((term, _, _)) = &chan.pty {
            env.insert("TERM".into(), term.clone());
        }
        let req = ExecRequest {
            command: argv,
            env,
            cwd: None,
            user: None,
            stdin: None,
            timeout: None,
            tty: chan.pty.as_ref().map(|(_, r, c)| (*r, *c)),
            login_shell: false,
        };
        let req = if req.command.is_empty() {
            // A shell: the user's login shell, else bash or sh as `warren shell` picks.
            ExecRequest {
                command: warren_api::v1::shell_fallback(),
                login_shell: true,
                ..req
            }
        } else {
            req
        };
        let (in_tx, in_rx) = mpsc::unbounded_channel::<StdinMsg>();
        chan.stdin = Some(in_tx);
        let job = ChannelJob {
            state: self.state.clone(),
            handle,
            channel,
            user_id: who.user.id.clone(),
            username: who.user.username.clone(),
            principal: who.principal.clone(),
            cred: who.cred.clone(),
            token_id: who.token_id.clone(),
            ws_id: who.ws.id.clone(),
            peer: self.peer,
            client: String::from_utf8_lossy(session.remote_sshid()).into_owned(),
            live: chan.live.clone(),
            subsystem: chan.subsystem.clone(),
        };
        tokio::spawn(job.run(req, in_rx));
        Ok(())
    }
}

/// A channel's process, from the workspace's start to its exit status.
struct ChannelJob {
    state: AppState,
    handle: russh::server::Handle,
    channel: ChannelId,
    user_id: String,
    username: String,
    principal: Principal,
    cred: Cred,
    token_id: Option<String>,
    ws_id: String,
    peer: SocketAddr,
    client: String,
    live: Arc<std::sync::Mutex<Live>>,
    /// The subsystem the channel runs (`sftp`), for the audit record.
    subsystem: Option<String>,
}

impl ChannelJob {
    async fn run(mut self, mut req: ExecRequest, in_rx: mpsc::UnboundedReceiver<StdinMsg>) {
        let (handle, channel) = (self.handle.clone(), self.channel);
        // The credential, the user and the workspace as they are now, not as they were at
        // authentication.
        match recheck(&self.state, &self.cred, &self.user_id, &self.ws_id).await {
            Ok(who) => self.principal = who.principal,
            Err(why) => {
                tracing_log(&format!("SSH {}: channel refused: {why}", self.peer));
                return fail_now(
                    &handle,
                    channel,
                    "access to this workspace was revoked (or the user suspended)",
                )
                .await;
            }
        }
        let rec = match self.ready_workspace().await {
            Ok(r) => r,
            Err(msg) => return fail_now(&handle, channel, &msg).await,
        };
        if live(&self.live).gone {
            return;
        }
        if let (Some(t), Some(size)) = (&mut req.tty, live(&self.live).size) {
            *t = size;
        }
        let started = match validate(&req) {
            Ok(_) => start(&self.state, &self.user_id, &rec, &req).await,
            Err(e) => Err(e),
        };
        // Audited as the API's exec is, with where it came from.
        let audit = NewAuditRecord {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            actor_user_id: Some(self.user_id.clone()),
            actor_username: Some(self.username.clone()),
            actor_token_id: self.token_id.clone(),
            source_ip: Some(self.peer.ip().to_string()),
            user_agent: Some(self.client.clone()),
            action: "workspace.exec".into(),
            target_type: "workspace".into(),
            target_id: Some(rec.id.clone()),
            target_name: Some(rec.name.to_string()),
            outcome: if started.is_ok() {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failure
            },
            status: match &started {
                Ok(_) => 200,
                Err(e) => e.status.as_u16(),
            },
            diff_json: None,
            details_json: Some({
                let mut d = serde_json::json!({"command": req.command, "tty": req.tty.is_some(), "via": "ssh"});
                if let Some(sub) = &self.subsystem {
                    d["subsystem"] = serde_json::json!(sub);
                }
                d.to_string()
            }),
        };
        crate::audit::record(&self.state, audit).await;
        let proc_audit = exec::ProcAudit::new(
            &rec,
            (
                Some(self.user_id.clone()),
                Some(self.username.clone()),
                self.token_id.clone(),
            ),
            &req,
            crate::session_audit::Via::Ssh,
        );
        if started.is_ok() {
            proc_audit.started(&self.state).await;
        }
        let mut started = match started {
            Ok(s) => s,
            Err(e) if self.subsystem.is_some() => {
                return fail_now(&handle, channel, &sftp::explain(&e.body.message)).await
            }
            Err(e) => return fail_now(&handle, channel, &e.body.message).await,
        };
        if let Some(w) = started.stdin.take() {
            // The permit goes back to the budget once its bytes are written.
            let mut in_rx = in_rx;
            let mut held = None;
            exec::stdin_writer(&started, w, move || {
                let (msg, permit) = in_rx.blocking_recv()?;
                drop(std::mem::replace(&mut held, permit));
                Some(msg)
            });
        }
        {
            let mut l = live(&self.live);
            l.pty_fd = started.pty.as_ref().and_then(|p| p.try_clone().ok());
            l.signaller = started.signaller.try_clone().ok();
            if l.gone {
                // The channel closed while the process started.
                if let Some(s) = l.signaller.take() {
                    hang_up(&s, false);
                }
            }
        }
        let send = |chan: u8, bytes: Vec<u8>| {
            let handle = handle.clone();
            async move {
                if chan == 2 {
                    handle.extended_data(channel, 1, bytes).await.is_ok()
                } else {
                    handle.data(channel, bytes).await.is_ok()
                }
            }
        };
        let code = loop {
            tokio::select! {
                Some((c, bytes)) = started.out.recv() => {
                    if !send(c, bytes).await {
                        hang_up(&started.signaller, false);
                    }
                }
                r = &mut started.exit => break r,
            }
        };
        live(&self.live).exited = true;
        while let Ok(Some((c, bytes))) = tokio::time::timeout(DRAIN, started.out.recv()).await {
            if !send(c, bytes).await {
                break;
            }
        }
        let exit_code = match &code {
            Ok(Ok(c)) => Some(*c),
            _ => None,
        };
        proc_audit.ended(&self.state, exit_code, false).await;
        let status = match code {
            Ok(Ok(c)) => u32::try_from(c).unwrap_or(255),
            Ok(Err(e)) => {
                let _ = handle
                    .extended_data(channel, 1, format!("warren: {e}\r\n").into_bytes())
                    .await;
                255
            }
            Err(_) => 255,
        };
        let _ = handle.exit_status_request(channel, status).await;
        let _ = handle.eof(channel).await;
        let _ = handle.close(channel).await;
    }

    /// The workspace, running: started first when it is stopped and its template and the user's
    /// role allow (progress on the channel's stderr). Otherwise why not, for the client.
    async fn ready_workspace(&self) -> Result<WorkspaceRecord, String> {
        let rec = match self.state.store.get(&self.ws_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the workspace no longer exists".into()),
            Err(e) => return Err(e.to_string()),
        };
        if rec.state == WorkspaceState::Running {
            return Ok(rec);
        }
        let not_running = |rec: &WorkspaceRecord| {
            format!(
                "workspace `{}` is {}, not running; start it with `warren start {}`",
                rec.name, rec.state, rec.name
            )
        };
        let startable = matches!(rec.state, WorkspaceState::Stopped | WorkspaceState::Failed);
        let owner = if rec.ownership.owner_id == self.user_id {
            Owner::Own
        } else {
            Owner::Other
        };
        let may_start =
            decide(&self.principal, Op::WorkspaceWrite(owner), Some(&rec.id)) == Decision::Allow;
        if !startable || !may_start || !start_on_connect(&self.state, &rec).await {
            return Err(not_running(&rec));
        }
        let say = |line: String| {
            let handle = self.handle.clone();
            let channel = self.channel;
            async move {
                let _ = handle
                    .extended_data(channel, 1, format!("{line}\r\n").into_bytes())
                    .await;
            }
        };
        say(format!("warren: starting workspace `{}`...", rec.name)).await;
        let job = crate::routes::workspaces::spawn_start(
            &self.state,
            &rec,
            Some(&self.user_id),
            warren_api::policy::Reason::OnConnect,
        )
        .await
        .map_err(|e| match e.body.hint {
            Some(h) => format!("{} (hint: {h})", e.body.message),
            None => e.body.message,
        })?;
        crate::audit::record(
            &self.state,
            NewAuditRecord {
                request_id: uuid::Uuid::new_v4().simple().to_string(),
                actor_user_id: Some(self.user_id.clone()),
                actor_username: Some(self.username.clone()),
                actor_token_id: None,
                source_ip: Some(self.peer.ip().to_string()),
                user_agent: Some(self.client.clone()),
                action: "workspace.start".into(),
                target_type: "workspace".into(),
                target_id: Some(rec.id.clone()),
                target_name: Some(rec.name.to_string()),
                outcome: AuditOutcome::Success,
                status: 202,
                diff_json: None,
                details_json: Some(
                    serde_json::json!({"job": job.id, "via": "ssh", "on_connect": true})
                        .to_string(),
                ),
            },
        )
        .await;
        if let Some(mut lines) = self.state.jobs.follow(&job.id) {
            while let Ok((_, line)) = lines.recv().await {
                say(format!("warren: {}", line.trim_end())).await;
            }
        }
        // The job has finished (its log closed); its record says how.
        for _ in 0..100 {
            match self.state.store.job(&job.id).await {
                Ok(Some(j)) if j.status == "succeeded" => break,
                Ok(Some(j)) if j.status == "failed" || j.status == "canceled" => {
                    return Err(format!(
                        "starting workspace `{}` failed: {}",
                        rec.name,
                        j.error.unwrap_or_else(|| j.status.clone())
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        match self.state.store.get(&self.ws_id).await {
            Ok(Some(r)) if r.state == WorkspaceState::Running => Ok(r),
            Ok(Some(r)) => Err(not_running(&r)),
            Ok(None) => Err("the workspace no longer exists".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Where a `direct-tcpip` request may go: a port on the workspace's own loopback, nothing else
/// (no other workspace, no host, no network beyond).
fn forward_target(host: &str, port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let ip: std::net::IpAddr = match host {
        "localhost" | "ip4-localhost" | "ip4-loopback" => std::net::Ipv4Addr::LOCALHOST.into(),
        "ip6-localhost" | "ip6-loopback" => std::net::Ipv6Addr::LOCALHOST.into(),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?,
    };
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

/// An `ssh -L` connection to a port inside the workspace.
struct Forward {
    state: AppState,
    ws_id: String,
    cred: Cred,
    user_id: String,
    username: String,
    peer: SocketAddr,
    originator: String,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Forward {
    async fn run(
        self,
        channel: Channel<Msg>,
        target: SocketAddr,
        reply: russh::server::ChannelOpenHandle,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let connected = self.connect(target).await;
        let outcome = match &connected {
            Ok(_) => AuditOutcome::Success,
            Err(_) => AuditOutcome::Failure,
        };
        crate::audit::record(
            &self.state,
            NewAuditRecord {
                request_id: uuid::Uuid::new_v4().simple().to_string(),
                actor_user_id: Some(self.user_id.clone()),
                actor_username: Some(self.username.clone()),
                actor_token_id: None,
                source_ip: Some(self.peer.ip().to_string()),
                user_agent: None,
                action: "workspace.port_forward".into(),
                target_type: "workspace".into(),
                target_id: Some(self.ws_id.clone()),
                target_name: None,
                outcome,
                status: if connected.is_ok() { 200 } else { 502 },
                diff_json: None,
                details_json: Some(
                    serde_json::json!({
                        "port": target.port(),
                        "address": target.ip().to_string(),
                        "via": "ssh",
                        "originator": self.originator,
                        "error": connected.as_ref().err(),
                    })
                    .to_string(),
                ),
            },
        )
        .await;
        match connected {
            Ok(mut tcp) => {
                reply.accept().await;
                let _activity = self
                    .state
                    .activity
                    .session(&self.ws_id, warren_api::activity::ActivityKind::Port);
                let mut stream = channel.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
            }
            Err(why) => {
                tracing_log(&format!("SSH {}: forward to {target}: {why}", self.peer));
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            }
        }
        self.count.fetch_sub(1, SeqCst);
    }

    /// A connection to `target` made inside the workspace's network namespace.
    async fn connect(&self, target: SocketAddr) -> Result<tokio::net::TcpStream, String> {
        recheck(&self.state, &self.cred, &self.user_id, &self.ws_id).await?;
        let fd = self
            .state
            .engine
            .tcp_socket(
                warren_engine::WsRef::Id(self.ws_id.clone()),
                target.is_ipv6(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        match tokio::time::timeout(FORWARD_CONNECT, socket.connect(target)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(format!("connect to port {}: {e}", target.port())),
            Err(_) => Err(format!("connect to port {}: timed out", target.port())),
        }
    }
}

/// Whether the workspace's template lets a connection start it (the default).
async fn start_on_connect(state: &AppState, rec: &WorkspaceRecord) -> bool {
    crate::governor::policy_for(state, rec)
        .await
        .map_or(true, |p| p.start_on_connect)
}

impl Conn {
    /// Accepts an authorized connection; logs why another was refused (never told the client).
    fn decided(&mut self, authorized: Result<Who, String>) -> Auth {
        match authorized {
            Ok(who) => self.accepted(who),
            Err(why) => {
                tracing_log(&format!("SSH {}: refused: {why}", self.peer));
                Auth::reject()
            }
        }
    }

    fn accepted(&mut self, who: Who) -> Auth {
        self.since = Some((std::time::Instant::now(), warren_store::now()));
        self.authenticated
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.pending = None;
        self.activity = Some(
            self.state
                .activity
                .session(&who.ws.id, warren_api::activity::ActivityKind::Ssh),
        );
        self.who = Some(who);
        Auth::Accept
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if !user.starts_with(crate::routes::workspaces::ssh_access::PREFIX) {
            // A workspace name: the client goes on to its keys.
            return Ok(Auth::reject());
        }
        let decided = authorize_token(&self.state, user).await;
        Ok(self.decided(decided))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let decided = authorize_key(&self.state, user, key.public_key).await;
        Ok(self.decided(decided))
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(who) = &self.who else {
            return Ok(());
        };
        let Some(target) = forward_target(host_to_connect, port_to_connect) else {
            tracing_log(&format!(
                "SSH {}: refused a forward to {host_to_connect:?}:{port_to_connect} (only the workspace's own loopback)",
                self.peer
            ));
            tokio::spawn(reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited));
            return Ok(());
        };
        if self.forwards.load(std::sync::atomic::Ordering::SeqCst) >= MAX_FORWARDS {
            tokio::spawn(reply.reject(russh::ChannelOpenFailure::ResourceShortage));
            return Ok(());
        }
        self.opened.1 += 1;
        // Counted here, not in the task, so a burst of requests cannot pass the limit.
        self.forwards
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let forward = Forward {
            state: self.state.clone(),
            ws_id: who.ws.id.clone(),
            cred: who.cred.clone(),
            user_id: who.user.id.clone(),
            username: who.user.username.clone(),
            peer: self.peer,
            originator: originator_address.chars().take(64).collect(),
            count: self.forwards.clone(),
        };
        tokio::spawn(forward.run(channel, target, reply));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.who.is_none() || self.channels.len() >= MAX_CHANNELS {
            // Dropping the handle rejects the channel.
            return Ok(());
        }
        self.channels.insert(channel.id(), Chan::default());
        self.opened.0 += 1;
        self.client
            .get_or_insert_with(|| String::from_utf8_lossy(session.remote_sshid()).into_owned());
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = |v: u32, default: u16| match u16::try_from(v) {
            Ok(0) | Err(_) => default,
            Ok(v) => v,
        };
        match self.channels.get_mut(&channel) {
            Some(c) if !c.started && term.len() <= 64 && !term.contains('\0') => {
                let term = if term.is_empty() { "xterm" } else { term };
                c.pty = Some((term.to_string(), size(row_height, 24), size(col_width, 80)));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(c)
                if !c.started
                    && env_allowed(variable_name)
                    && !variable_value.contains('\0')
                    && variable_value.len() <= 4096
                    && c.env.len() < 64 =>
            {
                c.env
                    .insert(variable_name.to_string(), variable_value.to_string());
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.run(channel, Vec::new(), session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match String::from_utf8(data.to_vec()) {
            Ok(cmd) if !cmd.contains('\0') => {
                self.run(channel, vec!["/bin/sh".into(), "-c".into(), cmd], session)
                    .await
            }
            _ => {
                session.channel_failure(channel)?;
                Ok(())
            }
        }
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (name, self.channels.get_mut(&channel)) {
            (sftp::SUBSYSTEM, Some(c)) if !c.started => {
                // Binary data on pipes: a PTY asked for earlier would mangle it.
                c.pty = None;
                c.subsystem = Some(name.to_string());
                let argv = sftp::argv(&self.state);
                self.run(channel, argv, session).await
            }
            _ => {
                session.channel_failure(channel)?;
                Ok(())
            }
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Ok(rows), Ok(cols)) = (u16::try_from(row_height), u16::try_from(col_width)) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        match self.channels.get_mut(&channel) {
            Some(c) if rows > 0 && cols > 0 => {
                let mut l = live(&c.live);
                if let Some(fd) = &l.pty_fd {
                    let _ = warren_runtime::tty::set_window_size(fd.as_fd(), rows, cols);
                } else if c.started {
                    l.size = Some((rows, cols));
                } else if let Some(p) = &mut c.pty {
                    p.1 = rows;
                    p.2 = cols;
                }
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(c), Some(n)) = (self.channels.get(&channel), signal_number(&signal)) {
            let l = live(&c.live);
            if let (Some(s), false) = (&l.signaller, l.exited) {
                let _ = s.signal(n);
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(c) = self.channels.get(&channel) else {
            return Ok(());
        };
        if let Some(tx) = c.stdin.clone() {
            let n = u32::try_from(data.len().min(STDIN_BUDGET)).unwrap_or(u32::MAX);
            let permit = c.stdin_budget.clone().acquire_many_owned(n).await.ok();
            // A process that no longer reads stdin just loses the rest.
            let _ = tx.send((Some(data.to_vec()), permit));
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.stdin.clone()) {
            let _ = tx.send((None, None));
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = host_key(dir.path()).unwrap();
        let b = host_key(dir.path()).unwrap();
        assert_eq!(host_fingerprint(&a), host_fingerprint(&b));
        assert!(host_fingerprint(&a).starts_with("SHA256:"));
        let mode = std::fs::metadata(dir.path().join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            host_fingerprint(&a),
            host_fingerprint(&host_key(other.path()).unwrap())
        );
    }

    #[test]
    fn forwards_reach_only_the_workspace_loopback() {
        for (host, port, want) in [
            ("localhost", 8080, Some("127.0.0.1:8080")),
            ("127.0.0.1", 22, Some("127.0.0.1:22")),
            ("127.1.2.3", 80, Some("127.1.2.3:80")),
            ("::1", 443, Some("[::1]:443")),
            ("[::1]", 443, Some("[::1]:443")),
            ("ip6-localhost", 1, Some("[::1]:1")),
            ("localhost", 0, None),
            ("localhost", 65536, None),
            ("10.0.0.1", 80, None),
            ("169.254.169.254", 80, None),
            ("0.0.0.0", 80, None),
            ("example.com", 80, None),
            ("localhost.evil.com", 80, None),
            ("", 80, None),
            ("::ffff:127.0.0.1", 80, None),
        ] {
            assert_eq!(
                forward_target(host, port).map(|a| a.to_string()).as_deref(),
                want,
                "{host}:{port}"
            );
        }
    }

    #[test]
    fn env_allowlist() {
        for ok in ["LANG", "TERM", "COLORTERM", "LC_ALL", "LC_CTYPE"] {
            assert!(env_allowed(ok), "{ok}");
        }
        for no in ["PATH", "LD_PRELOAD", "LC_", "LC_x", "HOME", "lang"] {
            assert!(!env_allowed(no), "{no}");
        }
    }
}
