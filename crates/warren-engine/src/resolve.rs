//! From a configuration merged with its image's and features' metadata to the workspace's spec:
//! users, environment, mounts, lifecycle hooks in run order, ports, and what the sandbox may do
//! (decided by [`crate::devprops`] under the workspace's policy).

use warren_devcontainer::{Json, LifecycleCommand, Loaded, MergedConfiguration};

use crate::devprops::{self, Gpu, HostRequirements, Policy, Requested};
use crate::{EngineError, WsSpec};

/// `hostRequirements` of the merged configuration, in numbers (memory and storage may be numbers
/// of bytes or sizes as written, `"8gb"`).
fn host_requirements(v: Option<&Json>) -> HostRequirements {
    let Some(v) = v else {
        return HostRequirements::default();
    };
    let size = |key: &str| match v.get(key) {
        Some(Json::String(s)) => warren_devcontainer::size_bytes(s),
        Some(n) => n.as_f64().filter(|n| *n >= 0.0).map(|n| n as u64),
        None => None,
    };
    let gpu = match v.get("gpu") {
        Some(Json::Bool(true)) | Some(Json::Object(_)) => Gpu::Required,
        Some(Json::String(s)) if s == "optional" => Gpu::Optional,
        _ => Gpu::No,
    };
    HostRequirements {
        cpus: v.get("cpus").and_then(Json::as_f64),
        memory_bytes: size("memory"),
        storage_bytes: size("storage"),
        gpu,
    }
}

/// What the configuration asks of the sandbox, with the image's entrypoint and command for
/// `overrideCommand: false`.
pub(crate) fn requested(
    loaded: &Loaded,
    merged: &MergedConfiguration,
    image: &warren_image::Image,
) -> Requested {
    let mut entrypoint: Vec<String> = merged.entrypoints.clone();
    entrypoint.extend(image.config.entrypoint.iter().cloned());
    Requested {
        cap_add: merged.cap_add.clone(),
        security_opt: merged.security_opt.clone(),
        privileged: merged.privileged,
        init: merged.init,
        override_command: merged.override_command,
        entrypoint,
        cmd: image.config.cmd.clone(),
        run_args: loaded.config.run_args.clone(),
        host: host_requirements(merged.host_requirements.as_ref()),
    }
}

/// Applies the merged configuration and the policy's decision to a new workspace's spec.
pub(crate) fn apply(
    spec: &mut WsSpec,
    loaded: &Loaded,
    merged: &MergedConfiguration,
    image: &warren_image::Image,
    policy: &Policy,
    devcontainer_id: &str,
    progress: &dyn crate::Progress,
) -> Result<(), EngineError> {
    // `${devcontainerId}` (features use it for per-workspace volume names) is known once the
    // workspace is: substitute it everywhere it may stand before anything else reads the values.
    let id = |s: &str| warren_devcontainer::substitute_devcontainer_id(s, devcontainer_id);
    let mut merged = merged.clone();
    for m in &mut merged.mounts {
        m.source = m.source.as_deref().map(id);
        m.target = id(&m.target);
    }
    for v in merged.container_env.values_mut() {
        *v = id(v);
    }
    for v in merged.remote_env.values_mut().flatten() {
        *v = id(v);
    }
    for list in [
        &mut merged.on_create_commands,
        &mut merged.update_content_commands,
        &mut merged.post_create_commands,
        &mut merged.post_start_commands,
        &mut merged.post_attach_commands,
    ] {
        for (_, c) in list.iter_mut() {
            *c = command_inner(c, &id);
        }
    }
    let merged = &merged;
    for e in &merged.errors {
        progress.warn(&format!("image or feature metadata: {e}"));
    }
    let req = requested(loaded, merged, image);
    let granted =
        devprops::resolve(&req, policy, &spec.limits).map_err(|r| EngineError::Refused {
            config: loaded.config_path.clone(),
            message: r.message,
            hint: r.hint,
        })?;
    for w in &granted.warnings {
        progress.warn(w);
    }
    let c = &mut spec.config;
    c.container_env = merged.container_env.clone();
    c.container_env.extend(granted.env.clone());
    c.remote_env = merged.remote_env.clone();
    c.mounts = merged.mounts.clone();
    for m in granted.mounts {
        c.mounts.retain(|old| old.target != m.target);
        c.mounts.push(m);
    }
    if let Some(project) = &policy.binds_only_of {
        devprops::check_binds(c.mounts.iter().chain([&spec.workspace_mount]), project).map_err(
            |r| EngineError::Refused {
                config: loaded.config_path.clone(),
                message: r.message,
                hint: r.hint,
            },
        )?;
    }
    c.remote_user = merged.remote_user.clone();
    c.container_user = merged.container_user.clone();
    spec.limits = granted.limits;
    spec.security = granted.security;
    spec.lifecycle = [
        ("onCreateCommand", &merged.on_create_commands),
        ("updateContentCommand", &merged.update_content_commands),
        ("postCreateCommand", &merged.post_create_commands),
        ("postStartCommand", &merged.post_start_commands),
        ("postAttachCommand", &merged.post_attach_commands),
    ]
    .into_iter()
    .map(|(hook, cmds)| {
        (
            hook.to_string(),
            cmds.iter().map(|(_, c)| c.clone()).collect(),
        )
    })
    .collect();
    if let Some(w) = &merged.wait_for {
        spec.wait_for = w.clone();
    }
    if let Some(p) = &merged.user_env_probe {
        spec.user_env_probe = p.clone();
    }
    spec.forward_ports = merged
        .forward_ports
        .iter()
        .map(serde_json::Value::from)
        .collect();
    spec.ports_attributes = merged
        .ports_attributes
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v)))
        .collect();
    spec.other_ports_attributes = merged
        .other_ports_attributes
        .as_ref()
        .map(serde_json::Value::from);
    spec.shutdown_action = merged.shutdown_action.clone();
    if merged.update_remote_user_uid == Some(false) {
        spec.owner_sync = None;
    }
    Ok(())
}

/// `c` with `id` applied to each of its strings.
fn command_inner(c: &LifecycleCommand, id: &dyn Fn(&str) -> String) -> LifecycleCommand {
    match c {
        LifecycleCommand::Shell(s) => LifecycleCommand::Shell(id(s)),
        LifecycleCommand::Exec(v) => LifecycleCommand::Exec(v.iter().map(|a| id(a)).collect()),
        LifecycleCommand::Parallel(items) => LifecycleCommand::Parallel(
            items
                .iter()
                .map(|(n, c)| (n.clone(), command_inner(c, id)))
                .collect(),
        ),
    }
}

/// Refuses what Warren cannot run, with what to do instead.
pub(crate) fn refuse_unsupported(loaded: &Loaded) -> Result<(), EngineError> {
    if loaded.config.docker_compose_file.is_some() {
        return Err(EngineError::Refused {
            config: loaded.config_path.clone(),
            message: "dockerComposeFile configurations are not supported: Warren runs each \
                      workspace as one sandbox, and sibling service workspaces on a shared \
                      private network need per-workspace networks, which Warren does not have yet"
                .into(),
            hint: "point the devcontainer.json at the service's image (`image`) or Dockerfile \
                   (`build.dockerfile`) instead of the compose file, and run the other services \
                   inside the workspace"
                .into(),
        });
    }
    Ok(())
}
