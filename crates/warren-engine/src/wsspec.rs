//! A workspace's resolved specification, stored with its record: the devcontainer configuration as it
//! was when the workspace was created, the image it was created from, and its limits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warren_devcontainer::{DevContainer, LifecycleCommand, Loaded, Mount, MountKind};
use warren_runtime::{ExecProcess, Limits, MountSpec, Security, WorkspaceSpec};
use warren_store::WorkspaceRecord;

/// Everything needed to (re)start a workspace without re-reading its project folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsSpec {
    /// Image name.
    pub image: String,
    /// Image manifest digest.
    pub image_digest: String,
    /// Unpacked image layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// The image's environment.
    pub image_env: Vec<String>,
    /// The image's default user.
    pub image_user: Option<String>,
    /// The devcontainer configuration (after variable substitution).
    pub config: DevContainer,
    /// In-container working folder.
    pub workspace_folder: String,
    /// How the project folder is mounted.
    pub workspace_mount: Mount,
    /// Limits.
    pub limits: Limits,
    /// Hash of the configuration, to notice edits.
    pub config_hash: String,
    /// Privileges and init granted by policy (see [`crate::devprops`]).
    #[serde(default)]
    pub security: Security,
    /// Each lifecycle hook's commands in the order they run: image metadata's and features' first,
    /// then the configuration's own. Empty in specs recorded before features existed: then the
    /// configuration's commands are used.
    #[serde(default)]
    pub lifecycle: std::collections::BTreeMap<String, Vec<LifecycleCommand>>,
    /// The hook `warren up` waits for (`waitFor`); later ones continue in the background.
    #[serde(default = "default_wait_for")]
    pub wait_for: String,
    /// How the remote user's environment is probed (`userEnvProbe`).
    #[serde(default = "default_user_env_probe")]
    pub user_env_probe: String,
    /// How the remote user and the project folder agree on ownership at creation
    /// (`updateRemoteUserUID`); `None` when nothing is to be done.
    #[serde(default)]
    pub owner_sync: Option<crate::lifecycle::OwnerSync>,
    /// `forwardPorts` as merged, recorded for port forwarding.
    #[serde(default)]
    pub forward_ports: Vec<serde_json::Value>,
    /// `portsAttributes` as merged.
    #[serde(default)]
    pub ports_attributes: Vec<(String, serde_json::Value)>,
    /// `otherPortsAttributes` as merged: for ports no `portsAttributes` key matches.
    #[serde(default)]
    pub other_ports_attributes: Option<serde_json::Value>,
    /// `shutdownAction` (recorded: Warren never stops a workspace because a client went away).
    #[serde(default)]
    pub shutdown_action: Option<String>,
}

fn default_wait_for() -> String {
    "updateContentCommand".into()
}

fn default_user_env_probe() -> String {
    "loginInteractiveShell".into()
}

/// A stable hash of what a devcontainer.json resolved to.
pub fn hash_config(l: &Loaded) -> String {
    let doc = serde_json::json!({
        "config": l.config, "folder": l.workspace_folder, "mount": l.workspace_mount
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

fn mount_spec(m: &Mount) -> MountSpec {
    MountSpec {
        kind: match m.kind {
            MountKind::Bind => warren_runtime::MountKind::Bind,
            MountKind::Volume => warren_runtime::MountKind::Volume,
            MountKind::Tmpfs => warren_runtime::MountKind::Tmpfs,
        },
        source: m.source.clone(),
        target: m.target.clone(),
        read_only: m.read_only,
    }
}

impl WsSpec {
    /// The spec of a new workspace.
    pub fn new(l: &Loaded, image: &warren_image::Image, limits: Limits) -> WsSpec {
        WsSpec {
            image: image.name.clone(),
            image_digest: image.digest.clone(),
            layers: image.layer_dirs.clone(),
            image_env: image.config.env.clone(),
            image_user: image.config.user.clone().filter(|u| !u.is_empty()),
            config: l.config.clone(),
            workspace_folder: l.workspace_folder.clone(),
            workspace_mount: l.workspace_mount.clone(),
            limits,
            config_hash: hash_config(l),
            security: Security::default(),
            lifecycle: Default::default(),
            wait_for: default_wait_for(),
            user_env_probe: default_user_env_probe(),
            owner_sync: None,
            forward_ports: vec![],
            ports_attributes: vec![],
            other_ports_attributes: None,
            shutdown_action: None,
        }
    }

    /// The sandbox's extra privileges and init.
    pub fn security(&self) -> Security {
        self.security.clone()
    }

    /// The user the container runs as.
    pub fn container_user(&self) -> Option<String> {
        self.config
            .container_user
            .clone()
            .or_else(|| self.image_user.clone())
    }

    /// The user lifecycle commands and sessions run as.
    pub fn remote_user(&self) -> Option<String> {
        self.config
            .remote_user
            .clone()
            .or_else(|| self.container_user())
    }

    /// The environment of every process in the workspace: the image's, a default PATH, and
    /// containerEnv over them.
    pub fn container_env(&self) -> Vec<String> {
        let mut env = self.image_env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for (k, v) in &self.config.container_env {
            warren_runtime::spec::set_env(&mut env, k, v);
        }
        env
    }

    /// The runtime's view of this workspace.
    pub fn runtime_spec(&self, rec: &WorkspaceRecord) -> WorkspaceSpec {
        let env = self.container_env();
        let mut mounts = vec![mount_spec(&self.workspace_mount)];
        mounts.extend(self.config.mounts.iter().map(mount_spec));
        WorkspaceSpec {
            id: rec.id.clone(),
            hostname: rec.name.to_string(),
            layers: self.layers.clone(),
            env,
            mounts,
            home_user: Some(self.remote_user().unwrap_or_else(|| "root".into())),
            container_user: self.container_user(),
            limits: self.limits.clone(),
            user_namespace: None,
            security: self.security(),
            network: warren_runtime::Network::Isolated,
            tmp_tmpfs: true,
            // Server workspaces get the secrets tmpfs and the agent socket's directory.
            secrets_user: (!rec.ownership.owner_id.is_empty())
                .then(|| self.remote_user().unwrap_or_else(|| "root".into())),
            agent_dir: !rec.ownership.owner_id.is_empty(),
        }
    }

    /// Fills in what the caller left unset: the remote user, the workspace folder, and the
    /// environment: the probed user environment (`user_env`), remoteEnv over it, the caller's over
    /// both. The probed environment is the remote user's (from their shell's startup files, which
    /// they can write), so a process of another user (root) never gets it: a `LD_PRELOAD` or
    /// `PATH` planted in the remote user's dotfiles must not run as root.
    pub fn apply_exec_defaults(&self, p: &mut ExecProcess, user_env: &[String]) {
        let remote = self.remote_user();
        if p.user.is_none() {
            p.user = remote.clone();
        }
        if p.cwd.is_none() {
            p.cwd = Some(self.workspace_folder.clone());
        }
        let mut env: Vec<String> = if p.user == remote {
            user_env.to_vec()
        } else {
            Vec::new()
        };
        let container = self.container_env();
        let lookup = |k: &str| {
            container
                .iter()
                .find_map(|e| e.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        for (k, v) in &self.config.remote_env {
            // `${containerEnv:VAR}` is the container's own environment (image env and
            // containerEnv), as the reference CLI substitutes it once the container exists.
            let v = v.as_ref().map(|v| {
                warren_devcontainer::substitute_container_env(v, &lookup)
                    .unwrap_or_else(|_| v.clone())
            });
            match &v {
                Some(v) => warren_runtime::spec::set_env(&mut env, k, v),
                None => env.retain(|e| !e.starts_with(&format!("{k}="))),
            }
        }
        for e in &p.env {
            if let Some((k, v)) = e.split_once('=') {
                warren_runtime::spec::set_env(&mut env, k, v);
            }
        }
        p.env = env;
    }

    /// The commands of lifecycle hook `what` (`postCreateCommand`...), in the order they run.
    pub fn hook_commands(&self, what: &str) -> Vec<LifecycleCommand> {
        if !self.lifecycle.is_empty() {
            return self.lifecycle.get(what).cloned().unwrap_or_default();
        }
        let c = &self.config;
        let own = match what {
            "onCreateCommand" => c.on_create_command.as_ref(),
            "updateContentCommand" => c.update_content_command.as_ref(),
            "postCreateCommand" => c.post_create_command.as_ref(),
            "postStartCommand" => c.post_start_command.as_ref(),
            "postAttachCommand" => c.post_attach_command.as_ref(),
            _ => None,
        };
        own.cloned().into_iter().collect()
    }
}
