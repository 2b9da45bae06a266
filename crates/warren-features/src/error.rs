//! The error type: one line naming the feature and the reason, plus a hint.

use std::path::PathBuf;

/// Everything that can go wrong preparing features.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A feature reference (a key of `features`, a `dependsOn` key, an `installsAfter` or
    /// `overrideFeatureInstallOrder` entry) cannot be used.
    #[error("feature `{feature}`: {reason}")]
    InvalidReference {
        feature: String,
        reason: String,
        hint: Option<String>,
    },
    /// A feature could not be fetched (network, registry, archive).
    #[error("feature `{feature}` cannot be fetched: {reason}")]
    Fetch {
        feature: String,
        reason: String,
        hint: Option<String>,
    },
    /// A feature's `devcontainer-feature.json` is missing or invalid.
    #[error("feature `{feature}`: invalid devcontainer-feature.json: {reason}")]
    InvalidManifest { feature: String, reason: String },
    /// An option value given for a feature is not acceptable.
    #[error("feature `{feature}`: {reason}")]
    InvalidOption {
        feature: String,
        reason: String,
        hint: Option<String>,
    },
    /// A feature archive holds an entry that would escape its folder or is not a plain file,
    /// folder or link.
    #[error("feature `{feature}`: refusing archive entry `{entry}`: {reason}")]
    UnsafeArchive {
        feature: String,
        entry: String,
        reason: String,
    },
    /// `dependsOn`/`installsAfter` form a cycle, so no install order exists.
    #[error("features depend on each other in a cycle: {cycle}")]
    Cycle { cycle: String },
    /// A file operation on the cache or the build context failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FeatureError {
    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            FeatureError::InvalidReference { hint, .. }
            | FeatureError::Fetch { hint, .. }
            | FeatureError::InvalidOption { hint, .. } => hint.clone(),
            FeatureError::InvalidManifest { .. } => Some(
                "the feature's author must fix its devcontainer-feature.json; see \
                 https://containers.dev/implementors/features/"
                    .to_string(),
            ),
            FeatureError::UnsafeArchive { .. } => Some(
                "the archive tries to write outside its folder or holds device nodes; it is \
                 refused for safety"
                    .to_string(),
            ),
            FeatureError::Cycle { .. } => Some(
                "break the cycle: a feature cannot (directly or through others) depend on or \
                 install after itself"
                    .to_string(),
            ),
            FeatureError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("check the permissions of the feature cache and build folders".to_string())
            }
            FeatureError::Io { .. } => Some(
                "check that the feature cache and build folders are writable and the disk has space"
                    .to_string(),
            ),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| FeatureError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn fetch(feature: &str, e: &warren_image::registry::RegistryError) -> Self {
        FeatureError::Fetch {
            feature: feature.to_string(),
            reason: e.to_string(),
            hint: e.hint(),
        }
    }
}
