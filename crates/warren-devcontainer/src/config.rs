//! The typed devcontainer.json model and its extraction from a parsed JSONC tree.

use std::collections::BTreeMap;
use std::path::Path;

use crate::jsonc::{Duplicate, Node, Value};
use crate::{ConfigError, Mount, MountError, MountKind, Warning};

/// The properties of a devcontainer.json that Warren understands.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DevContainer {
    /// `name`.
    pub name: Option<String>,
    /// `image`: the only supported way to get a container image for now.
    pub image: Option<String>,
    /// `containerEnv`: environment of the container itself.
    pub container_env: BTreeMap<String, String>,
    /// `remoteEnv`: environment of processes started in the container; `None` unsets a variable.
    pub remote_env: BTreeMap<String, Option<String>>,
    /// `workspaceFolder`: in-container folder to work in.
    pub workspace_folder: Option<String>,
    /// `workspaceMount`: replaces the default workspace bind mount.
    pub workspace_mount: Option<Mount>,
    /// `mounts`: extra mounts.
    pub mounts: Vec<Mount>,
    /// `remoteUser`: user for lifecycle commands and sessions.
    pub remote_user: Option<String>,
    /// `containerUser`: user the container runs as.
    pub container_user: Option<String>,
    /// `initializeCommand` (runs on the host; parsed, not supported yet).
    pub initialize_command: Option<LifecycleCommand>,
    /// `onCreateCommand`.
    pub on_create_command: Option<LifecycleCommand>,
    /// `updateContentCommand` (parsed, not supported yet).
    pub update_content_command: Option<LifecycleCommand>,
    /// `postCreateCommand`.
    pub post_create_command: Option<LifecycleCommand>,
    /// `postStartCommand`.
    pub post_start_command: Option<LifecycleCommand>,
    /// `postAttachCommand` (parsed, not supported yet).
    pub post_attach_command: Option<LifecycleCommand>,
}

/// A lifecycle command in one of its three forms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LifecycleCommand {
    /// String form: run with `/bin/sh -c`.
    Shell(String),
    /// Array form: argv run directly, without a shell.
    Exec(Vec<String>),
    /// Object form: named commands (each `Shell` or `Exec`) run in parallel; all must succeed.
    Parallel(Vec<(String, LifecycleCommand)>),
}

/// Schema properties that are recognised but not supported yet (a Warning each).
pub(crate) const UNSUPPORTED: &[&str] = &[
    "features",
    "overrideFeatureInstallOrder",
    "secrets",
    "forwardPorts",
    "portsAttributes",
    "otherPortsAttributes",
    "updateRemoteUserUID",
    "init",
    "privileged",
    "capAdd",
    "securityOpt",
    "initializeCommand",
    "updateContentCommand",
    "postAttachCommand",
    "waitFor",
    "userEnvProbe",
    "hostRequirements",
    "additionalProperties",
    "appPort",
    "runArgs",
    "shutdownAction",
    "overrideCommand",
    "build",
    "dockerFile",
    "context",
    "dockerComposeFile",
    "service",
    "runServices",
];

/// Tool-specific schema properties accepted without a warning.
pub(crate) const TOOL_SPECIFIC: &[&str] = &["$schema", "customizations"];

/// Properties that select another way of getting an image than `image`.
const ORCHESTRATORS: &[&str] = &["build", "dockerFile", "dockerComposeFile"];

/// Builds the typed config from a parsed tree; `duplicates` become warnings.
pub(crate) fn extract(
    root: &Node,
    file: &Path,
    duplicates: &[Duplicate],
) -> Result<(DevContainer, Vec<Warning>), ConfigError> {
    let x = Extractor { file };
    let Value::Object(entries) = &root.value else {
        return Err(x.invalid(
            root,
            "",
            format!(
                "expected an object at the top level, found {}",
                root.value.kind()
            ),
        ));
    };
    let mut warnings: Vec<Warning> = duplicates
        .iter()
        .map(|d| Warning {
            property: d.key.clone(),
            message: format!(
                "is defined more than once (line {}); the last value is used",
                d.pos.line
            ),
        })
        .collect();
    let has_image = entries.iter().any(|(k, _)| k == "image");
    let mut c = DevContainer::default();
    for (key, node) in entries {
        let key = key.as_str();
        match key {
            "name" => c.name = Some(x.string(node, key)?),
            "image" => c.image = Some(x.string(node, key)?),
            "workspaceFolder" => c.workspace_folder = Some(x.string(node, key)?),
            "remoteUser" => c.remote_user = Some(x.string(node, key)?),
            "containerUser" => c.container_user = Some(x.string(node, key)?),
            "containerEnv" => {
                for (name, value) in x.object(node, key)? {
                    let value = x.string(value, &format!("{key}.{name}"))?;
                    c.container_env.insert(name.clone(), value);
                }
            }
            "remoteEnv" => {
                for (name, value) in x.object(node, key)? {
                    let value = match &value.value {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        _ => {
                            let path = format!("{key}.{name}");
                            return Err(x.expected(value, &path, "a string or null"));
                        }
                    };
                    c.remote_env.insert(name.clone(), value);
                }
            }
            "workspaceMount" => {
                c.workspace_mount = Some(x.mount(node, key, &mut warnings)?);
            }
            "mounts" => {
                for (i, item) in x.array(node, key)?.iter().enumerate() {
                    c.mounts
                        .push(x.mount(item, &format!("{key}[{i}]"), &mut warnings)?);
                }
            }
            "initializeCommand" => c.initialize_command = x.lifecycle(node, key)?,
            "onCreateCommand" => c.on_create_command = x.lifecycle(node, key)?,
            "updateContentCommand" => c.update_content_command = x.lifecycle(node, key)?,
            "postCreateCommand" => c.post_create_command = x.lifecycle(node, key)?,
            "postStartCommand" => c.post_start_command = x.lifecycle(node, key)?,
            "postAttachCommand" => c.post_attach_command = x.lifecycle(node, key)?,
            _ => {}
        }
        let message = match key {
            _ if TOOL_SPECIFIC.contains(&key) => continue,
            _ if ORCHESTRATORS.contains(&key) && !has_image => {
                "is not supported yet: only `image` is supported now"
            }
            _ if UNSUPPORTED.contains(&key) => "is not supported yet and was ignored",
            _ if is_modelled(key) => continue,
            "settings" | "extensions" => {
                "is a legacy VS Code property (use `customizations.vscode`) and was ignored"
            }
            _ => "is unknown and was ignored",
        };
        warnings.push(Warning {
            property: key.to_owned(),
            message: message.to_owned(),
        });
    }
    Ok((c, warnings))
}

/// Properties read into [`DevContainer`].
pub(crate) fn is_modelled(key: &str) -> bool {
    matches!(
        key,
        "name"
            | "image"
            | "workspaceFolder"
            | "remoteUser"
            | "containerUser"
            | "containerEnv"
            | "remoteEnv"
            | "workspaceMount"
            | "mounts"
            | "initializeCommand"
            | "onCreateCommand"
            | "updateContentCommand"
            | "postCreateCommand"
            | "postStartCommand"
            | "postAttachCommand"
    )
}

struct Extractor<'a> {
    file: &'a Path,
}

impl Extractor<'_> {
    fn invalid(&self, node: &Node, property: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: node.pos.line,
            column: node.pos.column,
            property: property.to_owned(),
            message,
        }
    }

    fn expected(&self, node: &Node, property: &str, what: &str) -> ConfigError {
        let message = format!(
            "expected {what} for `{property}`, found {}",
            node.value.kind()
        );
        self.invalid(node, property, message)
    }

    fn string(&self, node: &Node, property: &str) -> Result<String, ConfigError> {
        match &node.value {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.expected(node, property, "a string")),
        }
    }

    fn object<'n>(
        &self,
        node: &'n Node,
        property: &str,
    ) -> Result<&'n [(String, Node)], ConfigError> {
        match &node.value {
            Value::Object(entries) => Ok(entries),
            _ => Err(self.expected(node, property, "an object")),
        }
    }

    fn array<'n>(&self, node: &'n Node, property: &str) -> Result<&'n [Node], ConfigError> {
        match &node.value {
            Value::Array(items) => Ok(items),
            _ => Err(self.expected(node, property, "an array")),
        }
    }

    fn argv(&self, items: &[Node], property: &str) -> Result<Vec<String>, ConfigError> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.string(item, &format!("{property}[{i}]")))
            .collect()
    }

    /// String → Shell, array → Exec, object → Parallel; empty commands mean "nothing to run".
    fn lifecycle(
        &self,
        node: &Node,
        property: &str,
    ) -> Result<Option<LifecycleCommand>, ConfigError> {
        let single = |node: &Node, property: &str| match &node.value {
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => Ok(Some(LifecycleCommand::Shell(s.clone()))),
            Value::Array(items) if items.is_empty() => Ok(None),
            Value::Array(items) => Ok(Some(LifecycleCommand::Exec(self.argv(items, property)?))),
            _ => Err(self.expected(node, property, "a string or an array of strings")),
        };
        match &node.value {
            Value::Object(entries) => {
                let mut commands = Vec::new();
                for (name, value) in entries {
                    if let Some(cmd) = single(value, &format!("{property}.{name}"))? {
                        commands.push((name.clone(), cmd));
                    }
                }
                Ok((!commands.is_empty()).then_some(LifecycleCommand::Parallel(commands)))
            }
            Value::String(_) | Value::Array(_) => single(node, property),
            _ => Err(self.expected(node, property, "a string, an array of strings or an object")),
        }
    }

    /// A mount in the string form or (unless `property` is `workspaceMount`) the object form.
    fn mount(
        &self,
        node: &Node,
        property: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<Mount, ConfigError> {
        let bad = |e: MountError| {
            self.invalid(
                node,
                property,
                format!("invalid mount in `{property}`: {e}"),
            )
        };
        let (mount, ignored) = match &node.value {
            Value::String(spec) => Mount::parse(spec).map_err(bad)?,
            Value::Object(entries) if property != "workspaceMount" => {
                let (mut kind, mut source, mut target) = (None, None, String::new());
                let mut ignored = Vec::new();
                for (key, value) in entries {
                    let path = format!("{property}.{key}");
                    match key.as_str() {
                        "type" => {
                            kind = Some(MountKind::parse(&self.string(value, &path)?).map_err(bad)?)
                        }
                        "source" => source = Some(self.string(value, &path)?),
                        "target" => target = self.string(value, &path)?,
                        _ => ignored.push(key.clone()),
                    }
                }
                let kind = kind.ok_or(MountError::MissingType).map_err(bad)?;
                (
                    Mount::new(kind, source, target, false).map_err(bad)?,
                    ignored,
                )
            }
            _ if property == "workspaceMount" => {
                return Err(self.expected(node, property, "a string"))
            }
            _ => return Err(self.expected(node, property, "a string or an object")),
        };
        warnings.extend(ignored.into_iter().map(|option| Warning {
            property: property.to_owned(),
            message: format!(
                "has mount option `{option}`, which is not supported yet and was ignored"
            ),
        }));
        Ok(mount)
    }
}
