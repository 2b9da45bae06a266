//! The `warren` binary: argument parsing and wiring only; the logic lives in the library crates.
#![forbid(unsafe_code)]

mod admin;
mod agent_tools;
mod bench;
mod cli;
mod client;
mod context;
mod devcontainer_cmd;
mod exec;
mod mcp_cmd;
mod net_cmd;
mod output;
mod policy_cmd;
mod ports;
mod quota_cmd;
mod remote;
mod secret_cmd;
mod server_cmd;
mod ssh;
mod task_cmd;
mod terminal;
mod wsexec;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervisor must start before anything spawns a thread: it forks.
    if args.len() == 3 && args[1] == "__supervise" {
        warren_runtime::supervisor::main(std::path::Path::new(&args[2]));
    }
    // Warren's resolver and egress proxy: one per runtime root, started detached by the runtime.
    if args.len() == 3 && args[1] == "__netd" {
        match warren_netd::run(std::path::Path::new(&args[2])) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("warren netd: {e:#}");
                std::process::exit(1);
            }
        }
    }
    // The SFTP server runs inside workspaces (from the read-only `/.warren` tools mount), where
    // it needs nothing but stdin and stdout.
    if args.len() == 2 && args[1] == warren_sftp::SUBCOMMAND {
        std::process::exit(warren_sftp::main());
    }
    // The toolbox API's file helper, likewise run inside workspaces.
    if args.len() >= 2 && args[1] == warren_toolbox::SUBCOMMAND {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        std::process::exit(warren_toolbox::main(&rest));
    }
    // Secret files and git's credential helper, inside workspaces (from `/.warren` too).
    if args.len() == 3 && args[1] == agent_tools::PUT_SECRET {
        std::process::exit(agent_tools::put_secret(&args[2].to_string_lossy()));
    }
    if args.len() == 3 && args[1] == agent_tools::GIT_CREDENTIAL {
        std::process::exit(agent_tools::git_credential(&args[2].to_string_lossy()));
    }
    let cli = cli::Cli::parse();
    let json = cli.json;
    // Commands that need no async runtime skip starting one (`devcontainer` starts faster).
    let cli = match cli::run_sync(cli) {
        Ok(Ok(code)) => return ExitCode::from(code),
        Ok(Err(e)) => {
            report(&e, json);
            return ExitCode::from(1);
        }
        Err(cli) => cli,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error(&format!("cannot start: {e}"), None);
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(cli::run(cli));
    // Blocking work still running (a server's exec waits, say) must not hold up the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e, json);
            ExitCode::from(1)
        }
    }
}

/// Prints an error: `error:` and `hint:` lines on stderr; with `--json`, also
/// `{"error": {"code", "message", "hint"}}` on stdout.
fn report(e: &anyhow::Error, json: bool) {
    let api = e.downcast_ref::<client::ApiError>();
    match api {
        Some(a) => output::error(&a.message, a.hint.as_deref()),
        None => output::report(e),
    }
    if json {
        let (code, message, hint) = match api {
            Some(a) => (a.code.clone(), a.message.clone(), a.hint.clone()),
            None => {
                let (code, hint) = if let Some(ee) = e.downcast_ref::<warren_engine::EngineError>()
                {
                    (ee.code().to_string(), ee.hint())
                } else if let Some(u) = e.downcast_ref::<output::UserError>() {
                    ("invalid_request".to_string(), u.hint.clone())
                } else {
                    ("internal".to_string(), None)
                };
                let message = match e.downcast_ref::<output::UserError>() {
                    Some(u) => u.msg.clone(),
                    None => e
                        .chain()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(": "),
                };
                (code, message, hint)
            }
        };
        println!(
            "{}",
            serde_json::json!({"error": {"code": code, "message": message, "hint": hint}})
        );
    }
}
