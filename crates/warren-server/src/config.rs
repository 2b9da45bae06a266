//! Server configuration: flags, then `WARREN_*` environment variables, then a TOML file, then
//! defaults — in that order of precedence. The binary parses flags and environment (clap);
//! [`ServerConfig::resolve`] layers the file and the defaults under them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Settings as given (every field optional): one layer of configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Address to listen on (`127.0.0.1:7080`).
    pub listen: Option<String>,
    /// TLS certificate chain (PEM). With `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// State directory (database, images, workspaces).
    pub state_dir: Option<PathBuf>,
    /// OCI runtime for workspaces.
    pub runtime: Option<String>,
    /// Lifetime of a token created without an explicit one (`30d`).
    pub token_default_ttl: Option<String>,
    /// The longest lifetime a token may have (`90d`).
    pub token_max_ttl: Option<String>,
    /// Largest accepted request body in bytes (uploads included).
    pub max_body_bytes: Option<u64>,
    /// Largest file or tar upload through the toolbox API in bytes (default 1 GiB).
    pub toolbox_max_upload: Option<u64>,
    /// The URL clients use to reach the server (shown in device-login instructions).
    pub public_url: Option<String>,
    /// How often the reconciler runs (`30s`).
    pub reconcile_interval: Option<String>,
    /// How often lifecycle policies are applied (`1s`).
    pub policy_interval: Option<String>,
    /// Whether workspace configurations may ask for added capabilities, privileged mode or an
    /// unconfined seccomp profile (default false: such workspaces are refused).
    pub allow_privileges: Option<bool>,
    /// Address of the SSH gateway (`127.0.0.1:2222`), or `off`.
    pub ssh_listen: Option<String>,
    /// How long an SSH connection may take to authenticate (`60s`).
    pub ssh_login_grace: Option<String>,
    /// How long a web terminal's process waits for its client to reconnect (`5m`).
    pub terminal_grace: Option<String>,
    /// Wildcard base domain of subdomain preview URLs (`preview.example.com`: DNS and the TLS
    /// certificate cover `*.preview.example.com`). Unset: path-form preview URLs only.
    pub preview_domain: Option<String>,
    /// The widest sharing level users may give a port: `owner`, `organization` (default) or
    /// `public`.
    pub max_port_sharing: Option<String>,
    /// Cost units per hour of a running workspace whose template declares no `cost` (uploaded
    /// folders included) (default 0: free).
    pub default_running_cost: Option<f64>,
    /// Cost units per hour of a stopped workspace whose template declares no `cost` (default 0).
    pub default_stopped_cost: Option<f64>,
    /// The network policy of workspaces whose template has none (uploaded folders included);
    /// default `allow-all`: the public internet, nothing private.
    pub default_network: Option<warren_api::net::NetworkPolicy>,
    /// Warren's bridge (default: `warren0`, or the next free `warrenN`).
    pub network_bridge: Option<String>,
    /// Warren's address pool, an IPv4 CIDR (default: a free /20 in 10.208.0.0/12).
    pub network_subnet: Option<String>,
    /// Upstream resolvers of Warren's DNS resolver, `IP[:PORT]` separated by commas (default:
    /// the host's `/etc/resolv.conf`).
    pub dns_upstream: Option<String>,
    /// The key secrets are encrypted with (32 bytes; default `STATE/secret.key`, made at the
    /// first start).
    pub secret_key_file: Option<PathBuf>,
    /// Tasks running at once per user (default 4); more wait queued.
    pub max_tasks_per_user: Option<u32>,
    /// Tasks running at once per team (default 8).
    pub max_tasks_per_team: Option<u32>,
    /// Tasks running at once on the server (default 16).
    pub max_tasks: Option<u32>,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate and key, when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// State directory.
    pub state_dir: PathBuf,
    /// OCI runtime name.
    pub runtime: String,
    /// Default token lifetime.
    pub token_default_ttl: Duration,
    /// Maximum token lifetime.
    pub token_max_ttl: Duration,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Largest toolbox upload (file or tar), in bytes; streamed, never held in memory.
    pub toolbox_max_upload: u64,
    /// Public URL.
    pub public_url: String,
    /// Reconciler period.
    pub reconcile_interval: Duration,
    /// How often lifecycle policies are applied.
    pub policy_interval: Duration,
    /// Workspaces may be granted privileges their configuration asks for.
    pub allow_privileges: bool,
    /// SSH gateway address; `None` when it is off.
    pub ssh_listen: Option<SocketAddr>,
    /// Time an SSH connection has to authenticate before it is dropped.
    pub ssh_login_grace: Duration,
    /// How long a web terminal with no client keeps its process for a reconnect.
    pub terminal_grace: Duration,
    /// Base domain of subdomain preview URLs (lowercase, no leading dot).
    pub preview_domain: Option<String>,
    /// The widest sharing level a port may have.
    pub max_port_sharing: warren_api::ports::PortSharing,
    /// The rates of workspaces whose template declares no `cost` (uploaded folders included).
    pub default_cost: warren_api::template::CostRates,
    /// The network policy of workspaces whose template has none.
    pub default_network: warren_api::net::NetworkPolicy,
    /// Warren's network on this host, as asked for.
    pub network: warren_runtime::network::NetRequest,
    /// The secrets key file (default `STATE/secret.key`).
    pub secret_key_file: Option<PathBuf>,
    /// Concurrency limits of tasks: per user, per team, in all.
    pub task_limits: TaskLimits,
}

/// How many tasks may run at once (provisioning, running or collecting); the rest wait queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    /// Per user.
    pub per_user: u32,
    /// Per team (the team charged).
    pub per_team: u32,
    /// In all.
    pub total: u32,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7080";

/// Default SSH gateway address.
pub const DEFAULT_SSH_LISTEN: &str = "127.0.0.1:2222";

impl ConfigLayer {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            format!(
                "config file {}: {}",
                path.display(),
                e.to_string().lines().collect::<Vec<_>>().join(" ")
            )
        })
    }

    /// `self` where set, else `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: self.listen.or(lower.listen),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            state_dir: self.state_dir.or(lower.state_dir),
            runtime: self.runtime.or(lower.runtime),
            token_default_ttl: self.token_default_ttl.or(lower.token_default_ttl),
            token_max_ttl: self.token_max_ttl.or(lower.token_max_ttl),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            toolbox_max_upload: self.toolbox_max_upload.or(lower.toolbox_max_upload),
            public_url: self.public_url.or(lower.public_url),
            reconcile_interval: self.reconcile_interval.or(lower.reconcile_interval),
            policy_interval: self.policy_interval.or(lower.policy_interval),
            allow_privileges: self.allow_privileges.or(lower.allow_privileges),
            ssh_listen: self.ssh_listen.or(lower.ssh_listen),
            ssh_login_grace: self.ssh_login_grace.or(lower.ssh_login_grace),
            terminal_grace: self.terminal_grace.or(lower.terminal_grace),
            preview_domain: self.preview_domain.or(lower.preview_domain),
            max_port_sharing: self.max_port_sharing.or(lower.max_port_sharing),
            default_running_cost: self.default_running_cost.or(lower.default_running_cost),
            default_stopped_cost: self.default_stopped_cost.or(lower.default_stopped_cost),
            default_network: self.default_network.or(lower.default_network),
            network_bridge: self.network_bridge.or(lower.network_bridge),
            network_subnet: self.network_subnet.or(lower.network_subnet),
            dns_upstream: self.dns_upstream.or(lower.dns_upstream),
            secret_key_file: self.secret_key_file.or(lower.secret_key_file),
            max_tasks_per_user: self.max_tasks_per_user.or(lower.max_tasks_per_user),
            max_tasks_per_team: self.max_tasks_per_team.or(lower.max_tasks_per_team),
            max_tasks: self.max_tasks.or(lower.max_tasks),
        }
    }
}

impl ServerConfig {
    /// Resolves `given` (flags over environment over file) with defaults for the rest.
    pub fn resolve(given: ConfigLayer) -> Result<ServerConfig, String> {
        let dur = |v: &Option<String>, what: &str, default: &str| -> Result<Duration, String> {
            let s = v.as_deref().unwrap_or(default);
            warren_api::template::parse_duration(s).map_err(|e| format!("{what} `{s}`: {e}"))
        };
        let listen_s = given.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            format!("listen address `{listen_s}` is not IP:PORT (e.g. 127.0.0.1:7080 or [::]:7080)")
        })?;
        let tls = match (given.tls_cert, given.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(
                    "TLS needs both a certificate and a key (--tls-cert and --tls-key)".into(),
                )
            }
        };
        let token_default_ttl = dur(&given.token_default_ttl, "token_default_ttl", "30d")?;
        let token_max_ttl = dur(&given.token_max_ttl, "token_max_ttl", "90d")?;
        if token_default_ttl > token_max_ttl {
            return Err(format!(
                "token_default_ttl ({}) is longer than token_max_ttl ({})",
                warren_api::template::format_duration(token_default_ttl),
                warren_api::template::format_duration(token_max_ttl)
            ));
        }
        let ssh_s = given.ssh_listen.as_deref().unwrap_or(DEFAULT_SSH_LISTEN);
        let ssh_listen = if ssh_s == "off" {
            None
        } else {
            Some(ssh_s.parse::<SocketAddr>().map_err(|_| {
                format!("ssh_listen `{ssh_s}` is not IP:PORT or `off` (e.g. 127.0.0.1:2222)")
            })?)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let preview_domain = match given.preview_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(parse_preview_domain(d)?),
        };
        let max_port_sharing = match given.max_port_sharing.as_deref() {
            None => warren_api::ports::PortSharing::Organization,
            Some(s) => s.parse().map_err(|e| format!("max_port_sharing: {e}"))?,
        };
        let default_cost = warren_api::template::CostRates {
            running_per_hour: given.default_running_cost,
            stopped_per_hour: given.default_stopped_cost,
        };
        default_cost.validate().map_err(|e| {
            e.replace("running_per_hour", "default_running_cost")
                .replace("stopped_per_hour", "default_stopped_cost")
        })?;
        let default_network = given.default_network.unwrap_or_default();
        default_network
            .check()
            .map_err(|e| format!("default_network: {e}"))?;
        let network = warren_runtime::network::NetRequest::parse(
            given.network_bridge.as_deref(),
            given.network_subnet.as_deref(),
            given.dns_upstream.as_deref(),
        )?;
        let limit = |v: Option<u32>, name: &str, default: u32| match v {
            Some(0) => Err(format!("{name}: must be at least 1")),
            v => Ok(v.unwrap_or(default)),
        };
        let task_limits = TaskLimits {
            per_user: limit(given.max_tasks_per_user, "max_tasks_per_user", 4)?,
            per_team: limit(given.max_tasks_per_team, "max_tasks_per_team", 8)?,
            total: limit(given.max_tasks, "max_tasks", 16)?,
        };
        Ok(ServerConfig {
            secret_key_file: given.secret_key_file,
            task_limits,
            default_cost,
            default_network,
            network,
            public_url: given
                .public_url
                .unwrap_or_else(|| format!("{scheme}://{listen}"))
                .trim_end_matches('/')
                .to_string(),
            listen,
            tls,
            state_dir: given
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/warren")),
            runtime: given.runtime.unwrap_or_else(|| "libcontainer".into()),
            token_default_ttl,
            token_max_ttl,
            max_body_bytes: usize::try_from(given.max_body_bytes.unwrap_or(64 << 20))
                .unwrap_or(usize::MAX),
            toolbox_max_upload: given.toolbox_max_upload.unwrap_or(1 << 30),
            reconcile_interval: dur(&given.reconcile_interval, "reconcile_interval", "30s")?,
            policy_interval: dur(&given.policy_interval, "policy_interval", "1s")?,
            allow_privileges: given.allow_privileges.unwrap_or(false),
            ssh_listen,
            ssh_login_grace: dur(&given.ssh_login_grace, "ssh_login_grace", "60s")?,
            terminal_grace: dur(&given.terminal_grace, "terminal_grace", "5m")?,
            preview_domain,
            max_port_sharing,
        })
    }
}

impl ServerConfig {
    /// The plan of workspaces whose template has no network policy.
    pub fn default_egress_plan(&self) -> Result<warren_runtime::network::EgressPlan, String> {
        warren_engine::network::plan_of(&self.default_network)
            .map_err(|e| format!("default_network: {e}"))
    }
}

/// A preview base domain: DNS labels of `[a-z0-9-]`, at least two, no leading or trailing dot.
fn parse_preview_domain(d: &str) -> Result<String, String> {
    let d = d.to_ascii_lowercase();
    let d = d.strip_prefix("*.").unwrap_or(&d).to_string();
    let labels: Vec<&str> = d.split('.').collect();
    let ok = labels.len() >= 2
        && d.len() <= 200
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "preview_domain `{d}` is not a domain name (e.g. preview.example.com, whose \
             subdomains *.preview.example.com reach this server)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_env_over_file_over_defaults() {
        let file = ConfigLayer {
            listen: Some("127.0.0.1:1".into()),
            runtime: Some("runc".into()),
            token_max_ttl: Some("100d".into()),
            ..Default::default()
        };
        let env = ConfigLayer {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let flags = ConfigLayer {
            runtime: Some("runsc".into()),
            ..Default::default()
        };
        let c = ServerConfig::resolve(flags.over(env.over(file))).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:2");
        assert_eq!(c.runtime, "runsc");
        assert_eq!(c.token_max_ttl, Duration::from_secs(100 * 86400));
        assert_eq!(c.token_default_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.public_url, "http://127.0.0.1:2");
        assert_eq!(c.ssh_listen.unwrap().to_string(), DEFAULT_SSH_LISTEN);
        let c = ServerConfig::resolve(
            ConfigLayer {
                ssh_listen: Some("off".into()),
                ..Default::default()
            }
            .over(ConfigLayer {
                ssh_listen: Some("127.0.0.1:3".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(c.ssh_listen, None);
        let e = ServerConfig::resolve(ConfigLayer {
            ssh_listen: Some("2222".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("ssh_listen"), "{e}");
    }

    #[test]
    fn preview_settings() {
        let c = ServerConfig::resolve(ConfigLayer::default()).unwrap();
        assert_eq!(c.preview_domain, None);
        assert_eq!(
            c.max_port_sharing,
            warren_api::ports::PortSharing::Organization
        );
        let c = ServerConfig::resolve(ConfigLayer {
            preview_domain: Some("*.Preview.Example.com".into()),
            max_port_sharing: Some("public".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.preview_domain.as_deref(), Some("preview.example.com"));
        assert_eq!(c.max_port_sharing, warren_api::ports::PortSharing::Public);
        for bad in ["localhost", "a..b", "-a.b", "a_b.c", "a.b/c"] {
            let e = ServerConfig::resolve(ConfigLayer {
                preview_domain: Some(bad.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.contains("preview_domain"), "{bad}: {e}");
        }
        let e = ServerConfig::resolve(ConfigLayer {
            max_port_sharing: Some("world".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("max_port_sharing") && e.contains("`world`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = ServerConfig::resolve(ConfigLayer {
            listen: Some("localhost".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("localhost"), "{e}");
        let e = ServerConfig::resolve(ConfigLayer {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("--tls-key"), "{e}");
        let e = ServerConfig::resolve(ConfigLayer {
            token_default_ttl: Some("100d".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let e = ServerConfig::resolve(ConfigLayer {
            terminal_grace: Some("soon".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("terminal_grace"), "{e}");
        for (running, stopped, field) in [
            (Some(-1.0), None, "default_running_cost"),
            (None, Some(f64::NAN), "default_stopped_cost"),
        ] {
            let e = ServerConfig::resolve(ConfigLayer {
                default_running_cost: running,
                default_stopped_cost: stopped,
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn default_costs_come_from_the_file_and_default_to_free() {
        let c = ServerConfig::resolve(ConfigLayer::default()).unwrap();
        assert!(c.default_cost.is_free());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warren.toml");
        std::fs::write(
            &p,
            "default_running_cost = 2.5\ndefault_stopped_cost = 0.1\n",
        )
        .unwrap();
        let c = ServerConfig::resolve(ConfigLayer::from_file(&p).unwrap()).unwrap();
        assert_eq!(c.default_cost.running_per_hour, Some(2.5));
        assert_eq!(c.default_cost.stopped_per_hour, Some(0.1));
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warren.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\nlisten_port = 3\n").unwrap();
        let e = ConfigLayer::from_file(&p).unwrap_err();
        assert!(e.contains("listen_port"), "{e}");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\n").unwrap();
        assert_eq!(
            ConfigLayer::from_file(&p).unwrap().listen.as_deref(),
            Some("127.0.0.1:9")
        );
    }
}
