//! Loads every real-world config of the shared corpus and compares the results with the reference
//! CLI's `read-configuration` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use warren_devcontainer::{
    load_str, merge_configuration, metadata_entries, parse_metadata_label, read_str, Json,
    LifecycleCommand, Loaded, Mount, MountKind,
};

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

/// `$WARREN_DEVCONTAINER_CORPUS`, else `shared/devcontainer-corpus` beside the repository or one of
/// its parents.
fn corpus() -> Option<PathBuf> {
    let found = match std::env::var_os("WARREN_DEVCONTAINER_CORPUS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|a| a.join("shared/devcontainer-corpus"))
            .find(|d| d.is_dir()),
    };
    if found.is_none() {
        println!("SKIPPED: no shared/devcontainer-corpus beside the repository: nothing compared");
    }
    found
}

const PROJECT: &str = "/tmp/dcws/project";
const CONFIG: &str = "/tmp/dcws/project/.devcontainer/devcontainer.json";

/// Warren's `read-configuration` output for config text, as the corpus produced it.
fn warren_output(text: &str, image_inspect: Option<&Value>) -> Result<Json, String> {
    let project = Path::new(PROJECT);
    let (read, _) = read_str(text, Path::new(CONFIG), project, project, &reference_env)
        .map_err(|e| e.to_string())?;
    let merged = image_inspect.map(|inspect| {
        let label = inspect[0]["Config"]["Labels"]["devcontainer.metadata"].as_str();
        let image = label.map(parse_metadata_label).unwrap_or_default();
        let entries = metadata_entries(&read, &image, &[], &reference_env).unwrap();
        merge_configuration(&read.configuration_with_path(), &entries)
    });
    Ok(read.output(merged))
}

/// The stored reference output, in its key order, without `ociAuthDiagnostics` (0.89.0 adds it;
/// it reports registry-auth hardening, which has nothing to do with the configuration).
fn expected_output(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap();
    let mut json = Json::parse_strict(&text).unwrap();
    if let Json::Object(o) = &mut json {
        o.remove("ociAuthDiagnostics");
    }
    json
}

#[test]
fn read_configuration_output_is_identical_to_the_stored_reference_output() {
    let Some(corpus) = corpus() else { return };
    let mut files: Vec<_> = std::fs::read_dir(corpus.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let ours = warren_output(&std::fs::read_to_string(file).unwrap(), None);
        let theirs = expected_output(&corpus.join("expected/read-configuration").join(&name));
        match ours {
            Ok(ours) if ours == theirs => {}
            Ok(ours) => failures.push(format!(
                "{name}:\n  ours      {}\n  reference {}",
                ours.to_json_string(),
                theirs.to_json_string()
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(files.len() >= 100, "only {} configs", files.len());
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn merged_configuration_is_identical_to_the_stored_reference_output() {
    let Some(corpus) = corpus() else { return };
    let mut cases: Vec<_> = std::fs::read_dir(corpus.join("expected/merge-cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case.join("devcontainer.json")).unwrap();
        let inspect: Value = serde_json::from_str(
            &std::fs::read_to_string(case.join("image-inspect.json")).unwrap(),
        )
        .unwrap();
        let ours = warren_output(&text, Some(&inspect)).unwrap();
        let theirs = expected_output(&case.join("read-configuration.json"));
        if ours != theirs {
            failures.push(format!(
                "{}:\n  ours      {}\n  reference {}",
                case.display(),
                ours.to_json_string(),
                theirs.to_json_string()
            ));
        }
    }
    assert!(cases.len() >= 9, "only {} merge cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
            if loaded.config.image.is_some() {
                failures.push(format!("{name}: image {:?}", loaded.config.image));
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

/// Damaged input is an error, never a panic: every corpus config cut short at many places, and
/// with bytes swapped for characters that change its structure.
#[test]
fn damaged_configs_are_errors_not_panics() {
    let Some(corpus) = corpus() else { return };
    let project = Path::new(PROJECT);
    let mut tried = 0;
    for entry in std::fs::read_dir(corpus.join("configs")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).step_by(37).collect();
        for cut in cuts {
            let _ = read_str(
                &text[..cut],
                Path::new(CONFIG),
                project,
                project,
                &reference_env,
            );
            for swap in ["\"", "{", "]", "1", ",", "${", "null"] {
                let damaged = format!("{}{swap}{}", &text[..cut], &text[cut..]);
                let _ = read_str(
                    &damaged,
                    Path::new(CONFIG),
                    project,
                    project,
                    &reference_env,
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 1000, "only {tried} damaged inputs");
}
