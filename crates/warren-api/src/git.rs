//! Bodies of the toolbox's git routes (`/api/v1/workspaces/{ws}/toolbox/git/...`), shared by
//! the server and its clients. Request bodies reject unknown fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST git/clone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCloneRequest {
    /// The repository (`https://host/owner/repo.git`, `ssh://...`, `git@host:owner/repo`).
    /// URLs carrying credentials are refused: use a git secret.
    pub url: String,
    /// Where to clone (relative to the workspace folder unless absolute; default: the
    /// repository's name in the workspace folder). It must not exist, or be empty.
    #[serde(default)]
    pub path: Option<String>,
    /// The branch (or tag) to check out (default: the remote's HEAD).
    #[serde(default)]
    pub branch: Option<String>,
    /// A shallow clone of this many commits.
    #[serde(default)]
    pub depth: Option<u32>,
    /// Time limit (`10m`, the default; at most `1h`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Where HEAD is after an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitHead {
    /// The repository's top directory in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The current branch (none when HEAD is detached).
    pub branch: Option<String>,
    /// HEAD's commit (none on a branch without commits yet).
    pub commit: Option<String>,
}

/// One changed file in [`GitStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitFileStatus {
    /// The path, relative to the repository's top.
    pub path: String,
    /// The path before a rename or copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_path: Option<String>,
    /// The change staged in the index: `unmodified`, `modified`, `type_changed`, `added`,
    /// `deleted`, `renamed`, `copied`, `unmerged` or `untracked`.
    pub index: String,
    /// The change in the work tree, relative to the index (same words).
    pub worktree: String,
}

/// `GET git/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitStatus {
    /// The current branch (none when HEAD is detached).
    pub branch: Option<String>,
    /// HEAD's commit (none before the first commit).
    pub commit: Option<String>,
    /// The upstream branch (`origin/main`), if one is set.
    pub upstream: Option<String>,
    /// Commits on the branch that the upstream lacks.
    pub ahead: u32,
    /// Commits on the upstream that the branch lacks.
    pub behind: u32,
    /// No changes at all (untracked files count as changes).
    pub clean: bool,
    /// Changed, staged, unmerged and untracked files.
    pub files: Vec<GitFileStatus>,
}

/// `POST git/add`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitAddRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// Files or directories to stage, relative to `path` (default: every change, deletions
    /// included).
    #[serde(default)]
    pub files: Option<Vec<String>>,
}

/// `POST git/commit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCommitRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// The commit message.
    pub message: String,
    /// Author (and committer) name (default: the workspace owner's username).
    #[serde(default)]
    pub author_name: Option<String>,
    /// Author (and committer) email (default: `<owner>@users.warren.invalid`).
    #[serde(default)]
    pub author_email: Option<String>,
    /// Commit even with nothing staged.
    #[serde(default)]
    pub allow_empty: Option<bool>,
}

/// A new commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitCommitted {
    /// The commit.
    pub commit: String,
    /// The branch it is on (none when HEAD is detached).
    pub branch: Option<String>,
    /// `Name <email>`.
    pub author: String,
}

/// One branch in [`GitBranches`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitBranchInfo {
    /// `main`, or `origin/main` for a remote-tracking branch.
    pub name: String,
    /// Its commit.
    pub commit: String,
    /// Its upstream (`origin/main`), for local branches that have one.
    pub upstream: Option<String>,
    /// The checked-out branch.
    pub current: bool,
    /// A remote-tracking branch.
    pub remote: bool,
}

/// `GET git/branches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitBranches {
    /// The checked-out branch (none when HEAD is detached).
    pub current: Option<String>,
    /// Local branches, then remote-tracking ones.
    pub branches: Vec<GitBranchInfo>,
}

/// `POST git/branch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitBranchRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// The new branch's name.
    pub name: String,
    /// Where it starts (default: HEAD).
    #[serde(default)]
    pub start_point: Option<String>,
}

/// A created branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitBranchCreated {
    /// Its name.
    pub name: String,
    /// Its commit.
    pub commit: String,
}

/// `POST git/checkout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCheckoutRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// The branch to switch to (a remote-tracking branch's name makes a local one tracking it).
    pub branch: String,
    /// Create the branch at HEAD first.
    #[serde(default)]
    pub create: Option<bool>,
}

/// `POST git/push`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitPushRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// The remote (default `origin`).
    #[serde(default)]
    pub remote: Option<String>,
    /// The branch to push, to the same name on the remote (default: the current one).
    #[serde(default)]
    pub branch: Option<String>,
    /// Make the remote branch the local one's upstream.
    #[serde(default)]
    pub set_upstream: Option<bool>,
    /// Time limit (`10m`, the default; at most `1h`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A push that landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitPushed {
    /// The remote's name (or URL, as given).
    pub remote: String,
    /// The remote's URL, without credentials.
    pub url: String,
    /// The branch pushed.
    pub branch: String,
    /// The commit the remote branch now points at.
    pub commit: String,
}

/// `POST git/pull`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitPullRequest {
    /// The repository (default: the workspace folder).
    #[serde(default)]
    pub path: Option<String>,
    /// The remote (default: the branch's upstream's).
    #[serde(default)]
    pub remote: Option<String>,
    /// The remote branch to merge (default: the upstream); needs `remote`.
    #[serde(default)]
    pub branch: Option<String>,
    /// Rebase onto it instead of merging.
    #[serde(default)]
    pub rebase: Option<bool>,
    /// Time limit (`10m`, the default; at most `1h`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// After a pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitPulled {
    /// The current branch.
    pub branch: Option<String>,
    /// HEAD's commit now.
    pub commit: Option<String>,
    /// Whether HEAD moved.
    pub updated: bool,
}

/// One commit of `GET git/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitLogEntry {
    /// The commit.
    pub commit: String,
    /// Its parents.
    pub parents: Vec<String>,
    /// Author name.
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Author date (RFC 3339).
    pub date: String,
    /// The message's first line.
    pub subject: String,
}
