//! The `sftp` subsystem driven by the real OpenSSH clients (`sftp`, `scp`, `rsync -e ssh`) against a
//! real server, on busybox images with no SFTP server (and, for SFTP, no C library): Warren's own
//! server runs inside the workspace from the read-only `/.warren` tools mount, as the remote user.
//! Attacks: a non-root user writing /etc or reading /etc/shadow, paths and symlinks towards the
//! host, the tools mount, another user's workspace, malformed SFTP packets next to a healthy session.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest;

/// Makes an ed25519 key pair in `dir`; returns the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    common::keygen(dir, name)
}

/// Registers `key`'s public half for the token's user, proven with its private half.
async fn register(s: &TestServer, token: &str, key: &Path) {
    s.register_ssh_key(token, key).await;
}

/// OpenSSH options every client here uses.
fn opts(key: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(key.display().to_string());
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a client to completion off the async runtime.
async fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// `sftp -b` with `batch` as the workspace `ws`.
async fn sftp(port: u16, key: &Path, ws: &str, batch: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("batch");
    std::fs::write(&b, batch).unwrap();
    let mut c = Command::new("sftp");
    c.args(opts(key))
        .args(["-P", &port.to_string(), "-b"])
        .arg(&b)
        .arg(format!("{ws}@127.0.0.1"));
    run(c).await
}

/// `ssh ws command`.
async fn ssh(port: u16, key: &Path, ws: &str, command: &str) -> Output {
    let mut c = Command::new("ssh");
    c.args(opts(key))
        .args(["-p", &port.to_string()])
        .arg(format!("{ws}@127.0.0.1"))
        .arg(command);
    run(c).await
}

/// `scp` with `args` (sources and target, `-r`...).
async fn scp(port: u16, key: &Path, args: &[String]) -> Output {
    let mut c = Command::new("scp");
    c.args(opts(key)).args(["-P", &port.to_string()]).args(args);
    run(c).await
}

fn sha256(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// A busybox root with `/etc/shadow` (root only), and with `rsync` copied from the host with the
/// libraries and loader it needs when `with_rsync`; imported into the server as `name`.
fn import_image(s: &TestServer, name: &str, with_rsync: bool) {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = s.dir.path().join(format!("rootfs-{name}"));
    common::busybox_rootfs(&rootfs);
    let shadow = rootfs.join("etc/shadow");
    std::fs::write(&shadow, "root:SECRET-HASH:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    // dev owns its home, as in real images.
    std::os::unix::fs::chown(rootfs.join("home/dev"), Some(1000), Some(1000)).unwrap();
    if with_rsync {
        let rsync = Path::new("/usr/bin/rsync");
        assert!(rsync.exists(), "rsync is installed (scripts/deps)");
        let ldd = Command::new("ldd").arg(rsync).output().unwrap();
        let mut files = vec![rsync.to_path_buf()];
        for line in text(&ldd.stdout).lines() {
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` or `/lib64/ld-linux... (0x...)`
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
                None => line.trim().split(' ').next().unwrap_or(""),
            };
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
        for f in files {
            let dest = rootfs.join(f.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&f, &dest).unwrap();
        }
    }
    let o = Command::new(common::warren_exe())
        .args(["image", "import"])
        .arg(&rootfs)
        .arg(name)
        .env("WARREN_STATE_DIR", s.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "import: {}", text(&o.stderr));
}

async fn template(s: &TestServer, name: &str, image: &str) {
    s.push_template(
        name,
        json!({"image": image, "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
}

async fn create(s: &TestServer, token: &str, name: &str, template: &str) {
    s.create_workspace(token, name, template).await;
}

/// Every file and directory under `root` (relative path, contents for files), sorted.
fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn make_tree(root: &Path) {
    for (i, d) in ["a", "a/b", "a/b/c", "empty", "d e"].iter().enumerate() {
        std::fs::create_dir_all(root.join(d)).unwrap();
        if *d != "empty" {
            std::fs::write(
                root.join(d).join(format!("f{i}.txt")),
                format!("file {i}\n"),
            )
            .unwrap();
        }
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(root.join("a/b/big.bin"), big).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_scp_and_rsync_work_on_images_without_an_sftp_server() {
    let s = TestServer::start().await;
    import_image(&s, "bb", false);
    import_image(&s, "bbr", true);
    template(&s, "plain", "bb").await;
    template(&s, "rsync", "bbr").await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let alice_key = keygen(keys.path(), "alice");
    let bob_key = keygen(keys.path(), "bob");
    register(&s, &alice, &alice_key).await;
    register(&s, &bob, &bob_key).await;
    create(&s, &alice, "files", "plain").await;
    create(&s, &alice, "sync", "rsync").await;
    let port = s.ssh_port().await;
    let local = tempfile::tempdir().unwrap();
    let l = local.path();

    // The image has no SFTP server and no C library: only busybox.
    let o = ssh(
        port,
        &alice_key,
        "files",
        "ls /usr/lib/openssh /usr/libexec /lib 2>&1; id -u",
    )
    .await;
    assert!(text(&o.stdout).ends_with("1000\n"), "{}", text(&o.stdout));
    assert!(!text(&o.stdout).contains("sftp-server"));

    // sftp in batch mode: mkdir, put, rename, chmod, symlink, ls, get, rm.
    std::fs::write(l.join("small.txt"), "small file\n").unwrap();
    let batch = format!(
        "mkdir /home/dev/d\ncd /home/dev/d\nput {l}/small.txt small.txt\nput {l}/small.txt other.txt\n\
         rename other.txt renamed.txt\nchmod 640 renamed.txt\nsymlink small.txt link.txt\n\
         ls -l\nget link.txt {l}/back.txt\nput {l}/small.txt gone.txt\nrm gone.txt\nmkdir sub\nrmdir sub\n\
         df /home/dev\npwd\n",
        l = l.display()
    );
    let o = sftp(port, &alice_key, "files", &batch).await;
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    assert!(out.contains("renamed.txt"), "{out}");
    assert!(out.contains("-rw-r-----"), "chmod shows in ls -l: {out}");
    assert!(
        out.contains("dev"),
        "names from the workspace's passwd: {out}"
    );
    assert!(
        out.contains("Remote working directory: /home/dev/d"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(l.join("back.txt")).unwrap(),
        "small file\n"
    );
    // What it made belongs to the remote user, as the shell sees it.
    let o = ssh(
        port,
        &alice_key,
        "files",
        "cd /home/dev/d && stat -c '%n %u:%g %a' * && readlink link.txt && ls",
    )
    .await;
    let out = text(&o.stdout);
    assert!(out.contains("small.txt 1000:1000"), "{out}");
    assert!(out.contains("renamed.txt 1000:1000 640"), "{out}");
    assert!(
        out.contains("small.txt\n") && !out.contains("gone.txt"),
        "{out}"
    );
    assert!(!out.contains("other.txt") && !out.contains("sub"), "{out}");

    // scp (SFTP underneath) both ways: several MiB, checksums equal on both sides.
    let big: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(l.join("big.bin"), &big).unwrap();
    let want = sha256(&l.join("big.bin"));
    let o = scp(
        port,
        &alice_key,
        &[
            l.join("big.bin").display().to_string(),
            "files@127.0.0.1:/home/dev/big.bin".into(),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = ssh(port, &alice_key, "files", "sha256sum /home/dev/big.bin").await;
    assert!(text(&o.stdout).starts_with(&want), "{}", text(&o.stdout));
    let o = scp(
        port,
        &alice_key,
        &[
            "files@127.0.0.1:/home/dev/big.bin".into(),
            l.join("down.bin").display().to_string(),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sha256(&l.join("down.bin")), want);
    // A relative target lands in the session's directory.
    let o = scp(
        port,
        &alice_key,
        &[
            l.join("small.txt").display().to_string(),
            "files@127.0.0.1:".into(),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = ssh(port, &alice_key, "files", "ls small.txt && pwd").await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "where `ssh` starts too: {}",
        text(&o.stderr)
    );

    // scp -r: a tree up and back down, identical.
    make_tree(&l.join("tree"));
    let o = scp(
        port,
        &alice_key,
        &[
            "-r".into(),
            l.join("tree").display().to_string(),
            "files@127.0.0.1:/home/dev/".into(),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = scp(
        port,
        &alice_key,
        &[
            "-r".into(),
            "files@127.0.0.1:/home/dev/tree".into(),
            l.join("tree-back").display().to_string(),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(tree(&l.join("tree")), tree(&l.join("tree-back")));

    // rsync -e ssh (rsync runs in the workspace through exec): up, a change, back down.
    let ssh_cmd = format!("ssh {} -p {port}", opts(&alice_key).join(" "));
    let rsync = |args: Vec<String>| {
        let mut c = Command::new("rsync");
        c.args(["-a", "-e", &ssh_cmd]).args(args);
        run(c)
    };
    let o = rsync(vec![
        format!("{}/", l.join("tree").display()),
        "sync@127.0.0.1:/home/dev/rs/".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::write(l.join("tree/a/f0.txt"), "changed\n").unwrap();
    std::fs::write(l.join("tree/new.txt"), "new\n").unwrap();
    let o = rsync(vec![
        format!("{}/", l.join("tree").display()),
        "sync@127.0.0.1:/home/dev/rs/".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = rsync(vec![
        "sync@127.0.0.1:/home/dev/rs/".into(),
        format!("{}/", l.join("rs-back").display()),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(tree(&l.join("tree")), tree(&l.join("rs-back")));
    let o = ssh(
        port,
        &alice_key,
        "sync",
        "stat -c '%u' /home/dev/rs/new.txt",
    )
    .await;
    assert_eq!(text(&o.stdout), "1000\n");

    // Attacks, as the non-root remote user: /etc is not writable, /etc/shadow not readable.
    let o = sftp(
        port,
        &alice_key,
        "files",
        &format!("put {}/small.txt /etc/evil\n", l.display()),
    )
    .await;
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    let o = sftp(
        port,
        &alice_key,
        "files",
        &format!("get /etc/shadow {}/shadow\n", l.display()),
    )
    .await;
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    assert!(!l.join("shadow").exists());
    // The tools mount is read-only and holds no setuid power.
    let o = sftp(
        port,
        &alice_key,
        "files",
        &format!("put {}/small.txt /.warren/x\n", l.display()),
    )
    .await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // `..` stops at the workspace's root, and the host's files are not there: the server's own
    // state directory, reached by an absolute path or through a symlink, does not exist.
    let host_db = s.state().join("warren.db");
    assert!(host_db.exists());
    let o = sftp(
        port,
        &alice_key,
        "files",
        &format!(
            "cd /home/dev/../../../../..\npwd\nls /\nget ../../../../etc/hostname {l}/hostname\n",
            l = l.display()
        ),
    )
    .await;
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    assert!(out.contains("Remote working directory: /\n"), "{out}");
    assert!(out.contains(".warren") || out.contains("bin"), "{out}");
    assert!(
        !out.contains("usr"),
        "the host's /usr is not in the workspace: {out}"
    );
    let hostname = std::fs::read_to_string(l.join("hostname")).unwrap();
    let o = ssh(port, &alice_key, "files", "hostname").await;
    assert_eq!(
        hostname,
        text(&o.stdout),
        "the workspace's own /etc/hostname"
    );
    for batch in [
        format!("get {} {}/db\n", host_db.display(), l.display()),
        format!(
            "symlink {} /home/dev/hostlink\nget /home/dev/hostlink {}/db\n",
            host_db.display(),
            l.display()
        ),
        format!("ls {}\n", s.state().display()),
    ] {
        let o = sftp(port, &alice_key, "files", &batch).await;
        assert_ne!(o.status.code(), Some(0), "{batch}: {}", text(&o.stdout));
        assert!(
            text(&o.stderr).contains("No such file") || text(&o.stderr).contains("not found"),
            "{batch}: {}",
            text(&o.stderr)
        );
        assert!(!l.join("db").exists());
    }

    // Another user's workspace: refused like any SSH session.
    let o = sftp(port, &bob_key, "files", "ls\n").await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );

    // Audited as exec, with the subsystem named.
    let (st, audit) = s.get(&s.admin, "/api/v1/audit?action=workspace.exec").await;
    assert_eq!(st, StatusCode::OK);
    let audit = audit.to_string();
    assert!(audit.contains(r#"\"subsystem\":\"sftp\""#), "{audit}");
    assert!(audit.contains("__sftp-server"), "{audit}");
}

/// A client that trusts any host key.
struct TrustingClient;

impl russh::client::Handler for TrustingClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// Reads whole SFTP packets from the channel until `n` arrived (or it ends).
async fn packets(
    ch: &mut russh::Channel<russh::client::Msg>,
    buf: &mut Vec<u8>,
    n: usize,
) -> (Vec<(u8, Vec<u8>)>, Option<u32>) {
    let mut out = vec![];
    let mut exit = None;
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            out.push((buf[4], buf[5..4 + len].to_vec()));
            buf.drain(..4 + len);
        }
        if out.len() >= n {
            return (out, exit);
        }
        match tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
            Ok(Some(russh::ChannelMsg::Data { data })) => buf.extend_from_slice(&data),
            Ok(Some(russh::ChannelMsg::ExitStatus { exit_status })) => exit = Some(exit_status),
            Ok(Some(russh::ChannelMsg::Close)) | Ok(None) => return (out, exit),
            Ok(Some(_)) => {}
            Err(_) => panic!("no answer in time; got {out:?}"),
        }
    }
}

fn status_code(p: &(u8, Vec<u8>)) -> (u32, u32) {
    assert_eq!(p.0, 101, "a status: {p:?}");
    let b = &p.1;
    (
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sftp_packets_get_errors_and_leave_other_sessions_alone() {
    let s = TestServer::start().await;
    import_image(&s, "bb", false);
    template(&s, "plain", "bb").await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let key = keygen(keys.path(), "alice");
    register(&s, &alice, &key).await;
    create(&s, &alice, "files", "plain").await;
    let port = s.ssh_port().await;

    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, ("127.0.0.1", port), TrustingClient)
        .await
        .unwrap();
    let secret = russh::keys::load_secret_key(&key, None).unwrap();
    let auth = session
        .authenticate_publickey(
            "files",
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(secret), None),
        )
        .await
        .unwrap();
    assert!(auth.success());

    // Other subsystems are refused.
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_subsystem(true, "netconf").await.unwrap();
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
            Ok(Some(russh::ChannelMsg::Failure)) => break true,
            Ok(Some(russh::ChannelMsg::Success)) => break false,
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(refused, "netconf must be refused");

    // A session that sends nonsense inside well-framed packets gets status codes back.
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_subsystem(true, "sftp").await.unwrap();
    let mut buf = vec![];
    let mut data = frame(1, &3u32.to_be_bytes());
    data.extend(frame(77, &5u32.to_be_bytes()));
    // OPEN with a path length running past the packet.
    data.extend(frame(3, &[0, 0, 0, 6, 0, 0, 1, 0, b'/']));
    // An id and nothing else where a path belongs.
    data.extend(frame(17, &7u32.to_be_bytes()));
    // A 300 KiB READ request of a stale handle.
    let mut read = 8u32.to_be_bytes().to_vec();
    read.extend([0, 0, 0, 4, 0, 0, 0, 99]);
    read.extend(0u64.to_be_bytes());
    read.extend((300u32 << 10).to_be_bytes());
    data.extend(frame(5, &read));
    ch.data(&data[..]).await.unwrap();
    let (replies, _) = packets(&mut ch, &mut buf, 5).await;
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0].0, 2, "VERSION");
    assert_eq!(status_code(&replies[1]), (5, 8), "OP_UNSUPPORTED");
    assert_eq!(status_code(&replies[2]), (6, 5), "BAD_MESSAGE");
    assert_eq!(status_code(&replies[3]), (7, 5), "BAD_MESSAGE");
    assert_eq!(status_code(&replies[4]).0, 8);

    // A healthy session on the same connection, and one from OpenSSH, while the bad one goes on.
    let mut good = session.channel_open_session().await.unwrap();
    good.request_subsystem(true, "sftp").await.unwrap();
    let mut gbuf = vec![];
    let mut init = frame(1, &3u32.to_be_bytes());
    let mut realpath = 1u32.to_be_bytes().to_vec();
    realpath.extend([0, 0, 0, 1, b'/']);
    init.extend(frame(16, &realpath));
    good.data(&init[..]).await.unwrap();
    let (r, _) = packets(&mut good, &mut gbuf, 2).await;
    assert_eq!((r[0].0, r[1].0), (2, 104), "{r:?}");

    // A length that cannot be framed ends that session (the process exits 1), only that one.
    ch.data(&[0xffu8, 0xff, 0xff, 0xff, 1, 2, 3][..])
        .await
        .unwrap();
    let (rest, exit) = packets(&mut ch, &mut buf, 1).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(exit, Some(1));
    let mut stat = 2u32.to_be_bytes().to_vec();
    stat.extend([0, 0, 0, 1, b'/']);
    good.data(&frame(17, &stat)[..]).await.unwrap();
    let (r, _) = packets(&mut good, &mut gbuf, 1).await;
    assert_eq!(r[0].0, 105, "ATTRS: {r:?}");
    let o = sftp(port, &key, "files", "ls /\n").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("bin"), "{}", text(&o.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_works_on_runc_too() {
    let s = TestServer::start_with(warren_server::config::ConfigLayer {
        runtime: Some("runc".into()),
        ..Default::default()
    })
    .await;
    import_image(&s, "bb", false);
    template(&s, "plain", "bb").await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let key = keygen(keys.path(), "alice");
    register(&s, &alice, &key).await;
    create(&s, &alice, "files", "plain").await;
    let port = s.ssh_port().await;
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 241) as u8).collect();
    std::fs::write(l.join("up.bin"), &data).unwrap();
    let o = sftp(
        port,
        &key,
        "files",
        &format!(
            "put {l}/up.bin /home/dev/up.bin\nget /home/dev/up.bin {l}/down.bin\n-put {l}/up.bin /etc/x\n",
            l = l.display()
        ),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(l.join("down.bin")).unwrap(), data);
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    // The tools mount: read-only, nosuid, nodev, even for root in the workspace.
    let o = ssh(port, &key, "files", "grep ' /.warren ' /proc/mounts").await;
    let m = text(&o.stdout);
    assert!(m.contains(" ro,") || m.contains(" ro "), "{m}");
    assert!(m.contains("nosuid") && m.contains("nodev"), "{m}");
}
