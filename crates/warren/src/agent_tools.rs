//! Warren's small in-workspace helpers, run from the read-only `/.warren` tools mount (dispatched
//! in `main` before anything else starts, like the SFTP server):
//!
//! - `warren __put-secret NAME`: run as root by the control plane at every start; writes its stdin
//!   to `/run/secrets/NAME`, mode 0400, owned by the owner of `/run/secrets` (the remote user),
//!   through a fresh temporary file renamed into place (never following a link the user put
//!   there).
//! - `warren __git-credential get|store|erase`: git's credential-helper protocol. `get` asks the
//!   workspace's agent socket (`/run/warren/agent.sock`) with the workspace credential in
//!   `/run/secrets/warren-token`, and prints the username and password Warren answers, or nothing
//!   (git then fails to authenticate). `store` and `erase` do nothing: nothing is cached in the
//!   workspace, so a revocation is immediate.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

/// The subcommand that writes one secret file.
pub const PUT_SECRET: &str = warren_engine::secrets::PUT_SECRET;
/// The git credential helper's subcommand.
pub const GIT_CREDENTIAL: &str = "__git-credential";

const SECRETS_DIR: &str = "/run/secrets";
const TOKEN_FILE: &str = "/run/secrets/warren-token";
const AGENT_SOCKET: &str = "/run/warren/agent.sock";
/// Largest secret file written (the API refuses larger values first).
const MAX_SECRET: u64 = 1 << 20;

/// `warren __put-secret NAME`; returns the exit code.
pub fn put_secret(name: &str) -> i32 {
    match put_secret_inner(name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("warren __put-secret: {e}");
            1
        }
    }
}

fn put_secret_inner(name: &str) -> Result<(), String> {
    if !warren_engine::secrets::valid_secret_name(name) {
        return Err(format!("invalid secret name {name:?}"));
    }
    let dir = std::fs::symlink_metadata(SECRETS_DIR).map_err(|e| format!("{SECRETS_DIR}: {e}"))?;
    if !dir.is_dir() {
        return Err(format!("{SECRETS_DIR} is not a directory"));
    }
    let mut value = Vec::new();
    std::io::stdin()
        .take(MAX_SECRET + 1)
        .read_to_end(&mut value)
        .map_err(|e| format!("read stdin: {e}"))?;
    if value.len() as u64 > MAX_SECRET {
        return Err("value too large".into());
    }
    let tmp = format!("{SECRETS_DIR}/.{name}.{}", std::process::id());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("create {tmp}: {e}"))?;
    let res = (|| {
        f.write_all(&value)
            .map_err(|e| format!("write {tmp}: {e}"))?;
        std::os::unix::fs::fchown(&f, Some(dir.uid()), Some(dir.gid()))
            .map_err(|e| format!("chown {tmp}: {e}"))?;
        std::fs::rename(&tmp, format!("{SECRETS_DIR}/{name}"))
            .map_err(|e| format!("rename {tmp}: {e}"))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// `warren __git-credential OP`; returns the exit code.
pub fn git_credential(op: &str) -> i32 {
    // Read the request whatever the operation (git writes it and may fail on a closed pipe).
    let mut fields = std::collections::BTreeMap::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines().take(64) {
        let Ok(line) = line else { break };
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    if op != "get" {
        return 0;
    }
    match ask(&fields) {
        Ok(Some((user, pass))) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "username={user}");
            let _ = writeln!(out, "password={pass}");
            let _ = out.flush();
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("warren git credential helper: {e}");
            0
        }
    }
}

fn ask(
    fields: &std::collections::BTreeMap<String, String>,
) -> Result<Option<(String, String)>, String> {
    let token = match std::fs::read_to_string(TOKEN_FILE) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{TOKEN_FILE}: {e}")),
    };
    let mut s = std::os::unix::net::UnixStream::connect(AGENT_SOCKET)
        .map_err(|e| format!("{AGENT_SOCKET}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let req = serde_json::json!({
        "op": "git-credential", "token": token, "protocol": get("protocol"),
        "host": get("host"), "path": get("path"),
    });
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| format!("{AGENT_SOCKET}: {e}"))?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    s.take(256 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{AGENT_SOCKET}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| format!("bad answer: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    match (v["username"].as_str(), v["password"].as_str()) {
        (Some(u), Some(p)) if !u.contains('\n') && !p.contains('\n') => {
            Ok(Some((u.to_string(), p.to_string())))
        }
        _ => Ok(None),
    }
}
