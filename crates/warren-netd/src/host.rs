//! netd's touch points with the host, behind traits so tests run without nftables or redirects:
//! the learned nftables sets (`Sets`), a proxied connection's original destination (`Plumbing`),
//! and the NFLOG listener that turns refused packets into `connect` denials (`spawn_nflog`).
//!

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::TcpStream;
use warren_api::net::PortRange;
use warren_runtime::network::{Denial, NetConfig};

/// One element of a learned set: an address, the ports (`None`: every port and protocol) and how
/// long it stays.
pub type Learned = (Ipv4Addr, Option<PortRange>, Duration);

/// The resolver-learned nftables sets of workspaces' allowlist stages.
pub trait Sets: Send + Sync + 'static {
    /// Adds elements to workspace `id`'s stage `stage` learned set (an element there already
    /// keeps its timeout). Blocking.
    fn learn(
        &self,
        cfg: &NetConfig,
        id: &str,
        stage: usize,
        entries: &[Learned],
    ) -> anyhow::Result<()>;
    /// Adds elements, replacing those there already so that they get the new timeout (slower).
    fn relearn(
        &self,
        cfg: &NetConfig,
        id: &str,
        stage: usize,
        entries: &[Learned],
    ) -> anyhow::Result<()> {
        self.learn(cfg, id, stage, entries)
    }
}

/// The real sets: the runtime's nftables.
pub struct NftSets;

impl Sets for NftSets {
    fn learn(
        &self,
        cfg: &NetConfig,
        id: &str,
        stage: usize,
        entries: &[Learned],
    ) -> anyhow::Result<()> {
        warren_runtime::network::learn(cfg, id, stage, entries).map_err(anyhow::Error::msg)
    }

    fn relearn(
        &self,
        cfg: &NetConfig,
        id: &str,
        stage: usize,
        entries: &[Learned],
    ) -> anyhow::Result<()> {
        warren_runtime::network::relearn(cfg, id, stage, entries).map_err(anyhow::Error::msg)
    }
}

/// How the proxy finds where a connection was going and how it gets there.
pub trait Plumbing: Send + Sync + 'static {
    /// The destination the workspace connected to before nftables redirected it to the proxy.
    fn original_dst(&self, conn: &TcpStream) -> std::io::Result<SocketAddrV4>;
    /// Where to connect for `dst` (the real network: `dst` itself).
    fn dial(&self, dst: SocketAddrV4) -> SocketAddr {
        SocketAddr::V4(dst)
    }
    /// Whether a connection the proxy made for a workspace reached the host itself (a host
    /// address that appeared after netd read the list, say): the real check is [`reached_host`].
    fn reached_host(&self, up: &TcpStream) -> bool {
        reached_host(up)
    }
}

/// Whether the connection `up` the proxy made ended on this host: its peer is its own local
/// address, one of the host's addresses (as they are now), loopback or `0.0.0.0/8`. A connection
/// whose addresses cannot be read counts as reaching the host.
pub fn reached_host(up: &TcpStream) -> bool {
    match (up.local_addr(), up.peer_addr()) {
        (Ok(local), Ok(peer)) => {
            is_host_peer(local.ip(), peer.ip(), &crate::state::host_addresses())
        }
        _ => true,
    }
}

/// [`reached_host`] over given addresses.
pub fn is_host_peer(local: IpAddr, peer: IpAddr, host: &[Ipv4Addr]) -> bool {
    if local.to_canonical() == peer.to_canonical() {
        return true;
    }
    match peer.to_canonical() {
        IpAddr::V4(p) => p.is_loopback() || p.octets()[0] == 0 || host.contains(&p),
        IpAddr::V6(p) => p.is_loopback() || p.is_unspecified(),
    }
}

/// The kernel's: `SO_ORIGINAL_DST` of the redirected connection.
pub struct Kernel;

impl Plumbing for Kernel {
    fn original_dst(&self, conn: &TcpStream) -> std::io::Result<SocketAddrV4> {
        let sa = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::OriginalDst)
            .map_err(std::io::Error::from)?;
        Ok(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        ))
    }
}

/// Starts the NFLOG listener: every packet nftables logged (prefix `warren:<id> `) becomes a
/// `connect` denial sent on `tx`. Returns without a listener when the runtime has none yet.
pub fn spawn_nflog(cfg: &NetConfig, tx: tokio::sync::mpsc::Sender<Denial>) {
    let mut l = match warren_runtime::network::nflog::Listener::bind(cfg.log_group) {
        Ok(l) => l,
        Err(e) => return eprintln!("warren netd: nflog group {}: {e}", cfg.log_group),
    };
    std::thread::spawn(move || loop {
        let packets = match l.recv(None) {
            Ok(p) => p,
            Err(e) => return eprintln!("warren netd: nflog: {e}"),
        };
        for p in packets {
            let Some(id) = logged_workspace(&p.prefix) else {
                continue;
            };
            let d = connect_denial(id, p.daddr, p.dport, p.protocol_name());
            if tx.blocking_send(d).is_err() {
                return;
            }
        }
    });
}

/// The workspace id in an nflog prefix (`warren:<id> `).
pub fn logged_workspace(prefix: &str) -> Option<String> {
    let id = prefix.strip_prefix("warren:")?.trim_end();
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| id.to_string())
}

/// The journal record of a connection nftables refused.
pub fn connect_denial(
    workspace: String,
    address: Ipv4Addr,
    port: Option<u16>,
    protocol: String,
) -> Denial {
    Denial {
        time: String::new(),
        workspace,
        kind: "connect".into(),
        address: Some(address),
        port,
        protocol: Some(protocol),
        name: None,
        why: "not allowed".into(),
        count: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nflog_prefixes() {
        assert_eq!(logged_workspace("warren:ab12 ").as_deref(), Some("ab12"));
        assert_eq!(logged_workspace("warren: "), None);
        assert_eq!(logged_workspace("other:ab12 "), None);
    }

    #[test]
    fn a_connection_to_the_host_is_seen() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let host = [Ipv4Addr::new(192, 0, 2, 5)];
        // The internet.
        assert!(!is_host_peer(v4(192, 0, 2, 5), v4(203, 0, 113, 7), &host));
        // The host's own address, listed or not (the kernel answers from it to itself).
        assert!(is_host_peer(v4(192, 0, 2, 5), v4(192, 0, 2, 5), &host));
        assert!(is_host_peer(
            v4(198, 51, 100, 9),
            v4(198, 51, 100, 9),
            &host
        ));
        assert!(is_host_peer(v4(203, 0, 113, 1), v4(192, 0, 2, 5), &host));
        // Loopback from another loopback address, and 0.0.0.0.
        assert!(is_host_peer(v4(127, 0, 0, 1), v4(127, 0, 0, 2), &host));
        assert!(is_host_peer(v4(127, 0, 0, 1), v4(0, 0, 0, 0), &host));
        assert!(is_host_peer(
            "::ffff:127.0.0.1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap(),
            &host
        ));
    }

    #[tokio::test]
    async fn a_real_connection_to_the_host_is_seen() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        assert!(reached_host(&up));
        assert!(Kernel.reached_host(&up));
    }
}
