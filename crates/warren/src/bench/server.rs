//! A `warren server` of a benchmark's own: a fresh state directory with a busybox image, its
//! first owner's token, listening on a free loopback port, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Result};

/// The server process; killed (and reaped) on drop.
pub(crate) struct ServerProc(pub(crate) Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Imports busybox (from `busybox`, built in `rootfs`) into `state`, initialises the server and
/// starts it: the process, the owner's token and the address it listens on.
pub(crate) async fn start(
    state: &Path,
    rootfs: &Path,
    busybox: &Path,
) -> Result<(ServerProc, String, String)> {
    let exe = std::env::current_exe()?;
    super::build_rootfs(busybox, rootfs)?;
    let import = Command::new(&exe)
        .args(["image", "import"])
        .arg(rootfs)
        .arg("busybox")
        .env("WARREN_STATE_DIR", state)
        .stdout(Stdio::null())
        .output()?;
    if !import.status.success() {
        bail!(
            "image import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        );
    }
    let init = Command::new(&exe)
        .args(["server", "init"])
        .env("WARREN_STATE_DIR", state)
        .stderr(Stdio::null())
        .output()?;
    if !init.status.success() {
        bail!("warren server init failed");
    }
    let token = String::from_utf8(init.stdout)?.trim().to_string();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = format!("127.0.0.1:{port}");
    let server = ServerProc(
        Command::new(&exe)
            .args(["server", "--listen", &addr, "--ssh-listen", "off"])
            .env("WARREN_STATE_DIR", state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    super::api::wait_ready(&addr).await?;
    Ok((server, token, addr))
}
