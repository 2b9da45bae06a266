//! What a devcontainer configuration asks of the sandbox (capabilities, privileged mode, seccomp,
//! init, command, `runArgs`, `hostRequirements`) and the policy that grants or refuses it. Pure: the
//! engine feeds it the merged configuration and the policy, and applies the result.

use std::collections::BTreeMap;

use warren_devcontainer::Mount;
use warren_runtime::{Limits, Security};

/// What the configuration (with its image metadata and features merged) asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    /// `capAdd`.
    pub cap_add: Vec<String>,
    /// `securityOpt`.
    pub security_opt: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `init`.
    pub init: bool,
    /// `overrideCommand` (default true: Warren's own init keeps the workspace up).
    pub override_command: Option<bool>,
    /// The image's entrypoints (features' first, as merged) and command, used when
    /// `overrideCommand` is false.
    pub entrypoint: Vec<String>,
    /// The image's `Cmd`.
    pub cmd: Vec<String>,
    /// `runArgs`.
    pub run_args: Vec<String>,
    /// `hostRequirements`.
    pub host: HostRequirements,
}

/// `hostRequirements`, in numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostRequirements {
    /// Minimum CPUs.
    pub cpus: Option<f64>,
    /// Minimum memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Minimum storage in bytes.
    pub storage_bytes: Option<u64>,
    /// GPU wanted.
    pub gpu: Gpu,
}

/// `hostRequirements.gpu`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gpu {
    /// No GPU asked for.
    #[default]
    No,
    /// Used when present.
    Optional,
    /// Required.
    Required,
}

/// Who decides what a workspace may ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Whether added capabilities, privileged mode and an unconfined seccomp profile are granted.
    /// Host-local workspaces (the embedded CLI's, run by root on its own host) have it; workspaces
    /// made through a server have it only when the server's administrator allows it.
    pub allow_privileges: bool,
    /// Where the setting lives, for the refusal's hint.
    pub privileges_hint: String,
    /// The template's ceilings (server workspaces), which `hostRequirements` must fit.
    pub ceilings: Option<warren_api::template::Ceilings>,
    /// The host's CPUs and memory: a host-local workspace on a smaller host gets a warning.
    pub host_cpus: Option<f64>,
    /// The host's memory in bytes.
    pub host_memory_bytes: Option<u64>,
    /// For server workspaces: the one host path a bind mount may have as its source (the
    /// project folder). `None`: any (host-local workspaces belong to the host's root).
    pub binds_only_of: Option<String>,
}

/// Refuses bind mounts of anything but `allowed` (a server workspace's own project folder),
/// written with `..` or not: a configuration, its image's metadata, a feature or `runArgs` must
/// never bring a host path into a server user's workspace.
pub fn check_binds<'a>(
    mounts: impl IntoIterator<Item = &'a Mount>,
    allowed: &str,
) -> Result<(), Refusal> {
    let bad: Vec<String> = mounts
        .into_iter()
        .filter(|m| m.kind == warren_devcontainer::MountKind::Bind)
        .filter_map(|m| {
            let src = m.source.clone().unwrap_or_default();
            let p = std::path::Path::new(&src);
            let dotted = p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            (dotted || p != std::path::Path::new(allowed)).then_some(src)
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Refusal {
            message: format!(
                "bind mounts of host paths are not allowed in workspaces made through the server ({})",
                bad.join(", ")
            ),
            hint: "use a volume mount (type=volume) for data that should persist".into(),
        })
    }
}

/// What the engine applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// The sandbox's extra privileges and init.
    pub security: Security,
    /// `runArgs` `--env` values, applied like containerEnv.
    pub env: BTreeMap<String, String>,
    /// `runArgs` `--mount` values.
    pub mounts: Vec<Mount>,
    /// The limits, raised to meet `hostRequirements` where the workspace had less.
    pub limits: Limits,
    /// Things that were ignored, each a full sentence naming the property.
    pub warnings: Vec<String>,
}

/// A refusal: one line, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused and why.
    pub message: String,
    /// How to get it.
    pub hint: String,
}

/// Docker `run` flags that take a value in the next argument when not written `--flag=value`, so
/// that an ignored flag's value is not mistaken for a flag.
const VALUE_FLAGS: &[&str] = &[
    "--add-host",
    "--blkio-weight",
    "--cgroup-parent",
    "--cgroupns",
    "--cidfile",
    "--cpu-period",
    "--cpu-quota",
    "--cpu-shares",
    "-c",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--device",
    "--device-cgroup-rule",
    "--dns",
    "--dns-option",
    "--dns-search",
    "--domainname",
    "--entrypoint",
    "--env-file",
    "--expose",
    "--gpus",
    "--group-add",
    "--health-cmd",
    "--hostname",
    "-h",
    "--ip",
    "--ipc",
    "--label",
    "-l",
    "--link",
    "--log-driver",
    "--log-opt",
    "--mac-address",
    "--memory-reservation",
    "--memory-swap",
    "--name",
    "--network",
    "--net",
    "--pid",
    "--pids-limit",
    "--platform",
    "--publish",
    "-p",
    "--pull",
    "--restart",
    "--runtime",
    "--shm-size",
    "--stop-signal",
    "--stop-timeout",
    "--storage-opt",
    "--sysctl",
    "--tmpfs",
    "--ulimit",
    "--user",
    "-u",
    "--userns",
    "--uts",
    "--volume",
    "-v",
    "--volumes-from",
    "--workdir",
    "-w",
];

/// Parses a Docker size (`512m`, `4g`, `4gb`, `1024`) in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Grants or refuses what `req` asks for under `policy`, starting from the workspace's `limits`.
pub fn resolve(req: &Requested, policy: &Policy, limits: &Limits) -> Result<Resolved, Refusal> {
    let mut out = Resolved {
        limits: limits.clone(),
        ..Default::default()
    };
    let mut cap_add = req.cap_add.clone();
    let mut security_opt = req.security_opt.clone();
    let mut privileged = req.privileged;
    let mut init = req.init;

    // runArgs: the flags with a Warren meaning, the rest warned about by name.
    let mut args = req.run_args.iter().peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |args: &mut std::iter::Peekable<std::slice::Iter<'_, String>>| {
            inline
                .clone()
                .or_else(|| args.next_if(|a| !a.starts_with('-')).map(|s| s.to_string()))
        };
        match flag.as_str() {
            "--cap-add" => match value(&mut args) {
                Some(v) => cap_add.push(v),
                None => out
                    .warnings
                    .push("runArgs `--cap-add` has no value and was ignored".into()),
            },
            "--security-opt" => match value(&mut args) {
                Some(v) => security_opt.push(v),
                None => out
                    .warnings
                    .push("runArgs `--security-opt` has no value and was ignored".into()),
            },
            "--privileged" => privileged = inline.as_deref() != Some("false"),
            "--init" => init = inline.as_deref() != Some("false"),
            "--memory" | "-m" => match value(&mut args).as_deref().and_then(parse_size) {
                Some(b) => out.limits.memory_bytes = Some(b),
                None => out
                    .warnings
                    .push(format!("runArgs `{arg}`: not a size and was ignored")),
            },
            "--cpus" => match value(&mut args).and_then(|v| v.parse::<f64>().ok()) {
                Some(c) if c.is_finite() && c > 0.0 => out.limits.cpus = Some(c),
                _ => out
                    .warnings
                    .push(format!("runArgs `{arg}`: not a CPU count and was ignored")),
            },
            "--env" | "-e" => match value(&mut args) {
                Some(kv) => match kv.split_once('=') {
                    Some((k, v)) => {
                        out.env.insert(k.to_string(), v.to_string());
                    }
                    // `-e NAME` copies the host's variable: never the host's environment.
                    None => out.warnings.push(format!(
                        "runArgs `-e {kv}` copies a host variable, which Warren never does; ignored"
                    )),
                },
                None => out
                    .warnings
                    .push("runArgs `--env` has no value and was ignored".into()),
            },
            "--mount" => match value(&mut args) {
                Some(spec) => match Mount::parse(&spec) {
                    Ok((m, _)) => out.mounts.push(m),
                    Err(e) => {
                        return Err(Refusal {
                            message: format!("runArgs `--mount {spec}`: {e}"),
                            hint: "use the devcontainer.json `mounts` property's syntax: \
                                   type=volume,source=NAME,target=/PATH"
                                .into(),
                        })
                    }
                },
                None => out
                    .warnings
                    .push("runArgs `--mount` has no value and was ignored".into()),
            },
            other => {
                if inline.is_none() && VALUE_FLAGS.contains(&other) {
                    let _ = args.next_if(|a| !a.starts_with('-'));
                }
                out.warnings.push(format!(
                    "runArgs `{other}` has no meaning in Warren and was ignored"
                ));
            }
        }
    }

    // Capabilities, privileged mode, seccomp.
    let mut extra_caps = Vec::new();
    for c in &cap_add {
        if c.eq_ignore_ascii_case("ALL") {
            privileged = true;
            continue;
        }
        match warren_runtime::spec::capability(c) {
            Some(cap) if warren_runtime::spec::is_default_capability(cap) => {}
            Some(cap) if !warren_runtime::spec::host_has_capability(cap) => out.warnings.push(
                format!("capAdd `{c}`: this host cannot grant {cap}, so it was left out"),
            ),
            Some(cap) => {
                if !extra_caps.contains(&cap.to_string()) {
                    extra_caps.push(cap.to_string());
                }
            }
            None => {
                return Err(Refusal {
                    message: format!("capAdd `{c}` is not a Linux capability"),
                    hint: "use names such as SYS_PTRACE or NET_ADMIN".into(),
                })
            }
        }
    }
    let mut seccomp_unconfined = false;
    for opt in &security_opt {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match (k, v) {
            ("seccomp", "unconfined") => seccomp_unconfined = true,
            ("no-new-privileges", "" | "true") => {}
            ("apparmor" | "label", _) => out.warnings.push(format!(
                "securityOpt `{opt}` was ignored: this host has no AppArmor or SELinux policy for workspaces"
            )),
            _ => out
                .warnings
                .push(format!("securityOpt `{opt}` has no meaning in Warren and was ignored")),
        }
    }
    let mut asked = Vec::new();
    if privileged {
        asked.push("privileged mode".to_string());
    }
    if !extra_caps.is_empty() {
        asked.push(format!("capabilities {}", extra_caps.join(", ")));
    }
    if seccomp_unconfined {
        asked.push("an unconfined seccomp profile".to_string());
    }
    if !asked.is_empty() && !policy.allow_privileges {
        return Err(Refusal {
            message: format!(
                "the configuration asks for {}, which this server does not grant",
                asked.join(" and ")
            ),
            hint: policy.privileges_hint.clone(),
        });
    }

    // runArgs limits stay within the template's ceilings.
    if let Some(c) = &policy.ceilings {
        if let (Some(want), Some(max)) = (out.limits.cpus, c.cpus) {
            if want > max {
                return Err(Refusal {
                    message: format!("runArgs `--cpus {want}`: the template allows at most {max}"),
                    hint: "ask for less, or ask a template admin to raise the template's ceilings"
                        .into(),
                });
            }
        }
        if let (Some(want), Some(max)) = (out.limits.memory_bytes, c.memory_mb) {
            if want > max << 20 {
                return Err(Refusal {
                    message: format!(
                        "runArgs `--memory`: {} is more than the template's {max} MiB",
                        mib(want)
                    ),
                    hint: "ask for less, or ask a template admin to raise the template's ceilings"
                        .into(),
                });
            }
        }
    }

    // hostRequirements: against the template's ceilings (a refusal), the host (a warning), and the
    // workspace's own limits (raised to meet them).
    let h = &req.host;
    if h.gpu == Gpu::Required {
        return Err(Refusal {
            message: "hostRequirements.gpu: the configuration requires a GPU, and Warren \
                      workspaces have none"
                .into(),
            hint: "set \"gpu\": \"optional\" if the project works without one".into(),
        });
    }
    if h.gpu == Gpu::Optional {
        out.warnings
            .push("hostRequirements.gpu is optional and this workspace has no GPU".into());
    }
    if let Some(c) = &policy.ceilings {
        if let (Some(want), Some(max)) = (h.cpus, c.cpus) {
            if want > max {
                return Err(Refusal {
                    message: format!(
                        "hostRequirements.cpus asks for {want} CPUs; the template allows at most {max}"
                    ),
                    hint: "ask a template admin to raise the template's cpus ceiling".into(),
                });
            }
        }
        if let (Some(want), Some(max)) = (h.memory_bytes, c.memory_mb) {
            if want > max << 20 {
                return Err(Refusal {
                    message: format!(
                        "hostRequirements.memory asks for {}; the template allows at most {max} MiB",
                        mib(want)
                    ),
                    hint: "ask a template admin to raise the template's memory ceiling".into(),
                });
            }
        }
        if let (Some(want), Some(max)) = (h.storage_bytes, c.disk_mb) {
            if want > max << 20 {
                return Err(Refusal {
                    message: format!(
                        "hostRequirements.storage asks for {}; the template allows at most {max} MiB",
                        mib(want)
                    ),
                    hint: "ask a template admin to raise the template's disk ceiling".into(),
                });
            }
        }
    }
    if let (Some(want), Some(have)) = (h.cpus, policy.host_cpus) {
        if want > have {
            out.warnings.push(format!(
                "hostRequirements.cpus asks for {want} CPUs; this host has {have}"
            ));
        }
    }
    if let (Some(want), Some(have)) = (h.memory_bytes, policy.host_memory_bytes) {
        if want > have {
            out.warnings.push(format!(
                "hostRequirements.memory asks for {}; this host has {}",
                mib(want),
                mib(have)
            ));
        }
    }
    if let (Some(want), Some(have)) = (h.cpus, out.limits.cpus) {
        if want > have {
            out.limits.cpus = Some(want);
        }
    }
    if let (Some(want), Some(have)) = (h.memory_bytes, out.limits.memory_bytes) {
        if want > have {
            out.limits.memory_bytes = Some(want);
        }
    }

    // The init and its command.
    let command = if req.override_command == Some(false) {
        let mut cmd = req.entrypoint.clone();
        cmd.extend(req.cmd.iter().cloned());
        if cmd.is_empty() {
            return Err(Refusal {
                message: "overrideCommand is false but the image has no entrypoint or command \
                          to run"
                    .into(),
                hint: "remove \"overrideCommand\": false, or give the image a CMD".into(),
            });
        }
        Some(cmd)
    } else {
        None
    };
    out.security = Security {
        cap_add: extra_caps,
        privileged,
        seccomp_unconfined,
        init,
        command,
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Policy {
        Policy {
            allow_privileges: true,
            ..Default::default()
        }
    }

    fn deny() -> Policy {
        Policy {
            allow_privileges: false,
            privileges_hint: "ask the administrator".into(),
            ..Default::default()
        }
    }

    fn args(a: &[&str]) -> Requested {
        Requested {
            run_args: a.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_asked_grants_nothing_under_any_policy() {
        for p in [allow(), deny()] {
            let r = resolve(&Requested::default(), &p, &Limits::default()).unwrap();
            assert_eq!(r.security, Security::default());
            assert!(r.warnings.is_empty());
        }
    }

    #[test]
    fn capabilities_are_normalised_and_default_ones_are_not_extra() {
        let req = Requested {
            cap_add: vec!["sys_ptrace".into(), "CAP_NET_ADMIN".into(), "CHOWN".into()],
            ..Default::default()
        };
        let r = resolve(&req, &allow(), &Limits::default()).unwrap();
        assert_eq!(r.security.cap_add, vec!["CAP_SYS_PTRACE", "CAP_NET_ADMIN"]);
        // Only default capabilities: nothing to grant, so even a strict policy accepts it.
        let req = Requested {
            cap_add: vec!["CHOWN".into(), "kill".into()],
            ..Default::default()
        };
        assert!(resolve(&req, &deny(), &Limits::default()).is_ok());
    }

    #[test]
    fn unknown_capability_is_refused_by_name() {
        let req = Requested {
            cap_add: vec!["SYS_EVERYTHING".into()],
            ..Default::default()
        };
        let e = resolve(&req, &allow(), &Limits::default()).unwrap_err();
        assert!(e.message.contains("SYS_EVERYTHING"), "{e:?}");
    }

    #[test]
    fn privileges_are_refused_when_the_policy_denies_them() {
        for req in [
            Requested {
                privileged: true,
                ..Default::default()
            },
            Requested {
                cap_add: vec!["SYS_ADMIN".into()],
                ..Default::default()
            },
            Requested {
                security_opt: vec!["seccomp=unconfined".into()],
                ..Default::default()
            },
            args(&["--privileged"]),
            args(&["--cap-add", "NET_ADMIN"]),
            args(&["--cap-add=ALL"]),
            args(&["--security-opt", "seccomp:unconfined"]),
        ] {
            let e = resolve(&req, &deny(), &Limits::default()).unwrap_err();
            assert!(e.message.contains("does not grant"), "{req:?}: {e:?}");
            assert_eq!(e.hint, "ask the administrator");
            assert!(resolve(&req, &allow(), &Limits::default()).is_ok());
        }
    }

    #[test]
    fn run_args_map_to_limits_env_mounts_and_init() {
        let req = args(&[
            "--memory=2g",
            "--cpus",
            "1.5",
            "-e",
            "FOO=bar",
            "--env=X=y=z",
            "--mount",
            "type=volume,source=cache,target=/cache",
            "--init",
        ]);
        let r = resolve(&req, &deny(), &Limits::default()).unwrap();
        assert_eq!(r.limits.memory_bytes, Some(2 << 30));
        assert_eq!(r.limits.cpus, Some(1.5));
        assert_eq!(r.env["FOO"], "bar");
        assert_eq!(r.env["X"], "y=z");
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.mounts[0].target, "/cache");
        assert!(r.security.init);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn other_run_args_are_warned_about_by_name_with_their_values_skipped() {
        let r = resolve(
            &args(&[
                "--network",
                "host",
                "--rm",
                "--name=x",
                "-v",
                "/a:/b",
                "--gpus",
                "all",
            ]),
            &deny(),
            &Limits::default(),
        )
        .unwrap();
        let names: Vec<&str> = r
            .warnings
            .iter()
            .map(|w| w.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(names, ["--network", "--rm", "--name", "-v", "--gpus"]);
    }

    #[test]
    fn a_host_variable_copy_is_never_taken() {
        let r = resolve(&args(&["-e", "HOME"]), &allow(), &Limits::default()).unwrap();
        assert!(r.env.is_empty());
        assert!(r.warnings[0].contains("host variable"));
    }

    #[test]
    fn host_requirements_beyond_the_ceilings_are_refused() {
        let policy = Policy {
            ceilings: Some(warren_api::template::Ceilings {
                cpus: Some(2.0),
                memory_mb: Some(4096),
                disk_mb: Some(10240),
                pids: None,
            }),
            ..deny()
        };
        let req = |cpus, mem, storage| Requested {
            host: HostRequirements {
                cpus,
                memory_bytes: mem,
                storage_bytes: storage,
                gpu: Gpu::No,
            },
            ..Default::default()
        };
        let e = resolve(&req(Some(4.0), None, None), &policy, &Limits::default()).unwrap_err();
        assert!(e.message.contains("cpus asks for 4 CPUs"), "{e:?}");
        let e = resolve(&req(None, Some(8 << 30), None), &policy, &Limits::default()).unwrap_err();
        assert!(e.message.contains("memory asks for 8192 MiB"), "{e:?}");
        let e = resolve(
            &req(None, None, Some(32 << 30)),
            &policy,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("storage"), "{e:?}");
        // Within the ceilings: the workspace's own smaller limits are raised to the requirement.
        let have = Limits {
            cpus: Some(1.0),
            memory_bytes: Some(1 << 30),
            pids: None,
        };
        let r = resolve(&req(Some(2.0), Some(4 << 30), None), &policy, &have).unwrap();
        assert_eq!(r.limits.cpus, Some(2.0));
        assert_eq!(r.limits.memory_bytes, Some(4 << 30));
    }

    #[test]
    fn a_required_gpu_is_refused_and_an_optional_one_warned_about() {
        let mut req = Requested::default();
        req.host.gpu = Gpu::Required;
        assert!(resolve(&req, &allow(), &Limits::default()).is_err());
        req.host.gpu = Gpu::Optional;
        let r = resolve(&req, &allow(), &Limits::default()).unwrap();
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn a_small_host_is_a_warning_for_host_local_workspaces() {
        let policy = Policy {
            host_cpus: Some(2.0),
            host_memory_bytes: Some(1 << 30),
            ..allow()
        };
        let mut req = Requested::default();
        req.host.cpus = Some(8.0);
        req.host.memory_bytes = Some(16 << 30);
        let r = resolve(&req, &policy, &Limits::default()).unwrap();
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }

    #[test]
    fn override_command_false_runs_the_images_entrypoint_and_command() {
        let req = Requested {
            override_command: Some(false),
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["serve".into()],
            init: true,
            ..Default::default()
        };
        let r = resolve(&req, &deny(), &Limits::default()).unwrap();
        assert_eq!(
            r.security.command.as_deref(),
            Some(&["/docker-entrypoint.sh".to_string(), "serve".to_string()][..])
        );
        assert!(r.security.init);
        let empty = Requested {
            override_command: Some(false),
            ..Default::default()
        };
        assert!(resolve(&empty, &deny(), &Limits::default()).is_err());
    }

    #[test]
    fn run_args_limits_stay_within_the_ceilings() {
        let policy = Policy {
            ceilings: Some(warren_api::template::Ceilings {
                cpus: Some(2.0),
                memory_mb: Some(512),
                disk_mb: None,
                pids: None,
            }),
            ..deny()
        };
        for a in [&["--cpus", "4"][..], &["--memory=1g"][..]] {
            let e = resolve(&args(a), &policy, &Limits::default()).unwrap_err();
            assert!(e.message.contains("runArgs"), "{e:?}");
        }
        assert!(resolve(
            &args(&["--cpus", "1", "-m", "256m"]),
            &policy,
            &Limits::default()
        )
        .is_ok());
    }

    #[test]
    fn only_the_project_folder_may_be_bind_mounted_for_server_workspaces() {
        let m = |kind, src: &str| Mount {
            kind,
            source: Some(src.into()),
            target: "/t".into(),
            read_only: false,
        };
        use warren_devcontainer::MountKind::{Bind, Volume};
        let project = "/srv/warren/projects/abc";
        assert!(check_binds(&[m(Bind, project), m(Volume, "cache")], project).is_ok());
        for bad in [
            "/",
            "/var/run/docker.sock",
            "/srv/warren/projects/abc/../other",
            "/srv/warren/projects",
        ] {
            let e = check_binds(&[m(Bind, bad)], project).unwrap_err();
            assert!(e.message.contains(bad), "{e:?}");
        }
    }

    #[test]
    fn sizes_parse_like_docker_and_the_schema() {
        assert_eq!(parse_size("4gb"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
    }
}
