//! Shared fixtures: a busybox root filesystem, temp state dirs, running the `warren` binary.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `warren` binary under test.
pub fn warren_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren"))
}

/// Writes a small root filesystem made of busybox (static) with root and a `dev` user.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
    for d in [
        "etc", "root", "home/dev", "usr/bin", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ndev:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("root/.profile"),
        "# root's profile from the image\n",
    )
    .unwrap();
    nix::unistd::chown(&dir.join("home/dev"), Some(1000.into()), Some(1000.into())).unwrap();
}

/// Runs `warren` with `args` against the state dir `state`.
pub fn warren(state: &Path, args: &[&str]) -> Output {
    Command::new(warren_exe())
        .args(args)
        .env("WARREN_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Text of stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
