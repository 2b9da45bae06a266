//! `warren net`: what a workspace may reach. Its base policy (the template's, or the server's
//! default) always applies; its own policy applies on top, so a connection must pass both.

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_api::net::{EgressMode, NetworkPolicy};
use warren_api::v1::NetworkStatus;

use crate::client::Client;
use crate::output::user_error;

/// `warren net`.
#[derive(Subcommand, Debug)]
pub(crate) enum NetCmd {
    /// Show the workspace's base and own network policies, its address and refused connections.
    Show {
        /// Workspace name.
        workspace: String,
    },
    /// Replace the workspace's own network policy.
    Set(NetSetArgs),
    /// Add allow rules to the workspace's own policy (without one, it becomes an allowlist: the
    /// workspace then reaches only what its rules name).
    Allow {
        /// Workspace name.
        workspace: String,
        /// Rules: `IP`, `CIDR`, `domain`, `*.domain` or `workspace:NAME`, each with an optional
        /// `:PORT` or `:LOW-HIGH`.
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Add deny rules to the workspace's own policy (without one, it becomes `allow-all` minus
    /// these).
    Deny {
        /// Workspace name.
        workspace: String,
        /// Rules, as for `allow`.
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Drop the workspace's own policy: the base policy alone applies.
    Reset {
        /// Workspace name.
        workspace: String,
    },
}

/// `warren net set`.
#[derive(Args, Debug)]
pub(crate) struct NetSetArgs {
    /// Workspace name.
    pub workspace: String,
    /// `allow-all` (everything public but the deny rules), `deny-all` or `allowlist`.
    #[arg(long, default_value = "allow-all")]
    pub egress: String,
    /// An allow rule (repeatable).
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// A deny rule (repeatable).
    #[arg(long = "deny", value_name = "RULE")]
    pub deny: Vec<String>,
    /// Bandwidth limit of traffic leaving the workspace (megabits per second).
    #[arg(long, value_name = "MBIT")]
    pub egress_mbit: Option<u32>,
    /// Bandwidth limit of traffic entering the workspace (megabits per second).
    #[arg(long, value_name = "MBIT")]
    pub ingress_mbit: Option<u32>,
    /// Most connections open at once.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
}

fn mode(s: &str) -> Result<EgressMode> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        user_error(
            format!("--egress `{s}` is not a mode"),
            "modes: allow-all, deny-all, allowlist",
        )
    })
}

/// `warren net ...`.
pub(crate) async fn net(c: &Client, cmd: NetCmd, json: bool) -> Result<u8> {
    let status = match cmd {
        NetCmd::Show { workspace } => c.network(&workspace).await?,
        NetCmd::Reset { workspace } => c.reset_network(&workspace).await?,
        NetCmd::Set(a) => {
            let p = NetworkPolicy {
                egress: mode(&a.egress)?,
                allow: a.allow,
                deny: a.deny,
                egress_mbit: a.egress_mbit,
                ingress_mbit: a.ingress_mbit,
                max_connections: a.max_connections,
            };
            c.set_network(&a.workspace, &p).await?
        }
        NetCmd::Allow { workspace, rules } => {
            let mut own = c.network(&workspace).await?.own.unwrap_or(NetworkPolicy {
                egress: EgressMode::Allowlist,
                ..Default::default()
            });
            own.allow.extend(rules);
            c.set_network(&workspace, &own).await?
        }
        NetCmd::Deny { workspace, rules } => {
            let mut own = c.network(&workspace).await?.own.unwrap_or_default();
            own.deny.extend(rules);
            c.set_network(&workspace, &own).await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", describe(&status));
    }
    Ok(0)
}

fn mode_name(m: EgressMode) -> &'static str {
    match m {
        EgressMode::AllowAll => {
            "allow-all (public addresses; private, link-local and metadata \
                                 ranges only where an allow rule opens them)"
        }
        EgressMode::DenyAll => "deny-all",
        EgressMode::Allowlist => "allowlist",
    }
}

fn policy_lines(p: &NetworkPolicy, out: &mut String) {
    out.push_str(&format!("  egress: {}\n", mode_name(p.egress)));
    if !p.allow.is_empty() {
        out.push_str(&format!("  allow:  {}\n", p.allow.join(", ")));
    }
    if !p.deny.is_empty() {
        out.push_str(&format!("  deny:   {}\n", p.deny.join(", ")));
    }
    let mut limits = Vec::new();
    if let Some(m) = p.egress_mbit {
        limits.push(format!("out {m} Mbit/s"));
    }
    if let Some(m) = p.ingress_mbit {
        limits.push(format!("in {m} Mbit/s"));
    }
    if let Some(n) = p.max_connections {
        limits.push(format!("{n} connections"));
    }
    if !limits.is_empty() {
        out.push_str(&format!("  limits: {}\n", limits.join(", ")));
    }
}

/// The network status for people.
fn describe(s: &NetworkStatus) -> String {
    let mut out = format!(
        "Address: {}\n",
        s.address
            .as_deref()
            .unwrap_or("none yet (given at the first start)")
    );
    let source = if s.base_source == "template" {
        "the template's"
    } else {
        "the server's default"
    };
    out.push_str(&format!("Base policy ({source}):\n"));
    policy_lines(&s.base, &mut out);
    match &s.own {
        Some(own) => {
            out.push_str("Own policy (applies on top of the base):\n");
            policy_lines(own, &mut out);
        }
        None => out.push_str("Own policy: none\n"),
    }
    out.push_str(&format!(
        "Refused connections: {}{}\n",
        s.denied_connections,
        if s.denied_connections > 0 {
            " (`warren events WS --kind network.` lists them)"
        } else {
            ""
        }
    ));
    out
}
