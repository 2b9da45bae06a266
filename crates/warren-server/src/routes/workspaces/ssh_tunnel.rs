//! `GET /workspaces/{ws}/ssh`: a WebSocket tunnel to the server's own SSH gateway, for clients
//! that reach only the API (`warren ssh --stdio` as an OpenSSH `ProxyCommand`).
//!
//! The API token only grants the tunnel (authorized like exec: `Op::WorkspaceExec`); SSH
//! authentication still happens end to end inside it, where the gateway checks the user's key.
//! Bytes travel as binary messages both ways; either side closing closes the other. Each tunnel
//! is audited (`workspace.ssh_tunnel`, with the client's address), and the sessions inside it
//! are audited by the gateway as any other.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;

use crate::app::{AppState, RequestId};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ssh_tunnel))
}

/// A WebSocket relaying bytes to the SSH gateway (binary messages both ways).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ssh", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 101, description = "WebSocket; binary messages carry the SSH connection's bytes"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the SSH gateway is off")))]
async fn ssh_tunnel(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad_request("this route is a WebSocket: send a WebSocket upgrade request")
            .hint("use `warren ssh WS` or `ssh` with `warren ssh --stdio` as its ProxyCommand")
    })?;
    let addr = state
        .ssh_addr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .copied();
    let Some(addr) = addr else {
        return Err(unavailable());
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| unavailable())?;
    let _ = tcp.set_nodelay(true);
    // The gateway sees the tunnel's loopback address: who opened it, and from where, is here.
    let audit = crate::audit::upgrade_record(
        request_id.0,
        &caller,
        remote,
        crate::audit::user_agent(&headers),
        "workspace.ssh_tunnel",
        &rec,
    );
    Ok(upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            crate::audit::record(&state, audit).await;
            relay(socket, tcp, &|| {}).await;
        }))
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        warren_api::ErrorCode::Unavailable,
        "the SSH gateway is not running on this server",
    )
    .hint("the server's administrator can turn it on with `ssh_listen` (e.g. 127.0.0.1:2222)")
}

/// Copies bytes between a WebSocket (binary messages) and a TCP connection until either side
/// closes, then closes the other; `on_data` is called whenever bytes flow. Returns the bytes
/// carried (to the TCP side, to the WebSocket). Also the relay of port forwards.
pub(crate) async fn relay(
    socket: WebSocket,
    tcp: tokio::net::TcpStream,
    on_data: &(dyn Fn() + Send + Sync),
) -> (u64, u64) {
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = tcp.into_split();
    let (mut sent, mut received) = (0u64, 0u64);
    let up = async {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    on_data();
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                    sent += b.len() as u64;
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    on_data();
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    received += n as u64;
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    // Whichever direction ends first ends the tunnel: the other half is dropped with it.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    (sent, received)
}
