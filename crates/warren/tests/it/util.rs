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
    let mut c = Command::new(warren_exe());
    c.args(args)
        .env("WARREN_STATE_DIR", state)
        .env("NO_COLOR", "1");
    embedded_only(&mut c).output().unwrap()
}

/// Keeps `warren` on the embedded engine whatever server contexts the person running the tests
/// has: no contexts file, no `WARREN_URL`/`WARREN_TOKEN`/`WARREN_CONTEXT`.
pub fn embedded_only(c: &mut Command) -> &mut Command {
    c.env("WARREN_CONFIG_DIR", "/nonexistent/warren-test-config")
        .env_remove("WARREN_URL")
        .env_remove("WARREN_TOKEN")
        .env_remove("WARREN_CONTEXT")
}

/// Text of stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A private Warren state directory with a `busybox` image imported, and project folders.
pub struct World {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        busybox_rootfs(&dir.join("rootfs"));
        let w = World { dir, _tmp: tmp };
        let o = w.warren(&[
            "image",
            "import",
            w.dir.join("rootfs").to_str().unwrap(),
            "busybox",
        ]);
        assert!(o.status.success(), "import: {}", stderr(&o));
        w
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn warren(&self, args: &[&str]) -> Output {
        warren(&self.state(), args)
    }

    /// A command for `warren args...` (to feed stdin, set env, or kill it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(warren_exe());
        c.args(args)
            .env("WARREN_STATE_DIR", self.state())
            // Servers started by tests run side by side: none takes the SSH gateway's port.
            .env("WARREN_SSH_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1");
        embedded_only(&mut c);
        c
    }

    /// A project folder `name` with `.devcontainer/devcontainer.json` = `json`.
    pub fn project(&self, name: &str, json: &str) -> PathBuf {
        let p = self.dir.join("projects").join(name);
        std::fs::create_dir_all(p.join(".devcontainer")).unwrap();
        std::fs::write(p.join(".devcontainer/devcontainer.json"), json).unwrap();
        p
    }

    /// `warren up DIR`, asserting success; returns the workspace name.
    pub fn up(&self, dir: &Path) -> String {
        let o = self.warren(&["up", dir.to_str().unwrap()]);
        assert!(o.status.success(), "up failed: {}", stderr(&o));
        stdout(&o).trim().to_string()
    }

    /// `warren exec WS -- sh -c SCRIPT`: (exit code, stdout, stderr).
    pub fn sh(&self, ws: &str, script: &str) -> (i32, String, String) {
        let o = self.warren(&["exec", ws, "--", "sh", "-c", script]);
        (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
    }

    /// The workspace's record from `warren list --json`.
    pub fn record(&self, ws: &str) -> Option<serde_json::Value> {
        let o = self.warren(&["list", "--json"]);
        assert!(o.status.success(), "list: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == ws)
            .cloned()
    }

    pub fn state_of(&self, ws: &str) -> Option<String> {
        self.record(ws)
            .map(|r| r["state"].as_str().unwrap().to_string())
    }

    /// Pids of supervisor processes serving this world's state dir.
    pub fn supervisors(&self) -> Vec<i32> {
        let needle = self.state().display().to_string();
        let mut out = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("__supervise") && cmd.contains(&needle) {
                out.push(pid);
            }
        }
        out
    }

    /// Workspace directories on the host.
    pub fn workspace_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.state().join("workspaces"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Leave nothing running behind a failed test.
        if let Some(list) = self.record_list() {
            for w in list {
                let _ = self.warren(&["delete", "--force", &w]);
            }
        }
        for pid in self.supervisors() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        warren_runtime::network::teardown(&self.state().join("workspaces"));
    }
}

impl World {
    fn record_list(&self) -> Option<Vec<String>> {
        let o = self.warren(&["list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|w| w["name"].as_str().map(String::from))
                .collect(),
        )
    }
}

/// Whether any cgroup directory exists for workspace `id` under /warren.
pub fn cgroup_exists(id: &str) -> bool {
    ["memory", "pids", "cpu", "devices", "freezer", "unified", ""]
        .iter()
        .any(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("warren")
                .join(id)
                .exists()
        })
}

/// Reads from the PTY master until `want` shows up (or panics after a while).
pub fn read_until(master: &mut std::fs::File, want: &str, seen: &mut String) {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "never saw {want:?}; got {seen:?}"
        );
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) == 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) | Err(_) => panic!("terminal closed before {want:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}
