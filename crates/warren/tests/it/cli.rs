//! The `warren` CLI as a user runs it: up, exec, lifecycle semantics, stop/start, delete, bad input,
//! and a control plane killed at the worst moments.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{cgroup_exists, read_until, stderr, stdout, World};

const LIFECYCLE: &str = r#"// A devcontainer.json with comments and trailing commas.
{
  "name": "Lifecycle demo",
  "image": "busybox",
  "containerEnv": { "FROM_CONTAINER": "c", },
  "remoteEnv": { "FROM_REMOTE": "r" },
  // Everything in the foreground (by default `up` waits only up to updateContentCommand).
  "waitFor": "postStartCommand",
  "onCreateCommand": "echo created >> /workspaces/app/oncreate.count",
  "postCreateCommand": ["sh", "-c", "echo post >> /workspaces/app/postcreate.count"],
  "postStartCommand": {
    "one": "echo start >> /workspaces/app/start1.count",
    "two": ["sh", "-c", "echo start >> /workspaces/app/start2.count"],
  },
}
"#;

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn up_runs_lifecycle_once_and_poststart_every_start_and_up_reuses_the_workspace() {
    let w = World::new();
    let dir = w.project("app", LIFECYCLE);
    let ws = w.up(&dir);
    assert_eq!(ws, "app");
    assert_eq!(w.state_of("app").as_deref(), Some("running"));
    let (code, out, _) = w.sh("app", "echo $FROM_CONTAINER $FROM_REMOTE; pwd; hostname");
    assert_eq!(code, 0);
    assert_eq!(out, "c r\n/workspaces/app\napp\n");
    assert_eq!(lines(&dir.join("oncreate.count")), 1);
    assert_eq!(lines(&dir.join("postcreate.count")), 1);
    assert_eq!(lines(&dir.join("start1.count")), 1);
    assert_eq!(lines(&dir.join("start2.count")), 1);

    // `up` again on a running workspace reuses it and runs nothing again.
    assert_eq!(w.up(&dir), "app");
    assert_eq!(lines(&dir.join("start1.count")), 1);

    // stop/start: postStartCommand runs again, the create commands do not.
    assert!(w.warren(&["stop", "app"]).status.success());
    assert_eq!(w.state_of("app").as_deref(), Some("stopped"));
    assert!(
        w.supervisors().is_empty(),
        "a stopped workspace has no supervisor"
    );
    assert!(w.warren(&["start", "app"]).status.success());
    assert_eq!(lines(&dir.join("oncreate.count")), 1);
    assert_eq!(lines(&dir.join("postcreate.count")), 1);
    assert_eq!(lines(&dir.join("start1.count")), 2);
    assert!(w.warren(&["restart", "app"]).status.success());
    assert_eq!(lines(&dir.join("start2.count")), 3);

    let logs = stdout(&w.warren(&["logs", "app"]));
    assert!(
        logs.contains("== onCreateCommand") && logs.contains("== postStartCommand"),
        "{logs}"
    );

    assert!(w.warren(&["delete", "--force", "app"]).status.success());
    assert_eq!(w.state_of("app"), None);
    assert!(w.workspace_dirs().is_empty());
}

#[test]
fn exec_streams_stdin_and_stderr_and_exits_with_the_commands_code() {
    let w = World::new();
    let dir = w.project("io", r#"{"image": "busybox", "remoteUser": "dev"}"#);
    w.up(&dir);
    let mut child = w
        .command(&[
            "exec",
            "io",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo oops >&2; id -un; exit 42",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(42));
    assert_eq!(stdout(&o), "HELLO FROM STDIN\ndev\n");
    assert_eq!(stderr(&o), "oops\n");
    // -u, -w and -e override the defaults.
    let o = w.warren(&[
        "exec",
        "-u",
        "root",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "io",
        "--",
        "sh",
        "-c",
        "id -u; pwd; echo $X",
    ]);
    assert_eq!(stdout(&o), "0\n/tmp\n1\n");
}

#[test]
fn exec_forwards_signals_to_the_process() {
    let w = World::new();
    let dir = w.project("sig", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let mut child = w
        .command(&[
            "exec",
            "sig",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn workspaces_keep_running_without_any_control_plane_process() {
    let w = World::new();
    let dir = w.project("bg", r#"{"image": "busybox"}"#);
    w.up(&dir);
    // The CLI that created it has exited: the supervisor lives on its own, reparented away from it.
    let sups = w.supervisors();
    assert_eq!(sups.len(), 1);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sups[0])).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id() as i32);
    let (code, out, _) = w.sh("bg", "echo still here");
    assert_eq!((code, out.as_str()), (0, "still here\n"));
}

#[test]
fn a_failing_lifecycle_command_marks_the_workspace_failed_and_keeps_its_output() {
    let w = World::new();
    let dir = w.project(
        "bad",
        r#"{"image": "busybox", "waitFor": "postCreateCommand", "postCreateCommand": "echo about to fail; exit 3"}"#,
    );
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("error: postCreateCommand failed with exit code 3"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let rec = w.record("bad").unwrap();
    assert_eq!(rec["state"], "failed");
    assert!(rec["last_error"].as_str().unwrap().contains("exit code 3"));
    assert!(stdout(&w.warren(&["logs", "bad"])).contains("about to fail"));
    assert!(
        w.supervisors().is_empty(),
        "a failed workspace's container is stopped"
    );
    // Fixing the config and running `up` again completes the creation.
    std::fs::write(
        dir.join(".devcontainer/devcontainer.json"),
        r#"{"image": "busybox", "waitFor": "postCreateCommand", "postCreateCommand": "echo fixed"}"#,
    )
    .unwrap();
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("changed since the failed creation"),
        "the new config is announced: {}",
        stderr(&o)
    );
    assert_eq!(w.state_of("bad").as_deref(), Some("running"));
}

#[test]
fn bad_input_gets_one_clear_line_a_hint_and_a_nonzero_exit() {
    let w = World::new();
    let check = |args: &[&str], want: &str| {
        let o = w.warren(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        err
    };
    // Malformed JSON: file, line and column.
    let broken = w.project("broken", "{\n  \"image\": \"busybox\"\n  \"name\": 1\n}");
    let err = check(&["up", broken.to_str().unwrap()], "devcontainer.json:3:3");
    assert!(err.contains("hint:"), "{err}");
    // Wrong type.
    let typed = w.project("typed", "{\"image\": 42}");
    let err = check(&["up", typed.to_str().unwrap()], "devcontainer.json:1:11");
    assert!(err.contains("hint:"), "{err}");
    // A property that fails the schema: its position, the property and what was expected.
    let schema = w.project(
        "schema",
        "{\n  \"image\": \"busybox\",\n  \"capAdd\": \"SYS_PTRACE\"\n}",
    );
    let err = check(
        &["up", schema.to_str().unwrap()],
        "devcontainer.json:3:13: expected an array of strings for `capAdd`",
    );
    assert!(err.contains("hint:"), "{err}");
    // No config at all.
    let empty = w.dir.join("projects/empty");
    std::fs::create_dir_all(&empty).unwrap();
    check(&["up", empty.to_str().unwrap()], "devcontainer.json");
    // Unknown image: hint says import or bootstrap.
    let unknown = w.project("unknown", r#"{"image": "nosuchimage:1"}"#);
    let err = check(&["up", unknown.to_str().unwrap()], "nosuchimage");
    assert!(
        err.contains("warren image import") && err.contains("warren image bootstrap"),
        "{err}"
    );
    // Invalid and duplicate names.
    let ok = w.project("ok", r#"{"image": "busybox"}"#);
    check(
        &["up", "--name", "Bad_Name", ok.to_str().unwrap()],
        "Bad_Name",
    );
    w.up(&ok);
    let other = w.project("other", r#"{"image": "busybox"}"#);
    check(&["up", "--name", "ok", other.to_str().unwrap()], "taken");
    // Exec on a stopped workspace.
    assert!(w.warren(&["stop", "ok"]).status.success());
    let err = check(&["exec", "ok", "--", "true"], "not running");
    assert!(err.contains("warren start ok"), "{err}");
    // Deleting twice.
    assert!(w.warren(&["delete", "ok"]).status.success());
    check(&["delete", "ok"], "no workspace named `ok`");
    // Deleting a running workspace needs --force.
    w.up(&ok);
    let err = check(&["delete", "ok"], "is running");
    assert!(err.contains("--force"), "{err}");
    // Bad sizes.
    check(&["up", "--memory", "lots", ok.to_str().unwrap()], "");
    // Nothing was lost along the way.
    assert_eq!(w.state_of("ok").as_deref(), Some("running"));
}

/// Runs `warren args` with a failpoint, waits until it hangs there, and SIGKILLs it.
fn kill_at(w: &World, failpoint: &str, args: &[&str]) {
    let mut child = w
        .command(args)
        .env("WARREN_FAILPOINT", failpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            panic!("{args:?} never reached failpoint {failpoint}");
        }
        if line.contains(&format!("failpoint {failpoint} reached")) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn workspace_id(w: &World, name: &str) -> String {
    w.record(name).unwrap()["id"].as_str().unwrap().to_string()
}

#[test]
fn killing_the_control_plane_mid_create_leaves_no_orphans_and_up_recovers() {
    let w = World::new();
    let dir = w.project(
        "crash",
        r#"{"image": "busybox", "postCreateCommand": "echo done"}"#,
    );
    for point in ["before-provision", "after-provision"] {
        kill_at(&w, point, &["up", dir.to_str().unwrap()]);
        // The next command reconciles: the interrupted start is rolled back and recorded as failed.
        assert_eq!(
            w.state_of("crash").as_deref(),
            Some("failed"),
            "after kill at {point}"
        );
        let id = workspace_id(&w, "crash");
        assert!(
            w.supervisors().is_empty(),
            "no supervisor left after kill at {point}"
        );
        assert!(!cgroup_exists(&id), "no cgroup left after kill at {point}");
        w.up(&dir);
        assert_eq!(w.state_of("crash").as_deref(), Some("running"));
        assert_eq!(w.sh("crash", "true").0, 0);
        assert!(w.warren(&["delete", "--force", "crash"]).status.success());
    }
}

#[test]
fn killing_the_control_plane_mid_delete_finishes_the_delete() {
    let w = World::new();
    let dir = w.project("gone", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let id = workspace_id(&w, "gone");
    kill_at(&w, "mid-delete", &["delete", "--force", "gone"]);
    // The record says deleting; the next command completes the delete.
    assert_eq!(w.state_of("gone"), None);
    assert!(w.supervisors().is_empty());
    assert!(w.workspace_dirs().is_empty(), "{:?}", w.workspace_dirs());
    assert!(!cgroup_exists(&id));
}

#[test]
fn a_killed_supervisor_is_noticed_and_its_container_cleaned_up() {
    let w = World::new();
    let dir = w.project("victim", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let id = workspace_id(&w, "victim");
    let sup = w.supervisors()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let rec = w.record("victim").unwrap();
    assert_eq!(rec["state"], "failed");
    assert!(
        rec["last_error"].as_str().unwrap().contains("supervisor"),
        "{rec}"
    );
    assert!(
        !cgroup_exists(&id),
        "the container's processes and cgroup are gone"
    );
    // And it can be brought back.
    w.up(&dir);
    assert_eq!(w.sh("victim", "echo back").1, "back\n");
}

#[test]
fn host_leftovers_without_a_record_are_removed() {
    let w = World::new();
    let dir = w.project("lost", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let id = workspace_id(&w, "lost");
    // Simulate a crash between removing the record and the host state: drop the database row by hand.
    let db = w.state().join("warren.db");
    let o = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!("DELETE FROM workspaces WHERE id = '{id}'"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w.warren(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&id), "{}", stdout(&o));
    assert!(w.supervisors().is_empty());
    assert!(w.workspace_dirs().is_empty());
    assert!(!cgroup_exists(&id));
}

#[test]
fn shell_gets_a_terminal_of_the_right_size_that_follows_resizes() {
    use std::os::fd::AsFd;
    let w = World::new();
    let dir = w.project("tty", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let pty = nix::pty::openpty(None, None).unwrap();
    warren_runtime::tty::set_window_size(pty.master.as_fd(), 33, 101).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = w
        .command(&[
            "exec",
            "-t",
            "tty",
            "--",
            "sh",
            "-c",
            "tty; stty size; read line; stty size; echo got $line; exit 5",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    read_until(&mut master, "33 101", &mut seen);
    assert!(
        seen.contains("/dev/pts/"),
        "the process has a terminal: {seen}"
    );
    // The user resizes their terminal: the workspace's terminal follows.
    warren_runtime::tty::set_window_size(master.as_fd(), 40, 120).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    master.write_all(b"typed\r").unwrap();
    read_until(&mut master, "got typed", &mut seen);
    assert!(seen.contains("40 120"), "resized: {seen}");
    assert_eq!(child.wait().unwrap().code(), Some(5));

    // `warren shell` is a login shell on such a terminal; its exit status is the command's.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = w
        .command(&["shell", "tty"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    master.write_all(b"echo answer=$((6*7)); exit 3\r").unwrap();
    let mut seen = String::new();
    read_until(&mut master, "answer=42", &mut seen);
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn without_root_warren_says_it_needs_root() {
    let w = World::new();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::warren_exe())
        .args(["--state-dir", "/tmp/warren-nonroot-test", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: warren needs root privileges"),
        "{err}"
    );
    assert!(err.contains("hint: run warren as root"), "{err}");
    drop(w);
}

#[test]
fn gvisor_runs_workspaces_when_chosen_and_delete_leaves_no_sandbox() {
    let w = World::new();
    let dir = w.project(
        "gv",
        r#"{"image": "busybox", "waitFor": "postCreateCommand", "postCreateCommand": "echo made > /root/made"}"#,
    );
    let o = w
        .command(&["up", dir.to_str().unwrap()])
        .env("WARREN_RUNTIME", "runsc")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .command(&[
            "exec",
            "gv",
            "--",
            "sh",
            "-c",
            "cat /root/made; dmesg | grep -c gVisor",
        ])
        .env("WARREN_RUNTIME", "runsc")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "made\n1\n", "{}", stderr(&o));
    // Deleted by a command configured with the default runtime: gVisor's sandbox must still go.
    assert!(w.warren(&["delete", "--force", "gv"]).status.success());
    let left = std::process::Command::new("pgrep")
        .args(["-f", &w.state().display().to_string()])
        .output()
        .unwrap();
    assert!(
        stdout(&left).trim().is_empty(),
        "left running: {}",
        stdout(&left)
    );
}

#[test]
fn symlinks_in_a_workspace_cannot_make_warren_read_host_files() {
    let w = World::new();
    let dir = w.project("links", r#"{"image": "busybox"}"#);
    w.up(&dir);
    // A passwd file that exists only on the host, with a user the workspace does not have.
    let host_passwd = w.dir.join("host-passwd");
    std::fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
    let (code, _, err) = w.sh(
        "links",
        &format!("ln -sf {} /etc/passwd", host_passwd.display()),
    );
    assert_eq!(code, 0, "{err}");
    // Warren resolves users for exec: the symlink must resolve inside the workspace, where it is dangling.
    let o = w.warren(&["exec", "-u", "hostonly", "links", "--", "id", "-u"]);
    assert!(
        !o.status.success(),
        "ran as a user read from a host file: {}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("hostonly"), "{}", stderr(&o));
    // Control: a user the workspace does define still works.
    let (code, out, _) = w.sh(
        "links",
        "echo 'x:x:1234:1234::/:/bin/sh' > /etc/passwd.real; ln -sf /etc/passwd.real /etc/passwd",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    let o = w.warren(&["exec", "-u", "x", "links", "--", "id", "-u"]);
    assert_eq!(stdout(&o), "1234\n", "{}", stderr(&o));
}

#[test]
fn concurrent_ups_of_one_folder_share_one_workspace() {
    let w = World::new();
    let dir = w.project(
        "race",
        r#"{"image": "busybox", "onCreateCommand": "echo once >> /workspaces/race/count"}"#,
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            w.command(&["up", dir.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "race\n");
    }
    let o = w.warren(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(w.supervisors().len(), 1);
    assert_eq!(lines(&dir.join("count")), 1, "onCreateCommand ran once");
}

#[test]
fn stop_lets_every_process_shut_down_cleanly_before_the_init() {
    let w = World::new();
    let dir = w.project("graceful", r#"{"image": "busybox"}"#);
    w.up(&dir);
    // A "database" in the background that needs its SIGTERM to flush.
    let o = w
        .command(&["exec", "graceful", "--", "sh", "-c",
            "sh -c 'trap \"echo flushed > /workspaces/graceful/db.state; exit 0\" TERM; echo up > /workspaces/graceful/db.state; while :; do sleep 0.1; done' >/dev/null 2>&1 &"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(dir.join("db.state")).unwrap_or_default() != "up\n" {
        assert!(
            Instant::now() < deadline,
            "background process never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.warren(&["stop", "graceful"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("db.state")).unwrap(),
        "flushed\n"
    );
}

#[test]
fn exec_uses_the_directory_asked_for_or_fails_saying_so() {
    let w = World::new();
    let dir = w.project("cwd", r#"{"image": "busybox"}"#);
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    w.up(&dir);
    // A directory inside the project mount, which the supervisor's own view of the root does not have.
    let o = w.warren(&[
        "exec",
        "-w",
        "/workspaces/cwd/sub/deeper",
        "cwd",
        "--",
        "pwd",
    ]);
    assert_eq!(stdout(&o), "/workspaces/cwd/sub/deeper\n", "{}", stderr(&o));
    // One created by the workspace itself on its tmpfs.
    assert_eq!(w.sh("cwd", "mkdir -p /tmp/build").0, 0);
    let o = w.warren(&["exec", "-w", "/tmp/build", "cwd", "--", "pwd"]);
    assert_eq!(stdout(&o), "/tmp/build\n", "{}", stderr(&o));
    // A missing one is an error, never a silent `/`.
    let o = w.warren(&["exec", "-w", "/nonexistent", "cwd", "--", "pwd"]);
    assert!(!o.status.success());
    assert_eq!(stdout(&o), "");
}

#[test]
fn lifecycle_commands_may_leave_daemons_running_and_print_any_bytes() {
    let w = World::new();
    let dir = w.project(
        "daemon",
        r#"{"image": "busybox", "waitFor": "postStartCommand", "postStartCommand": "sleep 100000 & (while :; do echo tick; sleep 0.2; done) & printf 'caf\\351 latin-1\\n'; echo done"}"#,
    );
    let mut child = w
        .command(&["up", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Liveness, not speed: `up` must finish although the daemon holds its output open for a day.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "`up` waited for the daemon the postStartCommand left running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let logs = stdout(&w.warren(&["logs", "daemon"]));
    assert!(
        logs.contains("caf\u{fffd} latin-1") && logs.contains("done"),
        "{logs}"
    );
    assert_eq!(
        w.sh(
            "daemon",
            "pgrep -c 'sleep 100000' || ps | grep -c 'sleep 100000'"
        )
        .0,
        0
    );
    // The daemon outlives `warren up` and its output keeps landing in the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ticks = stdout(&w.warren(&["logs", "daemon"]))
            .matches("tick")
            .count();
        if ticks >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon stopped writing ({ticks} ticks)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_volume_name_cannot_reach_outside_the_workspace() {
    let w = World::new();
    let victim = w.dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("hostfile"), "host secret").unwrap();
    for source in ["../../../../victim", victim.to_str().unwrap()] {
        let dir = w.project(
            "vol",
            &format!(r#"{{"image": "busybox", "mounts": [{{"type": "volume", "source": "{source}", "target": "/v"}}]}}"#),
        );
        let o = w.warren(&["up", "--recreate", dir.to_str().unwrap()]);
        assert!(!o.status.success(), "volume {source:?} was accepted");
        assert!(stderr(&o).contains("invalid volume name"), "{}", stderr(&o));
    }
    // Control: a plain name is a real, persistent volume.
    let dir = w.project(
        "vol",
        r#"{"image": "busybox", "mounts": ["type=volume,source=cache,target=/v"]}"#,
    );
    let o = w.warren(&["up", "--recreate", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.sh("vol", "echo kept > /v/f; ls /v").1, "f\n");
    assert!(w.warren(&["restart", "vol"]).status.success());
    assert_eq!(w.sh("vol", "cat /v/f").1, "kept\n");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
}

#[test]
fn an_image_in_use_cannot_be_removed() {
    let w = World::new();
    let dir = w.project("user", r#"{"image": "busybox"}"#);
    w.up(&dir);
    let o = w.warren(&["image", "rm", "busybox"]);
    assert!(!o.status.success());
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stdout(&w.warren(&["image", "ls"])).contains("busybox:latest"));
    assert!(w.warren(&["delete", "--force", "user"]).status.success());
    let o = w.warren(&["image", "rm", "busybox"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&w.warren(&["image", "ls"])).contains("busybox"));
}

#[test]
fn up_limits_are_enforced_and_stats_report_usage() {
    let w = World::new();
    let dir = w.project("limited", r#"{"image": "busybox"}"#);
    let o = w.warren(&[
        "up",
        "--memory",
        "64m",
        "--pids",
        "40",
        "--cpus",
        "0.5",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w.warren(&["stats", "limited"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats["memory_limit_bytes"], 64 << 20, "{stats}");
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["pids"].as_u64().unwrap() >= 1, "{stats}");
    // The pids limit bites: 60 sleepers cannot all start under a limit of 40.
    w.sh(
        "limited",
        "n=0; for i in $(seq 60); do sleep 5 & n=$((n+1)); done 2>/dev/null; echo started",
    );
    let o = w.warren(&["stats", "limited"]);
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(stats["pids"].as_u64().unwrap() <= 40, "{stats}");
    let id = w.record("limited").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/warren/{id}/cpu.cfs_quota_us"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/warren/{id}/cpu.max")))
        .unwrap();
    assert!(quota.trim().starts_with("50000"), "cpu quota {quota}");
}

/// Waits (liveness, not speed) until `path` has `n` lines; returns its content.
fn wait_for_lines(path: &std::path::Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed at: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_waits_up_to_wait_for_and_the_rest_continues_in_the_background() {
    let w = World::new();
    let dir = w.project(
        "bg",
        r#"{"image": "busybox",
            "onCreateCommand": "echo onCreate >> /workspaces/bg/order",
            "updateContentCommand": "echo updateContent >> /workspaces/bg/order",
            "postCreateCommand": "while [ ! -e /workspaces/bg/go ]; do sleep 0.1; done; echo postCreate >> /workspaces/bg/order",
            "postStartCommand": "echo postStart >> /workspaces/bg/order",
            "postAttachCommand": "echo postAttach >> /workspaces/bg/order"}"#,
    );
    // By default `up` waits for updateContentCommand: it returns although postCreateCommand
    // blocks until the test lets it go.
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("continue in the background"),
        "{}",
        stderr(&o)
    );
    let order = dir.join("order");
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "onCreate\nupdateContent\n"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    assert_eq!(
        wait_for_lines(&order, 5),
        "onCreate\nupdateContent\npostCreate\npostStart\npostAttach\n"
    );
    let logs = stdout(&w.warren(&["logs", "bg"]));
    assert!(
        logs.contains("== postCreateCommand (in the background)")
            && logs.contains("== background lifecycle commands finished"),
        "{logs}"
    );
    // `up` of the running workspace is an attach: postAttachCommand only, and --wait-all waits.
    let o = w.warren(&["up", "--wait-all", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&order)
        .unwrap()
        .ends_with("postAttach\npostAttach\n"));
    // A restart runs postStartCommand (in the background), never the once-only hooks again.
    assert!(w.warren(&["restart", "bg"]).status.success());
    let text = wait_for_lines(&order, 7);
    assert_eq!(text.matches("onCreate").count(), 1, "{text}");
    assert_eq!(text.matches("postCreate").count(), 1, "{text}");
    assert_eq!(text.matches("postStart").count(), 2, "{text}");
}

#[test]
fn a_failing_background_hook_is_logged_and_the_workspace_keeps_running() {
    let w = World::new();
    let dir = w.project(
        "bgfail",
        r#"{"image": "busybox", "postCreateCommand": "echo trying; exit 5",
            "postStartCommand": "echo never >> /workspaces/bgfail/ran"}"#,
    );
    w.up(&dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let logs = stdout(&w.warren(&["logs", "bgfail"]));
        if logs.contains("failed with exit code") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logs.contains("trying\n== postCreateCommand failed with exit code 5"),
        "{logs}"
    );
    assert!(
        !dir.join("ran").exists(),
        "later hooks do not run after a failure"
    );
    assert_eq!(w.state_of("bgfail").as_deref(), Some("running"));
}

/// The remote user writes their own startup files, so what the probe finds there (a
/// `LD_PRELOAD`, a `PATH`) is theirs alone: a process run as root never gets it.
#[test]
fn the_remote_users_probed_environment_never_reaches_root() {
    let w = World::new();
    let p = w.project("probedev", r#"{"image": "busybox", "remoteUser": "dev"}"#);
    w.up(&p);
    let (code, _, err) = w.sh(
        "probedev",
        "mkdir -p /home/dev && echo 'export PLANTED=evil' >> /home/dev/.profile",
    );
    assert_eq!(code, 0, "{err}");
    assert!(w.warren(&["restart", "probedev"]).status.success());
    let (_, out, _) = w.sh("probedev", "id -u; echo \"[$PLANTED]\"");
    assert_eq!(
        out, "1000\n[evil]\n",
        "the remote user's own processes get it"
    );
    let o = w.warren(&[
        "exec",
        "--user",
        "root",
        "probedev",
        "--",
        "sh",
        "-c",
        "id -u; echo \"[$PLANTED]\"",
    ]);
    assert_eq!(stdout(&o), "0\n[]\n", "{}", stderr(&o));
}

#[test]
fn the_users_login_environment_is_probed_unless_disabled() {
    let w = World::new();
    let probe = w.project(
        "probe",
        r#"{"image": "busybox", "remoteEnv": {"OVER": "remote"}}"#,
    );
    w.up(&probe);
    assert_eq!(
        w.sh(
            "probe",
            "echo 'export FROM_PROFILE=hi OVER=profile' >> /root/.profile"
        )
        .0,
        0
    );
    // Probed at each start.
    assert!(w.warren(&["restart", "probe"]).status.success());
    let (_, out, _) = w.sh("probe", "echo $FROM_PROFILE $OVER");
    assert_eq!(
        out, "hi remote\n",
        "the profile's variables, remoteEnv over them"
    );

    let none = w.project("noprobe", r#"{"image": "busybox", "userEnvProbe": "none"}"#);
    w.up(&none);
    assert_eq!(
        w.sh("noprobe", "echo 'export FROM_PROFILE=hi' >> /root/.profile")
            .0,
        0
    );
    assert!(w.warren(&["restart", "noprobe"]).status.success());
    let (_, out, _) = w.sh("noprobe", "echo x$FROM_PROFILE");
    assert_eq!(out, "x\n");
}

#[test]
fn initialize_command_runs_on_the_host_first_and_its_failure_stops_up() {
    let w = World::new();
    let dir = w.project(
        "init",
        r#"{"image": "busybox",
            "initializeCommand": ["sh", "-c", "echo \"host $(pwd)\" > from-host"],
            "waitFor": "postCreateCommand",
            "postCreateCommand": "cat /workspaces/init/from-host > /workspaces/init/seen"}"#,
    );
    w.up(&dir);
    let want = format!("host {}\n", dir.canonicalize().unwrap().display());
    assert_eq!(
        std::fs::read_to_string(dir.join("from-host")).unwrap(),
        want
    );
    assert_eq!(std::fs::read_to_string(dir.join("seen")).unwrap(), want);

    let bad = w.project(
        "badinit",
        r#"{"image": "busybox", "initializeCommand": "echo no; exit 2"}"#,
    );
    let o = w.warren(&["up", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("initializeCommand failed with exit code 2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(w.state_of("badinit"), None, "nothing was created");
}

#[test]
fn the_remote_user_takes_the_uid_of_the_project_folders_owner_unless_told_not_to() {
    let w = World::new();
    let dir = w.project("uid", r#"{"image": "busybox", "remoteUser": "dev"}"#);
    nix::unistd::chown(&dir, Some(1234.into()), Some(2345.into())).unwrap();
    w.up(&dir);
    let (code, out, err) = w.sh(
        "uid",
        "id -u; id -g; stat -c %u /home/dev; touch /workspaces/uid/mine && stat -c %u:%g /workspaces/uid/mine",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1234\n2345\n1234\n1234:2345\n");
    let meta = std::fs::metadata(dir.join("mine")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (1234, 2345),
        "the user edits the same files from both sides"
    );

    let keep = w.project(
        "keep",
        r#"{"image": "busybox", "remoteUser": "dev", "updateRemoteUserUID": false}"#,
    );
    nix::unistd::chown(&keep, Some(1234.into()), Some(2345.into())).unwrap();
    w.up(&keep);
    assert_eq!(w.sh("keep", "id -u").1, "1000\n");

    // A folder owned by root leaves the user alone (as the reference implementation does).
    let rooted = w.project("rooted", r#"{"image": "busybox", "remoteUser": "dev"}"#);
    w.up(&rooted);
    assert_eq!(w.sh("rooted", "id -u").1, "1000\n");
}

#[test]
fn what_a_devcontainer_asks_of_the_sandbox_is_granted_locally_or_refused_clearly() {
    let w = World::new();
    let dir = w.project(
        "caps",
        r#"{"image": "busybox", "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"],
            "runArgs": ["--cap-add=NET_ADMIN", "--env", "FROM_RUNARGS=1", "--network=host"]}"#,
    );
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("runArgs `--network` has no meaning in Warren and was ignored"),
        "{}",
        stderr(&o)
    );
    let (_, out, _) = w.sh(
        "caps",
        "grep -E '^(CapEff|Seccomp):' /proc/self/status; echo $FROM_RUNARGS",
    );
    let eff = out
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(eff & (1 << 19), 0, "SYS_PTRACE: {out}");
    assert_ne!(eff & (1 << 12), 0, "NET_ADMIN from runArgs: {out}");
    assert_eq!(eff & (1 << 21), 0, "never SYS_ADMIN: {out}");
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert!(out.ends_with("\n1\n"), "{out}");

    for (name, json, want) in [
        (
            "compose",
            r#"{"dockerComposeFile": "docker-compose.yml", "service": "app"}"#,
            "dockerComposeFile configurations are not supported",
        ),
        (
            "gpu",
            r#"{"image": "busybox", "hostRequirements": {"gpu": true}}"#,
            "requires a GPU",
        ),
        (
            "badcap",
            r#"{"image": "busybox", "capAdd": ["SYS_EVERYTHING"]}"#,
            "capAdd `SYS_EVERYTHING` is not a Linux capability",
        ),
    ] {
        let dir = w.project(name, json);
        let o = w.warren(&["up", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = stderr(&o);
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains("hint:"), "{name}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert_eq!(w.state_of(name), None, "{name}: nothing was created");
    }
}

#[test]
fn local_features_install_into_the_image_and_merge_their_properties() {
    let w = World::new();
    let dir = w.project(
        "feat",
        r#"{"image": "busybox",
            "waitFor": "postCreateCommand",
            "features": {"./greeter": {"greeting": "hi there"}},
            "postCreateCommand": "echo config >> /workspaces/feat/order"}"#,
    );
    let f = dir.join(".devcontainer/greeter");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(
        f.join("devcontainer-feature.json"),
        r#"{"id": "greeter", "version": "1.0.0",
            "options": {"greeting": {"type": "string", "default": "hello"}},
            "containerEnv": {"GREETER_HOME": "/opt/greeter", "GREETER_ID": "${devcontainerId}"},
            "mounts": [{"source": "greeter-${devcontainerId}", "target": "/greeter-cache", "type": "volume"}],
            "capAdd": ["SYS_PTRACE"],
            "postCreateCommand": "echo feature >> /workspaces/feat/order"}"#,
    )
    .unwrap();
    std::fs::write(
        f.join("install.sh"),
        "#!/bin/sh\nset -e\nmkdir -p /opt/greeter\necho \"$GREETING from uid $(id -u)\" > /opt/greeter/message\n",
    )
    .unwrap();
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, out, err) = w.sh(
        "feat",
        "cat /opt/greeter/message; echo $GREETER_HOME; cat /workspaces/feat/order; grep CapBnd /proc/self/status",
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("hi there from uid 0"),
        "install.sh ran as root with its option: {out}"
    );
    assert_eq!(
        lines.next(),
        Some("/opt/greeter"),
        "the feature's containerEnv: {out}"
    );
    assert_eq!(
        lines.next(),
        Some("feature"),
        "feature commands run first: {out}"
    );
    assert_eq!(lines.next(), Some("config"), "{out}");
    let bnd = lines
        .next()
        .and_then(|l| l.strip_prefix("CapBnd:\t"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(bnd & (1 << 19), 0, "the feature's capAdd: {out}");
    assert!(
        !dir.join("opt").exists(),
        "the install went into the image, not the project"
    );
    // `${devcontainerId}` in a feature's env and volume name is the workspace's id.
    let (code, out, err) = w.sh(
        "feat",
        "echo $GREETER_ID; touch /greeter-cache/ok && grep -c ' /greeter-cache ' /proc/mounts",
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let id = lines.next().unwrap();
    assert_eq!(id.len(), 52, "{out}");
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{out}");
    assert_eq!(
        lines.next(),
        Some("1"),
        "the feature's volume is mounted: {out}"
    );

    // A feature that cannot be found is named, with a hint, and nothing is created.
    let bad = w.project(
        "nofeat",
        r#"{"image": "busybox", "features": {"./missing": {}}}"#,
    );
    let o = w.warren(&["up", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("./missing") && err.contains("hint:"), "{err}");
    assert_eq!(w.state_of("nofeat"), None);
}

#[test]
fn remote_env_sees_the_containers_environment() {
    let w = World::new();
    let dir = w.project(
        "cenv",
        r#"{"image": "busybox", "containerEnv": {"TOOL_HOME": "/opt/tool"},
            "remoteEnv": {"PATH": "${containerEnv:PATH}:${containerEnv:TOOL_HOME}/bin",
                          "MISSING": "[${containerEnv:NOPE:fallback}]"}}"#,
    );
    w.up(&dir);
    let (_, out, _) = w.sh("cenv", "echo $PATH; echo $MISSING");
    let mut lines = out.lines();
    let path = lines.next().unwrap();
    assert!(path.ends_with(":/opt/tool/bin"), "{out}");
    assert!(path.starts_with("/"), "{out}");
    assert!(!path.contains("${"), "{out}");
    assert_eq!(lines.next(), Some("[fallback]"), "{out}");
}
