//! `warren server`: runs the control plane (REST API, metrics, reconciler), `warren server init`
//! initialises it and prints the first admin token, `warren server openapi` prints the API
//! document.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_server::config::{ConfigLayer, ServerConfig};

use crate::output::user_error;

/// `warren server` options. Each can also come from the environment (`WARREN_*`) or the config
/// file; flags win over the environment, which wins over the file.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(subcommand)]
    cmd: Option<ServerCmd>,
    /// Configuration file (TOML).
    #[arg(long, env = "WARREN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT [default: 127.0.0.1:7080].
    #[arg(long, env = "WARREN_LISTEN", global = true)]
    listen: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, env = "WARREN_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "WARREN_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// Default lifetime of new tokens [default: 30d].
    #[arg(long, env = "WARREN_TOKEN_DEFAULT_TTL", global = true)]
    token_default_ttl: Option<String>,
    /// Maximum lifetime of tokens [default: 90d].
    #[arg(long, env = "WARREN_TOKEN_MAX_TTL", global = true)]
    token_max_ttl: Option<String>,
    /// Largest request body in bytes [default: 64 MiB].
    #[arg(long, env = "WARREN_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<u64>,
    /// Largest file or tar upload through the toolbox API in bytes [default: 1 GiB].
    #[arg(long, env = "WARREN_TOOLBOX_MAX_UPLOAD", global = true)]
    toolbox_max_upload: Option<u64>,
    /// URL clients reach the server at [default: from --listen].
    #[arg(long, env = "WARREN_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// How often the reconciler runs [default: 30s].
    #[arg(long, env = "WARREN_RECONCILE_INTERVAL", global = true)]
    reconcile_interval: Option<String>,
    /// How often lifecycle policies (idle, deadlines, TTL, schedules) are applied [default: 1s].
    #[arg(long, env = "WARREN_POLICY_INTERVAL", global = true)]
    policy_interval: Option<String>,
    /// Grant workspaces the added capabilities, privileged mode or unconfined seccomp their
    /// devcontainer.json asks for [default: false: such workspaces are refused].
    #[arg(long, env = "WARREN_ALLOW_PRIVILEGES", global = true, num_args = 0..=1, default_missing_value = "true")]
    allow_privileges: Option<bool>,
    /// SSH gateway address, IP:PORT, or `off` [default: 127.0.0.1:2222].
    #[arg(long, env = "WARREN_SSH_LISTEN", global = true)]
    ssh_listen: Option<String>,
    /// How long an SSH connection may take to authenticate [default: 60s].
    #[arg(long, env = "WARREN_SSH_LOGIN_GRACE", global = true)]
    ssh_login_grace: Option<String>,
    /// How long a web terminal's process waits for its client to reconnect [default: 5m].
    #[arg(long, env = "WARREN_TERMINAL_GRACE", global = true)]
    terminal_grace: Option<String>,
    /// Wildcard base domain for subdomain preview URLs (`preview.example.com`, whose
    /// `*.preview.example.com` reach this server) [default: path-form previews only].
    #[arg(long, env = "WARREN_PREVIEW_DOMAIN", global = true)]
    preview_domain: Option<String>,
    /// Widest sharing level of workspace ports: owner, organization or public
    /// [default: organization].
    #[arg(long, env = "WARREN_MAX_PORT_SHARING", global = true)]
    max_port_sharing: Option<String>,
    /// Cost units per hour of a running workspace whose template declares no `cost`, uploaded
    /// folders (`warren up DIR`) included [default: 0, free].
    #[arg(long, env = "WARREN_DEFAULT_RUNNING_COST", global = true)]
    default_running_cost: Option<f64>,
    /// Cost units per hour of a stopped workspace whose template declares no `cost`
    /// [default: 0, free].
    #[arg(long, env = "WARREN_DEFAULT_STOPPED_COST", global = true)]
    default_stopped_cost: Option<f64>,
    /// Warren's bridge on this host [default: `warren0`, or the next free `warrenN`].
    #[arg(long, env = "WARREN_NETWORK_BRIDGE", global = true)]
    network_bridge: Option<String>,
    /// Warren's address pool, an IPv4 CIDR [default: a free /20 in 10.208.0.0/12].
    #[arg(long, env = "WARREN_NETWORK_SUBNET", global = true)]
    network_subnet: Option<String>,
    /// Upstream resolvers of Warren's DNS resolver, `IP[:PORT]`, comma-separated [default: the
    /// host's /etc/resolv.conf].
    #[arg(long, env = "WARREN_DNS_UPSTREAM", global = true)]
    dns_upstream: Option<String>,
    /// The 32-byte key secrets are encrypted with [default: STATE/secret.key, made at the first
    /// start].
    #[arg(long, env = "WARREN_SECRET_KEY_FILE", global = true)]
    secret_key_file: Option<PathBuf>,
    /// Tasks running at once per user; more wait queued [default: 4].
    #[arg(long, env = "WARREN_MAX_TASKS_PER_USER", global = true)]
    max_tasks_per_user: Option<u32>,
    /// Tasks running at once per team [default: 8].
    #[arg(long, env = "WARREN_MAX_TASKS_PER_TEAM", global = true)]
    max_tasks_per_team: Option<u32>,
    /// Tasks running at once on the server [default: 16].
    #[arg(long, env = "WARREN_MAX_TASKS", global = true)]
    max_tasks: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum ServerCmd {
    /// Initialise the database and print a one-time token for the first user (an owner).
    Init {
        /// The first user's name.
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// Print the OpenAPI document.
    Openapi,
}

/// Runs `warren server ...`.
pub async fn run(
    a: ServerArgs,
    state_dir: Option<PathBuf>,
    runtime: Option<String>,
    exe: PathBuf,
) -> Result<u8> {
    if matches!(a.cmd, Some(ServerCmd::Openapi)) {
        println!("{}", warren_server::app::openapi_json());
        return Ok(0);
    }
    let given = ConfigLayer {
        listen: a.listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        state_dir,
        runtime,
        token_default_ttl: a.token_default_ttl,
        token_max_ttl: a.token_max_ttl,
        max_body_bytes: a.max_body_bytes,
        toolbox_max_upload: a.toolbox_max_upload,
        public_url: a.public_url,
        reconcile_interval: a.reconcile_interval,
        policy_interval: a.policy_interval,
        allow_privileges: a.allow_privileges,
        ssh_listen: a.ssh_listen,
        ssh_login_grace: a.ssh_login_grace,
        terminal_grace: a.terminal_grace,
        preview_domain: a.preview_domain,
        max_port_sharing: a.max_port_sharing,
        default_running_cost: a.default_running_cost,
        default_stopped_cost: a.default_stopped_cost,
        default_network: None,
        network_bridge: a.network_bridge,
        network_subnet: a.network_subnet,
        dns_upstream: a.dns_upstream,
        secret_key_file: a.secret_key_file,
        max_tasks_per_user: a.max_tasks_per_user,
        max_tasks_per_team: a.max_tasks_per_team,
        max_tasks: a.max_tasks,
    };
    let file = match &a.config {
        Some(p) => ConfigLayer::from_file(p)
            .map_err(|e| user_error(e, "fix the file; keys are the long flag names with _"))?,
        None => ConfigLayer::default(),
    };
    let cfg = ServerConfig::resolve(given.over(file))
        .map_err(|e| user_error(e, "see `warren server --help`"))?;
    let listen = cfg.listen;
    let state = warren_server::serve::open(cfg, exe).await.map_err(|e| {
        user_error(
            e,
            "check --state-dir (WARREN_STATE_DIR): it must be a writable directory on a local filesystem",
        )
    })?;
    if let Some(ServerCmd::Init { admin }) = a.cmd {
        match warren_server::serve::init_admin(&state, &admin)
            .await
            .map_err(|e| user_error(e, "check the username: DNS-label rules"))?
        {
            Some(token) => {
                eprintln!("Initialised. The first user is `{admin}` (owner). Its token, shown only this once:");
                println!("{token}");
            }
            None => eprintln!(
                "Already initialised: the database has users. `warren token create` makes tokens."
            ),
        }
        return Ok(0);
    }
    if let Some(token) = warren_server::serve::init_admin(&state, "admin")
        .await
        .map_err(|e| user_error(e, "the database could not be initialised"))?
    {
        eprintln!("First start: created user `admin` (owner). Its token, shown only this once:\n\n    {token}\n\nSign in with: warren login {} --token <token>\n", state.cfg.public_url);
    }
    // Before the port opens: a SIGTERM from then on is a graceful shutdown.
    let shutdown = warren_server::serve::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        user_error(
            format!("cannot listen on {listen}: {e}"),
            "pick another address with --listen (WARREN_LISTEN)",
        )
    })?;
    eprintln!(
        "warren server listening on {} (API {}/api/v1)",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        state.cfg.public_url
    );
    warren_server::serve::serve(state, listener, shutdown)
        .await
        .map_err(|e| user_error(e, "see the lines above"))?;
    Ok(0)
}
