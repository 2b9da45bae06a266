//! `warren shell WS --session ID` against a server: the web terminal
//! (`GET /api/v1/workspaces/{ws}/terminal`, protocol `warren.terminal.v1`), reconnecting to the
//! same shell when the connection drops.
//!
//! Binary messages are terminal bytes both ways; text messages are JSON control messages
//! (`resize` from us; `attached`, `exit`, `error`, `taken_over` from the server). The bytes of
//! output this client has shown are counted, so that after a reconnect the part of the server's
//! replay already on screen (the `attached` message says where the replay starts) is skipped
//! and only what came while away is shown. Keystrokes typed while disconnected are sent once
//! the connection is back.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{seg, USER_AGENT};
use crate::context::Remote;
use crate::exec::RawMode;
use crate::output::user_error;
use crate::wsexec::{handshake_error, tls_connector, ws_base};

/// The subprotocol.
const PROTOCOL: &str = "warren.terminal.v1";

/// How long to keep trying to reconnect (the server's default grace period).
const RECONNECT_FOR: Duration = Duration::from_secs(300);

/// The server pings every 20 s: this long without any message means the connection is dead.
const SILENCE: Duration = Duration::from_secs(60);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Whether `id` is a valid session id (as the server checks it).
pub fn valid_session(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The terminal URL of `ws` on the server at `base`.
pub fn terminal_url(base: &str, ws: &str, session: &str, size: (u16, u16)) -> String {
    format!(
        "{}/api/v1/workspaces/{}/terminal?session={session}&rows={}&cols={}",
        ws_base(base),
        seg(ws),
        size.0,
        size.1
    )
}

fn window_size() -> (u16, u16) {
    warren_runtime::tty::window_size(std::io::stdin().as_fd())
        .or_else(|| warren_runtime::tty::window_size(std::io::stdout().as_fd()))
        .unwrap_or((24, 80))
}

/// How one connection ended.
enum Ended {
    Exit(u8),
    Fatal(anyhow::Error),
    Lost(String),
}

/// What persists across connections.
struct State {
    /// Bytes of the session's output shown so far.
    shown: u64,
    /// Keystrokes read but not yet sent.
    unsent: Option<Vec<u8>>,
    /// Our stdin (a ^D after its end).
    stdin: mpsc::Receiver<Vec<u8>>,
    winch: tokio::signal::unix::Signal,
}

/// Runs a login shell in `ws` as terminal session `session`; returns its exit code.
pub async fn run(remote: &Remote, ws: &str, session: &str) -> Result<u8> {
    if !valid_session(session) {
        return Err(user_error(
            format!("--session `{session}`: use 1 to 64 of A-Z, a-z, 0-9, `.`, `_` and `-`"),
            "e.g. --session work; run again with the same id to get back to the same shell",
        ));
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    spawn_stdin(tx);
    let mut st = State {
        shown: 0,
        unsent: None,
        stdin: rx,
        winch: signal(SignalKind::window_change()).context("install SIGWINCH handler")?,
    };
    let _raw = std::io::stdin().is_terminal().then(RawMode::enter);
    let mut first = true;
    let mut lost_at: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        match connect(remote, ws, session).await {
            Ok(socket) => {
                backoff = Duration::from_millis(250);
                match attached(socket, &mut st, first).await {
                    Ended::Exit(code) => return Ok(code),
                    Ended::Fatal(e) => return Err(e),
                    Ended::Lost(why) => {
                        notice(&format!("connection lost ({why}); reconnecting"));
                        lost_at = Some(tokio::time::Instant::now());
                    }
                }
                first = false;
            }
            Err((e, retry)) => {
                let since = *lost_at.get_or_insert_with(tokio::time::Instant::now);
                if !retry || first || since.elapsed() > RECONNECT_FOR {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A line on stderr that also reads well on a raw terminal.
fn notice(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\nwarren: {msg}\r\n");
    let _ = err.flush();
}

/// Opens the socket: the error and whether trying again may help (not for refusals).
async fn connect(
    remote: &Remote,
    ws: &str,
    session: &str,
) -> std::result::Result<Socket, (anyhow::Error, bool)> {
    let url = terminal_url(&remote.url, ws, session, window_size());
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| (anyhow::anyhow!("bad WebSocket URL {url}: {e}"), false))?;
    let headers = request.headers_mut();
    let auth = HeaderValue::from_str(&format!("Bearer {}", remote.token)).map_err(|_| {
        (
            user_error("the token is not valid in a header", "sign in again"),
            false,
        )
    })?;
    headers.insert("authorization", auth);
    headers.insert("user-agent", HeaderValue::from_static(USER_AGENT));
    headers.insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
    let connector = match &remote.ca_cert {
        Some(ca) if url.starts_with("wss://") => Some(tls_connector(ca).map_err(|e| (e, false))?),
        _ => None,
    };
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((s, _)) => Ok(s),
        Err(e) => {
            let retry = !matches!(e, tokio_tungstenite::tungstenite::Error::Http(_));
            Err((handshake_error(remote, ws, "a terminal", e).await, retry))
        }
    }
}

/// One connection: until the shell exits, the server refuses, or the connection is lost.
async fn attached(socket: Socket, st: &mut State, first: bool) -> Ended {
    let (mut sink, mut stream) = socket.split();
    // Where the next output byte of this connection sits in the session's output.
    let mut pos: Option<u64> = None;
    loop {
        tokio::select! {
            m = tokio::time::timeout(SILENCE, stream.next()) => {
                let m = match m {
                    Err(_) => return Ended::Lost("the server went silent".into()),
                    Ok(None) => return Ended::Lost("closed".into()),
                    Ok(Some(Err(e))) => return Ended::Lost(e.to_string()),
                    Ok(Some(Ok(m))) => m,
                };
                match m {
                    Message::Binary(b) => {
                        let Some(p) = pos.as_mut() else { continue };
                        // Skip what is on screen already (a replay after a reconnect).
                        let skip = st.shown.saturating_sub(*p).min(b.len() as u64) as usize;
                        *p += b.len() as u64;
                        st.shown = st.shown.max(*p);
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&b[skip..]).and_then(|_| out.flush());
                    }
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                        match v["type"].as_str() {
                            Some("attached") => {
                                let new = v["new"].as_bool().unwrap_or(true);
                                if new && !first {
                                    notice("the session had ended while disconnected: this is a new shell");
                                    st.shown = 0;
                                } else if !first {
                                    notice("reconnected");
                                }
                                pos = Some(v["offset"].as_u64().unwrap_or(0));
                                // Keystrokes typed while away.
                                if let Some(b) = st.unsent.take() {
                                    if let Err(e) = sink.send(Message::Binary(b.clone().into())).await {
                                        st.unsent = Some(b);
                                        return Ended::Lost(e.to_string());
                                    }
                                }
                            }
                            Some("exit") => {
                                let code = v["code"].as_i64().unwrap_or(1).clamp(0, 255) as u8;
                                return Ended::Exit(code);
                            }
                            Some("taken_over") => {
                                return Ended::Fatal(user_error(
                                    "another client attached to this terminal session",
                                    "run the same command again to take it back",
                                ))
                            }
                            Some("error") => {
                                let msg = v["message"].as_str().unwrap_or("error").to_string();
                                let hint = v["hint"].as_str().unwrap_or("").to_string();
                                if v["fatal"].as_bool() != Some(true) {
                                    notice(&msg);
                                } else if v["code"] == "unavailable" {
                                    return Ended::Lost(msg);
                                } else {
                                    return Ended::Fatal(user_error(msg, hint));
                                }
                            }
                            _ => {}
                        }
                    }
                    Message::Close(_) => return Ended::Lost("closed by the server".into()),
                    _ => {}
                }
            }
            b = st.stdin.recv(), if st.unsent.is_none() && pos.is_some() => {
                let Some(b) = b else {
                    // Never: the reader thread sends ^D at the end and keeps its sender.
                    continue;
                };
                if let Err(e) = sink.send(Message::Binary(b.clone().into())).await {
                    st.unsent = Some(b);
                    return Ended::Lost(e.to_string());
                }
            }
            _ = st.winch.recv() => {
                let (rows, cols) = window_size();
                let m = serde_json::json!({"type": "resize", "rows": rows, "cols": cols});
                if let Err(e) = sink.send(Message::Text(m.to_string().into())).await {
                    return Ended::Lost(e.to_string());
                }
            }
        }
    }
}

/// Copies stdin to `tx`; at its end, a ^D (as a terminal's user would type), then nothing more.
/// A plain thread, never joined: it may block on a terminal until this process exits.
fn spawn_stdin(tx: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.blocking_send(vec![4]);
        // Keep the sender: a closed channel would read as endless EOFs.
        loop {
            std::thread::park();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_ids() {
        assert_eq!(
            terminal_url("https://w.example/base", "dev.alice", "s-1", (40, 120)),
            "wss://w.example/base/api/v1/workspaces/dev.alice/terminal?session=s-1&rows=40&cols=120"
        );
        assert!(valid_session("a.b_c-1"));
        assert!(!valid_session(""));
        assert!(!valid_session("a b"));
        assert!(!valid_session(&"x".repeat(65)));
    }
}
