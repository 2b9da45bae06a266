//! Warren's resolver and egress proxy, `warren __netd ROOT`: one per runtime root (flock on
//! `ROOT/.net/netd.lock`). It answers workspaces' DNS on the bridge's gateway address (names their
//! egress policies allow are forwarded upstream and their addresses added to the nftables sets
//! the runtime made; the others are NXDOMAIN), proxies the HTTP and TLS connections nftables
//! redirects to it (checking Host/SNI and the destination), and keeps the denial journal. See
//! NET_DESIGN.md's "netd" section and `warren_runtime::network`.
#![forbid(unsafe_code)]

pub mod decide;
pub mod dns;
pub mod host;
#[cfg(test)]
mod it;
pub mod journal;
pub mod server;
pub mod sniff;
pub mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub use server::{serve, Listeners, Netd};

/// Runs netd for the runtime root `root` until SIGTERM or SIGINT. Returns `Ok` at once, quietly,
/// when another netd holds the root's lock.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let net = root.join(".net");
    std::fs::create_dir_all(&net).with_context(|| format!("cannot create {}", net.display()))?;
    let lock_path = net.join("netd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    let _lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", lock_path.display()),
    };
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let netd = Netd::new(
            root.to_path_buf(),
            Arc::new(host::NftSets),
            Arc::new(host::Kernel),
        )?;
        let cfg = netd.snapshot().cfg.clone();
        let gw = cfg.gateway();
        // The bridge may be getting its address: wait a little for it.
        let dns_udp = retry(|| tokio::net::UdpSocket::bind((gw, 53))).await?;
        let dns_tcp = retry(|| tokio::net::TcpListener::bind((gw, 53))).await?;
        let proxy = retry(|| tokio::net::TcpListener::bind((gw, cfg.proxy_port))).await?;
        let sock = net.join("netd.sock");
        let _ = std::fs::remove_file(&sock);
        let control = tokio::net::UnixListener::bind(&sock)
            .with_context(|| format!("cannot listen on {}", sock.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        host::spawn_nflog(&cfg, tx);
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listeners = Listeners {
            dns_udp,
            dns_tcp,
            proxy,
            control,
        };
        // A root that is gone (its state directory deleted) has no workspaces left to serve: its
        // resolver goes too, and frees the gateway address for the next network that takes it.
        let config = net.join("config.json");
        let gone = async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                if !config.exists() {
                    return;
                }
            }
        };
        serve(netd, listeners, rx, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = gone => {}
            }
        })
        .await;
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard limit: every proxied connection holds two and
/// every DNS query in flight one.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("warren netd: cannot raise the open files limit to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("warren netd: cannot read the open files limit: {e}"),
    }
}

/// Binds, retrying for a few seconds while the address is not there yet.
async fn retry<T, F, Fut>(mut bind: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut tries = 0;
    loop {
        match bind().await {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("cannot listen on the gateway address"),
        }
    }
}
