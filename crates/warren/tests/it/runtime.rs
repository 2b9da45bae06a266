//! The runtime on its own: a workspace from a busybox layer, exec, stop, start, destroy, and attacks on
//! its isolation.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::Duration;

use warren_runtime::{
    ExecProcess, Limits, LinuxRuntime, MountKind, MountSpec, Observed, OciRuntime, Runtime, Stdio,
    WorkspaceSpec,
};

use crate::util::{busybox_rootfs, warren_exe};

pub struct Fixture {
    pub dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub rt: LinuxRuntime,
}

pub fn fixture(oci: OciRuntime) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tmp) = if std::env::var("WARREN_TEST_KEEP").is_ok() {
        let p = tmp.keep();
        eprintln!("keeping {}", p.display());
        (p, None)
    } else {
        (tmp.path().to_path_buf(), Some(tmp))
    };
    busybox_rootfs(&dir.join("layer"));
    std::fs::create_dir_all(dir.join("project")).unwrap();
    std::fs::write(dir.join("project/README"), "project file\n").unwrap();
    let rt = LinuxRuntime::new(&dir.join("ws"), oci, &warren_exe());
    Fixture { dir, _tmp: tmp, rt }
}

pub fn spec(f: &Fixture, id: &str) -> WorkspaceSpec {
    WorkspaceSpec {
        id: id.into(),
        hostname: format!("host-{id}"),
        layers: vec![f.dir.join("layer")],
        env: vec!["PATH=/bin:/usr/bin".into(), "GREETING=hello".into()],
        mounts: vec![MountSpec {
            kind: MountKind::Bind,
            source: Some(f.dir.join("project").display().to_string()),
            target: "/workspaces/project".into(),
            read_only: false,
        }],
        home_user: Some("root".into()),
        container_user: None,
        limits: Limits {
            memory_bytes: Some(64 << 20),
            cpus: None,
            pids: Some(64),
        },
        user_namespace: None,
        network: warren_runtime::Network::Isolated,
        tmp_tmpfs: true,
    }
}

/// Runs `sh -c script` in the workspace; returns (exit code, stdout, stderr).
pub fn sh(rt: &LinuxRuntime, id: &str, script: &str) -> (i32, String, String) {
    run(
        rt,
        id,
        &ExecProcess {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
    )
}

pub fn run(rt: &LinuxRuntime, id: &str, p: &ExecProcess) -> (i32, String, String) {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let stdin: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let s = rt
        .exec(
            id,
            p,
            Some(Stdio {
                stdin,
                stdout: out_w,
                stderr: err_w,
            }),
        )
        .expect("exec");
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        std::fs::File::from(out_r).read_to_string(&mut s).unwrap();
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        std::fs::File::from(err_r).read_to_string(&mut s).unwrap();
        s
    });
    let code = s.wait().unwrap();
    (code, t1.join().unwrap(), t2.join().unwrap())
}

#[test]
fn workspace_runs_commands_and_survives_stop_start_until_destroyed() {
    let f = fixture(
        std::env::var("OCI")
            .map(|s| OciRuntime::parse(&s))
            .unwrap_or_default(),
    );

    let s = spec(&f, "rt1");
    f.rt.create(&s).unwrap();
    f.rt.start("rt1").unwrap();
    assert!(matches!(
        f.rt.inspect("rt1").unwrap(),
        Observed::Running { .. }
    ));
    let (code, out, _) = sh(
        &f.rt,
        "rt1",
        "echo $GREETING; hostname; cat /workspaces/project/README; exit 3",
    );
    assert_eq!(code, 3);
    assert_eq!(out, "hello\nhost-rt1\nproject file\n");
    // Workspace processes start with no signal ignored (SIGPIPE and SIGHUP behave as usual).
    let cat = ExecProcess {
        argv: vec!["cat".into(), "/proc/self/status".into()],
        ..Default::default()
    };
    let (_, status, _) = run(&f.rt, "rt1", &cat);
    assert!(status.contains("SigIgn:\t0000000000000000\n"), "{status}");
    assert!(status.contains("SigBlk:\t0000000000000000\n"), "{status}");
    // Writes to the root filesystem and the home volume persist across stop/start.
    assert_eq!(
        sh(
            &f.rt,
            "rt1",
            "echo kept > /etc/marker && echo home > /root/h && cat /root/.profile"
        )
        .0,
        0
    );
    // The image layer is shared and read-only: the write went to this workspace's own upper layer.
    assert!(!f.dir.join("layer/etc/marker").exists());
    assert!(f.dir.join("ws/rt1/upper/etc/marker").exists());
    f.rt.stop("rt1", Duration::from_secs(5)).unwrap();
    assert!(matches!(f.rt.inspect("rt1").unwrap(), Observed::Stopped(_)));
    f.rt.start("rt1").unwrap();
    let (code, out, _) = sh(&f.rt, "rt1", "cat /etc/marker /root/h");
    assert_eq!((code, out.as_str()), (0, "kept\nhome\n"));
    f.rt.destroy("rt1").unwrap();
    assert_eq!(f.rt.inspect("rt1").unwrap(), Observed::Absent);
    assert!(!f.dir.join("ws/rt1").exists());
}
