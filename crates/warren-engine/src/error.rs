//! The engine's errors: one line each, a stable machine code, and a hint saying what to do.

use std::path::PathBuf;

use warren_api::{ErrorCode, WorkspaceState};
use warren_store::{StoreError, WorkspaceRecord};

/// Everything an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Not running as root.
    #[error(
        "warren needs root privileges to create workspaces (namespaces, cgroups, overlay mounts)"
    )]
    Privilege,
    /// No such workspace.
    #[error("no workspace named `{0}`")]
    NotFound(String),
    /// The project folder does not exist or cannot be read.
    #[error("cannot use project folder {}: {error}", path.display())]
    ProjectDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The devcontainer.json is missing or invalid.
    #[error(transparent)]
    Config(#[from] warren_devcontainer::ConfigError),
    /// The configuration asks for something the server's policy refuses.
    #[error("{0}")]
    Policy(String),
    /// The configuration asks for something Warren refuses or cannot do; the hint says what to do.
    #[error("{}: {message}", config.display())]
    Refused {
        /// The devcontainer.json.
        config: PathBuf,
        /// What was refused and why.
        message: String,
        /// What to do instead.
        hint: String,
    },
    /// The devcontainer.json names no image.
    #[error("{}: no `image` or `build.dockerfile` given; Compose configurations are not supported yet", .0.display())]
    NoImage(PathBuf),
    /// An image problem.
    #[error(transparent)]
    Image(#[from] warren_image::ImageError),
    /// Building the configuration's Dockerfile failed.
    #[error(transparent)]
    Build(#[from] warren_build::BuildError),
    /// `warren build` of a configuration without a Dockerfile.
    #[error("{}: no `build.dockerfile` to build", .0.display())]
    NoDockerfile(PathBuf),
    /// The name is taken by a workspace of another folder.
    #[error("the name `{name}` is taken{}", if dir.is_empty() { String::new() } else { format!(" by the workspace of {dir}") })]
    NameTaken {
        /// The name.
        name: String,
        /// The other workspace's folder.
        dir: String,
    },
    /// The name breaks the rules.
    #[error(transparent)]
    InvalidName(#[from] warren_api::InvalidWorkspaceName),
    /// The workspace is not running.
    #[error("workspace `{name}` is not running (it is {state})")]
    NotRunning {
        /// Workspace name.
        name: String,
        /// Its state.
        state: WorkspaceState,
    },
    /// Refused: the workspace is running.
    #[error("workspace `{0}` is running")]
    Running(String),
    /// The operation is not possible in this state.
    #[error("cannot {action} workspace `{name}`: it is {state}")]
    InvalidState {
        /// Workspace name.
        name: String,
        /// Its state.
        state: WorkspaceState,
        /// What was attempted.
        action: &'static str,
    },
    /// A lifecycle command failed.
    #[error("{what} failed with exit code {code}")]
    Lifecycle {
        /// Which command (`postCreateCommand`...).
        what: String,
        /// Its exit code.
        code: i32,
        /// Where its output is kept.
        log: PathBuf,
    },
    /// A store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A runtime error.
    #[error(transparent)]
    Runtime(#[from] warren_runtime::RuntimeError),
    /// A bug or an unexpected host condition.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The stable machine code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Privilege => ErrorCode::PermissionDenied,
            EngineError::NotFound(_) => ErrorCode::NotFound,
            EngineError::ProjectDir { .. }
            | EngineError::Config(_)
            | EngineError::NoImage(_)
            | EngineError::Policy(_)
            | EngineError::Refused { .. } => ErrorCode::InvalidConfig,
            EngineError::Image(warren_image::ImageError::NotFound { .. }) => {
                ErrorCode::ImageNotFound
            }
            EngineError::Image(_) | EngineError::NoDockerfile(_) => ErrorCode::InvalidConfig,
            EngineError::Build(
                warren_build::BuildError::RunFailed { .. } | warren_build::BuildError::Host(_),
            ) => ErrorCode::RuntimeError,
            EngineError::Build(warren_build::BuildError::MissingImage { .. }) => {
                ErrorCode::ImageNotFound
            }
            EngineError::Build(_) => ErrorCode::InvalidConfig,
            EngineError::NameTaken { .. } => ErrorCode::NameTaken,
            EngineError::InvalidName(_) => ErrorCode::InvalidName,
            EngineError::NotRunning { .. }
            | EngineError::Running(_)
            | EngineError::InvalidState { .. } => ErrorCode::InvalidState,
            EngineError::Runtime(warren_runtime::RuntimeError::Command(_)) => {
                ErrorCode::InvalidRequest
            }
            EngineError::Lifecycle { .. } | EngineError::Runtime(_) => ErrorCode::RuntimeError,
            EngineError::Store(e) => e.code(),
            EngineError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Privilege => Some(
                "run warren as root (e.g. with sudo); rootless workspaces are not supported yet".into(),
            ),
            EngineError::NotFound(_) => Some("`warren list` shows the workspaces that exist".into()),
            EngineError::Config(e) => e.hint(),
            EngineError::Refused { hint, .. } => Some(hint.clone()),
            EngineError::Policy(_) => Some(
                "use a volume mount (type=volume) for data that should persist".into(),
            ),
            EngineError::NoImage(_) => Some(
                "add \"image\": \"debian:bookworm\" (or an image you imported with `warren image import`), or \"build\": {\"dockerfile\": \"Dockerfile\"}".into(),
            ),
            EngineError::Image(e) => e.hint(),
            EngineError::Build(e) => e.hint(),
            EngineError::NoDockerfile(_) => Some(
                "set \"build\": {\"dockerfile\": \"Dockerfile\"} in devcontainer.json (images named by `image` need no build)".into(),
            ),
            EngineError::NameTaken { .. } => Some("pick another name with `--name NAME`".into()),
            EngineError::NotRunning { name, .. } => Some(format!("start it with `warren start {name}`")),
            EngineError::Running(name) => Some(format!(
                "stop it first with `warren stop {name}`, or delete it anyway with `warren delete --force {name}`"
            )),
            EngineError::Lifecycle { what, .. } if what.starts_with("initializeCommand") => Some(
                "it runs on this machine in the project folder, before anything else; its output is above"
                    .into(),
            ),
            EngineError::Lifecycle { log, .. } => Some(format!(
                "its output is in `warren logs` ({}); fix the command and run `warren up` again",
                log.display()
            )),
            EngineError::Runtime(warren_runtime::RuntimeError::Start(_)) => Some(
                "the workspace's supervisor log is STATE_DIR/workspaces/<id>/run/supervisor.log (the id is in `warren list --json`)"
                    .into(),
            ),
            _ => None,
        }
    }

    pub(crate) fn from_transition(
        e: StoreError,
        rec: &WorkspaceRecord,
        action: &'static str,
    ) -> EngineError {
        match e {
            StoreError::InvalidTransition(t) => EngineError::InvalidState {
                name: rec.name.to_string(),
                state: t.from,
                action,
            },
            other => EngineError::Store(other),
        }
    }
}
