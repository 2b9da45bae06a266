//! The toolbox API's file operations (`/api/v1/workspaces/{ws}/toolbox/files...`): request and
//! answer bodies. The work happens inside the workspace (`warren __toolbox`), as its user.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by list, search, tar or watch).
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// A file's metadata (`lstat`: a symlink is described, not its target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// The last component.
    pub name: String,
    /// The absolute path inside the workspace.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits in octal (`0644`).
    pub mode: String,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Owner's uid inside the workspace.
    pub uid: u32,
    /// Group's gid inside the workspace.
    pub gid: u32,
    /// A symlink's target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The answer to a file upload (`PUT .../toolbox/files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileWritten {
    /// The file written (a symlink's target when the path was a symlink).
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// The answer to a tar upload (`PUT .../toolbox/files/tar`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TarExtracted {
    /// The directory extracted into.
    pub path: String,
    /// Regular files (and hard links) made.
    pub files: u64,
    /// Directories in the archive.
    pub dirs: u64,
    /// Symlinks made.
    pub symlinks: u64,
    /// Size of the archive.
    pub bytes: u64,
}

/// `POST .../toolbox/files/mkdir`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// The directory to make.
    pub path: String,
    /// Make missing parents too, and accept an existing directory (`mkdir -p`).
    #[serde(default)]
    pub parents: bool,
    /// Permission bits in octal (default `0755`, less the umask).
    #[serde(default)]
    pub mode: Option<String>,
    /// Act as this user (default: the workspace's remote user).
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST .../toolbox/files/move`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// What to move.
    pub from: String,
    /// Where to.
    pub to: String,
    /// Replace what `to` names (default: refuse with 409).
    #[serde(default)]
    pub overwrite: bool,
    /// Act as this user (default: the workspace's remote user).
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST .../toolbox/files/chmod`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChmodRequest {
    /// The file or directory (a symlink's target is changed).
    pub path: String,
    /// Permission bits in octal (`0644`).
    pub mode: String,
    /// Act as this user (default: the workspace's remote user).
    #[serde(default)]
    pub user: Option<String>,
}

/// One search result: a file whose name matched the glob, or a line that contains the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchMatch {
    /// The file.
    pub path: String,
    /// The line's number (from 1), for content searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The line (at most 1000 bytes), for content searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One event of a directory watch (SSE event named after `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    /// `created`, `modified`, `removed`, `renamed`, or `overflow` (events were lost: rescan).
    pub kind: String,
    /// The path concerned (the new name of a rename).
    pub path: String,
    /// A rename's old name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}
