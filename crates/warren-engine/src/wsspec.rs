//! A workspace's resolved specification, stored with its record: the devcontainer configuration as it
//! was when the workspace was created, the image it was created from, and its limits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warren_devcontainer::{DevContainer, LifecycleCommand, Loaded, Mount, MountKind};
use warren_runtime::{ExecProcess, Limits, MountSpec, WorkspaceSpec};
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
        }
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

    /// The runtime's view of this workspace.
    pub fn runtime_spec(&self, rec: &WorkspaceRecord) -> WorkspaceSpec {
        let mut env = self.image_env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for (k, v) in &self.config.container_env {
            warren_runtime::spec::set_env(&mut env, k, v);
        }
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
            network: warren_runtime::Network::Isolated,
            tmp_tmpfs: true,
        }
    }

    /// Fills in what the caller left unset: the remote user, the workspace folder, remoteEnv.
    pub fn apply_exec_defaults(&self, p: &mut ExecProcess) {
        if p.user.is_none() {
            p.user = self.remote_user();
        }
        if p.cwd.is_none() {
            p.cwd = Some(self.workspace_folder.clone());
        }
        let mut env: Vec<String> = self
            .config
            .remote_env
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        for e in &p.env {
            if let Some((k, v)) = e.split_once('=') {
                warren_runtime::spec::set_env(&mut env, k, v);
            }
        }
        p.env = env;
    }

    /// The configured lifecycle command called `what` (`postCreateCommand`...).
    pub fn lifecycle_command(&self, what: &str) -> Option<&LifecycleCommand> {
        match what {
            "onCreateCommand" => self.config.on_create_command.as_ref(),
            "postCreateCommand" => self.config.post_create_command.as_ref(),
            "postStartCommand" => self.config.post_start_command.as_ref(),
            _ => None,
        }
    }
}
