//! Loads a Dev Containers `devcontainer.json` (JSONC) for a project folder: finds it, parses it with
//! positions for errors, substitutes `${...}` variables and resolves the workspace folder and mount.
#![forbid(unsafe_code)]

mod config;
mod dockerfile;
mod json;
mod jsonc;
mod merge;
mod mount;
mod read;
mod subst;

use std::fmt;
use std::path::{Path, PathBuf};

pub use config::{
    size_bytes, AppPort, Build, DevContainer, ForwardPort, Gpu, HostRequirements, LifecycleCommand,
    OnAutoForward, PortAttributes, Protocol, Secret, ShutdownAction, UserEnvProbe, WaitFor,
    MODEL_PROPERTIES,
};
pub use dockerfile::{dockerfile_base_image, metadata_image, MetadataImage};
pub use json::{Json, Object};
pub use merge::{
    lifecycle_origins, merge_configuration, metadata_entries, parse_metadata_label,
    MergedConfiguration, Origin, METADATA_LABEL,
};
pub use mount::{Mount, MountError, MountKind};
pub use read::{git_root, resolve_path, substitute_json, ReadConfiguration};
pub use subst::{
    devcontainer_id, devcontainer_id_for, substitute, substitute_container_env,
    substitute_devcontainer_id, SubstituteError, Vars,
};

use jsonc::{Node, Value};

/// A devcontainer.json found, parsed and resolved for a project folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    /// Path of the devcontainer.json that was read.
    pub config_path: PathBuf,
    /// The configuration after variable substitution.
    pub config: DevContainer,
    /// Everything that was ignored or defaulted; show these to the user.
    pub warnings: Vec<Warning>,
    /// In-container path to work in.
    pub workspace_folder: String,
    /// How the project gets into the container (by default a bind of the project folder to
    /// `/workspaces/<project folder name>`).
    pub workspace_mount: Mount,
}

/// Something in the config that was ignored or defaulted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Warning {
    /// The property concerned, e.g. `forwardPorts` or `mounts[2]`.
    pub property: String,
    /// What happened, continuing "property `X` ...", e.g. "is not supported yet and was ignored".
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "devcontainer.json: property `{}` {}",
            self.property, self.message
        )
    }
}

/// Why a devcontainer.json could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `.devcontainer/devcontainer.json` nor `.devcontainer.json` exists.
    #[error("no devcontainer.json found in {}", project_dir.display())]
    NotFound {
        /// The project folder that was searched.
        project_dir: PathBuf,
    },
    /// The file or folder could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not valid JSONC.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        /// The devcontainer.json.
        file: PathBuf,
        /// 1-based line of the offending token.
        line: usize,
        /// 1-based column (in characters) of the offending token.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A property has the wrong type or an invalid value.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Invalid {
        /// The devcontainer.json.
        file: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column (in characters) of the offending value.
        column: usize,
        /// Path of the property, e.g. `image`, `containerEnv.FOO`, `mounts[1]` (empty for the root).
        property: String,
        /// What is wrong.
        message: String,
    },
    /// The project folder's path is not UTF-8, so it cannot be substituted into strings.
    #[error("project folder {} is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The project folder.
        path: PathBuf,
    },
}

impl ConfigError {
    /// A suggestion for fixing the error, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotFound { project_dir } => Some(format!(
                "create {} or {}",
                project_dir
                    .join(".devcontainer/devcontainer.json")
                    .display(),
                project_dir.join(".devcontainer.json").display()
            )),
            Self::Syntax { .. } => Some(
                "devcontainer.json is JSON with comments: check quotes, commas and brackets near \
                 this position"
                    .into(),
            ),
            Self::Invalid { property, .. }
                if property.starts_with("mounts") || property == "workspaceMount" =>
            {
                Some(
                    "a mount looks like \"type=bind,source=/host/path,target=/container/path\" \
                     (type bind, volume or tmpfs; add \",readonly\" for read-only)"
                        .into(),
                )
            }
            Self::Invalid { property, .. } if property.contains("Command") => Some(
                "a command is a string (run by /bin/sh -c), an array of strings (run without a \
                 shell), or an object of named commands run in parallel"
                    .into(),
            ),
            Self::Invalid { .. } => Some(
                "see https://containers.dev/implementors/json_reference/ for the properties and \
                 their types"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Finds the project's devcontainer.json: `.devcontainer/devcontainer.json`, else `.devcontainer.json`.
pub fn find_config(project_dir: &Path) -> Result<PathBuf, ConfigError> {
    [".devcontainer/devcontainer.json", ".devcontainer.json"]
        .iter()
        .map(|rel| project_dir.join(rel))
        .find(|path| path.is_file())
        .ok_or_else(|| ConfigError::NotFound {
            project_dir: project_dir.to_owned(),
        })
}

/// Finds, reads, parses, substitutes (with the process environment for `${localEnv:..}`) and
/// resolves the devcontainer.json of `project_dir`.
pub fn load(project_dir: &Path) -> Result<Loaded, ConfigError> {
    let project_dir = project_dir
        .canonicalize()
        .map_err(|error| ConfigError::Io {
            path: project_dir.to_owned(),
            error,
        })?;
    let config_path = find_config(&project_dir)?;
    let text = std::fs::read_to_string(&config_path).map_err(|error| ConfigError::Io {
        path: config_path.clone(),
        error,
    })?;
    load_str(&text, &config_path, &project_dir, &|name| {
        std::env::var(name).ok()
    })
}

/// Like [`load`] for config text already read from `config_path`: `project_dir` (absolute) is the
/// host project folder and `local_env` looks up host environment variables.
pub fn load_str(
    text: &str,
    config_path: &Path,
    project_dir: &Path,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    Ok(read_str(text, config_path, project_dir, project_dir, local_env)?.1)
}

/// Reads `project_dir`'s devcontainer.json as the reference CLI's `read-configuration` does.
/// `project_dir` is taken as given (made absolute lexically, symlinks not followed);
/// `mount_git_root` mounts the enclosing git work tree, as the reference does by default.
pub fn read_configuration(
    project_dir: &Path,
    mount_git_root: bool,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ReadConfiguration, Loaded), ConfigError> {
    let cwd = if project_dir.is_absolute() {
        PathBuf::from("/")
    } else {
        std::env::current_dir().map_err(|error| ConfigError::Io {
            path: project_dir.to_owned(),
            error,
        })?
    };
    let project_dir = resolve_path(&cwd, project_dir);
    let config_path = find_config(&project_dir)?;
    let text = std::fs::read_to_string(&config_path).map_err(|error| ConfigError::Io {
        path: config_path.clone(),
        error,
    })?;
    let mount_root = if mount_git_root {
        git_root(&project_dir)
    } else {
        project_dir.clone()
    };
    read_str(&text, &config_path, &project_dir, &mount_root, local_env)
}

/// [`read_configuration`] for text already read: `mount_root` is the folder mounted into the
/// container (`project_dir` or its git root).
pub fn read_str(
    text: &str,
    config_path: &Path,
    project_dir: &Path,
    mount_root: &Path,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ReadConfiguration, Loaded), ConfigError> {
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::NonUtf8Path { path: p.to_owned() })
    };
    let local = utf8(project_dir)?;
    let root_dir = utf8(mount_root)?;
    let (root, duplicates) = parse_tree(text, config_path)?;
    let read::Read { read, substituted } =
        read::read(root, config_path, &local, &root_dir, local_env)?;
    let (config, mut warnings) = config::extract(&substituted, config_path, &duplicates)?;

    // Warren's own resolution for the engine: the project folder (never its git root) is bound to
    // `/workspaces/<name>` unless `workspaceMount` says otherwise.
    let basename = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let default_target = format!("/workspaces/{basename}");
    let workspace_mount = config.workspace_mount.clone().unwrap_or_else(|| Mount {
        kind: MountKind::Bind,
        source: Some(local.clone()),
        target: default_target.clone(),
        read_only: false,
    });
    let workspace_folder = match (&config.workspace_folder, &config.workspace_mount) {
        (Some(folder), _) => folder.clone(),
        (None, Some(mount)) => {
            warnings.push(Warning {
                property: "workspaceFolder".into(),
                message: format!(
                    "should be set when `workspaceMount` is; using the mount target `{}`",
                    mount.target
                ),
            });
            mount.target.clone()
        }
        (None, None) => default_target,
    };
    let loaded = Loaded {
        config_path: config_path.to_owned(),
        config,
        warnings,
        workspace_folder,
        workspace_mount,
    };
    Ok((read, loaded))
}

/// JSONC text (comments, trailing commas: devcontainer.json and devcontainer-feature.json) as
/// strict JSON text, keys in their order; the error is `line:column: message`.
pub fn jsonc_to_json(text: &str) -> Result<String, String> {
    let (root, _) = jsonc::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("{}:{}: {}", e.pos.line, e.pos.column, e.message))?;
    Ok(Json::from(&root).to_json_string())
}

/// Parses devcontainer.json text without substituting variables; `file` is used in errors.
pub fn parse_str(text: &str, file: &Path) -> Result<(DevContainer, Vec<Warning>), ConfigError> {
    let (mut root, duplicates) = parse_tree(text, file)?;
    read::update_from_old_properties(&mut root);
    config::extract(&root, file, &duplicates)
}

fn parse_tree(text: &str, file: &Path) -> Result<(Node, Vec<jsonc::Duplicate>), ConfigError> {
    jsonc::parse(text).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        line: e.pos.line,
        column: e.pos.column,
        message: e.message,
    })
}

/// Substitutes variables in every string value (not in keys), as the reference CLI does.
pub(crate) fn substitute_tree(
    node: &mut Node,
    vars: &Vars<'_>,
    file: &Path,
    path: &str,
) -> Result<(), ConfigError> {
    match &mut node.value {
        Value::String(s) => {
            *s = substitute(s, vars).map_err(|e| ConfigError::Invalid {
                file: file.to_owned(),
                line: node.pos.line,
                column: node.pos.column,
                property: path.to_owned(),
                message: e.to_string(),
            })?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_tree(item, vars, file, &format!("{path}[{i}]"))?;
            }
        }
        Value::Object(entries) => {
            for (key, value) in entries {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                substitute_tree(value, vars, file, &child)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
