//! Workspace ports on a server: `warren ports WS` (what listens, with labels, sharing and preview
//! URLs), `warren ports share WS PORT LEVEL`, `warren ports open WS PORT` (a one-time link that
//! signs a browser in to a preview) and `warren port-forward WS [LOCAL:]REMOTE...` (local TCP
//! listeners relayed through `GET /workspaces/{ws}/ports/{port}/connect`, a WebSocket).

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use warren_api::ports::parse_port;
use warren_api::v1::{PortInfo, PortList, PortTicket, SetPortSharing};

use crate::cli::{PortsArgs, PortsCmd};
use crate::client::{seg, Client};
use crate::context::Remote;
use crate::output::{table, user_error};
use crate::remote::print_json;

fn port_arg(s: &str) -> Result<u16> {
    parse_port(s).map_err(|e| user_error(e, "ports are numbers from 1 to 65535"))
}

/// `warren ports ...`.
pub async fn ports(c: &Client, a: PortsArgs, json: bool) -> Result<u8> {
    match a.cmd {
        None => {
            let Some(ws) = a.workspace else {
                return Err(user_error(
                    "which workspace? `warren ports WS`",
                    "`warren list` shows your workspaces",
                ));
            };
            let list: PortList = c
                .call(
                    Method::GET,
                    &format!("/workspaces/{}/ports", seg(&ws)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            if !list.running {
                eprintln!("Workspace {ws} is not running: nothing listens.");
            }
            let rows: Vec<Vec<String>> = list
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.port.to_string(),
                        if p.addresses.is_empty() {
                            "-".into()
                        } else {
                            p.addresses.join(",")
                        },
                        p.process.clone().unwrap_or_else(|| "-".into()),
                        p.label.clone().unwrap_or_else(|| "-".into()),
                        p.sharing.to_string(),
                        p.urls.last().cloned().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["PORT", "ADDRESS", "PROCESS", "LABEL", "SHARING", "URL"],
                    &rows
                )
            );
            Ok(0)
        }
        Some(PortsCmd::Share {
            workspace,
            port,
            level,
        }) => {
            let port = port_arg(&port)?;
            let info: PortInfo = c
                .call(
                    Method::PUT,
                    &format!("/workspaces/{}/ports/{port}", seg(&workspace)),
                    Some(&SetPortSharing { sharing: level }),
                )
                .await?;
            if json {
                print_json(&info)?;
            } else {
                eprintln!(
                    "Port {port} of {workspace} is shared with: {}.",
                    info.sharing
                );
                for u in &info.urls {
                    println!("{u}");
                }
            }
            Ok(0)
        }
        Some(PortsCmd::Open {
            workspace,
            port,
            subdomain,
        }) => {
            let port = port_arg(&port)?;
            let t: PortTicket = c
                .call(
                    Method::POST,
                    &format!("/workspaces/{}/ports/{port}/ticket", seg(&workspace)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&t)?;
                return Ok(0);
            }
            let url =
                match (subdomain, &t.subdomain_url) {
                    (true, Some(u)) => u.clone(),
                    (true, None) => return Err(user_error(
                        "this server has no subdomain preview URLs (or the names do not fit one)",
                        "leave out --subdomain for the path form",
                    )),
                    (false, _) => t.url.clone(),
                };
            eprintln!(
                "Open this link in your browser within {} seconds (it works once):",
                t.expires_in_secs
            );
            println!("{url}");
            Ok(0)
        }
    }
}

/// `LOCAL:REMOTE` or `REMOTE` (the same port locally).
fn parse_pair(s: &str) -> Result<(u16, u16)> {
    let bad = |e: String| {
        user_error(
            format!("`{s}`: {e}"),
            "give LOCAL:REMOTE (e.g. 8080:3000) or REMOTE alone (e.g. 3000)",
        )
    };
    match s.split_once(':') {
        Some((l, r)) => Ok((parse_port(l).map_err(bad)?, parse_port(r).map_err(bad)?)),
        None => {
            let p = parse_port(s).map_err(bad)?;
            Ok((p, p))
        }
    }
}

/// `warren port-forward WS [LOCAL:]REMOTE...`: until Ctrl-C.
pub async fn port_forward(remote: &Remote, ws: &str, specs: &[String]) -> Result<u8> {
    let pairs = specs
        .iter()
        .map(|s| parse_pair(s))
        .collect::<Result<Vec<_>>>()?;
    // Fail early, with the server's words, when the workspace is not reachable.
    Client::for_remote(remote)?.workspace(ws).await?;
    let mut tasks = vec![];
    for (local, port) in pairs {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .map_err(|e| {
                user_error(
                    format!("cannot listen on 127.0.0.1:{local}: {e}"),
                    "pick another local port: LOCAL:REMOTE",
                )
            })?;
        let bound = listener.local_addr()?.port();
        eprintln!("Forwarding 127.0.0.1:{bound} -> {ws}:{port}");
        let (remote, ws) = (remote.clone(), ws.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (remote, ws) = (remote.clone(), ws.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward_one(&remote, &ws, port, tcp).await {
                        crate::output::report(&e);
                    }
                });
            }
        }));
    }
    let _ = tokio::signal::ctrl_c().await;
    for t in tasks {
        t.abort();
    }
    eprintln!("Stopped forwarding.");
    Ok(0)
}

/// Relays one local connection through the server to `port` in the workspace.
async fn forward_one(
    remote: &Remote,
    ws: &str,
    port: u16,
    tcp: tokio::net::TcpStream,
) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let url = format!(
        "{}/api/v1/workspaces/{}/ports/{port}/connect",
        crate::ssh::ws_base(&remote.url),
        seg(ws)
    );
    let socket = crate::ssh::connect_ws(remote, &url, ws, "the port forward").await?;
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = tcp.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    let down = async {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_local_colon_remote_or_one_port() {
        assert_eq!(parse_pair("8080:3000").unwrap(), (8080, 3000));
        assert_eq!(parse_pair("3000").unwrap(), (3000, 3000));
        for bad in ["0", "70000", "a:1", "1:", ":1", "1:2:3", "x"] {
            assert!(parse_pair(bad).is_err(), "{bad}");
        }
    }
}
