//! `warren bench --devcontainer`: `read-configuration` over the whole devcontainer corpus, Warren
//! against the reference Dev Containers CLI in the same run, both as processes started as the
//! corpus README starts the reference (`env -i`, a stub `--docker-path`), plus Warren's library call
//! alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use super::{percentile, progress};
use crate::output::user_error;

const ENV: &[(&str, &str)] = &[
    ("HOME", "/home/dev"),
    ("USER", "dev"),
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
];

fn env(name: &str) -> Option<String> {
    ENV.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| (*v).to_owned())
}

/// Looks for `rel` in `$var`, then under the current directory, the executable's folder and their
/// parents.
fn locate(var: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let starts = [
        std::env::current_dir().ok(),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf)),
    ];
    starts
        .into_iter()
        .flatten()
        .flat_map(|s| s.ancestors().map(|a| a.join(rel)).collect::<Vec<_>>())
        .find(|p| p.exists())
}

fn node() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"))
}

/// Runs `cmd` with the reference environment; its time in ms and its stdout.
fn timed(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd
        .env_clear()
        .envs(ENV.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}", out.status);
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 90.0))
}

/// Runs the benchmark: `rounds` passes over every corpus config.
pub(crate) fn run(rounds: usize, json: bool) -> Result<u8> {
    let corpus =
        locate("WARREN_DEVCONTAINER_CORPUS", "shared/devcontainer-corpus").ok_or_else(|| {
            user_error(
                "the devcontainer corpus was not found",
                "set WARREN_DEVCONTAINER_CORPUS to the folder (shared/devcontainer-corpus)",
            )
        })?;
    let cli = locate(
        "WARREN_DEVCONTAINER_CLI",
        ".cache/devcontainers-cli/node_modules/@devcontainers/cli/devcontainer.js",
    )
    .ok_or_else(|| {
        user_error(
            "the reference Dev Containers CLI is not installed",
            "run scripts/deps in the repository (it installs @devcontainers/cli 0.89.0 into \
             .cache/devcontainers-cli), or set WARREN_DEVCONTAINER_CLI to its devcontainer.js",
        )
    })?;
    let exe = std::env::current_exe()?;
    let tmp = tempfile_dir()?;
    let stub = tmp.join("docker");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n")?;
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut configs: Vec<PathBuf> = std::fs::read_dir(corpus.join("configs"))
        .with_context(|| format!("reading {}", corpus.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    configs.sort();
    let mut projects = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let project = tmp.join(format!("{i}/project"));
        std::fs::create_dir_all(project.join(".devcontainer"))?;
        std::fs::copy(config, project.join(".devcontainer/devcontainer.json"))?;
        projects.push(project);
    }
    progress(&format!(
        "{} configs × {rounds} rounds: warren vs {}",
        projects.len(),
        cli.display()
    ));
    let (mut warren, mut reference, mut library) = (Vec::new(), Vec::new(), Vec::new());
    let mut mismatches = 0;
    for round in 0..rounds {
        for project in &projects {
            let (w, ours) = timed(
                Command::new(&exe)
                    .args(["devcontainer", "read-configuration", "--workspace-folder"])
                    .arg(project),
            )?;
            let (r, theirs) = timed(
                Command::new(node())
                    .arg(&cli)
                    .args(["read-configuration", "--workspace-folder"])
                    .arg(project)
                    .arg("--docker-path")
                    .arg(&stub)
                    .args(["--log-format", "json"]),
            )?;
            warren.push(w);
            reference.push(r);
            if round == 0 {
                let theirs = theirs.trim_end();
                let cut = theirs
                    .find(",\"ociAuthDiagnostics\":")
                    .unwrap_or(theirs.len());
                if ours.trim_end() != format!("{}}}", &theirs[..cut]) {
                    mismatches += 1;
                }
            }
            // The library call alone, averaged over a batch (it is too quick to time once).
            const BATCH: u32 = 20;
            let t = Instant::now();
            for _ in 0..BATCH {
                warren_devcontainer::read_configuration(project, true, &env)?;
            }
            library.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(BATCH));
        }
        progress(&format!("round {} of {rounds} done", round + 1));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (w50, w90) = stats(warren);
    let (r50, r90) = stats(reference);
    let (l50, l90) = stats(library);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "configs": projects.len(), "rounds": rounds, "output_mismatches": mismatches,
                "warren_process_ms": {"p50": w50, "p90": w90},
                "reference_process_ms": {"p50": r50, "p90": r90},
                "warren_library_ms": {"p50": l50, "p90": l90},
                "ratio_process": r50 / w50, "ratio_library": r50 / l50,
            })
        );
    } else {
        println!(
            "read-configuration, {} corpus configs × {rounds} rounds",
            projects.len()
        );
        println!("{:<34} {:>10} {:>10}", "", "p50 ms", "p90 ms");
        println!(
            "{:<34} {:>10.3} {:>10.3}",
            "reference CLI (node process)", r50, r90
        );
        println!("{:<34} {:>10.3} {:>10.3}", "warren (process)", w50, w90);
        println!(
            "{:<34} {:>10.4} {:>10.4}",
            "warren (library call)", l50, l90
        );
        println!(
            "warren process is {:.0}× faster (median); the library call {:.0}×",
            r50 / w50,
            r50 / l50
        );
        println!("outputs differing from the reference (round 1): {mismatches}");
    }
    Ok(if mismatches == 0 { 0 } else { 1 })
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("warren-bench-devcontainer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
