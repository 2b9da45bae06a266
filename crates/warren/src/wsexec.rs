//! `warren exec` and `warren shell` against a server: the WebSocket exec protocol.
//!
//! `GET /api/v1/workspaces/{ws}/exec/ws` with the token on the upgrade request. The first client
//! message is a Text frame holding the [`ExecRequest`]. After that, Binary frames whose first
//! byte is a channel: client to server 0 = stdin bytes, 1 = stdin EOF, 2 = resize
//! (`{"rows":R,"cols":C}`), 3 = signal (the number in ASCII); server to client 1 = stdout,
//! 2 = stderr (with a PTY everything comes on 1), 3 = exit (`{"code":N}`), 4 = error (a UTF-8
//! message, then the server closes).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use warren_api::v1::ExecRequest;

use crate::client::{read_ca, seg, ApiError, Client, USER_AGENT};
use crate::context::Remote;
use crate::exec::{forward_signals, RawMode, Signals};
use crate::output::user_error;

/// Client-to-server channels.
const STDIN: u8 = 0;
const STDIN_EOF: u8 = 1;
const RESIZE: u8 = 2;
const SIGNAL: u8 = 3;
/// Server-to-client channels.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const ERROR: u8 = 4;

fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(channel);
    v.extend_from_slice(payload);
    Message::Binary(v.into())
}

fn resize_frame(rows: u16, cols: u16) -> Message {
    frame(
        RESIZE,
        serde_json::json!({"rows": rows, "cols": cols})
            .to_string()
            .as_bytes(),
    )
}

/// The WebSocket form of a server's base URL (`http` → `ws`, `https` → `wss`).
pub(crate) fn ws_base(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

/// The WebSocket URL of the exec route of `ws` on the server at `base`.
pub fn exec_url(base: &str, ws: &str) -> String {
    format!("{}/api/v1/workspaces/{}/exec/ws", ws_base(base), seg(ws))
}

pub(crate) fn tls_connector(ca: &std::path::Path) -> Result<tokio_tungstenite::Connector> {
    use tokio_rustls::rustls;
    let pem = read_ca(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| {
            user_error(
                format!("{} is not a PEM certificate: {e}", ca.display()),
                "give the CA certificate that signed the server's certificate, in PEM form",
            )
        })?;
        roots
            .add(cert)
            .with_context(|| format!("add the CA certificate {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

/// Runs `req` in workspace `ws` on the server with our stdio; returns its exit code. With
/// `req.tty` set, the terminal goes to raw mode and window-size changes are sent.
pub async fn run(remote: &Remote, ws: &str, mut req: ExecRequest) -> Result<u8> {
    let tty = req.tty.is_some();
    if tty {
        let size = warren_runtime::tty::window_size(std::io::stdin().as_fd())
            .or_else(|| warren_runtime::tty::window_size(std::io::stdout().as_fd()))
            .unwrap_or((24, 80));
        req.tty = Some(size);
        if !req.env.contains_key("TERM") {
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
            req.env.insert("TERM".into(), term);
        }
    }
    let url = exec_url(&remote.url, ws);
    let mut request = url
        .as_str()
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
        Some(ca) if url.starts_with("wss://") => Some(tls_connector(ca)?),
        _ => None,
    };
    // Installed before the process exists, so that an early signal reaches it rather than
    // killing this client; until then Ctrl-C gives up.
    let signals = Signals::install()?;
    let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    let (socket, _) = {
        let mut int = signal(SignalKind::interrupt()).context("install signal handler")?;
        let mut term = signal(SignalKind::terminate()).context("install signal handler")?;
        tokio::select! {
            r = connect => match r {
                Ok(s) => s,
                Err(e) => return Err(handshake_error(remote, ws, "an exec session", e).await),
            },
            _ = int.recv() => std::process::exit(128 + libc::SIGINT),
            _ = term.recv() => std::process::exit(128 + libc::SIGTERM),
        }
    };
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::Text(serde_json::to_string(&req)?.into()))
        .await
        .map_err(|e| connection_lost(remote, e))?;

    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    spawn_stdin(tx.clone());
    let sig_tx = tx.clone();
    let forward = forward_signals(signals, move |s| {
        // With a terminal, Ctrl-C and Ctrl-\ arrive as bytes through the PTY.
        if tty && (s == libc::SIGINT || s == libc::SIGQUIT) {
            return;
        }
        let _ = sig_tx.try_send(frame(SIGNAL, s.to_string().as_bytes()));
    });
    let raw = (tty && std::io::stdin().is_terminal()).then(RawMode::enter);
    let resizer = if tty {
        let mut winch = signal(SignalKind::window_change()).context("install SIGWINCH handler")?;
        let tx = tx.clone();
        Some(tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some((r, c)) = warren_runtime::tty::window_size(std::io::stdin().as_fd()) {
                    if tx.send(resize_frame(r, c)).await.is_err() {
                        break;
                    }
                }
            }
        }))
    } else {
        None
    };
    drop(tx);

    let mut outcome: Result<u8> = Err(user_error(
        "the connection to the server closed before the command exited",
        "the server may have restarted; check the workspace with `warren list`",
    ));
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                outcome = Err(connection_lost(remote, e));
                break;
            }
        };
        let Message::Binary(data) = msg else {
            if let Message::Close(_) = msg {
                break;
            }
            continue;
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDOUT => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(payload).and_then(|_| out.flush());
            }
            STDERR => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(payload).and_then(|_| err.flush());
            }
            EXIT => {
                #[derive(serde::Deserialize)]
                struct Exit {
                    code: i32,
                }
                outcome = serde_json::from_slice::<Exit>(payload)
                    .map(|e| e.code.clamp(0, 255) as u8)
                    .map_err(|e| {
                        user_error(
                            format!("the server sent a malformed exit frame: {e}"),
                            "the server may run a different version of Warren than this CLI",
                        )
                    });
                break;
            }
            ERROR => {
                let msg = String::from_utf8_lossy(payload).into_owned();
                outcome = Err(user_error(
                    msg,
                    "check the command, user and working directory; `warren logs WS` shows the workspace's log",
                ));
                break;
            }
            _ => {}
        }
    }
    forward.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    writer.abort();
    drop(raw);
    outcome
}

/// Copies our stdin to the socket (channel 0), then sends EOF (channel 1). A plain thread, never
/// joined: it may block on a terminal until this process exits.
fn spawn_stdin(tx: mpsc::Sender<Message>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(frame(STDIN, &buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.blocking_send(frame(STDIN_EOF, &[]));
    });
}

fn connection_lost(remote: &Remote, e: tokio_tungstenite::tungstenite::Error) -> anyhow::Error {
    user_error(
        format!("lost the connection to {}: {e}", remote.url),
        "the command may still be running in the workspace",
    )
}

/// The error for a failed upgrade: the server's JSON error when it sent one, else what a plain
/// `GET` of the workspace says, else the transport error.
pub(crate) async fn handshake_error(
    remote: &Remote,
    ws: &str,
    what: &str,
    e: tokio_tungstenite::tungstenite::Error,
) -> anyhow::Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(resp) => {
            let status = resp.status();
            let body = resp.body().clone().unwrap_or_default();
            let parsed = ApiError::from_body(
                reqwest::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
                &body,
            );
            if !body.is_empty() && !parsed.message.starts_with("the server answered") {
                return parsed.into();
            }
            // Ask again over plain HTTP for a proper error.
            if let Ok(client) = Client::for_remote(remote) {
                if let Err(err) = client.workspace(ws).await {
                    return err;
                }
            }
            parsed.into()
        }
        other => {
            let hint = if other.to_string().contains("certificate") {
                "if the server uses a private CA, sign in again with `warren login URL --ca-cert CA.pem`"
            } else {
                "check that the server runs and the URL is right (`warren context show`)"
            };
            user_error(
                format!("cannot open {what} on {}: {other}", remote.url),
                hint,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_frames() {
        assert_eq!(
            exec_url("http://127.0.0.1:7080", "dev"),
            "ws://127.0.0.1:7080/api/v1/workspaces/dev/exec/ws"
        );
        assert_eq!(
            exec_url("https://w.example/base", "dev.alice"),
            "wss://w.example/base/api/v1/workspaces/dev.alice/exec/ws"
        );
        let Message::Binary(b) = frame(SIGNAL, b"15") else {
            panic!()
        };
        assert_eq!(&b[..], b"\x0315");
        let Message::Binary(b) = resize_frame(40, 120) else {
            panic!()
        };
        assert_eq!(b[0], RESIZE);
        let v: serde_json::Value = serde_json::from_slice(&b[1..]).unwrap();
        assert_eq!(v, serde_json::json!({"rows": 40, "cols": 120}));
        let Message::Binary(b) = frame(STDIN_EOF, &[]) else {
            panic!()
        };
        assert_eq!(&b[..], [STDIN_EOF]);
    }
}
