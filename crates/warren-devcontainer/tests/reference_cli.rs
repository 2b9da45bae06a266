//! Conformance with the reference Dev Containers CLI (`@devcontainers/cli` 0.89.0, installed by
//! `scripts/deps` under `.cache/devcontainers-cli`): every corpus config and every merge case is
//! read by Warren and by the real CLI, invoked as the corpus README describes (`env -i`, a stub
//! `--docker-path`, the config copied into a `project` folder), and the two outputs must be
//! byte-identical except for the documented differences below.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use warren_devcontainer::{
    merge_configuration, metadata_entries, metadata_image, parse_metadata_label,
    read_configuration, Json, MetadataImage, METADATA_LABEL,
};

/// Differences from the reference output that Warren makes on purpose, each removed from the
/// reference output before comparing:
///
/// - `ociAuthDiagnostics`: 0.89.0 reports how it would treat registry credentials (a hardening
///   diagnostic of its OCI client); it says nothing about the configuration, and Warren has no
///   such client here.
const DOCUMENTED_DIFFERENCES: &[&str] = &["ociAuthDiagnostics"];

// Differences on input the corpus does not contain (each deliberate):
// - Broken JSONC: the reference's parser recovers and reads what it can; Warren stops with
//   `file:line:column` and a hint.
// - Schema violations (a wrong type, enum value or pattern): the reference passes the value on;
//   Warren reports an error at the value. The exception is a port written as a string ("3000"),
//   which real configs use: read as the number, with a warning.
// - `--include-merged-configuration` for Compose configs: the reference inspects the Compose
//   service's image; Warren merges without image metadata (and says so). With `features`, the reference resolves the Features over the network and merges
//   their metadata and prints `featuresConfiguration`; Warren does not yet (and says so).
// - The git root: the reference asks `git rev-parse --show-cdup`; Warren looks for a `.git` folder
//   with a `HEAD` or a `.git` file (worktrees), so git's ownership check, `GIT_DIR` and
//   file-system boundaries do not apply.
// - A metadata label whose array holds non-objects: Warren drops them (the reference crashes on
//   `null` and keeps strings as entries of their characters).
// - A string escape of a lone UTF-16 surrogate becomes U+FFFD (JavaScript keeps the surrogate).

/// The environment the reference runs with (`env -i ...`), which Warren sees too.
const ENV: &[(&str, &str)] = &[
    ("HOME", "/home/dev"),
    ("USER", "dev"),
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
];

fn reference_env(name: &str) -> Option<String> {
    ENV.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| (*v).to_owned())
}

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("WARREN_DEVCONTAINER_CORPUS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|a| a.join("shared/devcontainer-corpus"))
            .find(|d| d.is_dir()),
    }
}

/// The reference CLI: `$WARREN_DEVCONTAINER_CLI`, else the one `scripts/deps` installs.
fn reference_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARREN_DEVCONTAINER_CLI") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/devcontainers-cli/node_modules/@devcontainers/cli/devcontainer.js");
    p.is_file().then_some(p)
}

/// One input: a devcontainer.json and, for merge cases, the image inspect output.
struct Case {
    name: String,
    config: PathBuf,
    inspect: Option<PathBuf>,
    /// The project lives in `repo/sub/project` of a git repository `repo` (git root mounting).
    in_git: bool,
    /// A `.devcontainer/Dockerfile` to write beside the config.
    dockerfile: Option<&'static str>,
}

/// Dockerfile configurations merged with their base image's metadata: the base image the
/// reference inspects (its stub logs it) must be the one Warren works out.
fn synthetic_dockerfiles(dir: &Path, inspect: &Path) -> Vec<Case> {
    let cases: &[(&str, &str, &str)] = &[
        (
            "dockerfile-args-and-stages",
            r#"{"build": {"dockerfile": "Dockerfile", "args": {"VARIANT": "bullseye"}}, "image": "ignored", "remoteUser": "root"}"#,
            "# syntax=docker/dockerfile:1\nARG VARIANT=bookworm\nARG REGISTRY=mcr.microsoft.com\nFROM ${REGISTRY}/devcontainers/base:${VARIANT} AS base\nRUN true\nfrom base as dev\nUSER vscode\n",
        ),
        (
            "dockerfile-target",
            r#"{"build": {"dockerfile": "Dockerfile", "target": "tools"}, "postCreateCommand": "x"}"#,
            "FROM debian:12 AS tools\nFROM alpine:3 AS other\nFROM tools\n",
        ),
        (
            "legacy-dockerfile-defaults",
            r#"{"dockerFile": "Dockerfile", "context": ".."}"#,
            "ARG V\nFROM \"img:${V:-1}\" \n",
        ),
    ];
    std::fs::create_dir_all(dir).unwrap();
    cases
        .iter()
        .map(|(name, config, dockerfile)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, config).unwrap();
            Case {
                name: format!("synthetic/{name}"),
                config: path,
                inspect: Some(inspect.to_owned()),
                in_git: false,
                dockerfile: Some(dockerfile),
            }
        })
        .collect()
}

/// Quirks of the reference pinned with configs of our own (written to `dir`).
fn synthetic(dir: &Path) -> Vec<Case> {
    let configs: &[(&str, &str, bool)] = &[
        (
            "legacy-vscode-properties",
            r#"{"image": "x", "extensions": ["a.b"], "settings": {"z": 1, "y": 2}, "devPort": 8000,
                "customizations": {"vscode": {"extensions": ["c.d"], "settings": {"y": 3}}, "other": {}}}"#,
            false,
        ),
        (
            "legacy-without-customizations",
            r#"{"extensions": ["a.b"], "image": "x", "settings": {}}"#,
            false,
        ),
        (
            "numbers-and-key-order",
            r#"{"image": "x", "hostRequirements": {"cpus": 2.0}, "z": 1e3, "a": -0.5, "n": 12345678901234567890,
                "portsAttributes": {"9000": {"label": "b"}, "web": {}, "3000": {"label": "a"}}, "10": true, "2": false}"#,
            false,
        ),
        (
            "duplicate-keys-and-escapes",
            r##"{"image": "a", "name": "q\"\\\u0001\u00e9\ud83d\ude00\/", "image": "b"}"##,
            false,
        ),
        (
            "variables",
            r#"{"image": "x", "workspaceFolder": "/w/${localWorkspaceFolderBasename}/${containerWorkspaceFolder}",
                "containerEnv": {"A": "${localEnv:HOME}${env:USER}", "B": "${localEnv:NOPE:d:e}", "C": "${containerWorkspaceFolderBasename}",
                "D": "${devcontainerId} ${containerEnv:PATH} ${templateOption:x} ${unknown} ${localHomeFolder} $${x} ${a\nb}"}}"#,
            false,
        ),
        (
            "workspace-mount-without-folder",
            r#"{"image": "x", "workspaceMount": "source=${localWorkspaceFolder},target=/code,type=bind",
                "containerEnv": {"W": "${containerWorkspaceFolder}"}}"#,
            false,
        ),
        (
            "empty-workspace-folder",
            r#"{"image": "x", "workspaceFolder": ""}"#,
            false,
        ),
        (
            "compose-defaults",
            r#"{"dockerComposeFile": ["a.yml"], "service": "app", "containerEnv": {"W": "${containerWorkspaceFolder}"}}"#,
            false,
        ),
        (
            "git-root",
            r#"{"image": "x", "containerEnv": {"W": "${containerWorkspaceFolder}", "L": "${localWorkspaceFolder}"}}"#,
            true,
        ),
    ];
    std::fs::create_dir_all(dir).unwrap();
    configs
        .iter()
        .map(|(name, text, in_git)| {
            let config = dir.join(format!("{name}.json"));
            std::fs::write(&config, text).unwrap();
            Case {
                name: format!("synthetic/{name}"),
                config,
                inspect: None,
                in_git: *in_git,
                dockerfile: None,
            }
        })
        .collect()
}

fn cases(corpus: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let mut configs: Vec<_> = std::fs::read_dir(corpus.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    configs.sort();
    for config in configs {
        out.push(Case {
            name: config.file_name().unwrap().to_string_lossy().into_owned(),
            config,
            inspect: None,
            in_git: false,
            dockerfile: None,
        });
    }
    let mut merges: Vec<_> = std::fs::read_dir(corpus.join("expected/merge-cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    merges.sort();
    for dir in merges {
        out.push(Case {
            name: format!("merge-cases/{}", dir.file_name().unwrap().to_string_lossy()),
            config: dir.join("devcontainer.json"),
            inspect: Some(dir.join("image-inspect.json")),
            in_git: false,
            dockerfile: None,
        });
    }
    out
}

/// The reference's stdout without the documented differences (its last keys).
fn strip_documented(stdout: &str) -> String {
    let mut line = stdout.trim_end().to_owned();
    for key in DOCUMENTED_DIFFERENCES {
        let json = Json::parse_strict(&line).expect("the reference prints JSON");
        let mut json = json;
        if let Json::Object(o) = &mut json {
            o.remove(key);
        }
        // Cut the key out of the text itself (it is printed last), so that everything else is
        // compared byte for byte as the reference wrote it.
        if let Some(at) = line.find(&format!(",\"{key}\":")) {
            line.truncate(at);
            line.push('}');
        }
        assert_eq!(
            Json::parse_strict(&line),
            Some(json),
            "`{key}` is not the last key of the reference output"
        );
    }
    line
}

/// Runs both on one case in `work` (a fresh folder); returns a difference, if any.
fn compare(cli: &Path, case: &Case, work: &Path) -> Option<String> {
    let project = if case.in_git {
        let repo = work.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let git = Command::new("git")
            .args(["init", "-q"])
            .current_dir(&repo)
            .status();
        assert!(git.is_ok_and(|s| s.success()), "git init failed");
        repo.join("sub/project")
    } else {
        work.join("project")
    };
    std::fs::create_dir_all(project.join(".devcontainer")).unwrap();
    std::fs::copy(
        &case.config,
        project.join(".devcontainer/devcontainer.json"),
    )
    .unwrap();
    if let Some(text) = case.dockerfile {
        std::fs::write(project.join(".devcontainer/Dockerfile"), text).unwrap();
    }
    let stub = work.join("docker");
    let script = match &case.inspect {
        Some(inspect) => format!(
            "#!/bin/sh\nif [ \"$1\" = inspect ]; then echo \"$@\" >> '{}'; cat '{}'; fi\nexit 0\n",
            work.join("inspected").display(),
            inspect.display()
        ),
        None => "#!/bin/sh\nexit 0\n".to_owned(),
    };
    std::fs::write(&stub, script).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // `env -i` as in the corpus README: only ENV, and node itself found here.
    let mut cmd = Command::new(which_node());
    cmd.env_clear()
        .envs(ENV.iter().copied())
        .current_dir(work)
        .arg(cli)
        .args(["read-configuration", "--workspace-folder"])
        .arg(&project)
        .arg("--docker-path")
        .arg(&stub)
        .args(["--log-format", "json"]);
    if case.inspect.is_some() {
        cmd.arg("--include-merged-configuration");
    }
    let out = cmd.output().expect("run the reference CLI");
    if !out.status.success() {
        return Some(format!(
            "{}: the reference CLI failed ({}): {}",
            case.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    let theirs = strip_documented(&String::from_utf8_lossy(&out.stdout));
    if case.dockerfile.is_some() {
        let inspected = std::fs::read_to_string(work.join("inspected")).unwrap_or_default();
        let (_, loaded) = read_configuration(&project, true, &reference_env).unwrap();
        let ours = metadata_image(&loaded.config, &loaded.config_path).unwrap();
        let want = format!(
            "inspect --type image {}\n",
            match &ours {
                MetadataImage::DockerfileBase(Some(image)) => image.as_str(),
                other => panic!("{other:?}"),
            }
        );
        if inspected != want {
            return Some(format!(
                "{}: the reference inspected {inspected:?}, Warren works out {ours:?}",
                case.name
            ));
        }
    }

    let ours = match read_configuration(&project, true, &reference_env) {
        Ok((read, _)) => {
            let merged = case.inspect.as_ref().map(|inspect| {
                let inspect: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(inspect).unwrap()).unwrap();
                let image = inspect[0]["Config"]["Labels"][METADATA_LABEL]
                    .as_str()
                    .map(parse_metadata_label)
                    .unwrap_or_default();
                let entries = metadata_entries(&read, &image, &[], &reference_env).unwrap();
                merge_configuration(&read.configuration_with_path(), &entries)
            });
            read.output(merged).to_json_string()
        }
        Err(e) => return Some(format!("{}: Warren failed: {e}", case.name)),
    };
    (ours != theirs).then(|| format!("{}:\n  warren    {ours}\n  reference {theirs}", case.name))
}

fn which_node() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"))
}

#[test]
fn warren_read_configuration_matches_the_reference_cli() {
    let Some(corpus) = corpus() else {
        println!("SKIPPED: no shared/devcontainer-corpus beside the repository: nothing compared");
        return;
    };
    let Some(cli) = reference_cli() else {
        // scripts/deps installs it: in CI (`.ci/run` sets CI=1) its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "the reference CLI is not installed: run scripts/deps"
        );
        println!(
            "SKIPPED: the reference CLI is not installed (run scripts/deps, which installs \
             @devcontainers/cli 0.89.0 into .cache/devcontainers-cli): nothing compared"
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut cases = cases(&corpus);
    assert!(cases.len() >= 119, "only {} cases", cases.len());
    cases.extend(synthetic(&root.path().join("synthetic")));
    let basic = corpus.join("expected/merge-cases/01-basic-merge/image-inspect.json");
    cases.extend(synthetic_dockerfiles(
        &root.path().join("synthetic"),
        &basic,
    ));
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    // Node starts in ~0.3 s; a few at a time keep 119 runs well within the time budget.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let work = root.path().join(i.to_string());
                if let Some(diff) = compare(&cli, case, &work) {
                    failures.lock().unwrap().push(diff);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "compared {} cases with the reference CLI in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
