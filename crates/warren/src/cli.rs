//! Command-line interface: the subcommands and how each maps onto the engine.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use warren_engine::{Config, Engine, Limits, Progress, UpOptions};
use warren_runtime::{ExecProcess, OciRuntime};

use crate::context::{Contexts, Target};
use crate::output::{table, user_error, Printer};

/// Warren: isolated, reproducible development workspaces from devcontainer.json, in one binary.
///
/// Commands run on this host through the embedded engine, or against a Warren server when a
/// context is selected (`warren login URL`, `warren context use NAME`, `--context NAME`, or
/// `WARREN_URL` + `WARREN_TOKEN`). `--local` forces this host.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (database, images, workspaces).
    #[arg(long, global = true, env = "WARREN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// OCI runtime: libcontainer (built in, default), runc, runsc (gVisor), or a path to a runc-compatible binary.
    #[arg(long, global = true, env = "WARREN_RUNTIME")]
    runtime: Option<String>,
    /// Talk to the server of this context (see `warren context list`).
    #[arg(long, global = true, env = "WARREN_CONTEXT", value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Use the engine embedded in this process on this host, even when a context is selected.
    #[arg(long, global = true)]
    pub(crate) local: bool,
    /// Print JSON instead of text (errors too: {"error": {"code", "message", "hint"}} on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Create (first time) or start the workspace of a project folder and run its lifecycle commands.
    /// Against a server, the folder is uploaded and becomes the workspace's (ad-hoc) template.
    Up(UpArgs),
    /// Create a workspace from a template on the server.
    Create(CreateArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Run a command in a workspace (streams output, forwards stdin and signals, exits with its code).
    Exec(ExecArgs),
    /// Open an interactive shell in a workspace.
    Shell {
        /// Workspace name.
        workspace: String,
        /// Run as this user instead of the remote user.
        #[arg(short, long, conflicts_with = "session")]
        user: Option<String>,
        /// A reconnecting terminal session (server only): the shell outlives a lost connection
        /// for the server's grace period, this command reconnects to it, and running it again
        /// with the same id gets back to the same shell.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
    },
    /// Start a stopped workspace.
    Start(TransitionArgs),
    /// Stop a workspace (its files and home volume are kept).
    Stop(TransitionArgs),
    /// Stop then start a workspace.
    Restart(TransitionArgs),
    /// Delete a workspace and everything it has on this host.
    #[command(alias = "rm")]
    Delete {
        /// Workspace name.
        workspace: String,
        /// Delete even if it is running.
        #[arg(short, long)]
        force: bool,
        /// Against a server: return once the job is accepted instead of following it.
        #[arg(short, long)]
        detach: bool,
    },
    /// Show the output of a workspace's lifecycle commands, or a server job's log.
    Logs(LogsArgs),
    /// Show a workspace's resource usage.
    Stats {
        /// Workspace name.
        workspace: String,
    },
    /// List a workspace's jobs on the server (newest first).
    Jobs {
        /// Workspace name.
        workspace: String,
    },
    /// Cancel a pending or running job on the server.
    Cancel {
        /// Job id.
        job: String,
    },
    /// Move a running workspace's deadline to now + a duration (never past its max lifetime).
    Extend {
        /// Workspace name.
        workspace: String,
        /// How long from now, e.g. 2h or 1h30m.
        #[arg(long)]
        by: String,
    },
    /// Show or set a workspace's lifecycle policy: TTL, autostop deadline, idle timeout,
    /// autostart schedule, dormancy (server only).
    #[command(subcommand)]
    Policy(crate::policy_cmd::PolicyCmd),
    /// Run work in a fresh workspace: clone a repository, run a command, collect the exit code,
    /// diff, pushed branch and artifacts, then remove the workspace (server only).
    #[command(subcommand)]
    Task(crate::task_cmd::TaskCmd),
    /// Show or change what a workspace may reach on the network: egress allow and deny rules
    /// (addresses, CIDRs, domains), bandwidth and connection limits (server only).
    #[command(subcommand)]
    Net(crate::net_cmd::NetCmd),
    /// Count as activity on a workspace, so its idle timeout does not stop it (agents call this
    /// while they think); `--every 1m` keeps doing so until interrupted.
    Keepalive {
        /// Workspace name.
        workspace: String,
        /// Repeat at this interval until interrupted.
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
    },
    /// What happened to your workspaces and budgets, and why (stops with their reasons,
    /// warnings before a policy acts, budget alerts).
    Events(crate::policy_cmd::EventsArgs),
    /// Sign in to a server and make it the current context, or approve a device login.
    Login(LoginArgs),
    /// Revoke the token of a context and forget the context.
    Logout {
        /// Context name (default: the selected one).
        name: Option<String>,
    },
    /// Show, pick and remove server contexts.
    #[command(subcommand)]
    Context(ContextCmd),
    /// Show who the selected server knows you as.
    Whoami,
    /// Manage templates on the server.
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Manage API tokens on the server.
    #[command(subcommand)]
    Token(TokenCmd),
    /// SSH into a workspace through the server's API (runs the OpenSSH client), or with --stdio
    /// serve as OpenSSH's ProxyCommand.
    Ssh(SshArgs),
    /// Write (or with --remove delete) a managed block of `Host warren.*` entries in
    /// ~/.ssh/config, so that `ssh warren.WS` reaches workspace WS through the server.
    #[command(name = "config-ssh")]
    ConfigSsh(ConfigSshArgs),
    /// Serve MCP (the Model Context Protocol) on stdin/stdout for an AI agent's client (Claude
    /// Code, editors), bridged to the selected server's MCP endpoint: tools to create and delete
    /// workspaces, run commands, read and write files, use git and get preview URLs.
    Mcp,
    /// A workspace's ports (what listens, labels, sharing, preview URLs); `share` sets who may
    /// reach one, `open` prints a one-time browser link to its preview.
    Ports(PortsArgs),
    /// Forward local TCP ports to ports inside a workspace through the server:
    /// `warren port-forward WS 8080:3000 5432` (LOCAL:REMOTE, or REMOTE for the same port).
    /// Quotas and budgets: show yours (or a user's or team's), set them and grant overrides
    /// (admins).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Usage and cost (hours running and stopped, cost units) by workspace, user, team,
    /// template or day; a table, or JSON (--json) or CSV (--csv).
    Cost(CostArgs),
    #[command(name = "port-forward")]
    PortForward(PortForwardArgs),
    /// Manage your SSH public keys on the server (for SSH access to workspaces).
    #[command(subcommand, name = "ssh-key")]
    SshKey(SshKeyCmd),
    /// Secrets on the server (encrypted; never shown again once set), yours, your team's or a
    /// template's, given to workspaces as files in /run/secrets (`warren create --secret NAME`).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Short-lived SSH access tokens: `ssh TOKEN@HOST` into one workspace with no key.
    #[command(subcommand, name = "ssh-access")]
    SshAccess(SshAccessCmd),
    /// Manage users on the server (admins).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage teams on the server (admins).
    #[command(subcommand)]
    Team(TeamCmd),
    /// Query, export and verify the server's audit log.
    Audit(AuditArgs),
    /// Outgoing webhooks: matching events POSTed to a URL as signed JSON (admins; auditors may
    /// list them and their deliveries).
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Manage local images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Build the image of a project folder whose devcontainer.json uses `build.dockerfile`
    /// (as `devcontainer build`), with Warren's own builder. `warren up` does this by itself.
    Build(BuildArgs),
    /// Make recorded state match what runs on this host (runs automatically; safe to repeat).
    Reconcile,
    /// Measure workspace latency and memory against bubblewrap and runc (uses a private state dir).
    Bench(crate::bench::BenchArgs),
    /// Dev Containers tooling: `read-configuration` prints what the reference CLI prints.
    #[command(subcommand)]
    Devcontainer(crate::devcontainer_cmd::DevcontainerCmd),
    /// Run the control-plane server (REST API, metrics), or initialise it.
    Server(Box<crate::server_cmd::ServerArgs>),
}

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// Project folder containing .devcontainer/devcontainer.json or .devcontainer.json.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Run every step again instead of reusing cached layers.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    /// Project folder containing .devcontainer/devcontainer.json or .devcontainer.json.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Workspace name (default: derived from the folder name).
    #[arg(long)]
    pub name: Option<String>,
    /// Memory limit, e.g. 512m, 2g.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit in cores, e.g. 1.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<i64>,
    /// Delete the existing workspace of this folder and create it again.
    #[arg(long)]
    pub recreate: bool,
    /// Against a server: the team to charge a new workspace to (default: your team, if you are
    /// in exactly one).
    #[arg(long)]
    pub team: Option<String>,
    /// Against a server: a secret to write as the file /run/secrets/NAME at every start of a
    /// new workspace (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Against a server: return once the job is accepted instead of following it.
    #[arg(short, long)]
    pub detach: bool,
    /// Wait for every lifecycle command, not only up to the configuration's `waitFor` (by
    /// default updateContentCommand; later ones continue in the background).
    #[arg(long)]
    pub wait_all: bool,
}

#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
pub(crate) struct CreateArgs {
    /// Workspace name.
    pub name: String,
    /// Template name.
    #[arg(long, short = 'T')]
    pub template: String,
    /// Template version (default: the active one).
    #[arg(long = "version", value_name = "N")]
    pub template_version: Option<i64>,
    /// A parameter value, NAME=VALUE (repeatable; lists are comma-separated).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Time to live, e.g. 8h.
    #[arg(long)]
    pub ttl: Option<String>,
    /// CPU limit in cores, e.g. 1.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 512m, 2g.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
    /// The team to charge it to (default: your team, if you are in exactly one).
    #[arg(long)]
    pub team: Option<String>,
    /// A secret to write as the file /run/secrets/NAME at every start (your own, your team's
    /// or the template's; repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Return once the job is accepted instead of following it.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Every user's workspaces (admins and auditors).
    #[arg(long, conflicts_with = "owner")]
    pub all: bool,
    /// Only this user's workspaces.
    #[arg(long)]
    pub owner: Option<String>,
    /// Only workspaces in this state (running, stopped, failed...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only workspaces made from this template.
    #[arg(long)]
    pub template: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct TransitionArgs {
    /// Workspace name.
    pub workspace: String,
    /// Against a server: return once the job is accepted instead of following it.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    /// Workspace name.
    #[arg(required_unless_present = "job", conflicts_with = "job")]
    pub workspace: Option<String>,
    /// A server job's log instead (from `warren jobs WS`).
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Keep printing new lines (a job's log ends with the job).
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Workspace name.
    pub workspace: String,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run as this user (default: the remote user).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory (default: the workspace folder).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Extra environment, KEY=VALUE.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    /// Server URL, e.g. https://warren.example.com.
    #[arg(required_unless_present = "approve")]
    pub url: Option<String>,
    /// API token (else: browser-free device login).
    #[arg(long, conflicts_with = "token_stdin")]
    pub token: Option<String>,
    /// Read the token from stdin.
    #[arg(long)]
    pub token_stdin: bool,
    /// Context name (default: the server's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Approve a device login's code from this (signed-in) session.
    #[arg(long, value_name = "CODE", conflicts_with_all = ["url", "token", "token_stdin", "name", "ca_cert"])]
    pub approve: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ContextCmd {
    /// List contexts.
    #[command(alias = "ls")]
    List,
    /// Show a context (default: the selected one); never shows the token's secret.
    Show {
        /// Context name.
        name: Option<String>,
    },
    /// Make a context the current one.
    Use {
        /// Context name.
        name: String,
    },
    /// Use no context: commands run on this host.
    Unset,
    /// Forget a context (its token is not revoked; `warren logout` does that).
    #[command(alias = "remove")]
    Rm {
        /// Context name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TemplateCmd {
    /// Push a folder (.devcontainer/devcontainer.json and warren-template.json) as a new version.
    Push {
        /// Template folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Template name (default: `name` in warren-template.json, else the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Message recorded with the version.
        #[arg(long, short)]
        message: Option<String>,
        /// Do not make the new version the active one.
        #[arg(long)]
        no_activate: bool,
    },
    /// List templates.
    #[command(alias = "ls")]
    List,
    /// Show a template and its active version's parameters.
    Show {
        /// Template name.
        template: String,
    },
    /// List a template's versions.
    Versions {
        /// Template name.
        template: String,
    },
    /// Archive a template: it takes no new workspaces.
    Archive {
        /// Template name.
        template: String,
    },
    /// Make a version the active one.
    Activate {
        /// Template name.
        template: String,
        /// Version number.
        #[arg(value_name = "VERSION")]
        number: i64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Create a token; prints only the token on stdout.
    Create {
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// A scope (repeatable; default: every scope of your token).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Restrict it to a workspace (repeatable).
        #[arg(long = "workspace", value_name = "WS")]
        workspaces: Vec<String>,
        /// Lifetime, e.g. 15m, 8h, 30d.
        #[arg(long)]
        lifetime: Option<String>,
        /// Create it for another user (admins).
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens.
    #[command(alias = "ls")]
    List {
        /// Another user's tokens (admins).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token.
    Revoke {
        /// Token id (`warren token list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SshAccessCmd {
    /// Make a token for a workspace (printed once, with the command that uses it).
    Create {
        /// The workspace.
        workspace: String,
        /// How long it works (`30m`, `2h`; default 60m, at most 24h).
        #[arg(long)]
        lifetime: Option<String>,
    },
    /// List a workspace's tokens (not their secrets).
    #[command(alias = "ls")]
    List {
        /// The workspace.
        workspace: String,
    },
    /// Revoke a token at once.
    Revoke {
        /// The workspace.
        workspace: String,
        /// Token id (`warren ssh-access list WS`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SshKeyCmd {
    /// Register a public key (default: ~/.ssh/id_ed25519.pub, else the first ~/.ssh/id_*.pub).
    Add {
        /// The public key file, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Label (default: the key's comment).
        #[arg(long)]
        name: Option<String>,
    },
    /// List your keys.
    #[command(alias = "ls")]
    List {
        /// Another user's keys (admins).
        #[arg(long)]
        user: Option<String>,
    },
    /// Remove a key.
    #[command(alias = "remove")]
    Rm {
        /// Key id or fingerprint (`SHA256:...`), as `warren ssh-key list` shows them.
        #[arg(value_name = "ID|FINGERPRINT")]
        key: String,
        /// Another user's key (admins).
        #[arg(long)]
        user: Option<String>,
    },
}

/// Where a secret lives: yours (default), a team's or a template's.
#[derive(Args, Debug, Clone)]
pub(crate) struct SecretScopeArgs {
    /// A secret of this team (you must be a member).
    #[arg(long, conflicts_with = "template")]
    pub team: Option<String>,
    /// A secret of this template (template admins).
    #[arg(long)]
    pub template: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretCmd {
    /// Set a secret's value, read from stdin or --from-file (never from the command line).
    Set {
        /// Name (also its file name under /run/secrets).
        name: String,
        #[command(flatten)]
        scope: SecretScopeArgs,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// A git credential for this host (`github.com`): Warren's git credential helper gives
        /// it to git in workspaces that asked for it.
        #[arg(long, value_name = "HOST")]
        git_host: Option<String>,
        /// The user name given to git with it (default `x-access-token`).
        #[arg(long, requires = "git_host")]
        username: Option<String>,
    },
    /// List the secrets you can use (never their values).
    #[command(alias = "ls")]
    List,
    /// Remove a secret.
    #[command(alias = "remove")]
    Rm {
        /// Name.
        name: String,
        #[command(flatten)]
        scope: SecretScopeArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum UserCmd {
    /// Create a user.
    Create {
        /// Login name.
        name: String,
        /// Role: owner, admin, template-admin, member (default), auditor.
        #[arg(long)]
        role: Option<String>,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List users.
    #[command(alias = "ls")]
    List,
    /// Change a user's role.
    SetRole {
        /// Login name.
        name: String,
        /// owner, admin, template-admin, member or auditor.
        role: String,
    },
    /// Suspend a user: their tokens stop working.
    Suspend {
        /// Login name.
        name: String,
    },
    /// Reinstate a suspended user.
    Unsuspend {
        /// Login name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamCmd {
    /// Create a team.
    Create {
        /// Team name.
        name: String,
    },
    /// Delete a team.
    Delete {
        /// Team name.
        name: String,
    },
    /// List teams.
    #[command(alias = "ls")]
    List,
    /// Add a user to a team.
    Add {
        /// Team name.
        team: String,
        /// Login name.
        user: String,
    },
    /// Remove a user from a team.
    Remove {
        /// Team name.
        team: String,
        /// Login name.
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum WebhookCmd {
    /// Register a webhook: matching events are POSTed to URL as JSON, signed with its secret
    /// (printed this once).
    Add {
        /// Where events go: an absolute http(s) URL without credentials.
        url: String,
        /// Label (default: the URL's host).
        #[arg(long)]
        name: Option<String>,
        /// Event kind patterns, comma-separated: `*` (the default), `workspace.*`, `budget.*`
        /// or exact kinds such as `workspace.stopped`.
        #[arg(long, value_delimiter = ',', value_name = "PATTERNS")]
        events: Vec<String>,
        /// The signing secret (16 to 256 printable characters; default: one made by the
        /// server). Other local users can see a command line: prefer the default.
        #[arg(long)]
        secret: Option<String>,
    },
    /// List webhooks.
    #[command(alias = "ls")]
    List,
    /// Remove a webhook: nothing more is sent to it.
    #[command(alias = "remove")]
    Rm {
        /// Webhook id (`warren webhook list`).
        id: String,
    },
    /// Disable a webhook: nothing is queued or sent to it until it is enabled again.
    Disable {
        /// Webhook id (`warren webhook list`).
        id: String,
    },
    /// Enable a webhook: it resumes with its backlog (or without, with --skip-backlog).
    Enable {
        /// Webhook id (`warren webhook list`).
        id: String,
        /// Drop its pending deliveries and start from the latest event.
        #[arg(long)]
        skip_backlog: bool,
    },
    /// Send a `webhook.test` event to one webhook.
    Test {
        /// Webhook id.
        id: String,
    },
    /// A webhook's latest deliveries: status, attempts, last answer or error.
    Deliveries {
        /// Webhook id.
        id: String,
    },
}

/// Whose quota: one of --user, --team (or, where allowed, --default).
#[derive(Args, Debug, Clone)]
pub(crate) struct QuotaSubject {
    /// A user (login name).
    #[arg(long, conflicts_with_all = ["team", "default"])]
    pub user: Option<String>,
    /// A team.
    #[arg(long, conflicts_with = "default")]
    pub team: Option<String>,
    /// The default quota of users without their own.
    #[arg(long)]
    pub default: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum QuotaCmd {
    /// Your quota status and your teams' (or a user's or team's): limits, what runs, the
    /// budget spent this period, overrides in force.
    Show {
        #[command(flatten)]
        who: QuotaSubject,
    },
    /// Set the quota of a user, a team or the default (admins); unset limits are unlimited.
    Set {
        #[command(flatten)]
        who: QuotaSubject,
        /// Most workspaces running at once.
        #[arg(long)]
        max_workspaces: Option<u32>,
        /// Most CPUs of running workspaces together.
        #[arg(long)]
        max_cpus: Option<f64>,
        /// Most memory of running workspaces together, e.g. 8g.
        #[arg(long, value_parser = parse_size)]
        max_memory: Option<u64>,
        /// Cost units per period.
        #[arg(long)]
        budget: Option<f64>,
        /// day, week or month (default month): calendar periods in UTC.
        #[arg(long)]
        period: Option<String>,
        /// When the budget is spent: refuse (new starts; default) or stop (running ones too).
        #[arg(long)]
        on_exhausted: Option<String>,
    },
    /// Remove the quota of a user (who falls back to the default), a team or the default
    /// (admins).
    Unset {
        #[command(flatten)]
        who: QuotaSubject,
    },
    /// Grant a user or team an override until it expires (admins): extra budget, or no limits.
    Override {
        #[command(flatten)]
        who: QuotaSubject,
        /// Cost units added to the budget.
        #[arg(long, required_unless_present = "unlimited")]
        extra_budget: Option<f64>,
        /// Lift every quota and budget limit.
        #[arg(long)]
        unlimited: bool,
        /// How long it lasts, e.g. 1d, 12h.
        #[arg(
            long = "for",
            value_name = "DURATION",
            required_unless_present = "until"
        )]
        duration: Option<String>,
        /// When it ends (RFC 3339).
        #[arg(long, conflicts_with = "duration")]
        until: Option<String>,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// List a user's or team's overrides (expired and revoked ones too).
    Overrides {
        #[command(flatten)]
        who: QuotaSubject,
    },
    /// Revoke an override (admins).
    Revoke {
        #[command(flatten)]
        who: QuotaSubject,
        /// Override id (from `warren quota overrides`).
        id: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CostArgs {
    /// workspace (default), user, team, template or day.
    #[arg(long, default_value = "workspace")]
    pub by: String,
    /// Start: YYYY-MM-DD or RFC 3339 (default: this month's start).
    #[arg(long)]
    pub from: Option<String>,
    /// End: YYYY-MM-DD (that day included) or RFC 3339 (default: this month's end).
    #[arg(long)]
    pub to: Option<String>,
    /// Print CSV (for spreadsheets).
    #[arg(long)]
    pub csv: bool,
}

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    pub cmd: Option<AuditCmd>,
    #[command(flatten)]
    pub filter: AuditFilter,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Print matching records as JSON lines (all of them unless --limit).
    Export {
        #[command(flatten)]
        filter: AuditFilter,
    },
    /// Verify the hash chain: on the server, or of an exported file (offline).
    Verify {
        /// An export (`warren audit export > FILE`) to verify without a server; `-` for stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Default, Clone)]
pub(crate) struct AuditFilter {
    /// A username, user id or token id.
    #[arg(long)]
    pub actor: Option<String>,
    /// An action (`workspace.create`) or prefix (`workspace.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// A target id or name.
    #[arg(long)]
    pub target: Option<String>,
    /// At or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Records after this id (the `next_after` of the previous page).
    #[arg(long)]
    pub after: Option<i64>,
    /// The most records.
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Import an OCI image layout (directory or tar) or a root filesystem (directory, .tar, .tar.gz).
    Import {
        /// What to import.
        path: PathBuf,
        /// Name to store it under, e.g. myimage:1.0.
        name: String,
    },
    /// Build a Debian image from Debian's packages with mmdebstrap.
    Bootstrap {
        /// Name to store it under, e.g. debian:bookworm.
        name: String,
        /// Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove an image (refused while a workspace uses it).
    Rm {
        /// Image name.
        name: String,
    },
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; use a number with k, m, g or t, e.g. 512m"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// Where Warren keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/warren";

/// Runs the commands that need neither an async runtime nor an engine (`warren devcontainer`,
/// `warren bench --devcontainer`); gives every other command back.
#[allow(clippy::result_large_err)]
pub fn run_sync(cli: Cli) -> std::result::Result<Result<u8>, Cli> {
    let Cli {
        state_dir,
        runtime,
        context,
        local,
        json,
        cmd,
    } = cli;
    match cmd {
        Cmd::Devcontainer(c) => {
            let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
            Ok(crate::devcontainer_cmd::run(c, &state_dir))
        }
        Cmd::Bench(a) if a.devcontainer => Ok(crate::bench::run_devcontainer(&a)),
        cmd => Err(Cli {
            state_dir,
            runtime,
            context,
            local,
            json,
            cmd,
        }),
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let exe = std::env::current_exe()?;
    let json = cli.json;
    let cmd = match cli.cmd {
        Cmd::Server(a) => return crate::server_cmd::run(*a, cli.state_dir, cli.runtime, exe).await,
        // Commands that need no server and no engine.
        Cmd::Context(c) => return crate::admin::context(c, cli.context.as_deref(), json),
        Cmd::Login(a) if a.approve.is_none() => return crate::admin::login(a, json).await,
        Cmd::Logout { name } => {
            return crate::admin::logout(name, cli.context.as_deref(), json).await
        }
        Cmd::Mcp => return crate::mcp_cmd::run(cli.local, cli.context.as_deref()).await,
        Cmd::Audit(AuditArgs {
            cmd: Some(AuditCmd::Verify { file: Some(f) }),
            ..
        }) => return crate::admin::verify_file(&f, json),
        // Run by `run_sync` before the runtime starts.
        Cmd::Devcontainer(_) => return Ok(0),
        Cmd::Bench(a) if a.devcontainer => return crate::bench::run_devcontainer(&a),
        cmd => cmd,
    };
    // Host-level commands always run here.
    let host_only = matches!(
        cmd,
        Cmd::Image(_) | Cmd::Build(_) | Cmd::Reconcile | Cmd::Bench(_)
    );
    let target = if host_only || cli.local {
        Target::Embedded
    } else {
        let contexts = Contexts::load()?;
        crate::context::select(cli.local, cli.context.as_deref(), &contexts)?
    };
    if let Target::Remote(remote) = target {
        return crate::remote::run(cmd, &remote, json).await;
    }
    if let Some(what) = server_only(&cmd) {
        return Err(user_error(
            format!("`warren {what}` needs a server, and no context is selected"),
            "sign in with `warren login URL`, or pick a context with `warren context use NAME` or --context NAME",
        ));
    }
    embedded(cmd, cli.state_dir, cli.runtime, exe, json).await
}

/// `warren ssh`.
#[derive(Args, Debug)]
pub(crate) struct SshArgs {
    /// Relay stdin and stdout through the tunnel (for OpenSSH's ProxyCommand); the workspace may
    /// be given as `warren.WS` (the `%h` of `warren config-ssh`'s entries).
    #[arg(long)]
    pub stdio: bool,
    /// The private key to authenticate with (passed to ssh as `-i`, with `IdentitiesOnly`).
    #[arg(short = 'i', long, value_name = "FILE", conflicts_with = "stdio")]
    pub identity: Option<PathBuf>,
    /// Workspace name.
    pub workspace: String,
    /// The command to run (after `--`); a login shell when none.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `warren ports`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct PortsArgs {
    #[command(subcommand)]
    pub cmd: Option<PortsCmd>,
    /// Workspace name (`name.user` for another user's).
    pub workspace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PortsCmd {
    /// Set who may reach a port through its preview URLs: owner (the default), organization
    /// (any signed-in user) or public (anyone, where the server allows it).
    Share {
        /// Workspace name.
        workspace: String,
        /// Port.
        port: String,
        /// owner, organization or public.
        level: String,
    },
    /// Print a one-time link (valid 60 seconds) that signs your browser in to a port's preview.
    Open {
        /// Workspace name (`name.user` for another user's shared port).
        workspace: String,
        /// Port.
        port: String,
        /// The subdomain form of the link (when the server has a preview domain).
        #[arg(long)]
        subdomain: bool,
    },
}

/// `warren port-forward`.
#[derive(Args, Debug)]
pub(crate) struct PortForwardArgs {
    /// Workspace name.
    pub workspace: String,
    /// LOCAL:REMOTE or REMOTE (the same local port), one or more.
    #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
    pub ports: Vec<String>,
}

/// `warren config-ssh`.
#[derive(Args, Debug)]
pub(crate) struct ConfigSshArgs {
    /// Delete this context's block instead.
    #[arg(long)]
    pub remove: bool,
    /// The OpenSSH client configuration file (default: ~/.ssh/config).
    #[arg(long, value_name = "PATH")]
    pub ssh_config: Option<PathBuf>,
}

/// The name of a command that only exists against a server.
fn server_only(cmd: &Cmd) -> Option<&'static str> {
    Some(match cmd {
        Cmd::Create(_) => "create",
        Cmd::Jobs { .. } => "jobs",
        Cmd::Cancel { .. } => "cancel",
        Cmd::Extend { .. } => "extend",
        Cmd::Policy(_) => "policy",
        Cmd::Task(_) => "task",
        Cmd::Net(_) => "net",
        Cmd::Keepalive { .. } => "keepalive",
        Cmd::Events(_) => "events",
        Cmd::Login(_) => "login --approve",
        Cmd::Logout { .. } => "logout",
        Cmd::Whoami => "whoami",
        Cmd::Template(_) => "template",
        Cmd::Token(_) => "token",
        Cmd::SshKey(_) => "ssh-key",
        Cmd::Secret(_) => "secret",
        Cmd::SshAccess(_) => "ssh-access",
        Cmd::Ssh(_) => "ssh",
        Cmd::ConfigSsh(_) => "config-ssh",
        Cmd::Ports(_) => "ports",
        Cmd::PortForward(_) => "port-forward",
        Cmd::Quota(_) => "quota",
        Cmd::Cost(_) => "cost",
        Cmd::User(_) => "user",
        Cmd::Team(_) => "team",
        Cmd::Audit(_) => "audit",
        Cmd::Webhook(_) => "webhook",
        Cmd::Logs(LogsArgs { job: Some(_), .. }) => "logs --job",
        Cmd::List(ListArgs { owner: Some(_), .. }) => "list --owner",
        Cmd::List(ListArgs {
            template: Some(_), ..
        }) => "list --template",
        _ => return None,
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a command with the engine embedded in this process.
async fn embedded(
    cmd: Cmd,
    state_dir: Option<PathBuf>,
    runtime: Option<String>,
    exe: PathBuf,
    json: bool,
) -> Result<u8> {
    let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let engine = Engine::open(Config {
        state_dir: state_dir.clone(),
        oci: OciRuntime::parse(runtime.as_deref().unwrap_or("libcontainer")),
        exe,
        owned_may_have_privileges: false,
        network: Default::default(),
        default_egress: warren_engine::network::allow_all(),
    })
    .await?;
    if let Cmd::Bench(a) = cmd {
        return crate::bench::run(a, &state_dir, runtime.as_deref().unwrap_or("libcontainer"))
            .await;
    }
    let reconciles = matches!(
        cmd,
        Cmd::Up(_)
            | Cmd::List(_)
            | Cmd::Start(_)
            | Cmd::Stop(_)
            | Cmd::Restart(_)
            | Cmd::Delete { .. }
            | Cmd::Reconcile
    );
    if reconciles {
        let report = engine.reconcile().await?;
        for (ws, why) in &report.errors {
            Printer.warn(&format!("could not reconcile workspace {ws}: {why}"));
        }
        if matches!(cmd, Cmd::Reconcile) {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "failed": report.failed, "stopped": report.stopped,
                    "deleted": report.deleted, "orphans_removed": report.orphans_removed,
                "errors": report.errors,
                }))?
            );
            return Ok(0);
        }
    }
    // The record of a workspace after an operation, for --json.
    let record = |name: String| {
        let engine = engine.clone();
        async move {
            let list = engine.list().await?;
            anyhow::Ok(list.into_iter().find(|w| w.name.as_str() == name))
        }
    };
    match cmd {
        Cmd::Up(a) => {
            if a.team.is_some() {
                return Err(user_error(
                    "--team needs a server: teams, quotas and budgets are the server's",
                    "select a context (`warren login URL`), or leave --team out",
                ));
            }
            if let Some(c) = a.cpus {
                if c.is_nan() || c <= 0.0 {
                    return Err(user_error(
                        format!("--cpus {c} must be positive"),
                        "e.g. --cpus 1.5",
                    ));
                }
            }
            let opts = UpOptions {
                name: a.name,
                limits: Limits {
                    memory_bytes: a.memory,
                    cpus: a.cpus,
                    pids: a.pids,
                },
                recreate: a.recreate,
                wait_all: a.wait_all,
                ..Default::default()
            };
            let rec = engine.up(&a.dir, &opts, &Printer).await?;
            eprintln!(
                "Workspace {} is running. Try: warren exec {} -- uname -a   or   warren shell {}",
                rec.name, rec.name, rec.name
            );
            if json {
                print_json(&warren_api::Workspace::from(rec))?;
            } else {
                println!("{}", rec.name);
            }
            Ok(0)
        }
        Cmd::List(a) => {
            let mut list = engine.list().await?;
            if let Some(s) = &a.status {
                list.retain(|w| w.state.to_string() == *s);
            }
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|w| {
                        vec![
                            w.name.to_string(),
                            w.state.to_string(),
                            w.image.clone(),
                            w.project_dir.clone(),
                            w.created_at.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["NAME", "STATE", "IMAGE", "FOLDER", "CREATED"], &rows)
                );
            }
            Ok(0)
        }
        Cmd::Exec(a) => {
            let p = ExecProcess {
                argv: a.command,
                env: a.env,
                cwd: a.workdir,
                user: a.user,
                tty: a.tty.then_some((24, 80)),
                detach: false,
                login_shell: false,
            };
            for e in &p.env {
                if !e.contains('=') {
                    return Err(user_error(
                        format!("--env `{e}` is not KEY=VALUE"),
                        "e.g. --env RUST_LOG=debug",
                    ));
                }
            }
            crate::exec::run(&engine, &a.workspace, p).await
        }
        Cmd::Shell {
            workspace,
            user,
            session,
        } => {
            if session.is_some() {
                return Err(user_error(
                    "--session needs a server: terminal sessions live in `warren server`",
                    "select a context (`warren login URL`), or leave --session out",
                ));
            }
            let p = ExecProcess {
                argv: warren_api::v1::shell_fallback(),
                login_shell: true,
                user,
                tty: Some((24, 80)),
                ..Default::default()
            };
            crate::exec::run(&engine, &workspace, p).await
        }
        Cmd::Start(a) => {
            engine.start(&a.workspace, &Printer).await?;
            if json {
                print_json(&record(a.workspace).await?)?;
            }
            Ok(0)
        }
        Cmd::Stop(a) => {
            engine.stop(&a.workspace).await?;
            if json {
                print_json(&record(a.workspace).await?)?;
            }
            Ok(0)
        }
        Cmd::Restart(a) => {
            engine.restart(&a.workspace, &Printer).await?;
            if json {
                print_json(&record(a.workspace).await?)?;
            }
            Ok(0)
        }
        Cmd::Delete {
            workspace, force, ..
        } => {
            engine.delete(&workspace, force).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": workspace }))?;
            }
            Ok(0)
        }
        Cmd::Logs(a) => {
            let ws = a.workspace.unwrap_or_default();
            let mut text = engine.logs(&ws).await?;
            print!("{text}");
            if a.follow {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    let now = engine.logs(&ws).await?;
                    if now.len() < text.len() || !now.starts_with(text.as_str()) {
                        text.clear();
                    }
                    if now.len() > text.len() {
                        print!("{}", &now[text.len()..]);
                        let _ = std::io::stdout().flush();
                        text = now;
                    }
                }
            }
            Ok(0)
        }
        Cmd::Stats { workspace } => {
            print_json(&engine.stats(&workspace).await?)?;
            Ok(0)
        }
        Cmd::Image(ic) => image(&engine, ic, json).await,
        Cmd::Build(a) => {
            let built = engine.build(&a.dir, a.no_cache, &Printer).await?;
            eprintln!(
                "Built {} ({} of {} layer steps from the cache)",
                built.name, built.cached_steps, built.layer_steps
            );
            if json {
                print_json(&serde_json::json!({
                    "image": built.name,
                    "digest": built.digest,
                    "layer_steps": built.layer_steps,
                    "cached_steps": built.cached_steps,
                    "sandboxes_started": built.sandboxes_started,
                }))?;
            } else {
                println!("{}", built.name);
            }
            Ok(0)
        }
        // Dispatched before the engine is opened, or refused without a server.
        _ => Ok(0),
    }
}

async fn image(engine: &Engine, cmd: ImageCmd, json: bool) -> Result<u8> {
    let images = engine.images().clone();
    match cmd {
        ImageCmd::Import { path, name } => {
            if !path.exists() {
                return Err(user_error(
                    format!("{} does not exist", path.display()),
                    "give an OCI image layout (dir or .tar) or a root filesystem (dir, .tar, .tar.gz)",
                ));
            }
            Printer.step(&format!("Importing {} as {name}", path.display()));
            let info =
                tokio::task::spawn_blocking(move || images.import(&path, &name, None)).await??;
            if json {
                print_json(&info)?;
            } else {
                println!("{} {}", info.name, info.digest);
            }
        }
        ImageCmd::Bootstrap { name, suite } => {
            Printer.step(&format!(
                "Building {name} from Debian {suite} with mmdebstrap"
            ));
            let info = engine.bootstrap(&name, &suite, &Printer).await?;
            if json {
                print_json(&info)?;
            } else {
                println!("{} {}", info.name, info.digest);
            }
        }
        ImageCmd::Ls => {
            let list = tokio::task::spawn_blocking(move || images.list()).await??;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.digest.chars().take(19).collect(),
                            i.layers.to_string(),
                            format!("{:.1} MiB", i.size as f64 / (1024.0 * 1024.0)),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "DIGEST", "LAYERS", "SIZE"], &rows));
            }
        }
        ImageCmd::Rm { name } => engine.remove_image(&name).await?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("512m"));
        assert!(parse_size("-1m").is_err());
    }
}
