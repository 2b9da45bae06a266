//! Starting, serving and stopping the server.
//!
//! Graceful shutdown (SIGTERM or SIGINT): `/readyz` turns 503, the listener closes, in-flight
//! requests and running jobs get a grace period, web terminals are hung up (their PTYs belong to
//! this process), and the process exits. Workspaces keep running: their supervisors are separate
//! processes, and the next start reconciles.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use warren_api::auth::Role;
use warren_engine::{Config, Engine};
use warren_runtime::OciRuntime;

use crate::app::{router, AppState};
use crate::auth::{mint, TokenCache};
use crate::config::ServerConfig;
use crate::error::tracing_log;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::routes::users::expires_at;

/// The default organization's name.
pub const DEFAULT_ORG: &str = "default";

/// Opens the engine and the database and prepares the server state. Fails with one line when the
/// database or the state directory is unusable.
pub async fn open(cfg: ServerConfig, exe: PathBuf) -> Result<AppState, String> {
    let oci = OciRuntime::parse(&cfg.runtime);
    let engine = Engine::open(Config {
        state_dir: cfg.state_dir.clone(),
        oci,
        exe,
        owned_may_have_privileges: cfg.allow_privileges,
        network: cfg.network.clone(),
        default_egress: cfg.default_egress_plan()?,
    })
    .await
    .map_err(|e| format!("cannot open the state in {}: {e}", cfg.state_dir.display()))?;
    // The state directory holds the database, uploads and workspaces: the server's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700));
    }
    let store = engine.store().clone();
    let org = store
        .ensure_org(DEFAULT_ORG)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let jobs = Arc::new(Jobs::new(cfg.state_dir.join("jobs")));
    let key_file = cfg
        .secret_key_file
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("secret.key"));
    let secrets = Arc::new(crate::secrets::Secrets::open(&key_file)?);
    let state = AppState {
        engine,
        store: store.clone(),
        cfg: Arc::new(cfg),
        org: Arc::new(org),
        metrics: Arc::new(Metrics::default()),
        tokens: Arc::new(TokenCache::default()),
        pubsub: Arc::new(crate::coord::LocalPubsub::default()),
        locks: Arc::new(crate::coord::LocalLocks::default()),
        jobs,
        shutdown: Arc::new(AtomicBool::new(false)),
        token_uses: Default::default(),
        ssh_addr: Default::default(),
        activity: Arc::new(crate::activity::Activity::new(store.clone())),
        terminals: Default::default(),
        previews: Default::default(),
        governor: Default::default(),
        toolbox: Default::default(),
        event_followers: Default::default(),
        mcp: Default::default(),
        secrets,
        tasks: Default::default(),
    };
    // Secret files are written by the engine at every start, from the server's store and key.
    state
        .engine
        .set_secret_source(Arc::new(crate::secrets::Source(state.clone())));
    Ok(state)
}

/// Creates the first user (`owner` role) and returns a token for it, if there are no users yet.
pub async fn init_admin(state: &AppState, username: &str) -> Result<Option<String>, String> {
    if state.store.user_count().await.map_err(|e| e.to_string())? > 0 {
        return Ok(None);
    }
    let user = state
        .store
        .create_user(
            &state.org.id,
            username,
            Some("Administrator"),
            Role::Owner.as_str(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let minted = mint(
        &user.id,
        "initial admin token",
        &Role::Owner.scopes(),
        None,
        expires_at(state.cfg.token_max_ttl),
    );
    state
        .store
        .create_token(&minted.record)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(minted.token))
}

/// Loads the TLS certificate chain and key.
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    let certs: Vec<_> = {
        let f = std::fs::File::open(cert)
            .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        rustls_pemfile::certs(&mut std::io::BufReader::new(f))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?
    };
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        ));
    }
    let key_der = {
        let f = std::fs::File::open(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
        rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
            .map_err(|e| format!("TLS key {}: {e}", key.display()))?
            .ok_or_else(|| format!("TLS key {}: no private key in the file", key.display()))?
    };
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `shutdown` resolves, then shuts down gracefully. `ready` is told the bound address.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let tls = match &state.cfg.tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    // Jobs of a previous process cannot be running any more.
    match state
        .store
        .fail_orphaned_jobs("the server restarted while it ran")
        .await
    {
        Ok(j) if !j.is_empty() => {
            tracing_log(&format!("{} interrupted job(s) marked failed", j.len()))
        }
        Ok(_) => {}
        Err(e) => return Err(format!("database: {e}")),
    }
    let gateway = match crate::ssh::bind(&state).await? {
        Some((l, key)) => {
            if let Ok(a) = l.local_addr() {
                tracing_log(&format!(
                    "SSH gateway listening on {a} (host key {})",
                    crate::ssh::host_fingerprint(&key)
                ));
            }
            Some(tokio::spawn(crate::ssh::run(state.clone(), l, key)))
        }
        None => None,
    };
    let background = tokio::spawn(background(state.clone()));
    let governor = tokio::spawn(crate::governor::run(
        state.clone(),
        state.cfg.policy_interval,
    ));
    let webhooks = tokio::spawn(crate::webhooks::run(state.clone()));
    let tasks = tokio::spawn(crate::tasks::run(state.clone()));
    let invalidations = tokio::spawn(apply_notices(state.clone()));
    // The agent sockets of the workspaces made before this start.
    crate::secrets::ensure_all_agents(&state).await;
    let app = router(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing_log(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                let app = app.clone();
                async move {
                    Ok::<_, Infallible>(
                        app.oneshot(req.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|e| match e {}),
                    )
                }
            });
        let builder = builder.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
        }
    }
    state.shutdown.store(true, Ordering::Relaxed);
    drop(listener);
    tracing_log("shutting down: waiting for requests and jobs (workspaces keep running)");
    // Web terminals' PTYs are this process's: their processes are hung up, not left behind.
    state.terminals.shutdown(Duration::from_secs(10)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    state.jobs.drain(Duration::from_secs(20)).await;
    background.abort();
    governor.abort();
    webhooks.abort();
    tasks.abort();
    state.tasks.abort_all();
    invalidations.abort();
    state.secrets.stop_all_agents();
    if let Some(g) = gateway {
        g.abort();
    }
    state.flush_token_uses().await;
    Ok(())
}

/// The reconciler loop, token-use flushing and the network denial journal.
async fn background(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_reconcile = tokio::time::Instant::now();
    let _ = state.engine.reconcile().await;
    loop {
        tick.tick().await;
        state.flush_token_uses().await;
        // Refused connections and names become `network.denied` events and session audit
        // records.
        if let Err(e) = state.engine.ingest_denials().await {
            tracing_log(&format!("network denials: {e}"));
        }
        if last_reconcile.elapsed() >= state.cfg.reconcile_interval {
            last_reconcile = tokio::time::Instant::now();
            if let Err(e) = state.engine.reconcile().await {
                tracing_log(&format!("reconcile: {e}"));
            }
            collect_garbage(&state).await;
        }
    }
}

/// How long an uploaded file may wait for the version or workspace that uses it.
const UPLOAD_GRACE: Duration = Duration::from_secs(3600);

/// How long events are kept.
const EVENT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// Removes uploads and ad-hoc versions nothing uses any more, and events past their retention.
async fn collect_garbage(state: &AppState) {
    collect_garbage_before(state, time::OffsetDateTime::now_utc() - UPLOAD_GRACE).await;
    let cutoff = warren_store::format_time(state.store.now_time() - EVENT_RETENTION);
    if let Err(e) = state.store.prune_events(&cutoff).await {
        tracing_log(&format!("event retention: {e}"));
    }
}

/// Removes ad-hoc versions nothing uses, and unused uploads made before `cutoff`.
async fn collect_garbage_before(state: &AppState, cutoff: time::OffsetDateTime) {
    let cutoff = warren_store::format_time(cutoff);
    match state.store.collect_garbage(&cutoff).await {
        Ok(ids) => {
            for id in ids {
                if let Ok(p) = crate::routes::files::file_path(state, &id) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        Err(e) => tracing_log(&format!("garbage collection: {e}")),
    }
}

/// Applies every replica's invalidations to this one's token cache.
async fn apply_notices(state: AppState) {
    use crate::coord::Notice;
    let mut rx = state.pubsub.subscribe();
    loop {
        match rx.recv().await {
            Ok(Notice::TokenRevoked(id)) => state.tokens.forget_token(&id),
            Ok(Notice::UserChanged(id)) => state.tokens.forget_user(&id),
            // Missed notices: forget everything rather than trust a stale entry.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => state.tokens.clear(),
            Err(_) => return,
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives. The handlers are installed when this is called,
/// not when the future is first polled: a signal that arrives while the server answers its
/// first requests must shut it down gracefully, not kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unused_uploads_are_removed_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::resolve(crate::config::ConfigLayer {
            listen: Some("127.0.0.1:0".into()),
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        })
        .unwrap();
        let state = open(cfg, PathBuf::from("/nonexistent/warren"))
            .await
            .unwrap();
        let id = "a".repeat(64);
        let path = crate::routes::files::file_path(&state, &id).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"tar").unwrap();
        state.store.put_file(&id, 3, "u").await.unwrap();
        // Young uploads stay: their version or workspace may be on its way.
        collect_garbage(&state).await;
        assert!(path.exists());
        collect_garbage_before(
            &state,
            time::OffsetDateTime::now_utc() + Duration::from_secs(60),
        )
        .await;
        assert!(!path.exists());
        assert!(!state.store.has_file(&id).await.unwrap());
    }
}
