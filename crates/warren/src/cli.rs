//! Command-line interface: the subcommands and how each maps onto the engine.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use warren_engine::{Config, Engine, Limits, Progress, UpOptions};
use warren_runtime::{ExecProcess, OciRuntime};

use crate::output::{table, user_error, Printer};

/// Warren: isolated, reproducible development workspaces from devcontainer.json, in one binary.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (database, images, workspaces).
    #[arg(long, global = true, env = "WARREN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// OCI runtime: libcontainer (built in, default), runc, runsc (gVisor), or a path to a runc-compatible binary.
    #[arg(long, global = true, env = "WARREN_RUNTIME")]
    runtime: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create (first time) or start the workspace of a project folder and run its lifecycle commands.
    Up(UpArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a workspace (streams output, forwards stdin and signals, exits with its code).
    Exec(ExecArgs),
    /// Open an interactive shell in a workspace.
    Shell {
        /// Workspace name.
        workspace: String,
        /// Run as this user instead of the remote user.
        #[arg(short, long)]
        user: Option<String>,
    },
    /// Start a stopped workspace.
    Start {
        /// Workspace name.
        workspace: String,
    },
    /// Stop a workspace (its files and home volume are kept).
    Stop {
        /// Workspace name.
        workspace: String,
    },
    /// Stop then start a workspace.
    Restart {
        /// Workspace name.
        workspace: String,
    },
    /// Delete a workspace and everything it has on this host.
    #[command(alias = "rm")]
    Delete {
        /// Workspace name.
        workspace: String,
        /// Delete even if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// Show the output of a workspace's lifecycle commands.
    Logs {
        /// Workspace name.
        workspace: String,
    },
    /// Show a workspace's resource usage.
    Stats {
        /// Workspace name.
        workspace: String,
    },
    /// Manage local images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Make recorded state match what runs on this host (runs automatically; safe to repeat).
    Reconcile,
    /// Measure workspace latency and memory against bubblewrap and runc (uses a private state dir).
    Bench(crate::bench::BenchArgs),
    /// Run the control-plane server (REST API, metrics), or initialise it.
    Server(crate::server_cmd::ServerArgs),
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Project folder containing .devcontainer/devcontainer.json or .devcontainer.json.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Workspace name (default: derived from the folder name).
    #[arg(long)]
    name: Option<String>,
    /// Memory limit, e.g. 512m, 2g.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// CPU limit in cores, e.g. 1.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pids: Option<i64>,
    /// Delete the existing workspace of this folder and create it again.
    #[arg(long)]
    recreate: bool,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Workspace name.
    workspace: String,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run as this user (default: the remote user).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory (default: the workspace folder).
    #[arg(short, long)]
    workdir: Option<String>,
    /// Extra environment, KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Import an OCI image layout (directory or tar) or a root filesystem (directory, .tar, .tar.gz).
    Import {
        /// What to import.
        path: PathBuf,
        /// Name to store it under, e.g. myimage:1.0.
        name: String,
    },
    /// Build a Debian image from Debian's packages with mmdebstrap.
    Bootstrap {
        /// Name to store it under, e.g. debian:bookworm.
        name: String,
        /// Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (refused while a workspace uses it).
    Rm {
        /// Image name.
        name: String,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; use a number with k, m, g or t, e.g. 512m"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// Where Warren keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/warren";

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let exe = std::env::current_exe()?;
    if let Cmd::Server(a) = cli.cmd {
        return crate::server_cmd::run(a, cli.state_dir, cli.runtime, exe).await;
    }
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let engine = Engine::open(Config {
        state_dir,
        oci: OciRuntime::parse(cli.runtime.as_deref().unwrap_or("libcontainer")),
        exe,
    })
    .await?;
    let reconciles = matches!(
        cli.cmd,
        Cmd::Up(_)
            | Cmd::List { .. }
            | Cmd::Start { .. }
            | Cmd::Stop { .. }
            | Cmd::Restart { .. }
            | Cmd::Delete { .. }
            | Cmd::Reconcile
    );
    if reconciles {
        let report = engine.reconcile().await?;
        for (ws, why) in &report.errors {
            Printer.warn(&format!("could not reconcile workspace {ws}: {why}"));
        }
        if matches!(cli.cmd, Cmd::Reconcile) {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "failed": report.failed, "stopped": report.stopped,
                    "deleted": report.deleted, "orphans_removed": report.orphans_removed,
                "errors": report.errors,
                }))?
            );
            return Ok(0);
        }
    }
    match cli.cmd {
        Cmd::Up(a) => {
            if let Some(c) = a.cpus {
                if c.is_nan() || c <= 0.0 {
                    return Err(user_error(
                        format!("--cpus {c} must be positive"),
                        "e.g. --cpus 1.5",
                    ));
                }
            }
            let opts = UpOptions {
                name: a.name,
                limits: Limits {
                    memory_bytes: a.memory,
                    cpus: a.cpus,
                    pids: a.pids,
                },
                recreate: a.recreate,
                ..Default::default()
            };
            let rec = engine.up(&a.dir, &opts, &Printer).await?;
            eprintln!(
                "Workspace {} is running. Try: warren exec {} -- uname -a   or   warren shell {}",
                rec.name, rec.name, rec.name
            );
            println!("{}", rec.name);
            Ok(0)
        }
        Cmd::List { json } => {
            let list = engine.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|w| {
                        vec![
                            w.name.to_string(),
                            w.state.to_string(),
                            w.image.clone(),
                            w.project_dir.clone(),
                            w.created_at.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["NAME", "STATE", "IMAGE", "FOLDER", "CREATED"], &rows)
                );
            }
            Ok(0)
        }
        Cmd::Exec(a) => {
            let p = ExecProcess {
                argv: a.command,
                env: a.env,
                cwd: a.workdir,
                user: a.user,
                tty: a.tty.then_some((24, 80)),
            };
            for e in &p.env {
                if !e.contains('=') {
                    return Err(user_error(
                        format!("--env `{e}` is not KEY=VALUE"),
                        "e.g. --env RUST_LOG=debug",
                    ));
                }
            }
            crate::exec::run(&engine, &a.workspace, p).await
        }
        Cmd::Shell { workspace, user } => {
            let p = ExecProcess {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"
                        .into(),
                ],
                user,
                tty: Some((24, 80)),
                ..Default::default()
            };
            crate::exec::run(&engine, &workspace, p).await
        }
        Cmd::Start { workspace } => {
            engine.start(&workspace, &Printer).await?;
            Ok(0)
        }
        Cmd::Stop { workspace } => {
            engine.stop(&workspace).await?;
            Ok(0)
        }
        Cmd::Restart { workspace } => {
            engine.restart(&workspace, &Printer).await?;
            Ok(0)
        }
        Cmd::Delete { workspace, force } => {
            engine.delete(&workspace, force).await?;
            Ok(0)
        }
        Cmd::Logs { workspace } => {
            print!("{}", engine.logs(&workspace).await?);
            Ok(0)
        }
        Cmd::Stats { workspace } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&engine.stats(&workspace).await?)?
            );
            Ok(0)
        }
        Cmd::Image(ic) => image(&engine, ic).await,
        Cmd::Reconcile => Ok(0),
        Cmd::Bench(a) => {
            let dir = cli
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
            crate::bench::run(a, &dir, cli.runtime.as_deref().unwrap_or("libcontainer")).await
        }
        // Dispatched before the engine is opened.
        Cmd::Server(_) => Ok(0),
    }
}

async fn image(engine: &Engine, cmd: ImageCmd) -> Result<u8> {
    let images = engine.images().clone();
    match cmd {
        ImageCmd::Import { path, name } => {
            if !path.exists() {
                return Err(user_error(
                    format!("{} does not exist", path.display()),
                    "give an OCI image layout (dir or .tar) or a root filesystem (dir, .tar, .tar.gz)",
                ));
            }
            Printer.step(&format!("Importing {} as {name}", path.display()));
            let info =
                tokio::task::spawn_blocking(move || images.import(&path, &name, None)).await??;
            println!("{} {}", info.name, info.digest);
        }
        ImageCmd::Bootstrap { name, suite } => {
            Printer.step(&format!(
                "Building {name} from Debian {suite} with mmdebstrap"
            ));
            let info = engine.bootstrap(&name, &suite, &Printer).await?;
            println!("{} {}", info.name, info.digest);
        }
        ImageCmd::Ls { json } => {
            let list = tokio::task::spawn_blocking(move || images.list()).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.digest.chars().take(19).collect(),
                            i.layers.to_string(),
                            format!("{:.1} MiB", i.size as f64 / (1024.0 * 1024.0)),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "DIGEST", "LAYERS", "SIZE"], &rows));
            }
        }
        ImageCmd::Rm { name } => engine.remove_image(&name).await?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("512m"));
        assert!(parse_size("-1m").is_err());
    }
}
