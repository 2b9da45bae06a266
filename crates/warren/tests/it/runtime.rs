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
        security: Default::default(),
        network: warren_runtime::Network::Isolated,
        tmp_tmpfs: true,
        secrets_user: None,
        agent_dir: false,
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

/// The effective capability mask of a workspace process, from /proc/self/status.
fn cap_eff(rt: &LinuxRuntime, id: &str) -> u64 {
    let (_, status, _) = sh(rt, id, "cat /proc/self/status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .expect("CapEff line");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;
const CAP_SYS_PTRACE_BIT: u64 = 1 << 19;
const CAP_NET_ADMIN_BIT: u64 = 1 << 12;

#[test]
fn added_capabilities_reach_exec_processes_and_nothing_else_does() {
    let f = fixture(OciRuntime::default());
    // Default: neither ptrace nor admin, and mounting is refused.
    let s = spec(&f, "capdef");
    f.rt.create(&s).unwrap();
    f.rt.start("capdef").unwrap();
    let eff = cap_eff(&f.rt, "capdef");
    assert_eq!(eff & (CAP_SYS_PTRACE_BIT | CAP_SYS_ADMIN_BIT), 0, "{eff:x}");
    let (code, _, _) = sh(
        &f.rt,
        "capdef",
        "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m",
    );
    assert_ne!(code, 0, "mount must be refused by default");
    f.rt.destroy("capdef").unwrap();

    // capAdd SYS_PTRACE, NET_ADMIN: exactly those are added, for every exec'd process.
    let mut s = spec(&f, "capadd");
    s.security.cap_add = vec!["CAP_SYS_PTRACE".into(), "CAP_NET_ADMIN".into()];
    f.rt.create(&s).unwrap();
    f.rt.start("capadd").unwrap();
    let eff = cap_eff(&f.rt, "capadd");
    assert_ne!(eff & CAP_SYS_PTRACE_BIT, 0, "{eff:x}");
    assert_ne!(eff & CAP_NET_ADMIN_BIT, 0, "{eff:x}");
    assert_eq!(eff & CAP_SYS_ADMIN_BIT, 0, "{eff:x}");
    // NET_ADMIN works in its own network namespace: bringing loopback down and up.
    assert_eq!(
        sh(&f.rt, "capadd", "ip link set lo down && ip link set lo up").0,
        0
    );
    f.rt.destroy("capadd").unwrap();
}

#[test]
fn privileged_workspaces_may_mount_and_still_see_no_host_devices() {
    let f = fixture(OciRuntime::default());
    let mut s = spec(&f, "priv");
    s.security.privileged = true;
    f.rt.create(&s).unwrap();
    f.rt.start("priv").unwrap();
    let eff = cap_eff(&f.rt, "priv");
    assert_ne!(eff & CAP_SYS_ADMIN_BIT, 0, "{eff:x}");
    let (code, _, err) = sh(
        &f.rt,
        "priv",
        "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m && echo ok > /tmp/m/f && cat /tmp/m/f",
    );
    assert_eq!(code, 0, "{err}");
    // Privileged is not the host: /dev is still the workspace's own small tmpfs.
    let (_, out, _) = sh(&f.rt, "priv", "ls /dev");
    assert!(
        !out.contains("sda") && !out.contains("vda") && !out.contains("kvm"),
        "{out}"
    );
    f.rt.destroy("priv").unwrap();
}

#[test]
fn seccomp_unconfined_lifts_only_the_filter() {
    let f = fixture(OciRuntime::default());
    let mut s = spec(&f, "unconf");
    s.security.seccomp_unconfined = true;
    f.rt.create(&s).unwrap();
    f.rt.start("unconf").unwrap();
    let (_, status, _) = sh(&f.rt, "unconf", "cat /proc/self/status");
    assert!(status.contains("Seccomp:\t0"), "{status}");
    assert_eq!(cap_eff(&f.rt, "unconf") & CAP_SYS_ADMIN_BIT, 0);
    f.rt.destroy("unconf").unwrap();
    let s = spec(&f, "conf");
    f.rt.create(&s).unwrap();
    f.rt.start("conf").unwrap();
    let (_, status, _) = sh(&f.rt, "conf", "cat /proc/self/status");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    f.rt.destroy("conf").unwrap();
}

#[test]
fn a_configured_command_is_the_init_and_the_reaping_init_wraps_it() {
    let f = fixture(OciRuntime::default());
    // With init: the command is not PID 1, the reaper is; orphans are reaped.
    let mut s = spec(&f, "cmdinit");
    s.security.command = Some(vec!["sleep".into(), "1000".into()]);
    s.security.init = true;
    f.rt.create(&s).unwrap();
    f.rt.start("cmdinit").unwrap();
    let (_, out, _) = sh(&f.rt, "cmdinit", "cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(out.starts_with("/bin/sh -c"), "{out}");
    assert!(out.contains("sleep 1000"), "{out}");
    let (_, out, _) = sh(&f.rt, "cmdinit", "ps -o pid,comm | grep -c sleep");
    assert_eq!(out.trim(), "1", "the command runs under the init");
    f.rt.stop("cmdinit", Duration::from_secs(5)).unwrap();
    f.rt.destroy("cmdinit").unwrap();

    // Without init: the command itself is PID 1, and the workspace stops when it exits.
    let mut s = spec(&f, "cmdonly");
    s.security.command = Some(vec!["sh".into(), "-c".into(), "sleep 1; exit 7".into()]);
    f.rt.create(&s).unwrap();
    f.rt.start("cmdonly").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f.rt.inspect("cmdonly").unwrap() {
            Observed::Stopped(Some(exit)) => {
                assert_eq!(exit.code, 7);
                break;
            }
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("the workspace did not stop with its command: {other:?}"),
        }
    }
    f.rt.destroy("cmdonly").unwrap();
}

#[test]
fn ports_listened_on_inside_are_listed_and_reached_through_sockets_made_in_the_workspace() {
    use std::io::Write;
    let f = fixture(OciRuntime::default());
    let s = spec(&f, "rtnet");
    f.rt.create(&s).unwrap();
    f.rt.start("rtnet").unwrap();
    // A web server on the workspace's loopback only: the host's own loopback has no such port.
    let (code, _, err) = sh(
        &f.rt,
        "rtnet",
        "mkdir -p /www && echo inside > /www/index.html && httpd -p 127.0.0.1:18431 -h /www",
    );
    assert_eq!(code, 0, "{err}");
    let mut ports = Vec::new();
    for _ in 0..100 {
        ports = f.rt.listening_ports("rtnet").unwrap();
        if !ports.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].port, 18431);
    assert_eq!(
        ports[0].address,
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(ports[0].process.as_deref(), Some("httpd"));
    assert!(std::net::TcpStream::connect("127.0.0.1:18431").is_err());

    let fd = f.rt.tcp_socket("rtnet", false).unwrap();
    let sock = socket2::Socket::from(fd);
    sock.set_nonblocking(false).unwrap();
    sock.connect(
        &"127.0.0.1:18431"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let mut stream = std::net::TcpStream::from(sock);
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.") && reply.ends_with("inside\n"),
        "{reply}"
    );

    // A port nobody listens on is refused from inside too.
    let sock = socket2::Socket::from(f.rt.tcp_socket("rtnet", false).unwrap());
    sock.set_nonblocking(false).unwrap();
    let e = sock
        .connect(
            &"127.0.0.1:18432"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    f.rt.stop("rtnet", Duration::from_secs(5)).unwrap();
    assert!(matches!(
        f.rt.tcp_socket("rtnet", false),
        Err(warren_runtime::RuntimeError::NotRunning)
    ));
    f.rt.destroy("rtnet").unwrap();
}

#[test]
fn a_login_shell_comes_from_the_workspace_passwd_else_the_given_command_runs() {
    let f = fixture(OciRuntime::default());
    let s = spec(&f, "rtsh");
    f.rt.create(&s).unwrap();
    f.rt.start("rtsh").unwrap();
    let set_shell = |sh: &str| {
        let (code, _, err) = sh_(&f.rt, &format!(
            "sed -i 's#^root:\\([^:]*:[^:]*:[^:]*:[^:]*:[^:]*\\):.*$#root:\\1:{sh}#' /etc/passwd && grep ^root: /etc/passwd"
        ));
        assert_eq!(code, 0, "{err}");
    };
    fn sh_(rt: &LinuxRuntime, script: &str) -> (i32, String, String) {
        sh(rt, "rtsh", script)
    }
    // A login shell reads ~/.profile: it says who it is there.
    assert_eq!(sh_(&f.rt, "echo 'echo login:$SHELL' > /root/.profile").0, 0);
    let login = ExecProcess {
        argv: vec!["echo".into(), "fallback".into()],
        login_shell: true,
        ..Default::default()
    };
    set_shell("/bin/ash");
    let (code, out, err) = run(&f.rt, "rtsh", &login);
    assert_eq!((code, out.as_str()), (0, "login:/bin/ash\n"), "{err}");
    // No usable shell: nologin, false, missing, relative, or not executable.
    assert_eq!(sh_(&f.rt, "touch /bin/plainfile").0, 0);
    for bad in [
        "/sbin/nologin",
        "/bin/false",
        "/bin/missing",
        "ash",
        "/bin/plainfile",
    ] {
        set_shell(bad);
        let (code, out, err) = run(&f.rt, "rtsh", &login);
        assert_eq!((code, out.as_str()), (0, "fallback\n"), "{bad}: {err}");
    }
    // Without the flag, the command runs whatever the passwd says.
    set_shell("/bin/ash");
    let plain = ExecProcess {
        login_shell: false,
        ..login
    };
    assert_eq!(run(&f.rt, "rtsh", &plain).1, "fallback\n");
    f.rt.destroy("rtsh").unwrap();
}
