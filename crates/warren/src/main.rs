//! The `warren` binary: argument parsing and wiring only; the logic lives in the library crates.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervisor must start before anything spawns a thread: it forks.
    if args.len() == 3 && args[1] == "__supervise" {
        warren_runtime::supervisor::main(std::path::Path::new(&args[2]));
    }
}
