//! The error type of the image store: one line per failure, plus a hint for the user.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An image name does not follow `[a-z0-9][a-z0-9._/-]*[:tag]`.
    #[error("invalid image name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },

    /// No image of that name is in the store.
    #[error("image `{name}` not found")]
    NotFound { name: String },

    /// The caller said a workspace still uses the image.
    #[error("image `{name}` is in use by a workspace")]
    InUse { name: String },

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Content did not hash to the digest it was announced with.
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("unsupported or malformed digest `{digest}`")]
    BadDigest { digest: String },

    /// The source is not a usable OCI image layout.
    #[error("{} is not a usable OCI image layout: {reason}", path.display())]
    InvalidLayout { path: PathBuf, reason: String },

    /// No manifest in an index fits the requested tag or this machine's platform.
    #[error("no manifest in {} matches tag `{tag}` or platform linux/{arch}", path.display())]
    NoMatchingManifest {
        path: PathBuf,
        tag: String,
        arch: String,
        available: Vec<String>,
    },

    /// A JSON document (index, manifest, config, refs) could not be parsed.
    #[error("cannot parse {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A layer tar contains an entry that would escape the layer or is otherwise refused.
    #[error("refusing layer entry `{entry}`: {reason}")]
    UnsafeEntry { entry: String, reason: String },

    /// A layer or rootfs archive is damaged or in a format the store cannot read.
    #[error("cannot read archive {what}: {reason}")]
    BadArchive { what: String, reason: String },

    /// The store's own files are inconsistent (e.g. a referenced blob is missing).
    #[error("image store is inconsistent: {reason}")]
    Corrupt { reason: String },

    /// An option value is not acceptable (e.g. a bootstrap suite that looks like a flag).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },

    /// An external tool (e.g. mmdebstrap) is not installed.
    #[error("`{tool}` is not installed")]
    ToolMissing { tool: String, package: String },

    /// An external tool ran but failed.
    #[error("`{tool}` failed ({status}): {last_line}")]
    ToolFailed {
        tool: String,
        status: String,
        last_line: String,
    },
}

impl ImageError {
    /// A suggestion for the user on how to fix the problem, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::InvalidName { .. } => Some(
                "names are lowercase letters, digits and `._/-`, starting with a letter or digit, \
                 optionally followed by `:tag` (e.g. `debian:bookworm`)"
                    .to_string(),
            ),
            ImageError::NotFound { .. } => Some(
                "import it with `warren image import PATH NAME` or build one with \
                 `warren image bootstrap NAME`"
                    .to_string(),
            ),
            ImageError::InUse { .. } => {
                Some("delete the workspaces that use it first (`warren list` shows them)".to_string())
            }
            ImageError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Some("the image store needs root privileges; run warren as root".to_string())
            }
            ImageError::Io { source, .. }
                if source.raw_os_error() == Some(28) /* ENOSPC */ =>
            {
                Some("the disk is full; free space or remove unused images with `warren image rm`".to_string())
            }
            ImageError::DigestMismatch { .. } => Some(
                "the source is damaged or was modified after it was written; re-create or re-download it"
                    .to_string(),
            ),
            ImageError::InvalidLayout { .. } => Some(
                "expected a directory (or .tar of one) with `oci-layout`, `index.json` and `blobs/`, \
                 e.g. from `skopeo copy docker://IMAGE oci:DIR:TAG`; for a plain root filesystem \
                 import the directory or tarball as a rootfs instead"
                    .to_string(),
            ),
            ImageError::NoMatchingManifest { available, .. } => Some(if available.is_empty() {
                "the layout's index.json holds no manifest for this machine".to_string()
            } else {
                format!(
                    "use one of the tags in the layout as the image tag: {}",
                    available.join(", ")
                )
            }),
            ImageError::UnsafeEntry { .. } => Some(
                "the archive tries to write outside its root; it is refused for safety — \
                 rebuild it with relative paths"
                    .to_string(),
            ),
            ImageError::Corrupt { .. } => Some(
                "re-import the affected image; `warren image rm` of it cleans up its leftovers"
                    .to_string(),
            ),
            ImageError::ToolMissing { package, .. } => {
                Some(format!("install it with `apt-get install {package}`"))
            }
            ImageError::ToolFailed { .. } => Some(
                "check the output above; network access to the Debian mirror is needed".to_string(),
            ),
            _ => None,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}
