//! Loads every real-world config of the shared corpus and compares the results with the reference
//! CLI's `read-configuration` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use warren_devcontainer::{load_str, LifecycleCommand, Loaded, Mount, MountKind};

/// The environment the reference outputs were produced with (`env -i HOME=.. USER=.. PATH=.. LANG=..`).
fn reference_env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/dev".into()),
        "USER" => Some("dev".into()),
        "PATH" => Some("/usr/local/bin:/usr/bin:/bin".into()),
        "LANG" => Some("C.UTF-8".into()),
        _ => None,
    }
}

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/devcontainer-corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: corpus folder {} is absent", dir.display());
        None
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn mount_of(v: &Value) -> Mount {
    match v {
        Value::String(spec) => Mount::parse(spec).unwrap().0,
        _ => Mount {
            kind: MountKind::parse(v["type"].as_str().unwrap()).unwrap(),
            source: str_field(v, "source"),
            target: str_field(v, "target").unwrap(),
            read_only: false,
        },
    }
}

fn command_of(v: &Value) -> Option<LifecycleCommand> {
    let argv = |items: &Vec<Value>| {
        LifecycleCommand::Exec(
            items
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect(),
        )
    };
    match v {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(LifecycleCommand::Shell(s.clone())),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(argv(items)),
        Value::Object(map) => Some(LifecycleCommand::Parallel(
            map.iter()
                .filter_map(|(name, v)| command_of(v).map(|c| (name.clone(), c)))
                .collect(),
        )),
        _ => panic!("unexpected command {v}"),
    }
}

/// Differences between our result and the reference output, as readable lines.
fn compare(loaded: &Loaded, expected: &Value) -> Vec<String> {
    let conf = &expected["configuration"];
    let c = &loaded.config;
    let mut diffs = Vec::new();
    let mut check = |what: &str, ours: String, theirs: String| {
        if ours != theirs {
            diffs.push(format!("{what}: ours {ours}, reference {theirs}"));
        }
    };
    check(
        "image",
        format!("{:?}", c.image),
        format!("{:?}", str_field(conf, "image")),
    );
    check(
        "name",
        format!("{:?}", c.name),
        format!("{:?}", str_field(conf, "name")),
    );
    for (what, ours, key) in [
        ("remoteUser", &c.remote_user, "remoteUser"),
        ("containerUser", &c.container_user, "containerUser"),
    ] {
        check(
            what,
            format!("{ours:?}"),
            format!("{:?}", str_field(conf, key)),
        );
    }
    let container_env: BTreeMap<String, String> = conf
        .get("containerEnv")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    check(
        "containerEnv",
        format!("{:?}", c.container_env),
        format!("{container_env:?}"),
    );
    let remote_env: BTreeMap<String, Option<String>> = conf
        .get("remoteEnv")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default();
    check(
        "remoteEnv",
        format!("{:?}", c.remote_env),
        format!("{remote_env:?}"),
    );
    let mounts: Vec<Mount> = conf
        .get("mounts")
        .and_then(Value::as_array)
        .map(|m| m.iter().map(mount_of).collect())
        .unwrap_or_default();
    check("mounts", format!("{:?}", c.mounts), format!("{mounts:?}"));
    for (key, ours) in [
        ("onCreateCommand", &c.on_create_command),
        ("postCreateCommand", &c.post_create_command),
        ("postStartCommand", &c.post_start_command),
    ] {
        // serde_json sorts object keys, so compare parallel commands by name.
        let sorted = |c: Option<LifecycleCommand>| match c {
            Some(LifecycleCommand::Parallel(mut named)) => {
                named.sort_by(|a, b| a.0.cmp(&b.0));
                Some(LifecycleCommand::Parallel(named))
            }
            other => other,
        };
        let theirs = sorted(conf.get(key).and_then(command_of));
        check(
            key,
            format!("{:?}", sorted(ours.clone())),
            format!("{theirs:?}"),
        );
    }
    let ws = &expected["workspace"];
    check(
        "workspaceFolder",
        loaded.workspace_folder.clone(),
        str_field(ws, "workspaceFolder").unwrap_or_default(),
    );
    check(
        "workspaceMount",
        format!("{:?}", loaded.workspace_mount),
        format!("{:?}", mount_of(&ws["workspaceMount"])),
    );
    diffs
}

#[test]
fn every_corpus_config_loads_and_image_configs_match_the_reference_cli() {
    let Some(corpus) = corpus() else { return };
    let project = Path::new("/tmp/dcws/project");
    let config_path = project.join(".devcontainer/devcontainer.json");
    let mut files: Vec<_> = std::fs::read_dir(corpus.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 100,
        "corpus has only {} configs",
        files.len()
    );
    let (mut failures, mut compared) = (Vec::new(), 0);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let loaded = match load_str(&text, &config_path, project, &reference_env) {
            Ok(loaded) => loaded,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let expected = corpus.join("expected/read-configuration").join(&name);
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap();
        if expected["configuration"].get("image").is_none() {
            // Not runnable yet: no image, and a warning saying why if another way to get one is set.
            let conf = &expected["configuration"];
            let other_way = ["build", "dockerFile", "dockerComposeFile"]
                .iter()
                .any(|k| conf.get(k).is_some());
            let says_why = loaded
                .warnings
                .iter()
                .any(|w| w.message.contains("only `image`"));
            if loaded.config.image.is_some() || says_why != other_way {
                failures.push(format!(
                    "{name}: image {:?}, warnings {:?}",
                    loaded.config.image, loaded.warnings
                ));
            }
            continue;
        }
        compared += 1;
        failures.extend(
            compare(&loaded, &expected)
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 40, "only {compared} image configs compared");
}
