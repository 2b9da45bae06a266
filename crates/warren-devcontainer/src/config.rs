//! The typed devcontainer.json model (every property of the spec's `devContainer.base.schema.json`)
//! and its extraction from a parsed JSONC tree, with schema validation: a value of the wrong type,
//! outside an enum or not matching a pattern is an error at its line and column.

use std::collections::BTreeMap;
use std::path::Path;

use crate::json::Json;
use crate::jsonc::{Duplicate, Node, Value};
use crate::{ConfigError, Mount, MountError, MountKind, Warning};

fn is_false(b: &Option<bool>) -> bool {
    b.is_none()
}

/// A devcontainer.json, typed. Fields added after the first version are skipped when unset, so a
/// stored record of an older config serializes (and hashes) as it did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DevContainer {
    /// `name`.
    pub name: Option<String>,
    /// `image`.
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
    /// `initializeCommand` (runs on the host).
    pub initialize_command: Option<LifecycleCommand>,
    /// `onCreateCommand`.
    pub on_create_command: Option<LifecycleCommand>,
    /// `updateContentCommand`.
    pub update_content_command: Option<LifecycleCommand>,
    /// `postCreateCommand`.
    pub post_create_command: Option<LifecycleCommand>,
    /// `postStartCommand`.
    pub post_start_command: Option<LifecycleCommand>,
    /// `postAttachCommand`.
    pub post_attach_command: Option<LifecycleCommand>,
    /// `build`: a Dockerfile build (with the legacy top-level `dockerFile`/`context` folded in:
    /// see [`DevContainer::dockerfile`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// Legacy top-level `dockerFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_file: Option<String>,
    /// Legacy top-level `context`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `dockerComposeFile`: one file or several (a string is one file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_compose_file: Option<Vec<String>>,
    /// `service`: the Compose service to work in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `runServices`: the Compose services to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_services: Option<Vec<String>>,
    /// `features`: Feature id → options (a string, boolean or object), in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<(String, Json)>,
    /// `overrideFeatureInstallOrder`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_feature_install_order: Option<Vec<String>>,
    /// `forwardPorts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_ports: Vec<ForwardPort>,
    /// `portsAttributes`: port, range or pattern → attributes, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports_attributes: Vec<(String, PortAttributes)>,
    /// `otherPortsAttributes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_ports_attributes: Option<PortAttributes>,
    /// `appPort` (legacy published ports): numbers or Docker `-p` strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub app_port: Vec<AppPort>,
    /// `hostRequirements`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_requirements: Option<HostRequirements>,
    /// `capAdd`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `securityOpt`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `privileged`.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: Option<bool>,
    /// `init`.
    #[serde(skip_serializing_if = "is_false")]
    pub init: Option<bool>,
    /// `overrideCommand`.
    #[serde(skip_serializing_if = "is_false")]
    pub override_command: Option<bool>,
    /// `shutdownAction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_action: Option<ShutdownAction>,
    /// `runArgs` (Docker `run` arguments).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_args: Vec<String>,
    /// `updateRemoteUserUID`.
    #[serde(skip_serializing_if = "is_false")]
    pub update_remote_user_uid: Option<bool>,
    /// `userEnvProbe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_env_probe: Option<UserEnvProbe>,
    /// `waitFor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
    /// `secrets`: name → description, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<(String, Secret)>,
    /// `customizations` (tool-specific, raw; legacy top-level `extensions`, `settings` and
    /// `devPort` are moved under `vscode` as the reference CLI does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customizations: Option<Json>,
    /// `$schema`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
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

/// `build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Build {
    /// `build.dockerfile`, relative to the devcontainer.json.
    pub dockerfile: Option<String>,
    /// `build.context`, relative to the devcontainer.json.
    pub context: Option<String>,
    /// `build.args`, in file order.
    pub args: Vec<(String, String)>,
    /// `build.target`.
    pub target: Option<String>,
    /// `build.cacheFrom` (a string is one image).
    pub cache_from: Vec<String>,
    /// `build.options` (extra `docker build` arguments).
    pub options: Vec<String>,
}

/// One `forwardPorts` item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ForwardPort {
    /// A port of the container (`3000`).
    Port(u16),
    /// A port of another host the container reaches (`"db:5432"`).
    HostPort {
        /// Host name (lowercase letters, digits and `-`).
        host: String,
        /// Port.
        port: u16,
    },
}

/// One `appPort` item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AppPort {
    /// A port number.
    Port(i64),
    /// A Docker `-p` specification (`"127.0.0.1:8080:80"`).
    Spec(String),
}

/// Attributes of a forwarded port.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PortAttributes {
    /// `label`.
    pub label: Option<String>,
    /// `onAutoForward`.
    pub on_auto_forward: Option<OnAutoForward>,
    /// `elevateIfNeeded`.
    pub elevate_if_needed: Option<bool>,
    /// `requireLocalPort`.
    pub require_local_port: Option<bool>,
    /// `protocol`.
    pub protocol: Option<Protocol>,
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vm])* $variant),+ }
        impl $name {
            /// Every value as written in devcontainer.json.
            pub const ALL: &'static [&'static str] = &[$($text),+];
            /// The value as written in devcontainer.json.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            /// Parses the devcontainer.json spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

string_enum!(
    /// `onAutoForward`.
    OnAutoForward {
        /// `notify`.
        Notify = "notify",
        /// `openBrowser`.
        OpenBrowser = "openBrowser",
        /// `openBrowserOnce`.
        OpenBrowserOnce = "openBrowserOnce",
        /// `openPreview`.
        OpenPreview = "openPreview",
        /// `silent`.
        Silent = "silent",
        /// `ignore`.
        Ignore = "ignore",
    }
);

string_enum!(
    /// `protocol` of a forwarded port.
    Protocol {
        /// `http`.
        Http = "http",
        /// `https`.
        Https = "https",
    }
);

string_enum!(
    /// `shutdownAction`.
    ShutdownAction {
        /// `none`.
        None = "none",
        /// `stopContainer` (image and Dockerfile configs).
        StopContainer = "stopContainer",
        /// `stopCompose` (Compose configs).
        StopCompose = "stopCompose",
    }
);

string_enum!(
    /// `userEnvProbe`.
    UserEnvProbe {
        /// `none`.
        None = "none",
        /// `loginShell`.
        LoginShell = "loginShell",
        /// `loginInteractiveShell`.
        LoginInteractiveShell = "loginInteractiveShell",
        /// `interactiveShell`.
        InteractiveShell = "interactiveShell",
    }
);

string_enum!(
    /// `waitFor`.
    WaitFor {
        /// `initializeCommand`.
        InitializeCommand = "initializeCommand",
        /// `onCreateCommand`.
        OnCreateCommand = "onCreateCommand",
        /// `updateContentCommand`.
        UpdateContentCommand = "updateContentCommand",
        /// `postCreateCommand`.
        PostCreateCommand = "postCreateCommand",
        /// `postStartCommand`.
        PostStartCommand = "postStartCommand",
    }
);

/// `hostRequirements`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HostRequirements {
    /// `cpus` (at least 1).
    pub cpus: Option<u64>,
    /// `memory` as written (`"8gb"`); bytes with [`HostRequirements::memory_bytes`].
    pub memory: Option<String>,
    /// `storage` as written.
    pub storage: Option<String>,
    /// `gpu`.
    pub gpu: Option<Gpu>,
}

impl HostRequirements {
    /// `memory` in bytes (`k`, `m`, `g`, `t` are powers of 1024).
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(size_bytes)
    }

    /// `storage` in bytes.
    pub fn storage_bytes(&self) -> Option<u64> {
        self.storage.as_deref().and_then(size_bytes)
    }
}

/// Bytes of a `^\d+([tgmk]b)?$` size.
pub fn size_bytes(text: &str) -> Option<u64> {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let n: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match &text[digits..] {
        "" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// `hostRequirements.gpu`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Gpu {
    /// `true` (required) or `false` (not needed).
    Required(bool),
    /// `"optional"`: used when there is one.
    Optional,
    /// An object: a GPU is required, with at least these.
    Spec {
        /// `cores`.
        cores: Option<u64>,
        /// `memory` as written.
        memory: Option<String>,
    },
}

/// One `secrets` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Secret {
    /// `description`.
    pub description: Option<String>,
    /// `documentationUrl`.
    pub documentation_url: Option<String>,
}

impl DevContainer {
    /// The Dockerfile to build, from `build.dockerfile` or the legacy top-level `dockerFile`.
    pub fn dockerfile(&self) -> Option<&str> {
        self.docker_file
            .as_deref()
            .or_else(|| self.build.as_ref()?.dockerfile.as_deref())
    }

    /// The names of the properties that are set, as written in devcontainer.json (for an engine
    /// that warns about what it does not honour).
    pub fn properties_set(&self) -> Vec<&'static str> {
        let c = self;
        let set: Vec<(&'static str, bool)> = vec![
            ("name", c.name.is_some()),
            ("image", c.image.is_some()),
            ("containerEnv", !c.container_env.is_empty()),
            ("remoteEnv", !c.remote_env.is_empty()),
            ("workspaceFolder", c.workspace_folder.is_some()),
            ("workspaceMount", c.workspace_mount.is_some()),
            ("mounts", !c.mounts.is_empty()),
            ("remoteUser", c.remote_user.is_some()),
            ("containerUser", c.container_user.is_some()),
            ("initializeCommand", c.initialize_command.is_some()),
            ("onCreateCommand", c.on_create_command.is_some()),
            ("updateContentCommand", c.update_content_command.is_some()),
            ("postCreateCommand", c.post_create_command.is_some()),
            ("postStartCommand", c.post_start_command.is_some()),
            ("postAttachCommand", c.post_attach_command.is_some()),
            ("build", c.build.is_some()),
            ("dockerFile", c.docker_file.is_some()),
            ("context", c.context.is_some()),
            ("dockerComposeFile", c.docker_compose_file.is_some()),
            ("service", c.service.is_some()),
            ("runServices", c.run_services.is_some()),
            ("features", !c.features.is_empty()),
            (
                "overrideFeatureInstallOrder",
                c.override_feature_install_order.is_some(),
            ),
            ("forwardPorts", !c.forward_ports.is_empty()),
            ("portsAttributes", !c.ports_attributes.is_empty()),
            ("otherPortsAttributes", c.other_ports_attributes.is_some()),
            ("appPort", !c.app_port.is_empty()),
            ("hostRequirements", c.host_requirements.is_some()),
            ("capAdd", !c.cap_add.is_empty()),
            ("securityOpt", !c.security_opt.is_empty()),
            ("privileged", c.privileged.is_some()),
            ("init", c.init.is_some()),
            ("overrideCommand", c.override_command.is_some()),
            ("shutdownAction", c.shutdown_action.is_some()),
            ("runArgs", !c.run_args.is_empty()),
            ("updateRemoteUserUID", c.update_remote_user_uid.is_some()),
            ("userEnvProbe", c.user_env_probe.is_some()),
            ("waitFor", c.wait_for.is_some()),
            ("secrets", !c.secrets.is_empty()),
            ("customizations", c.customizations.is_some()),
            ("$schema", c.schema.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

/// Every property of the model, as written in devcontainer.json, with the nested ones as
/// `parent.child` (`*` for any key): what the schema drift test compares with the schema.
pub const MODEL_PROPERTIES: &[&str] = &[
    "$schema",
    "name",
    "image",
    "build",
    "build.dockerfile",
    "build.context",
    "build.target",
    "build.args",
    "build.cacheFrom",
    "build.options",
    "dockerFile",
    "context",
    "dockerComposeFile",
    "service",
    "runServices",
    "workspaceFolder",
    "workspaceMount",
    "features",
    "overrideFeatureInstallOrder",
    "secrets",
    "secrets.*.description",
    "secrets.*.documentationUrl",
    "forwardPorts",
    "portsAttributes",
    "portsAttributes.*.label",
    "portsAttributes.*.onAutoForward",
    "portsAttributes.*.elevateIfNeeded",
    "portsAttributes.*.requireLocalPort",
    "portsAttributes.*.protocol",
    "otherPortsAttributes",
    "otherPortsAttributes.label",
    "otherPortsAttributes.onAutoForward",
    "otherPortsAttributes.elevateIfNeeded",
    "otherPortsAttributes.requireLocalPort",
    "otherPortsAttributes.protocol",
    "appPort",
    "updateRemoteUserUID",
    "containerEnv",
    "containerUser",
    "mounts",
    "mounts.type",
    "mounts.source",
    "mounts.target",
    "init",
    "privileged",
    "capAdd",
    "securityOpt",
    "remoteEnv",
    "remoteUser",
    "initializeCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
    "waitFor",
    "userEnvProbe",
    "hostRequirements",
    "hostRequirements.cpus",
    "hostRequirements.memory",
    "hostRequirements.storage",
    "hostRequirements.gpu",
    "hostRequirements.gpu.cores",
    "hostRequirements.gpu.memory",
    "runArgs",
    "shutdownAction",
    "overrideCommand",
    "customizations",
];

/// Top-level properties the loader reads.
pub(crate) fn is_top_level_property(key: &str) -> bool {
    MODEL_PROPERTIES.contains(&key)
}

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
    let mut c = DevContainer::default();
    for (key, node) in entries {
        let k = key.as_str();
        match k {
            "name" => c.name = Some(x.string(node, k)?),
            "image" => c.image = Some(x.string(node, k)?),
            "$schema" => c.schema = Some(x.string(node, k)?),
            "workspaceFolder" => c.workspace_folder = Some(x.string(node, k)?),
            "remoteUser" => c.remote_user = Some(x.string(node, k)?),
            "containerUser" => c.container_user = Some(x.string(node, k)?),
            "containerEnv" => {
                for (name, value) in x.object(node, k)? {
                    let value = x.string(value, &format!("{k}.{name}"))?;
                    c.container_env.insert(name.clone(), value);
                }
            }
            "remoteEnv" => {
                for (name, value) in x.object(node, k)? {
                    let value = match &value.value {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        _ => {
                            let path = format!("{k}.{name}");
                            return Err(x.expected(value, &path, "a string or null"));
                        }
                    };
                    c.remote_env.insert(name.clone(), value);
                }
            }
            "workspaceMount" => {
                c.workspace_mount = Some(x.mount(node, k, &mut warnings)?);
            }
            "mounts" => {
                for (i, item) in x.array(node, k)?.iter().enumerate() {
                    c.mounts
                        .push(x.mount(item, &format!("{k}[{i}]"), &mut warnings)?);
                }
            }
            "initializeCommand" => c.initialize_command = x.lifecycle(node, k)?,
            "onCreateCommand" => c.on_create_command = x.lifecycle(node, k)?,
            "updateContentCommand" => c.update_content_command = x.lifecycle(node, k)?,
            "postCreateCommand" => c.post_create_command = x.lifecycle(node, k)?,
            "postStartCommand" => c.post_start_command = x.lifecycle(node, k)?,
            "postAttachCommand" => c.post_attach_command = x.lifecycle(node, k)?,
            "build" => c.build = Some(x.build(node, &mut warnings)?),
            "dockerFile" => c.docker_file = Some(x.string(node, k)?),
            "context" => c.context = Some(x.string(node, k)?),
            "dockerComposeFile" => {
                c.docker_compose_file = Some(match &node.value {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => x.strings(items, k)?,
                    _ => return Err(x.expected(node, k, "a string or an array of strings")),
                })
            }
            "service" => c.service = Some(x.string(node, k)?),
            "runServices" => c.run_services = Some(x.string_array(node, k)?),
            "features" => {
                for (id, options) in x.object(node, k)? {
                    let path = format!("{k}.{id}");
                    match &options.value {
                        Value::String(_) | Value::Bool(_) | Value::Object(_) => {}
                        _ => {
                            return Err(x.expected(
                                options,
                                &path,
                                "a string, a boolean or an object of options",
                            ))
                        }
                    }
                    c.features.push((id.clone(), Json::from(options)));
                }
            }
            "overrideFeatureInstallOrder" => {
                c.override_feature_install_order = Some(x.string_array(node, k)?)
            }
            "forwardPorts" => {
                for (i, item) in x.array(node, k)?.iter().enumerate() {
                    c.forward_ports.push(x.forward_port(
                        item,
                        &format!("{k}[{i}]"),
                        &mut warnings,
                    )?);
                }
            }
            "portsAttributes" => {
                for (port, attrs) in x.object(node, k)? {
                    let path = format!("{k}.{port}");
                    c.ports_attributes.push((
                        port.clone(),
                        x.port_attributes(attrs, &path, true, &mut warnings)?,
                    ));
                }
            }
            "otherPortsAttributes" => {
                c.other_ports_attributes = Some(x.port_attributes(node, k, false, &mut warnings)?)
            }
            "appPort" => {
                let one = |n: &Node, path: &str| match &n.value {
                    Value::Number(_) => {
                        Ok(AppPort::Port(x.integer(n, path, i64::MIN, i64::MAX)?))
                    }
                    Value::String(s) => Ok(AppPort::Spec(s.clone())),
                    _ => Err(x.expected(n, path, "an integer or a string")),
                };
                c.app_port = match &node.value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| one(n, &format!("{k}[{i}]")))
                        .collect::<Result<_, _>>()?,
                    _ => vec![one(node, k).map_err(|_| {
                        x.expected(node, k, "an integer, a string or an array of them")
                    })?],
                }
            }
            "hostRequirements" => {
                c.host_requirements = Some(x.host_requirements(node, &mut warnings)?)
            }
            "capAdd" => c.cap_add = x.string_array(node, k)?,
            "securityOpt" => c.security_opt = x.string_array(node, k)?,
            "runArgs" => c.run_args = x.string_array(node, k)?,
            "privileged" => c.privileged = Some(x.boolean(node, k)?),
            "init" => c.init = Some(x.boolean(node, k)?),
            "overrideCommand" => c.override_command = Some(x.boolean(node, k)?),
            "updateRemoteUserUID" => c.update_remote_user_uid = Some(x.boolean(node, k)?),
            "shutdownAction" => {
                c.shutdown_action =
                    Some(x.enumeration(node, k, ShutdownAction::ALL, ShutdownAction::parse)?)
            }
            "userEnvProbe" => {
                c.user_env_probe =
                    Some(x.enumeration(node, k, UserEnvProbe::ALL, UserEnvProbe::parse)?)
            }
            "waitFor" => c.wait_for = Some(x.enumeration(node, k, WaitFor::ALL, WaitFor::parse)?),
            "secrets" => {
                for (name, secret) in x.object(node, k)? {
                    let path = format!("{k}.{name}");
                    if !is_env_name(name) {
                        return Err(x.invalid(
                            secret,
                            &path,
                            format!(
                                "secret name `{name}` must be an environment variable name \
                                 (letters, digits and `_`, not starting with a digit)"
                            ),
                        ));
                    }
                    let mut s = Secret::default();
                    for (field, value) in x.object(secret, &path)? {
                        let fpath = format!("{path}.{field}");
                        match field.as_str() {
                            "description" => s.description = Some(x.string(value, &fpath)?),
                            "documentationUrl" => {
                                s.documentation_url = Some(x.string(value, &fpath)?)
                            }
                            _ => warnings.push(unknown(&fpath)),
                        }
                    }
                    c.secrets.push((name.clone(), s));
                }
            }
            "customizations" => {
                x.object(node, k)?;
                c.customizations = Some(Json::from(node));
            }
            _ if is_top_level_property(k) => {}
            "settings" | "extensions" | "devPort" => warnings.push(Warning {
                property: k.to_owned(),
                message:
                    "is a legacy VS Code property that was not moved under `customizations.vscode` \
                          (it is empty, or already set there) and was ignored"
                        .into(),
            }),
            _ => warnings.push(unknown(k)),
        }
    }
    // The schema's `required`: warnings, since the reference CLI reads such configs too and only
    // fails when it starts them.
    if c.docker_compose_file.is_some() {
        for (missing, what) in [
            (c.service.is_none(), "service"),
            (c.workspace_folder.is_none(), "workspaceFolder"),
        ] {
            if missing {
                warnings.push(Warning {
                    property: what.into(),
                    message: "is required with `dockerComposeFile` and is missing".into(),
                });
            }
        }
    }
    if let Some(b) = &c.build {
        if b.dockerfile.is_none() && c.docker_file.is_none() && c.image.is_none() {
            warnings.push(Warning {
                property: "build.dockerfile".into(),
                message: "is missing: `build` needs a `dockerfile` (or the config an `image`)"
                    .into(),
            });
        }
    }
    Ok((c, warnings))
}

fn unknown(property: &str) -> Warning {
    Warning {
        property: property.to_owned(),
        message: "is unknown and was ignored".into(),
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A lifecycle command from JSON (image metadata): `None` when there is nothing to run.
pub(crate) fn parse_command_json(v: &Json) -> Result<Option<LifecycleCommand>, String> {
    let single = |v: &Json| match v {
        Json::String(s) if s.trim().is_empty() => Ok(None),
        Json::String(s) => Ok(Some(LifecycleCommand::Shell(s.clone()))),
        Json::Array(items) if items.is_empty() => Ok(None),
        Json::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or("an argument is not a string")
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|argv| Some(LifecycleCommand::Exec(argv))),
        _ => Err("expected a string or an array of strings"),
    };
    match v {
        Json::Object(o) => {
            let mut commands = Vec::new();
            for (name, value) in o.iter() {
                if let Some(c) = single(value).map_err(|e| format!("`{name}`: {e}"))? {
                    commands.push((name.clone(), c));
                }
            }
            Ok((!commands.is_empty()).then_some(LifecycleCommand::Parallel(commands)))
        }
        other => single(other).map_err(str::to_owned),
    }
}

/// A mount from JSON (image metadata): the string or the object form.
pub(crate) fn mount_from_json(v: &Json) -> Result<Mount, MountError> {
    match v {
        Json::String(s) => Mount::parse(s).map(|(m, _)| m),
        Json::Object(o) => {
            let s = |k: &str| o.get(k).and_then(Json::as_str).map(str::to_owned);
            let kind = MountKind::parse(&s("type").ok_or(MountError::MissingType)?)?;
            Mount::new(kind, s("source"), s("target").unwrap_or_default(), false)
        }
        _ => Err(MountError::BadField(v.to_json_string())),
    }
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

    fn boolean(&self, node: &Node, property: &str) -> Result<bool, ConfigError> {
        match &node.value {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.expected(node, property, "a boolean")),
        }
    }

    fn integer(&self, node: &Node, property: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let Value::Number(text) = &node.value else {
            return Err(self.expected(node, property, "an integer"));
        };
        let n: f64 = text.parse().unwrap_or(f64::NAN);
        if n.fract() != 0.0 || n < min as f64 || n > max as f64 {
            let range = match (min, max) {
                (i64::MIN, i64::MAX) => String::new(),
                (min, i64::MAX) => format!(" of at least {min}"),
                (min, max) => format!(" from {min} to {max}"),
            };
            return Err(self.invalid(
                node,
                property,
                format!("expected an integer{range} for `{property}`, found {text}"),
            ));
        }
        Ok(n as i64)
    }

    fn strings(&self, items: &[Node], property: &str) -> Result<Vec<String>, ConfigError> {
        self.argv(items, property)
    }

    fn string_array(&self, node: &Node, property: &str) -> Result<Vec<String>, ConfigError> {
        match &node.value {
            Value::Array(items) => self.argv(items, property),
            _ => Err(self.expected(node, property, "an array of strings")),
        }
    }

    fn enumeration<T>(
        &self,
        node: &Node,
        property: &str,
        all: &[&str],
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let s = self.string(node, property)?;
        parse(&s).ok_or_else(|| {
            let list = all
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.invalid(
                node,
                property,
                format!("expected one of {list} for `{property}`, found \"{s}\""),
            )
        })
    }

    /// A `^\d+([tgmk]b)?$` size.
    fn size(&self, node: &Node, property: &str) -> Result<String, ConfigError> {
        let s = self.string(node, property)?;
        if size_bytes(&s).is_none() {
            return Err(self.invalid(
                node,
                property,
                format!(
                    "expected a size such as \"512mb\" or \"8gb\" (digits, then kb, mb, gb or tb in \
                     lowercase) for `{property}`, found \"{s}\""
                ),
            ));
        }
        Ok(s)
    }

    fn forward_port(
        &self,
        node: &Node,
        property: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<ForwardPort, ConfigError> {
        match &node.value {
            Value::Number(_) => Ok(ForwardPort::Port(
                self.integer(node, property, 0, 65535)? as u16
            )),
            Value::String(s) => {
                let parsed = s.split_once(':').and_then(|(host, port)| {
                    let host_ok = !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    let port_ok =
                        (1..=5).contains(&port.len()) && port.chars().all(|c| c.is_ascii_digit());
                    (host_ok && port_ok)
                        .then(|| port.parse::<u32>().ok())
                        .flatten()
                        .filter(|p| *p <= 65535)
                        .map(|p| ForwardPort::HostPort {
                            host: host.to_owned(),
                            port: p as u16,
                        })
                });
                if parsed.is_none() {
                    // "3000": outside the schema, but real configs write it and the reference
                    // CLI passes it on; it can only mean the container's port.
                    if let Some(p) = s
                        .parse::<u16>()
                        .ok()
                        .filter(|_| s.chars().all(|c| c.is_ascii_digit()))
                    {
                        warnings.push(Warning {
                            property: property.to_owned(),
                            message: format!("should be the number {p}, not the string \"{s}\"; read as port {p}"),
                        });
                        return Ok(ForwardPort::Port(p));
                    }
                }
                parsed.ok_or_else(|| {
                    self.invalid(
                        node,
                        property,
                        format!(
                            "expected a port number or \"host:port\" (host in lowercase letters, \
                             digits and `-`) for `{property}`, found \"{s}\""
                        ),
                    )
                })
            }
            _ => Err(self.expected(node, property, "a port number or a \"host:port\" string")),
        }
    }

    fn port_attributes(
        &self,
        node: &Node,
        property: &str,
        open_browser_once: bool,
        warnings: &mut Vec<Warning>,
    ) -> Result<PortAttributes, ConfigError> {
        let mut a = PortAttributes::default();
        for (key, value) in self.object(node, property)? {
            let path = format!("{property}.{key}");
            match key.as_str() {
                "label" => a.label = Some(self.string(value, &path)?),
                "onAutoForward" => {
                    let all: Vec<&str> = OnAutoForward::ALL
                        .iter()
                        .copied()
                        .filter(|v| open_browser_once || *v != "openBrowserOnce")
                        .collect();
                    let v = self.enumeration(value, &path, &all, OnAutoForward::parse)?;
                    if !open_browser_once && v == OnAutoForward::OpenBrowserOnce {
                        return Err(self
                            .enumeration::<()>(value, &path, &all, |_| None)
                            .unwrap_err());
                    }
                    a.on_auto_forward = Some(v);
                }
                "elevateIfNeeded" => a.elevate_if_needed = Some(self.boolean(value, &path)?),
                "requireLocalPort" => a.require_local_port = Some(self.boolean(value, &path)?),
                "protocol" => {
                    a.protocol =
                        Some(self.enumeration(value, &path, Protocol::ALL, Protocol::parse)?)
                }
                _ => warnings.push(unknown(&path)),
            }
        }
        Ok(a)
    }

    fn host_requirements(
        &self,
        node: &Node,
        warnings: &mut Vec<Warning>,
    ) -> Result<HostRequirements, ConfigError> {
        let p = "hostRequirements";
        let mut h = HostRequirements::default();
        for (key, value) in self.object(node, p)? {
            let path = format!("{p}.{key}");
            match key.as_str() {
                "cpus" => h.cpus = Some(self.integer(value, &path, 1, i64::MAX)? as u64),
                "memory" => h.memory = Some(self.size(value, &path)?),
                "storage" => h.storage = Some(self.size(value, &path)?),
                "gpu" => {
                    h.gpu = Some(match &value.value {
                        Value::Bool(b) => Gpu::Required(*b),
                        Value::String(s) if s == "optional" => Gpu::Optional,
                        Value::Object(entries) => {
                            let (mut cores, mut memory) = (None, None);
                            for (k, v) in entries {
                                let gpath = format!("{path}.{k}");
                                match k.as_str() {
                                    "cores" => {
                                        cores = Some(self.integer(v, &gpath, 1, i64::MAX)? as u64)
                                    }
                                    "memory" => memory = Some(self.size(v, &gpath)?),
                                    _ => warnings.push(unknown(&gpath)),
                                }
                            }
                            Gpu::Spec { cores, memory }
                        }
                        _ => {
                            return Err(self.expected(
                                value,
                                &path,
                                "true, false, \"optional\" or an object with `cores` and `memory`",
                            ))
                        }
                    })
                }
                _ => warnings.push(unknown(&path)),
            }
        }
        Ok(h)
    }

    fn build(&self, node: &Node, warnings: &mut Vec<Warning>) -> Result<Build, ConfigError> {
        let p = "build";
        let mut b = Build::default();
        for (key, value) in self.object(node, p)? {
            let path = format!("{p}.{key}");
            match key.as_str() {
                "dockerfile" => b.dockerfile = Some(self.string(value, &path)?),
                "context" => b.context = Some(self.string(value, &path)?),
                "target" => b.target = Some(self.string(value, &path)?),
                "args" => {
                    for (name, v) in self.object(value, &path)? {
                        b.args
                            .push((name.clone(), self.string(v, &format!("{path}.{name}"))?));
                    }
                }
                "cacheFrom" => {
                    b.cache_from = match &value.value {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => self.strings(items, &path)?,
                        _ => {
                            return Err(self.expected(
                                value,
                                &path,
                                "a string or an array of strings",
                            ))
                        }
                    }
                }
                "options" => b.options = self.string_array(value, &path)?,
                _ => warnings.push(unknown(&path)),
            }
        }
        Ok(b)
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
