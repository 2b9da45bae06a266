//! Tests of parsing, typing, lifecycle forms, mounts, warnings, substitution and workspace resolution.

use super::*;
use crate::config::{self, *};
use std::collections::BTreeMap;

const FILE: &str = "/p/.devcontainer/devcontainer.json";

fn parse(text: &str) -> (DevContainer, Vec<Warning>) {
    parse_str(text, Path::new(FILE)).unwrap()
}

fn error(text: &str) -> String {
    parse_str(text, Path::new(FILE)).unwrap_err().to_string()
}

fn env(name: &str) -> Option<String> {
    (name == "HOME").then(|| "/home/dev".to_owned())
}

fn load_text(text: &str) -> Loaded {
    load_str(text, Path::new(FILE), Path::new("/src/my-app"), &env).unwrap()
}

fn props(warnings: &[Warning]) -> Vec<&str> {
    warnings.iter().map(|w| w.property.as_str()).collect()
}

fn shell(s: &str) -> LifecycleCommand {
    LifecycleCommand::Shell(s.into())
}

fn exec(args: &[&str]) -> LifecycleCommand {
    LifecycleCommand::Exec(args.iter().map(|s| s.to_string()).collect())
}

#[test]
fn modelled_properties_are_read_from_jsonc() {
    let (c, warnings) = parse(
        r#"// A commented config
        {
            "name": "demo", /* inline */
            "image": "debian:12",
            "containerEnv": { "A": "1", "B": "two", },
            "remoteEnv": { "KEEP": "x", "DROP": null },
            "remoteUser": "dev",
            "containerUser": "root",
            "workspaceFolder": "/work",
            "workspaceMount": "type=bind,source=/src,target=/work",
        }"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.name.as_deref(), Some("demo"));
    assert_eq!(c.image.as_deref(), Some("debian:12"));
    assert_eq!(
        c.container_env,
        BTreeMap::from([("A".into(), "1".into()), ("B".into(), "two".into())])
    );
    assert_eq!(
        c.remote_env,
        BTreeMap::from([("DROP".into(), None), ("KEEP".into(), Some("x".into()))])
    );
    assert_eq!(c.remote_user.as_deref(), Some("dev"));
    assert_eq!(c.container_user.as_deref(), Some("root"));
    assert_eq!(c.workspace_folder.as_deref(), Some("/work"));
    assert_eq!(
        c.workspace_mount,
        Some(Mount {
            kind: MountKind::Bind,
            source: Some("/src".into()),
            target: "/work".into(),
            read_only: false
        })
    );
}

#[test]
fn type_errors_carry_the_position_of_the_value() {
    assert_eq!(
        error("{\n  \"image\": 42\n}"),
        format!("{FILE}:2:12: expected a string for `image`, found number")
    );
    assert_eq!(
        error("{\"containerEnv\": {\n \"A\": true}}"),
        format!("{FILE}:2:7: expected a string for `containerEnv.A`, found boolean")
    );
    assert_eq!(
        error("{\"remoteEnv\": {\"A\": 1}}"),
        format!("{FILE}:1:21: expected a string or null for `remoteEnv.A`, found number")
    );
    assert_eq!(
        error("{\"containerEnv\": []}"),
        format!("{FILE}:1:18: expected an object for `containerEnv`, found array")
    );
    assert_eq!(
        error("{\"mounts\": \"x\"}"),
        format!("{FILE}:1:12: expected an array for `mounts`, found string")
    );
    assert_eq!(
        error("[1]"),
        format!("{FILE}:1:1: expected an object at the top level, found array")
    );
    let e = parse_str("{\"remoteUser\": null}", Path::new(FILE)).unwrap_err();
    let ConfigError::Invalid {
        property,
        line,
        column,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!((property.as_str(), line, column), ("remoteUser", 1, 16));
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let e = parse_str(
        "{\n  \"image\": \"x\"\n  \"name\": \"y\"\n}",
        Path::new(FILE),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{FILE}:3:3: expected `,` or `}}`, found a string")
    );
    assert!(matches!(
        e,
        ConfigError::Syntax {
            line: 3,
            column: 3,
            ..
        }
    ));
    assert!(e.hint().is_some());
}

#[test]
fn lifecycle_string_is_a_shell_command() {
    let (c, _) = parse(r#"{"postCreateCommand": "npm ci && npm test"}"#);
    assert_eq!(c.post_create_command, Some(shell("npm ci && npm test")));
}

#[test]
fn lifecycle_array_is_an_argv() {
    let (c, _) = parse(r#"{"onCreateCommand": ["/bin/bash", "-c", "echo hi"]}"#);
    assert_eq!(
        c.on_create_command,
        Some(exec(&["/bin/bash", "-c", "echo hi"]))
    );
}

#[test]
fn lifecycle_object_is_parallel_named_commands_in_file_order() {
    let (c, _) = parse(r#"{"postStartCommand": {"b": "make", "a": ["ls", "-l"], "skip": ""}}"#);
    assert_eq!(
        c.post_start_command,
        Some(LifecycleCommand::Parallel(vec![
            ("b".into(), shell("make")),
            ("a".into(), exec(&["ls", "-l"])),
        ]))
    );
}

#[test]
fn empty_lifecycle_commands_mean_nothing_to_run() {
    let (c, _) =
        parse(r#"{"postCreateCommand": "", "onCreateCommand": [], "postStartCommand": {}}"#);
    assert_eq!(c.post_create_command, None);
    assert_eq!(c.on_create_command, None);
    assert_eq!(c.post_start_command, None);
}

#[test]
fn every_lifecycle_command_is_parsed_without_warnings() {
    let (c, warnings) = parse(
        r#"{"initializeCommand": ["a"], "updateContentCommand": "b", "postAttachCommand": {"x": "c"}}"#,
    );
    assert_eq!(c.initialize_command, Some(exec(&["a"])));
    assert_eq!(c.update_content_command, Some(shell("b")));
    assert_eq!(
        c.post_attach_command,
        Some(LifecycleCommand::Parallel(vec![("x".into(), shell("c"))]))
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn lifecycle_type_errors_point_into_the_command() {
    assert_eq!(
        error(r#"{"postCreateCommand": 1}"#),
        format!(
            "{FILE}:1:23: expected a string, an array of strings or an object for \
             `postCreateCommand`, found number"
        )
    );
    assert_eq!(
        error(r#"{"postCreateCommand": ["ls", 2]}"#),
        format!("{FILE}:1:30: expected a string for `postCreateCommand[1]`, found number")
    );
    assert_eq!(
        error(r#"{"postStartCommand": {"a": {"b": "c"}}}"#),
        format!(
            "{FILE}:1:28: expected a string or an array of strings for `postStartCommand.a`, \
             found object"
        )
    );
}

#[test]
fn mounts_accept_string_and_object_forms() {
    let (c, warnings) = parse(
        r#"{"mounts": [
            "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind,ro",
            "type=tmpfs,target=/tmp",
            { "source": "cache", "target": "/cache", "type": "volume" },
            { "type": "volume", "target": "/anon" },
        ]}"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.mounts,
        vec![
            Mount {
                kind: MountKind::Bind,
                source: Some("/var/run/docker.sock".into()),
                target: "/var/run/docker.sock".into(),
                read_only: true
            },
            Mount {
                kind: MountKind::Tmpfs,
                source: None,
                target: "/tmp".into(),
                read_only: false
            },
            Mount {
                kind: MountKind::Volume,
                source: Some("cache".into()),
                target: "/cache".into(),
                read_only: false
            },
            Mount {
                kind: MountKind::Volume,
                source: None,
                target: "/anon".into(),
                read_only: false
            },
        ]
    );
}

#[test]
fn invalid_mounts_are_errors_with_position_and_hint() {
    let e = parse_str(
        "{\"mounts\": [\n  \"type=bind,target=/x\"]}",
        Path::new(FILE),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{FILE}:2:3: invalid mount in `mounts[0]`: a bind mount needs a `source`")
    );
    assert!(e.hint().unwrap().contains("type=bind,source="));
    assert_eq!(
        error(r#"{"mounts": [{"source": "v", "target": "/v"}]}"#),
        format!("{FILE}:1:13: invalid mount in `mounts[0]`: missing `type`")
    );
    assert_eq!(
        error(r#"{"mounts": [{"type": "volume", "target": 3}]}"#),
        format!("{FILE}:1:42: expected a string for `mounts[0].target`, found number")
    );
    assert_eq!(
        error(r#"{"workspaceMount": {"type": "bind"}}"#),
        format!("{FILE}:1:20: expected a string for `workspaceMount`, found object")
    );
}

#[test]
fn ignored_mount_options_and_keys_are_warned_about() {
    let (_, warnings) = parse(
        r#"{"mounts": ["type=bind,source=/a,target=/b,bind-propagation=rshared",
                      {"type": "volume", "target": "/v", "readonly": true}]}"#,
    );
    assert_eq!(props(&warnings), ["mounts[0]", "mounts[1]"]);
    assert_eq!(
        warnings[0].to_string(),
        "devcontainer.json: property `mounts[0]` has mount option `bind-propagation`, which is \
         not supported yet and was ignored"
    );
}

#[test]
fn schema_properties_are_typed_and_only_unknown_ones_warn() {
    let (c, warnings) = parse(
        r#"{"image": "x", "features": {"ghcr.io/devcontainers/features/node:1": {"version": "20"}, "a": "1", "b": true},
            "forwardPorts": [3000, "db:5432"], "runArgs": ["--init"],
            "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"], "privileged": true, "init": false,
            "hostRequirements": {"cpus": 2, "memory": "8gb", "storage": "32gb", "gpu": "optional"},
            "waitFor": "onCreateCommand", "userEnvProbe": "loginShell", "shutdownAction": "none",
            "overrideCommand": false, "updateRemoteUserUID": true, "appPort": [8080, "9000:9000"],
            "portsAttributes": {"3000": {"label": "web", "onAutoForward": "openBrowserOnce", "protocol": "https"}},
            "otherPortsAttributes": {"onAutoForward": "ignore"},
            "overrideFeatureInstallOrder": ["a"], "secrets": {"TOKEN": {"description": "d", "documentationUrl": "u"}},
            "customizations": {"vscode": {}}, "$schema": "x", "bogus": 1,
            "build": {"dockerfile": "D", "context": "..", "args": {"A": "1"}, "target": "t", "cacheFrom": "c", "options": ["--x"]}}"#,
    );
    assert_eq!(props(&warnings), ["bogus"]);
    assert_eq!(
        warnings[0].to_string(),
        "devcontainer.json: property `bogus` is unknown and was ignored"
    );
    assert_eq!(c.features.len(), 3);
    assert_eq!(c.features[0].0, "ghcr.io/devcontainers/features/node:1");
    assert_eq!(
        c.forward_ports,
        [
            ForwardPort::Port(3000),
            ForwardPort::HostPort {
                host: "db".into(),
                port: 5432
            }
        ]
    );
    let h = c.host_requirements.as_ref().unwrap();
    assert_eq!(
        (h.cpus, h.memory_bytes(), h.gpu.clone()),
        (Some(2), Some(8 << 30), Some(Gpu::Optional))
    );
    assert_eq!(c.wait_for, Some(WaitFor::OnCreateCommand));
    assert_eq!(c.user_env_probe, Some(UserEnvProbe::LoginShell));
    assert_eq!(c.shutdown_action, Some(ShutdownAction::None));
    assert_eq!(c.privileged, Some(true));
    assert_eq!(c.init, Some(false));
    assert_eq!(
        c.app_port,
        [AppPort::Port(8080), AppPort::Spec("9000:9000".into())]
    );
    assert_eq!(
        c.ports_attributes[0].1.on_auto_forward,
        Some(OnAutoForward::OpenBrowserOnce)
    );
    assert_eq!(c.secrets[0].0, "TOKEN");
    let b = c.build.as_ref().unwrap();
    assert_eq!(b.cache_from, ["c"]);
    assert_eq!(b.args, [("A".to_owned(), "1".to_owned())]);
    assert_eq!(c.dockerfile(), Some("D"));
    assert!(c.properties_set().contains(&"forwardPorts"));
}

#[test]
fn a_port_written_as_a_string_is_read_with_a_warning() {
    let (c, warnings) = parse(r#"{"forwardPorts": ["3000"]}"#);
    assert_eq!(c.forward_ports, [ForwardPort::Port(3000)]);
    assert_eq!(props(&warnings), ["forwardPorts[0]"]);
}

#[test]
fn schema_violations_are_errors_at_the_value() {
    for (text, want) in [
        (
            r#"{"forwardPorts": [70000]}"#,
            "1:19: expected an integer from 0 to 65535 for `forwardPorts[0]`, found 70000",
        ),
        (
            r#"{"forwardPorts": ["DB:1"]}"#,
            "1:19: expected a port number or \"host:port\"",
        ),
        (
            r#"{"waitFor": "never"}"#,
            "1:13: expected one of \"initializeCommand\", \"onCreateCommand\"",
        ),
        (
            r#"{"hostRequirements": {"memory": "8GB"}}"#,
            "1:33: expected a size such as",
        ),
        (
            r#"{"hostRequirements": {"cpus": 0}}"#,
            "1:31: expected an integer of at least 1 for `hostRequirements.cpus`, found 0",
        ),
        (
            r#"{"hostRequirements": {"gpu": "yes"}}"#,
            "1:30: expected true, false, \"optional\"",
        ),
        (
            r#"{"privileged": "yes"}"#,
            "1:16: expected a boolean for `privileged`, found string",
        ),
        (
            r#"{"capAdd": "SYS_PTRACE"}"#,
            "1:12: expected an array of strings for `capAdd`, found string",
        ),
        (
            r#"{"features": {"x": 1}}"#,
            "1:20: expected a string, a boolean or an object of options for `features.x`",
        ),
        (
            r#"{"secrets": {"1X": {}}}"#,
            "1:20: secret name `1X` must be",
        ),
        (
            r#"{"build": {"args": {"A": 1}}}"#,
            "1:26: expected a string for `build.args.A`, found number",
        ),
        (
            r#"{"otherPortsAttributes": {"onAutoForward": "openBrowserOnce"}}"#,
            "1:44: expected one of",
        ),
        (
            r#"{"dockerComposeFile": 3}"#,
            "1:23: expected a string or an array of strings for `dockerComposeFile`",
        ),
    ] {
        let e = error(text);
        assert!(e.starts_with(&format!("{FILE}:{want}")), "{text}: {e}");
    }
}

#[test]
fn legacy_vscode_properties_move_under_customizations() {
    let (c, warnings) = parse(
        r#"{"extensions": ["a.b"], "settings": {"x": 1, "y": 2}, "devPort": 8000,
            "customizations": {"vscode": {"extensions": ["c.d"], "settings": {"y": 3}}}}"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.customizations.unwrap().to_json_string(),
        r#"{"vscode":{"extensions":["c.d","a.b"],"settings":{"x":1,"y":3},"devPort":8000}}"#
    );
}

#[test]
fn duplicate_properties_use_the_last_value_and_warn() {
    let (c, warnings) = parse("{\"image\": \"a\",\n \"image\": \"b\"}");
    assert_eq!(c.image.as_deref(), Some("b"));
    assert_eq!(props(&warnings), ["image"]);
    assert!(warnings[0].message.contains("line 2"));
}

/// The shared corpus: `$WARREN_DEVCONTAINER_CORPUS`, else `shared/devcontainer-corpus` beside the
/// repository or one of its parents (worktrees live below the folder that holds `shared/`).
pub(crate) fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WARREN_DEVCONTAINER_CORPUS") {
        return Some(PathBuf::from(dir));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/devcontainer-corpus"))
        .find(|d| d.is_dir())
}

/// Every property path of the schema, nested ones as `parent.child` (`*` for a pattern key), with
/// the enum values found at each.
fn schema_paths(
    schema: &serde_json::Value,
    node: &serde_json::Value,
    prefix: &str,
    depth: usize,
    out: &mut BTreeMap<String, std::collections::BTreeSet<String>>,
) {
    if depth > 30 {
        return;
    }
    let here = prefix.trim_end_matches('.');
    if let Some(values) = node.get("enum").and_then(|e| e.as_array()) {
        let set = out.entry(here.to_owned()).or_default();
        set.extend(values.iter().filter_map(|v| v.as_str()).map(str::to_owned));
    }
    if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
        let def = r.trim_start_matches("#/definitions/");
        schema_paths(schema, &schema["definitions"][def], prefix, depth + 1, out);
    }
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (key, sub) in props {
            let path = format!("{prefix}{key}");
            out.entry(path.clone()).or_default();
            schema_paths(schema, sub, &format!("{path}."), depth + 1, out);
        }
    }
    if let Some(props) = node.get("patternProperties").and_then(|p| p.as_object()) {
        for sub in props.values().filter(|v| v.is_object()) {
            schema_paths(schema, sub, &format!("{prefix}*."), depth + 1, out);
        }
    }
    for key in ["items", "oneOf", "anyOf", "allOf"] {
        match node.get(key) {
            Some(serde_json::Value::Array(list)) => {
                for sub in list {
                    schema_paths(schema, sub, prefix, depth + 1, out);
                }
            }
            Some(sub @ serde_json::Value::Object(_)) => {
                schema_paths(schema, sub, prefix, depth + 1, out)
            }
            _ => {}
        }
    }
}

#[test]
fn every_schema_property_is_in_the_model() {
    let Some(corpus) = corpus_dir() else {
        println!(
            "skipped: no shared/devcontainer-corpus beside the repository (schema drift not checked)"
        );
        return;
    };
    let text = std::fs::read_to_string(corpus.join("schemas/devContainer.base.schema.json"))
        .expect("the corpus has the schema");
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut paths = BTreeMap::new();
    schema_paths(&schema, &schema, "", 0, &mut paths);
    // Not properties of the model: ids under `features` are map keys (the schema lists deprecated
    // Feature ids there), and `additionalProperties` is a JSON Schema keyword the schema misplaced
    // among devContainerCommon's properties (nobody writes it in a devcontainer.json).
    paths.retain(|p, _| !p.starts_with("features.") && p != "additionalProperties");
    let model: std::collections::BTreeSet<&str> =
        config::MODEL_PROPERTIES.iter().copied().collect();
    let unknown: Vec<_> = paths
        .keys()
        .filter(|p| !model.contains(p.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "schema properties unknown to the model: {unknown:?}"
    );
    let stale: Vec<_> = model.iter().filter(|p| !paths.contains_key(**p)).collect();
    assert!(
        stale.is_empty(),
        "model properties not in the schema: {stale:?}"
    );
    // Enumerations match the model's value lists.
    let set = |l: &[&str]| {
        l.iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    for (path, values) in [
        ("waitFor", set(WaitFor::ALL)),
        ("userEnvProbe", set(UserEnvProbe::ALL)),
        ("shutdownAction", set(ShutdownAction::ALL)),
        ("portsAttributes.*.onAutoForward", set(OnAutoForward::ALL)),
        ("portsAttributes.*.protocol", set(Protocol::ALL)),
        ("otherPortsAttributes.protocol", set(Protocol::ALL)),
        ("mounts.type", set(&["bind", "volume"])),
    ] {
        assert_eq!(paths[path], values, "enum of `{path}`");
    }
    let enums = paths.iter().filter(|(_, v)| !v.is_empty()).count();
    assert!(enums >= 8, "only {enums} enums found: the walk is broken");
}

#[test]
fn load_substitutes_variables_and_defaults_the_workspace() {
    let l = load_text(
        r#"{"image": "x",
            "containerEnv": {"H": "${localEnv:HOME}/x", "D": "${localEnv:NOPE:dflt}",
                             "W": "${containerWorkspaceFolder}", "B": "${localWorkspaceFolderBasename}",
                             "C": "${containerEnv:PATH}", "I": "${devcontainerId}"},
            "mounts": ["source=${localWorkspaceFolder}/.cache,target=/c,type=bind"]}"#,
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let env = &l.config.container_env;
    assert_eq!(env["H"], "/home/dev/x");
    assert_eq!(env["D"], "dflt");
    assert_eq!(env["W"], "/workspaces/my-app");
    assert_eq!(env["B"], "my-app");
    assert_eq!(env["C"], "${containerEnv:PATH}");
    assert_eq!(env["I"], "${devcontainerId}");
    assert_eq!(
        l.config.mounts[0].source.as_deref(),
        Some("/src/my-app/.cache")
    );
    assert_eq!(l.workspace_folder, "/workspaces/my-app");
    assert_eq!(
        l.workspace_mount,
        Mount {
            kind: MountKind::Bind,
            source: Some("/src/my-app".into()),
            target: "/workspaces/my-app".into(),
            read_only: false
        }
    );
}

#[test]
fn container_workspace_folder_follows_workspace_folder() {
    let l = load_text(
        r#"{"image": "x", "workspaceFolder": "/home/${localEnv:NOPE:me}/code",
            "containerEnv": {"W": "${containerWorkspaceFolder}", "B": "${containerWorkspaceFolderBasename}"}}"#,
    );
    assert_eq!(l.workspace_folder, "/home/me/code");
    assert_eq!(l.config.container_env["W"], "/home/me/code");
    assert_eq!(l.config.container_env["B"], "code");
    // Only the folder moves; the default mount stays where it is.
    assert_eq!(l.workspace_mount.target, "/workspaces/my-app");
}

#[test]
fn workspace_mount_without_folder_warns_and_uses_the_mount_target() {
    let l = load_text(
        r#"{"image": "x", "workspaceMount": "source=${localWorkspaceFolder},target=/code,type=bind"}"#,
    );
    assert_eq!(l.workspace_mount.source.as_deref(), Some("/src/my-app"));
    assert_eq!(l.workspace_folder, "/code");
    assert_eq!(props(&l.warnings), ["workspaceFolder"]);
}

#[test]
fn substitution_errors_point_at_the_string() {
    let e = load_str(
        "{\"image\": \"x\",\n \"name\": \"${localEnv}\"}",
        Path::new(FILE),
        Path::new("/src/my-app"),
        &env,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{FILE}:2:10: `${{localEnv}}` cannot be resolved because no environment variable \
             name is given"
        )
    );
}

#[test]
fn parse_str_does_not_substitute() {
    let (c, _) = parse(r#"{"image": "${localEnv:HOME}"}"#);
    assert_eq!(c.image.as_deref(), Some("${localEnv:HOME}"));
}

#[test]
fn find_config_prefers_the_folder_form_and_reports_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let e = find_config(dir.path()).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }));
    let hint = e.hint().unwrap();
    for path in [".devcontainer/devcontainer.json", ".devcontainer.json"] {
        assert!(
            hint.contains(&dir.path().join(path).display().to_string()),
            "{hint}"
        );
    }

    std::fs::write(dir.path().join(".devcontainer.json"), "{}").unwrap();
    assert_eq!(
        find_config(dir.path()).unwrap(),
        dir.path().join(".devcontainer.json")
    );
    std::fs::create_dir(dir.path().join(".devcontainer")).unwrap();
    std::fs::write(dir.path().join(".devcontainer/devcontainer.json"), "{}").unwrap();
    assert_eq!(
        find_config(dir.path()).unwrap(),
        dir.path().join(".devcontainer/devcontainer.json")
    );
}

#[test]
fn load_reads_the_project_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    std::fs::create_dir_all(project.join(".devcontainer")).unwrap();
    std::fs::write(
        project.join(".devcontainer/devcontainer.json"),
        "{ \"image\": \"alpine\", // comment\n \"containerEnv\": {\"P\": \"${localWorkspaceFolder}\"}, }",
    )
    .unwrap();
    let l = load(&project).unwrap();
    let canonical = project.canonicalize().unwrap();
    assert_eq!(l.config.image.as_deref(), Some("alpine"));
    assert_eq!(l.config.container_env["P"], canonical.to_str().unwrap());
    assert_eq!(l.workspace_folder, "/workspaces/proj");
    assert_eq!(
        l.config_path,
        canonical.join(".devcontainer/devcontainer.json")
    );
    assert!(matches!(
        load(&dir.path().join("missing")),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn missing_required_properties_are_warnings() {
    let (_, warnings) = parse(r#"{"dockerComposeFile": "c.yml"}"#);
    assert_eq!(props(&warnings), ["service", "workspaceFolder"]);
    let (_, warnings) = parse(r#"{"build": {"context": ".."}}"#);
    assert_eq!(props(&warnings), ["build.dockerfile"]);
    let (_, warnings) = parse(r#"{"image": "x", "build": {}}"#);
    assert!(warnings.is_empty(), "{warnings:?}");
}
