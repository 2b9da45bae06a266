//! Request and response bodies of the REST API (`/api/v1`), shared by the server and the CLI.
//! Request bodies reject unknown fields, so a misspelt field is an error, not a silent default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Role, Scope};
use crate::template::{Ceilings, ParamSpec, PolicyDefaults};
use crate::Workspace;

/// Tasks' bodies live with their state machine.
pub use crate::task::{Artifact, CompleteTask, CreateTask, TaskCreated, TaskList, TaskView};

/// A user and their role in the organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role in the organization.
    pub role: Role,
    /// Suspended users cannot authenticate.
    pub suspended: bool,
    /// Creation time.
    pub created_at: String,
}

/// `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login name (DNS-label rules).
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Role (default `member`).
    #[serde(default)]
    pub role: Option<Role>,
}

/// `PATCH /users/{user}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Suspend or reinstate.
    #[serde(default)]
    pub suspended: Option<bool>,
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Id: the public part of the token string.
    pub id: String,
    /// Label.
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Workspace ids it is restricted to, if any.
    pub workspaces: Option<Vec<String>>,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: String,
    /// Last use (approximate).
    pub last_used_at: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Label (default `token`).
    #[serde(default)]
    pub name: Option<String>,
    /// Scopes (default: every scope the caller's token has). Never more than the caller's.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// Restrict to these workspaces (names of the token owner's workspaces, or ids).
    #[serde(default)]
    pub workspaces: Option<Vec<String>>,
    /// Lifetime (`15m`, `8h`, `30d`); default and maximum are server settings, and a token never
    /// outlives the one that created it.
    #[serde(default)]
    pub lifetime: Option<String>,
    /// Create it for this user (admins only).
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /tokens` answer: the token string, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// `wrn_<id>_<secret>`: keep it secret; it cannot be shown again.
    pub token: String,
    /// Its record.
    pub info: Token,
}

/// A registered SSH public key (`GET /me/ssh-keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    /// Id.
    pub id: String,
    /// Label (default: the key's comment).
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `-nistp384`, `-nistp521` or `ssh-rsa`.
    pub key_type: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it; unique across the server.
    pub fingerprint: String,
    /// The key in OpenSSH's form, `type base64`, without its comment.
    pub public_key: String,
    /// Creation time.
    pub created_at: String,
    /// Last SSH authentication with it.
    pub last_used_at: Option<String>,
    /// When its user proved holding the private key (`signature`); until then the SSH gateway
    /// does not accept it.
    pub verified_at: Option<String>,
}

/// `POST /me/ssh-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    /// One OpenSSH public key line, `type base64 [comment]` (a `.pub` file's contents).
    pub public_key: String,
    /// Label (default: the key's comment, else `key`).
    #[serde(default)]
    pub name: Option<String>,
    /// Proof of holding the private key: an armored SSH signature (`-----BEGIN SSH SIGNATURE-----`)
    /// of `ssh_key::proof_message(your user id, the key's fingerprint)` in namespace
    /// `warren-ssh-key`, as `ssh-keygen -Y sign -n warren-ssh-key -f KEY` makes it. Without it the
    /// key is registered unverified and authenticates nobody until proven
    /// (`POST /me/ssh-keys/{id}/verify`).
    #[serde(default)]
    pub signature: Option<String>,
}

/// `POST /me/ssh-keys/{id}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySshKey {
    /// The armored SSH signature of the key's proof message (see `AddSshKey::signature`).
    pub signature: String,
}

/// `POST /workspaces/{ws}/ssh-access`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSshAccess {
    /// How long it works (`30m`, `2h`; default `60m`); never longer than the token asking for it.
    #[serde(default)]
    pub lifetime: Option<String>,
}

/// An SSH access token's record (`GET /workspaces/{ws}/ssh-access`); the token itself is shown
/// only when it is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SshAccess {
    /// Id.
    pub id: String,
    /// The workspace it reaches.
    pub workspace_id: String,
    /// Who made it (the gateway acts as this user).
    pub user_id: String,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Last SSH authentication with it.
    pub last_used_at: Option<String>,
}

/// `POST /workspaces/{ws}/ssh-access` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedSshAccess {
    /// `wsa_...`: the SSH user name that logs in (`ssh TOKEN@HOST -p PORT`), shown this once.
    pub token: String,
    /// The command to connect, when the server knows its SSH address.
    pub ssh_command: Option<String>,
    /// Its record.
    pub info: SshAccess,
}

/// `GET /me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// The caller.
    pub user: User,
    /// The token used.
    pub token: Token,
    /// Organization name.
    pub organization: String,
}

/// A team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Members' usernames.
    pub members: Vec<String>,
    /// Creation time.
    pub created_at: String,
}

/// `POST /teams`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Name (DNS-label rules).
    pub name: String,
}

/// `POST /auth/device` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceStart {
    /// Secret the CLI polls with.
    pub device_code: String,
    /// Short code the user approves (`warren login --approve CODE` from a signed-in session).
    pub user_code: String,
    /// Where to approve (API route).
    pub verification_uri: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// `POST /auth/device/token`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePoll {
    /// The device code from [`DeviceStart`].
    pub device_code: String,
}

/// `POST /auth/device/approve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceApprove {
    /// The user code shown by the CLI.
    pub user_code: String,
}

/// `POST /workspaces`: from a template (active or given version) or from an uploaded project
/// folder (`file_id`, an ad-hoc version: what `warren up DIR` does against a server).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Name (DNS-label rules), unique among the owner's workspaces.
    pub name: String,
    /// Template name.
    #[serde(default)]
    pub template: Option<String>,
    /// Template version number (default: the active one).
    #[serde(default)]
    pub template_version: Option<i64>,
    /// An uploaded folder (tar) holding `.devcontainer/devcontainer.json`, instead of a template.
    #[serde(default)]
    pub file_id: Option<String>,
    /// Parameter values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Time to live (`8h`): deleted this long after it is created. Shorthand for `policy.ttl`.
    #[serde(default)]
    pub ttl: Option<String>,
    /// The workspace's own network policy, applied on top of its template's (a connection must
    /// pass both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetworkPolicy>,
    /// The workspace's own lifecycle policy values, within the template's ceilings.
    #[serde(default)]
    pub policy: Option<crate::policy::WorkspacePolicy>,
    /// Resources, within the template's ceilings (default: the ceilings).
    #[serde(default)]
    pub limits: Option<Ceilings>,
    /// The create job waits for every lifecycle hook, not only up to the configuration's
    /// `waitFor` (after which the rest continue in the background).
    #[serde(default)]
    pub wait_all: bool,
    /// The team to charge it to (quotas, budgets, cost reports); the caller must be a member.
    /// Default: the caller's team if they are in exactly one.
    #[serde(default)]
    pub team: Option<String>,
    /// Secrets to write as files `/run/secrets/NAME` at every start (names, looked up among the
    /// owner's own secrets, then their teams', then the template's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// A secret's metadata (`GET /secrets`): its value is never returned after it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    /// `user` (the caller's own), `team:NAME` or `template:NAME`.
    pub scope: String,
    /// Name (the file name under `/run/secrets`).
    pub name: String,
    /// `generic`, or `git` (answered by Warren's git credential helper for `git_host`).
    pub kind: String,
    /// The git host it is for (`git` secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_host: Option<String>,
    /// The user name git is given (`git` secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Size of the value in bytes.
    pub size: u64,
    /// First write.
    pub created_at: String,
    /// Latest write.
    pub updated_at: String,
}

/// `GET /secrets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    /// The secrets the caller may see: their own, their teams', and (template writers) the
    /// templates'.
    pub secrets: Vec<SecretInfo>,
}

/// `PUT /secrets/{scope}/{name}`: writes a secret's value (at most 64 KiB of text). With
/// `git_host` it is a git credential: Warren's credential helper answers it to git for that
/// host, with `username`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value.
    pub value: String,
    /// The git host (`github.com`, `git.example.com:8443`) this credential is for.
    #[serde(default)]
    pub git_host: Option<String>,
    /// The user name given to git (default `x-access-token`).
    #[serde(default)]
    pub username: Option<String>,
}

/// `POST /workspaces/{ws}/credential`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    /// How long it works (`30m`, `8h`; default `8h`, at most `24h`); never longer than the token
    /// asking for it.
    #[serde(default)]
    pub lifetime: Option<String>,
}

/// A minted workspace credential: a token with `workspace:read` and `workspace:exec` restricted
/// to one workspace, also written to `/run/secrets/warren-token` inside it. Shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceCredential {
    /// `wrn_<id>_<secret>`.
    pub token: String,
    /// The token's id.
    pub id: String,
    /// The workspace it is restricted to.
    pub workspace_id: String,
    /// Expiry.
    pub expires_at: String,
}

/// `PATCH /workspaces/{ws}`: new parameter values and/or another version of the workspace's
/// template. Immutable parameters cannot change and monotonic ones only move their way. The
/// workspace is rebuilt in an `update` job: stopped, its configuration rendered again, started;
/// its files, volumes and once-only lifecycle state are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    /// Parameter values to change (the others keep their values).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Move to this version of the template (default: stay on the current one).
    #[serde(default)]
    pub template_version: Option<i64>,
}

/// A page of workspaces.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceList {
    /// The workspaces.
    pub workspaces: Vec<Workspace>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /workspaces/{ws}/activity`: what counts as use of the workspace, for idle policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceActivity {
    /// The last time of each kind of activity seen (`ssh`, `exec`, `pty`, `port`, `keepalive`).
    pub last: BTreeMap<crate::activity::ActivityKind, String>,
    /// The latest of those, if any.
    pub last_at: Option<String>,
    /// Sessions open now, by kind (SSH connections, terminals and execs, port connections).
    pub open_sessions: BTreeMap<crate::activity::ActivityKind, u32>,
}

/// A transition job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Id.
    pub id: String,
    /// Workspace id.
    pub workspace_id: String,
    /// `create`, `start`, `stop`, `restart` or `delete`.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// Who asked.
    pub initiator_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Requested at.
    pub created_at: String,
    /// Began at.
    pub started_at: Option<String>,
    /// Ended at.
    pub finished_at: Option<String>,
}

/// Answer to a transition request (202).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The workspace as it is now.
    pub workspace: Workspace,
    /// The job doing the work.
    pub job: Job,
}

/// `GET /workspaces/{ws}/policy` (also the answer of `PUT` and of `POST .../keepalive`): the
/// lifecycle policy in force and what it will do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyStatus {
    /// The template's policy (defaults and ceilings), if the workspace has a template.
    pub template: Option<crate::policy::PolicyDefaults>,
    /// The workspace's own values.
    pub own: crate::policy::WorkspacePolicy,
    /// Why the workspace's own values are ignored, if they are (the template's ceilings were
    /// lowered since they were set).
    pub own_ignored: Option<String>,
    /// The policy in force.
    pub effective: crate::policy::EffectiveView,
    /// The current run's deadline (running workspaces with `autostop`, an extension or
    /// `max_lifetime`).
    pub deadline_at: Option<String>,
    /// The next thing a policy will do, if anything.
    pub next: Option<NextAction>,
    /// The latest activity of any kind.
    pub last_activity_at: Option<String>,
    /// Whether a session is open on it now.
    pub open_sessions: bool,
    /// When its current or last run started.
    pub started_at: Option<String>,
    /// When it last stopped or failed.
    pub stopped_at: Option<String>,
    /// Why it last stopped.
    pub stop_reason: Option<String>,
}

/// A coming policy action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NextAction {
    /// `stop`, `delete`, `start` or `fail_start`.
    pub action: String,
    /// Why.
    pub reason: crate::policy::Reason,
    /// When (now or earlier: due, the governor acts at its next pass).
    pub at: String,
}

/// An event: something that happened to a workspace, a budget, a webhook...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Increasing id: pass the last one seen as `after` to read on.
    pub id: i64,
    /// When.
    pub at: String,
    /// Dotted kind: `workspace.created`, `workspace.started`, `workspace.stopped`,
    /// `workspace.stop_warning`, `budget.warning`...
    pub kind: String,
    /// The workspace, if it is about one.
    pub workspace_id: Option<String>,
    /// Its name then.
    pub workspace_name: Option<String>,
    /// The user it concerns.
    pub owner_id: Option<String>,
    /// The team it concerns.
    pub team_id: Option<String>,
    /// Who caused it (none: Warren itself).
    pub actor_id: Option<String>,
    /// Why (`idle`, `deadline`, `ttl`, `budget`, `user`...).
    pub reason: Option<String>,
    /// One line for people.
    pub message: String,
    /// Details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A page of events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// The events.
    pub events: Vec<EventView>,
}

/// `POST /workspaces/{ws}/extend`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    /// New deadline = now + this (`2h`).
    pub by: String,
}

/// `POST /workspaces/{ws}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv.
    pub command: Vec<String>,
    /// Extra environment (`KEY` -> value).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the workspace folder).
    #[serde(default)]
    pub cwd: Option<String>,
    /// User (default: the remote user).
    #[serde(default)]
    pub user: Option<String>,
    /// Text given on stdin (then EOF).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command after this long (`30s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Allocate a PTY of (rows, cols) — WebSocket exec only.
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
    /// Run the user's login shell (from the workspace's `/etc/passwd`, as `SHELL -l`) instead of
    /// `command`, which is the fallback when the user has no usable shell.
    #[serde(default)]
    pub login_shell: bool,
}

/// What an interactive shell runs when the user has no usable login shell in the workspace's
/// `/etc/passwd` (`ExecRequest::login_shell`): bash if the image has it, else sh, as login shells.
pub fn shell_fallback() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi".into(),
    ]
}

/// One line of the exec output stream (`application/x-ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// Output on stdout (UTF-8 text when it is valid, else `base64`).
    Stdout {
        /// Text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Raw bytes, base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// Output on stderr.
    Stderr {
        /// Text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Raw bytes, base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// The command exited (128 + signal when killed).
    Exit {
        /// Exit code.
        code: i32,
    },
    /// Sent every few seconds while the command is quiet (clients ignore it): it lets the
    /// server notice a client that went away and hang the command up.
    Heartbeat,
    /// The command could not run or was cut short.
    Error {
        /// Why.
        message: String,
    },
}

/// A template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Number of the active version.
    pub active_version: Option<i64>,
    /// Archived templates take no new workspaces.
    pub archived: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// An immutable template version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersion {
    /// Id.
    pub id: String,
    /// Number (1, 2, ...).
    pub number: i64,
    /// Whether it is the template's active version.
    pub active: bool,
    /// Push message.
    pub message: Option<String>,
    /// The devcontainer.json text.
    pub devcontainer: String,
    /// The uploaded folder, if any.
    pub file_id: Option<String>,
    /// Parameters.
    pub parameters: Vec<ParamSpec>,
    /// Resource ceilings.
    pub ceilings: Ceilings,
    /// Policy defaults.
    pub policy: PolicyDefaults,
    /// Hourly cost rates.
    pub cost: crate::template::CostRates,
    /// Who pushed it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

/// `POST /templates`: creates a template or updates its description; with `version`, also pushes
/// a version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// Name (DNS-label rules).
    pub name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /templates/{t}/versions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    /// devcontainer.json text (inline form). Either this or `file_id`.
    #[serde(default)]
    pub devcontainer: Option<String>,
    /// An uploaded folder (tar) with `.devcontainer/devcontainer.json` (and optionally
    /// `warren-template.json`).
    #[serde(default)]
    pub file_id: Option<String>,
    /// Parameters.
    #[serde(default)]
    pub parameters: Vec<ParamSpec>,
    /// Resource ceilings.
    #[serde(default)]
    pub ceilings: Option<Ceilings>,
    /// Policy defaults.
    #[serde(default)]
    pub policy: Option<PolicyDefaults>,
    /// Hourly cost rates (`{"running_per_hour": 1.5, "stopped_per_hour": 0.05}`, cost units).
    #[serde(default)]
    pub cost: Option<crate::template::CostRates>,
    /// Push message.
    #[serde(default)]
    pub message: Option<String>,
    /// Make it the active version (default true).
    #[serde(default)]
    pub activate: Option<bool>,
}

/// `POST /templates/{t}/active`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// Version number.
    pub version: i64,
}

/// `POST /files` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileUploaded {
    /// Content hash (SHA-256 hex): reference it as `file_id`.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
}

/// `GET /audit/verify` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerify {
    /// Records checked.
    pub records: u64,
    /// Whether the chain is intact.
    pub ok: bool,
    /// Hash of the last record: keep it elsewhere to detect removal of the newest records.
    pub head_hash: String,
    /// The first record that breaks the chain.
    pub first_bad_id: Option<i64>,
    /// Why it breaks.
    pub reason: Option<String>,
}

/// One port of a workspace: listened on now, or named by `forwardPorts`/`portsAttributes`, or
/// shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PortInfo {
    /// The TCP port.
    pub port: u16,
    /// Whether a process listens on it now.
    pub listening: bool,
    /// The addresses it is listened on (`0.0.0.0`, `127.0.0.1`, `::`...).
    pub addresses: Vec<String>,
    /// The name of a process listening on it, when known.
    pub process: Option<String>,
    /// Whether `forwardPorts` names it.
    pub forwarded: bool,
    /// `portsAttributes` (or `otherPortsAttributes`) `label`.
    pub label: Option<String>,
    /// `onAutoForward` (`notify`, `openBrowser`, `silent`, `ignore`...).
    pub on_auto_forward: Option<String>,
    /// `protocol` (`http` or `https`).
    pub protocol: Option<String>,
    /// Who may reach it through its preview URLs (set through the API only).
    pub sharing: crate::ports::PortSharing,
    /// Preview URLs: the path form, then the subdomain form when the server has a preview domain
    /// and the names fit in one DNS label.
    pub urls: Vec<String>,
}

/// `GET /workspaces/{ws}/ports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PortList {
    /// Whether the workspace is running (only a running one has listening ports).
    pub running: bool,
    /// Ports by number.
    pub ports: Vec<PortInfo>,
    /// The widest sharing level the server allows.
    pub max_sharing: crate::ports::PortSharing,
}

/// `PUT /workspaces/{ws}/ports/{port}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPortSharing {
    /// `owner`, `organization` or `public`.
    pub sharing: String,
}

/// `POST /workspaces/{ws}/ports/{port}/ticket`: a one-time link that signs a browser in to one
/// preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PortTicket {
    /// Open this within `expires_in_secs`, once: it sets the preview's cookie and redirects to
    /// the preview.
    pub url: String,
    /// The same link in the subdomain form, when the server has a preview domain.
    pub subdomain_url: Option<String>,
    /// Seconds the link stays valid.
    pub expires_in_secs: u64,
}

/// `POST /webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: an absolute `http` or `https` URL without credentials.
    pub url: String,
    /// A label (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Event kind patterns: `*`, `PREFIX.*` (`workspace.*`, `budget.*`) or exact kinds
    /// (`workspace.stopped`). Default: `["*"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The signing secret (16 to 256 printable characters); default: 32 random bytes, hex. It
    /// is shown in this answer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `PATCH /webhooks/{id}`: disable or enable a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// Disabled: nothing is queued or sent. Enabled again, it resumes with its backlog (the
    /// pending deliveries and the events recorded meanwhile).
    pub disabled: bool,
    /// With `disabled: false`: drop the pending deliveries and start from the latest event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_backlog: bool,
}

/// A webhook (its secret is never shown after creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Where events go. Shown whole to those who may manage webhooks; to others (auditors)
    /// its path and query, which often carry a credential, are masked: `https://host/…`.
    pub url: String,
    /// Event kind patterns.
    pub events: Vec<String>,
    /// The user who made it.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Whether it is disabled (nothing is queued or sent): by an admin, or by the server after
    /// a delivery failed 12 times or the oldest pending one waited more than 24 hours.
    pub disabled: bool,
    /// The id of the last event considered for it.
    pub cursor: i64,
    /// Deliveries waiting to be sent or retried.
    pub pending: i64,
}

/// `POST /webhooks` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// The signing secret: shown this once.
    pub secret: String,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// Id (the `Warren-Delivery` header).
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// The event's id.
    pub event_id: i64,
    /// The event's kind.
    pub kind: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<String>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: String,
    /// When the receiver accepted it.
    pub delivered_at: Option<String>,
}

/// `POST /webhooks/{id}/test` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookTest {
    /// The `webhook.test` event.
    pub event_id: i64,
    /// Its delivery to this webhook.
    pub delivery_id: String,
}

/// Limits of a user, a team or the default of users (`PUT /quotas/...`). Unset limits are
/// unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimits {
    /// Most workspaces running (or starting) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workspaces: Option<u32>,
    /// Most CPUs of running workspaces together (their limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpus: Option<f64>,
    /// Most memory (MiB) of running workspaces together (their limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Cost units per `budget_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// `day`, `week` (from Monday) or `month`: calendar periods in UTC (default `month`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period: Option<String>,
    /// When the budget is spent: `refuse` new starts (default), or also `stop` running
    /// workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<String>,
}

/// A stored quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// `user`, `team` or `default`.
    pub subject: String,
    /// The user's or team's name (empty for the default).
    pub name: String,
    /// The limits.
    pub limits: QuotaLimits,
    /// Last change.
    pub updated_at: String,
}

/// An override an admin granted (`POST /quotas/{kind}/{name}/overrides`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaOverride {
    /// Id.
    pub id: String,
    /// `user` or `team`.
    pub subject: String,
    /// The user's or team's name.
    pub name: String,
    /// Cost units added to the budget while it lasts.
    pub extra_budget: Option<f64>,
    /// No quota or budget limits at all while it lasts.
    pub unlimited: bool,
    /// When it ends.
    pub expires_at: String,
    /// Why.
    pub note: Option<String>,
    /// Who granted it (username).
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// Whether it is in force now.
    pub active: bool,
}

/// `POST /quotas/{kind}/{name}/overrides`: give `extra_budget` or `unlimited`, and `expires_at`
/// or `duration`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOverride {
    /// Cost units added to the budget.
    #[serde(default)]
    pub extra_budget: Option<f64>,
    /// Lift every quota and budget limit.
    #[serde(default)]
    pub unlimited: bool,
    /// When it ends (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// How long it lasts from now (`7d`, `12h`), instead of `expires_at`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why (shown in listings).
    #[serde(default)]
    pub note: Option<String>,
}

/// What a subject uses now and has spent this period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaStatus {
    /// `user` or `team`.
    pub subject: String,
    /// The user's or team's name.
    pub name: String,
    /// Where the limits come from: `user`, `team`, `default` or `none`.
    pub source: String,
    /// The limits in force (before overrides).
    pub limits: QuotaLimits,
    /// Workspaces running or starting now.
    pub workspaces: u32,
    /// Their CPUs (limits) together.
    pub cpus: f64,
    /// Their memory (MiB, limits) together.
    pub memory_mb: u64,
    /// Running workspaces without a CPU or memory limit.
    pub unlimited_workspaces: u32,
    /// The budget, if there is one.
    pub budget: Option<BudgetStatus>,
    /// Overrides in force now.
    pub overrides: Vec<QuotaOverride>,
    /// Whether an `unlimited` override is in force.
    pub unlimited: bool,
}

/// A budget in its current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetStatus {
    /// `day`, `week` or `month`.
    pub period: String,
    /// The period's start (UTC).
    pub period_start: String,
    /// Its end.
    pub period_end: String,
    /// The budget (cost units).
    pub budget: f64,
    /// Extra budget from overrides in force.
    pub extra: f64,
    /// Spent so far this period.
    pub used: f64,
    /// What is left (never negative).
    pub left: f64,
    /// `used` as a percentage of `budget + extra`.
    pub percent: f64,
    /// `refuse` or `stop`.
    pub on_exhausted: String,
}

/// `GET /me/quota`: the caller's quota status and their teams'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MyQuota {
    /// The caller's own.
    pub user: QuotaStatus,
    /// Each of their teams'.
    pub teams: Vec<QuotaStatus>,
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// What it groups by: a workspace, user, team or template id, or a day (`YYYY-MM-DD`);
    /// empty for usage charged to no team or made from no template.
    pub key: String,
    /// Its name (workspace `name.owner`, username, team or template name, the day).
    pub name: String,
    /// Hours running (starting, running, stopping).
    pub hours_running: f64,
    /// Hours stopped (existing without running).
    pub hours_stopped: f64,
    /// Cost units.
    pub cost: f64,
}

/// `GET /usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// Start (inclusive, UTC).
    pub from: String,
    /// End (exclusive, UTC).
    pub to: String,
    /// `workspace`, `user`, `team`, `template` or `day`.
    pub group_by: String,
    /// The rows, by name.
    pub rows: Vec<UsageRow>,
    /// Everything together.
    pub total: UsageRow,
}

/// `GET /workspaces/{ws}/network` (also the answer of `PUT` and `DELETE`): what the workspace may
/// reach, where it is on Warren's network, and what was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkStatus {
    /// The policy every connection must pass first: its template's `policy.network`, or the
    /// server's `default_network`.
    pub base: crate::net::NetworkPolicy,
    /// Where `base` comes from: `template` or `server`.
    pub base_source: String,
    /// The workspace's own policy, applied on top of `base` (a connection must pass both).
    pub own: Option<crate::net::NetworkPolicy>,
    /// Its address on Warren's network, once it has been started.
    pub address: Option<String>,
    /// Connection attempts refused since it started (nftables' count).
    pub denied_connections: u64,
}
