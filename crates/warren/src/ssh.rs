//! SSH through the API: `warren ssh --stdio WS` (an OpenSSH `ProxyCommand` that tunnels the SSH
//! connection over `GET /api/v1/workspaces/{ws}/ssh`, a WebSocket to the server's SSH gateway),
//! `warren ssh WS [-- CMD...]` (runs the system `ssh` with that `ProxyCommand`) and
//! `warren config-ssh` (a managed block of `Host warren.*` entries in `~/.ssh/config`).
//!
//! The token only opens the tunnel: SSH authentication happens inside it, end to end, where the
//! gateway checks the user's registered key.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{seg, Client, WorkspaceQuery, USER_AGENT};
use crate::context::Remote;
use crate::output::user_error;

/// The prefix of the host names `warren config-ssh` writes (`warren.WS`).
pub const HOST_PREFIX: &str = "warren.";
/// The block's end marker.
const END: &str = "# --- END WARREN ---";

/// The block's start marker for `context`.
fn start_marker(context: &str) -> String {
    format!("# --- START WARREN (context {context}) ---")
}

/// The workspace named by a `ProxyCommand`'s `%h`: `warren.WS` or `WS`.
pub fn workspace_of_host(host: &str) -> &str {
    host.strip_prefix(HOST_PREFIX)
        .filter(|w| !w.is_empty())
        .unwrap_or(host)
}

/// The WebSocket form (`ws://`, `wss://`) of the server URL `base`.
pub fn ws_base(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

/// The WebSocket URL of the SSH tunnel of `ws` on the server at `base`.
pub fn tunnel_url(base: &str, ws: &str) -> String {
    format!("{}/api/v1/workspaces/{}/ssh", ws_base(base), seg(ws))
}

/// A WebSocket connected to `url` on the context's server with its token; a refusal becomes
/// the server's error about `what` (e.g. "the SSH tunnel") on workspace `ws`.
pub async fn connect_ws(
    remote: &Remote,
    url: &str,
    ws: &str,
    what: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {url}"))?;
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", remote.token))
            .map_err(|_| user_error("the token is not valid in a header", "sign in again"))?,
    );
    headers.insert("user-agent", HeaderValue::from_static(USER_AGENT));
    let connector = match &remote.ca_cert {
        Some(ca) if url.starts_with("wss://") => Some(crate::wsexec::tls_connector(ca)?),
        _ => None,
    };
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((s, _)) => Ok(s),
        Err(e) => Err(crate::wsexec::handshake_error(remote, ws, what, e).await),
    }
}

/// `warren ssh --stdio HOST`: relays stdin and stdout through the tunnel until either side ends.
pub async fn stdio(remote: &Remote, host: &str) -> Result<u8> {
    let ws = workspace_of_host(host);
    let url = tunnel_url(&remote.url, ws);
    let socket = connect_ws(remote, &url, ws, "the SSH tunnel").await?;
    let (mut sink, mut stream) = socket.split();
    // stdin is read on a plain thread (never joined: it may block until this process exits).
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    let up = async {
        while let Some(b) = rx.recv().await {
            if sink.send(Message::Binary(b.into())).await.is_err() {
                return;
            }
        }
        // stdin ended: the SSH client is done with the connection.
        let _ = sink.send(Message::Close(None)).await;
    };
    let down = async {
        let mut out = std::io::stdout().lock();
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if out.write_all(&b).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    Ok(0)
}

/// The known-hosts file Warren keeps for the gateways of its contexts.
fn known_hosts() -> PathBuf {
    crate::context::config_dir().join("known_hosts")
}

/// The host key alias of a context's gateway: one key for all of its workspaces.
fn host_key_alias(remote: &Remote) -> String {
    match &remote.name {
        Some(n) => format!("warren.{n}"),
        None => "warren".into(),
    }
}

/// Quotes `s` for the shell OpenSSH runs a `ProxyCommand` with, when needed.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `ProxyCommand` that reaches `%h` through this binary and `remote`.
fn proxy_command(exe: &Path, remote: &Remote) -> String {
    let exe = sh_quote(&exe.display().to_string());
    match &remote.name {
        Some(n) => format!("{exe} --context {} ssh --stdio %h", sh_quote(n)),
        // WARREN_URL + WARREN_TOKEN: the environment reaches the ProxyCommand.
        None => format!("{exe} ssh --stdio %h"),
    }
}

/// Finds `prog` in `PATH`.
fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `warren ssh WS [-- CMD...]`: replaces this process with the system `ssh` through the tunnel.
pub fn ssh(remote: &Remote, ws: &str, identity: Option<&Path>, command: &[String]) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let ws = workspace_of_host(ws);
    if ws.is_empty()
        || ws.starts_with(['-', '.'])
        || !ws
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(user_error(
            format!("`{ws}` is not a workspace name"),
            "see `warren list`",
        ));
    }
    let Some(ssh) = which("ssh") else {
        return Err(user_error(
            "`warren ssh` runs the OpenSSH client, and `ssh` is not installed (or not in PATH)",
            "install it (e.g. `apt-get install openssh-client`), or use `warren shell WS`",
        ));
    };
    let exe = std::env::current_exe().context("find this program's path")?;
    let kh = known_hosts();
    if let Some(d) = kh.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let mut cmd = std::process::Command::new(ssh);
    cmd.arg("-o")
        .arg(format!("ProxyCommand={}", proxy_command(&exe, remote)))
        .arg("-o")
        .arg(format!("UserKnownHostsFile=\"{}\"", kh.display()))
        .arg("-o")
        .arg(format!("HostKeyAlias={}", host_key_alias(remote)))
        // The tunnel is already authenticated (TLS and the token): trust the gateway's key on
        // first use, and refuse a changed one.
        .arg("-o")
        .arg("StrictHostKeyChecking=accept-new")
        .arg("-l")
        .arg(ws);
    if let Some(key) = identity {
        cmd.arg("-i").arg(key).arg("-o").arg("IdentitiesOnly=yes");
    }
    cmd.arg(format!("{HOST_PREFIX}{ws}"));
    if let Some(line) = remote_command(command) {
        cmd.arg("--").arg(line);
    }
    let e = cmd.exec();
    Err(user_error(
        format!("cannot run ssh: {e}"),
        "check the OpenSSH client installation",
    ))
}

/// The command line the gateway runs with `sh -c`: one argument is taken as a shell command
/// line (as `ssh` does); several are quoted one by one, so `-- sh -c 'echo hi; exit 4'` runs
/// exactly that argument vector.
fn remote_command(command: &[String]) -> Option<String> {
    match command {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(
            many.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// `warren config-ssh [--remove] [--ssh-config PATH]`.
pub async fn config_ssh(
    client: &Client,
    remote: &Remote,
    remove: bool,
    path: Option<PathBuf>,
) -> Result<u8> {
    let Some(name) = remote.name.clone() else {
        return Err(user_error(
            "`warren config-ssh` needs a named context, not WARREN_URL and WARREN_TOKEN",
            "sign in with `warren login URL`, then run it again",
        ));
    };
    let path = match path {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| user_error("HOME is not set", "give --ssh-config PATH"))?;
            PathBuf::from(home).join(".ssh").join("config")
        }
    };
    let block = if remove {
        None
    } else {
        let mut names: Vec<String> = client
            .workspaces(&WorkspaceQuery {
                owner: Some("me".into()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|w| w.name.to_string())
            .collect();
        names.sort();
        let exe = std::env::current_exe().context("find this program's path")?;
        Some(render_block(
            &name,
            &names,
            &proxy_command(&exe, remote),
            &known_hosts(),
            &host_key_alias(remote),
        ))
    };
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(user_error(
                format!("cannot read {}: {e}", path.display()),
                "check the file's permissions, or give another with --ssh-config PATH",
            ))
        }
    };
    let new = update_config(old.as_deref().unwrap_or(""), &name, block.as_deref())?;
    if old.as_deref() == Some(new.as_str()) || (old.is_none() && remove) {
        eprintln!("{} is up to date.", path.display());
        return Ok(0);
    }
    write_atomically(&path, &new)?;
    if remove {
        eprintln!(
            "Removed the Warren block of context `{name}` from {}.",
            path.display()
        );
    } else {
        eprintln!(
            "Wrote the Warren block of context `{name}` to {}: `ssh warren.WS` reaches workspace WS.",
            path.display()
        );
    }
    Ok(0)
}

/// The managed block: one `Host warren.WS` per workspace (with `User WS`, the name the gateway
/// expects), then `Host warren.*` with the `ProxyCommand` (`ssh WS@warren.WS` works for
/// workspaces made later).
fn render_block(
    context: &str,
    workspaces: &[String],
    proxy: &str,
    known_hosts: &Path,
    alias: &str,
) -> String {
    let mut b = String::new();
    b.push_str(&start_marker(context));
    b.push('\n');
    b.push_str("# Written by `warren config-ssh`; `warren config-ssh --remove` deletes it.\n");
    for w in workspaces {
        b.push_str(&format!("Host {HOST_PREFIX}{w}\n  User {w}\n"));
    }
    b.push_str(&format!(
        "Host {HOST_PREFIX}*\n  ProxyCommand {proxy}\n  UserKnownHostsFile \"{}\"\n  HostKeyAlias {alias}\n",
        known_hosts.display()
    ));
    b.push_str(END);
    b.push('\n');
    b
}

/// `config` with the block of `context` replaced by `block` (removed when `None`); everything
/// else is kept byte for byte.
fn update_config(config: &str, context: &str, block: Option<&str>) -> Result<String> {
    let start = start_marker(context);
    let mut out = String::with_capacity(config.len());
    let mut lines = config.split_inclusive('\n');
    let mut found = false;
    while let Some(line) = lines.next() {
        if line.trim_end() == start {
            // Skip to the end marker.
            let mut closed = false;
            for l in lines.by_ref() {
                if l.trim_end() == END {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(user_error(
                    format!("the Warren block of context `{context}` has no `{END}` line"),
                    "fix the file by hand (or delete the block), then run `warren config-ssh` again",
                ));
            }
            if !found {
                if let Some(b) = block {
                    out.push_str(b);
                }
            }
            found = true;
            // A block removed from the end takes the blank line written before it.
            if block.is_none() && lines.clone().next().is_none() && out.ends_with("\n\n") {
                out.pop();
            }
        } else {
            out.push_str(line);
        }
    }
    if !found {
        if let Some(b) = block {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str(b);
        }
    }
    Ok(out)
}

/// Writes `text` to `path` through a temporary file renamed over it, keeping the file's mode
/// (0600 for a new file, in a 0700 directory made if needed).
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let io_err = |what: &str, e: std::io::Error| {
        user_error(
            format!("cannot {what} {}: {e}", path.display()),
            "check the permissions, or give another file with --ssh-config PATH",
        )
    };
    // Write through a symlink to the file it names.
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create the folder of", e))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{file_name}.warren-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("write", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_urls() {
        assert_eq!(workspace_of_host("warren.dev"), "dev");
        assert_eq!(workspace_of_host("dev"), "dev");
        assert_eq!(workspace_of_host("warren."), "warren.");
        assert_eq!(
            tunnel_url("https://w.example/base", "dev"),
            "wss://w.example/base/api/v1/workspaces/dev/ssh"
        );
        assert_eq!(sh_quote("/usr/bin/warren"), "/usr/bin/warren");
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(remote_command(&[]), None);
        assert_eq!(remote_command(&["ls -l".into()]).unwrap(), "ls -l");
        let argv: Vec<String> = ["sh", "-c", "echo hi; exit 4"].map(String::from).into();
        assert_eq!(remote_command(&argv).unwrap(), "sh -c 'echo hi; exit 4'");
    }

    #[test]
    fn the_block_is_replaced_and_removed_without_touching_the_rest() {
        let mine = "Host example\n  User me\n";
        let b1 = render_block(
            "c",
            &["a".into()],
            "w ssh --stdio %h",
            Path::new("/k"),
            "warren.c",
        );
        let once = update_config(mine, "c", Some(&b1)).unwrap();
        assert!(once.starts_with(mine));
        let b2 = render_block(
            "c",
            &["a".into(), "b".into()],
            "w",
            Path::new("/k"),
            "warren.c",
        );
        let twice = update_config(&once, "c", Some(&b2)).unwrap();
        assert_eq!(twice.matches("# --- START WARREN").count(), 1);
        assert!(twice.contains("Host warren.b\n  User b\n"));
        // Another context's block stays.
        let other = update_config(
            &twice,
            "d",
            Some(&render_block("d", &[], "w", Path::new("/k"), "x")),
        )
        .unwrap();
        assert_eq!(other.matches("# --- START WARREN").count(), 2);
        let removed = update_config(&other, "d", None).unwrap();
        assert_eq!(removed, twice);
        let gone = update_config(&removed, "c", None).unwrap();
        assert_eq!(gone.trim_end(), mine.trim_end());
        assert!(update_config("# --- START WARREN (context c) ---\nHost x\n", "c", None).is_err());
    }
}
