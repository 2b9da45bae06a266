//! The `warren` binary: argument parsing and wiring only; the logic lives in the library crates.
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod exec;
mod output;
mod server_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervisor must start before anything spawns a thread: it forks.
    if args.len() == 3 && args[1] == "__supervise" {
        warren_runtime::supervisor::main(std::path::Path::new(&args[2]));
    }
    let cli = cli::Cli::parse();
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
    match rt.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            output::report(&e);
            ExitCode::from(1)
        }
    }
}
