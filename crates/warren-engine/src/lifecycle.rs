//! Runs devcontainer lifecycle commands inside a workspace: string (shell), array (argv) and object
//! (named, in parallel, all must succeed) forms, as the remote user, with output kept in the log.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_devcontainer::LifecycleCommand;
use warren_runtime::{ExecProcess, Runtime, Stdio};

use crate::{EngineError, Progress, WsSpec};

/// Which once-only lifecycle steps have completed, and what the current run of the workspace probed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleState {
    /// onCreateCommand, updateContentCommand and postCreateCommand have run (or were handed to the
    /// background runner): they never run again.
    #[serde(default)]
    pub created: bool,
    /// The remote user's environment as its shell sets it up (`userEnvProbe`), probed at each start.
    #[serde(default)]
    pub user_env: Vec<String>,
    /// Once-only hooks that completed before all of them had (a failure in a later one does not
    /// run the earlier ones again).
    #[serde(default)]
    pub done: Vec<String>,
}

/// The lifecycle hooks that run in the workspace, in order, and whether each runs once only.
pub const HOOKS: &[(&str, bool)] = &[
    ("onCreateCommand", true),
    ("updateContentCommand", true),
    ("postCreateCommand", true),
    ("postStartCommand", false),
    ("postAttachCommand", false),
];

/// Quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A shell command line that runs one command in its string or array form.
fn sh_line(c: &LifecycleCommand) -> String {
    match c {
        LifecycleCommand::Shell(s) => format!("/bin/sh -c {}", sh_quote(s)),
        LifecycleCommand::Exec(argv) => argv
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        LifecycleCommand::Parallel(_) => "false".into(),
    }
}

/// The script the background runner executes: each hook's commands in order (an object form's
/// entries in parallel), stopping at the first failure, with the same `== ...` markers in the log as
/// commands run in the foreground. SIGHUP is ignored: the runner outlives the `warren` that
/// started it, like `nohup` (and the exec is detached, so the supervisor does not hang it up either).
pub fn background_script(hooks: &[(String, Vec<LifecycleCommand>)]) -> String {
    let mut s = String::from("trap '' HUP\n");
    for (hook, cmds) in hooks {
        for cmd in cmds {
            match cmd {
                LifecycleCommand::Parallel(items) => {
                    let names: Vec<String> =
                        items.iter().map(|(n, _)| format!("{hook}:{n}")).collect();
                    s.push_str(&format!(
                        "echo {}\nfail=0\n",
                        sh_quote(&format!(
                            "== {hook} (in the background, in parallel: {})",
                            names.join(", ")
                        ))
                    ));
                    for (i, (_, c)) in items.iter().enumerate() {
                        s.push_str(&format!("{} & p{i}=$!\n", sh_line(c)));
                    }
                    for (i, name) in names.iter().enumerate() {
                        s.push_str(&format!(
                            "wait $p{i}; c=$?; if [ $c -ne 0 ]; then echo {}\" $c\"; fail=$c; fi\n",
                            sh_quote(&format!("== {name} failed with exit code"))
                        ));
                    }
                    s.push_str("[ $fail -eq 0 ] || exit $fail\n");
                }
                c => {
                    s.push_str(&format!(
                        "echo {}\n{}\nc=$?; if [ $c -ne 0 ]; then echo {}\" $c\"; exit $c; fi\n",
                        sh_quote(&format!("== {hook} (in the background)")),
                        sh_line(c),
                        sh_quote(&format!("== {hook} failed with exit code"))
                    ));
                }
            }
        }
    }
    s.push_str("echo '== background lifecycle commands finished'\n");
    s
}

/// Starts `hooks` in the workspace without waiting for them: one process that runs them in order,
/// as the remote user, its output appended to the log.
pub async fn spawn_background(
    rt: Arc<dyn Runtime>,
    id: &str,
    spec: &WsSpec,
    user_env: &[String],
    hooks: &[(String, Vec<LifecycleCommand>)],
    log: &Path,
) -> Result<(), EngineError> {
    let io =
        |e: std::io::Error| EngineError::Internal(format!("lifecycle log {}: {e}", log.display()));
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let mut p = ExecProcess {
        argv: vec!["/bin/sh".into(), "-c".into(), background_script(hooks)],
        detach: true,
        ..Default::default()
    };
    spec.apply_exec_defaults(&mut p, user_env);
    let id = id.to_string();
    let out = logf.try_clone().map_err(io)?;
    tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
        let stdin =
            std::fs::File::open("/dev/null").map_err(|e| EngineError::Internal(e.to_string()))?;
        // The session is dropped at once: the exec is detached, so no hangup follows.
        let _session = rt.exec(
            &id,
            &p,
            Some(Stdio {
                stdin: stdin.into(),
                stdout: out.into(),
                stderr: logf.into(),
            }),
        )?;
        Ok(())
    })
    .await
    .map_err(|e| EngineError::Internal(e.to_string()))?
}

/// How the remote user and the workspace folder are made to agree on ownership at creation
/// (`updateRemoteUserUID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerSync {
    /// The remote user's UID and GID become those of the project folder's owner on the host (a
    /// host-local workspace: the user edits the same files from both sides).
    UserFollowsFolder {
        /// The folder owner's uid.
        uid: u32,
        /// The folder owner's gid.
        gid: u32,
    },
    /// The project folder (Warren's own copy, on a server) is given to the remote user.
    FolderFollowsUser,
}

/// Folders whose ownership Warren never changes, whatever `workspaceFolder` says.
fn is_system_folder(folder: &str) -> bool {
    let f = folder.trim_end_matches('/');
    let top = f.trim_start_matches('/').split('/').next().unwrap_or("");
    f.is_empty()
        || f.split('/').any(|c| c == "..")
        || (!f.trim_start_matches('/').contains('/')
            && matches!(
                top,
                "bin"
                    | "boot"
                    | "dev"
                    | "etc"
                    | "home"
                    | "lib"
                    | "lib32"
                    | "lib64"
                    | "libx32"
                    | "opt"
                    | "proc"
                    | "root"
                    | "run"
                    | "sbin"
                    | "srv"
                    | "sys"
                    | "tmp"
                    | "usr"
                    | "var"
                    | "workspaces"
            ))
        || ["/usr/", "/etc/", "/var/lib/", "/proc/", "/sys/", "/dev/"]
            .iter()
            .any(|p| folder.starts_with(p))
}

/// The root script that carries out an [`OwnerSync`] for `user` inside the workspace. Like the
/// reference implementation it changes nothing when another user or group already has the id, and
/// it rewrites /etc/passwd and /etc/group in place (no new inode) and re-owns the user's home.
pub fn owner_sync_script(sync: &OwnerSync, user: &str, folder: &str) -> String {
    match sync {
        // Never a system folder: a `workspaceFolder` of `/` must not re-own the whole root.
        OwnerSync::FolderFollowsUser if is_system_folder(folder) => format!(
            "printf '== updateRemoteUserUID: %s is a system folder; its owner is left alone\\n' {f}",
            f = sh_quote(folder),
        ),
        OwnerSync::FolderFollowsUser => format!(
            "set -e; u={u}; chown -R \"$u:$(id -g \"$u\")\" -- {f}; printf '== %s now belongs to %s\\n' {f} \"$u\"",
            u = sh_quote(user),
            f = sh_quote(folder),
        ),
        OwnerSync::UserFollowsFolder { uid, gid } => format!(
            r#"set -e
u={u}; uid={uid}; gid={gid}
line=$(awk -F: -v u="$u" '$1 == u' /etc/passwd)
[ -n "$line" ] || {{ echo "== updateRemoteUserUID: no user $u in /etc/passwd; nothing changed"; exit 0; }}
old_uid=$(echo "$line" | cut -d: -f3); old_gid=$(echo "$line" | cut -d: -f4); home=$(echo "$line" | cut -d: -f6)
[ "$old_uid" != "$uid" ] || [ "$old_gid" != "$gid" ] || exit 0
if awk -F: -v u="$u" -v id="$uid" '$3 == id && $1 != u {{ f = 1 }} END {{ exit !f }}' /etc/passwd; then
  echo "== updateRemoteUserUID: uid $uid belongs to another user; $u keeps uid $old_uid"; exit 0
fi
grp=$(awk -F: -v g="$old_gid" '$3 == g {{ print $1; exit }}' /etc/group)
new_gid=$gid
if awk -F: -v g="$gid" -v n="$grp" '$3 == g && $1 != n {{ f = 1 }} END {{ exit !f }}' /etc/group; then
  new_gid=$old_gid
  echo "== updateRemoteUserUID: gid $gid belongs to another group; $u keeps gid $old_gid"
fi
t=$(awk -F: -v OFS=: -v u="$u" -v uid="$uid" -v gid="$new_gid" '$1 == u {{ $3 = uid; $4 = gid }} 1' /etc/passwd); printf '%s\n' "$t" > /etc/passwd
if [ -n "$grp" ] && [ "$new_gid" != "$old_gid" ]; then
  t=$(awk -F: -v OFS=: -v n="$grp" -v gid="$new_gid" '$1 == n {{ $3 = gid }} 1' /etc/group); printf '%s\n' "$t" > /etc/group
fi
if [ -d "$home" ] && [ "$home" != / ]; then chown -R "$uid:$new_gid" -- "$home"; fi
echo "== updateRemoteUserUID: $u is now uid $uid, gid $new_gid (was $old_uid:$old_gid)"
"#,
            u = sh_quote(user),
        ),
    }
}

/// How long the user's shell has to print its environment.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Probes the remote user's environment the way `userEnvProbe` says (`none`, `loginShell`,
/// `interactiveShell`, `loginInteractiveShell`): runs the user's login shell (from /etc/passwd) with
/// those flags and reads its environment. A probe that fails or hangs gives an empty environment and
/// a warning, never a failed start.
pub async fn probe_user_env(
    rt: Arc<dyn Runtime>,
    id: &str,
    spec: &WsSpec,
    mode: &str,
    progress: &dyn Progress,
) -> Vec<String> {
    let flags = match mode {
        "none" => return vec![],
        "loginShell" => "-lc",
        "interactiveShell" => "-ic",
        _ => "-lic",
    };
    const MARK: &str = "WARREN_ENV_PROBE_7f3a";
    let script = format!(
        "shell=$(awk -F: -v u=\"$(id -un 2>/dev/null)\" '$1 == u {{ print $7 }}' /etc/passwd 2>/dev/null); \
         [ -x \"$shell\" ] || shell=/bin/sh; \
         exec \"$shell\" {flags} 'printf {MARK}; cat /proc/self/environ; printf {MARK}' </dev/null"
    );
    let mut p = ExecProcess {
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        ..Default::default()
    };
    spec.apply_exec_defaults(&mut p, &[]);
    let id = id.to_string();
    let task = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        let null = |_| std::fs::File::open("/dev/null").map_err(|e| e.to_string());
        let session = rt
            .exec(
                &id,
                &p,
                Some(Stdio {
                    stdin: null(())?.into(),
                    stdout: w,
                    stderr: std::fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/null")
                        .map_err(|e| e.to_string())?
                        .into(),
                }),
            )
            .map_err(|e| e.to_string())?;
        // Read until the second marker, the 1 MiB cap or the deadline, never until EOF: a
        // profile may leave a background process holding the pipe open. Past the deadline the
        // shell is killed, so that no thread is left waiting on it.
        let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
        let mut out = Vec::new();
        let mut file = std::fs::File::from(r);
        let mut buf = [0u8; 8192];
        loop {
            if out
                .windows(MARK.len())
                .filter(|w| *w == MARK.as_bytes())
                .count()
                >= 2
                || out.len() > 1 << 20
            {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&file),
                nix::poll::PollFlags::POLLIN,
            )];
            let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms))
                .map_err(|e| e.to_string())?;
            if ready == 0 && left.is_zero() {
                if let Ok(s) = session.signaller() {
                    let _ = s.signal(nix::sys::signal::Signal::SIGKILL as i32);
                }
                return Err(format!(
                    "the user's shell did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            if ready == 0 {
                continue;
            }
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    });
    let out = match task.await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            progress.warn(&format!(
                "userEnvProbe: could not probe the user's environment ({e}); it is not used"
            ));
            return vec![];
        }
        Err(e) => {
            progress.warn(&format!("userEnvProbe: {e}"));
            return vec![];
        }
    };
    parse_probe(&out, MARK.as_bytes())
}

/// The environment between the two markers of a probe's output, without the shell's own variables.
fn parse_probe(out: &[u8], mark: &[u8]) -> Vec<String> {
    let find = |from: usize| {
        out[from..]
            .windows(mark.len())
            .position(|w| w == mark)
            .map(|i| i + from)
    };
    let Some(start) = find(0) else { return vec![] };
    let Some(end) = find(start + mark.len()) else {
        return vec![];
    };
    out[start + mark.len()..end]
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter(|kv| {
            kv.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && !matches!(k, "PWD" | "OLDPWD" | "SHLVL" | "_" | "HOSTNAME")
            })
        })
        .map(str::to_string)
        .collect()
}

/// Runs `initializeCommand` on the host, in the project folder, before anything else of `up`.
/// Output goes to the progress sink; a failure is an error naming it.
pub async fn run_on_host(
    cmd: &LifecycleCommand,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let parts = labelled_argvs("initializeCommand", cmd);
    let mut children = Vec::new();
    for (label, argv) in parts {
        if argv.is_empty() {
            continue;
        }
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EngineError::Policy(format!("{label}: cannot run {}: {e}", argv[0])))?;
        children.push((label, child));
    }
    let mut failed = None;
    for (label, child) in children {
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| EngineError::Internal(format!("{label}: {e}")))?;
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            progress.output(line);
        }
        if !out.status.success() && failed.is_none() {
            failed = Some((label, out.status.code().unwrap_or(128)));
        }
    }
    match failed {
        None => Ok(()),
        Some((what, code)) => Err(EngineError::Lifecycle {
            what,
            code,
            log: dir.to_path_buf(),
        }),
    }
}

impl LifecycleState {
    /// Parses the stored JSON (an empty or unreadable document means nothing ran).
    pub fn from_json(s: &str) -> LifecycleState {
        serde_json::from_str(s).unwrap_or_default()
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// The processes of a command: one, or one per entry of the object form, each labelled for
/// messages (`postStartCommand`, `postStartCommand:server`).
fn labelled_argvs(what: &str, cmd: &LifecycleCommand) -> Vec<(String, Vec<String>)> {
    match cmd {
        LifecycleCommand::Parallel(items) => items
            .iter()
            .map(|(name, c)| (format!("{what}:{name}"), argv(c)))
            .collect(),
        c => vec![(what.to_string(), argv(c))],
    }
}

fn argv(c: &LifecycleCommand) -> Vec<String> {
    match c {
        LifecycleCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        LifecycleCommand::Exec(v) => v.clone(),
        LifecycleCommand::Parallel(_) => vec![],
    }
}

/// Runs one lifecycle command to completion; any non-zero exit is an error naming the command.
///
/// The command's stdout and stderr are the log file itself (opened for appending), not a pipe to this
/// process: daemons a command leaves running keep a valid output after `warren` exits, and their
/// output lands in `warren logs`. Progress shows what the log gains while the command runs.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    rt: Arc<dyn Runtime>,
    id: &str,
    spec: &WsSpec,
    user_env: &[String],
    what: &str,
    cmd: &LifecycleCommand,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let parts = labelled_argvs(what, cmd);
    let io =
        |e: std::io::Error| EngineError::Internal(format!("lifecycle log {}: {e}", log.display()));
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let names: Vec<&str> = parts.iter().map(|(l, _)| l.as_str()).collect();
    if parts.len() > 1 {
        writeln!(logf, "== {what} (in parallel: {})", names.join(", ")).map_err(io)?;
    } else {
        writeln!(logf, "== {what}").map_err(io)?;
    }
    let mut tail = std::fs::File::open(log).map_err(io)?;
    tail.seek(SeekFrom::Start(logf.metadata().map_err(io)?.len()))
        .map_err(io)?;
    let mut tasks = Vec::new();
    for (label, argv) in parts {
        let mut p = ExecProcess {
            argv,
            ..Default::default()
        };
        spec.apply_exec_defaults(&mut p, user_env);
        let rt = rt.clone();
        let id = id.to_string();
        let out = logf.try_clone().map_err(io)?;
        let err = logf.try_clone().map_err(io)?;
        tasks.push(tokio::task::spawn_blocking(
            move || -> Result<(String, i32), EngineError> {
                let stdin = std::fs::File::open("/dev/null")
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                let session = rt.exec(
                    &id,
                    &p,
                    Some(Stdio {
                        stdin: stdin.into(),
                        stdout: out.into(),
                        stderr: err.into(),
                    }),
                )?;
                Ok((label, session.wait()?))
            },
        ));
    }
    let mut pending = Vec::new();
    loop {
        let done = tasks.iter().all(|t| t.is_finished());
        forward_new_lines(&mut tail, &mut pending, progress);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !pending.is_empty() {
        progress.output(&String::from_utf8_lossy(&pending));
    }
    let mut failed = None;
    for t in tasks {
        let (label, code) = t
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        if code != 0 && failed.is_none() {
            failed = Some((label, code));
        }
    }
    match failed {
        None => Ok(()),
        Some((label, code)) => {
            let _ = writeln!(logf, "== {label} failed with exit code {code}");
            Err(EngineError::Lifecycle {
                what: label,
                code,
                log: log.to_path_buf(),
            })
        }
    }
}

/// Shows the complete lines the log gained since the last call (any bytes, shown lossily).
fn forward_new_lines(tail: &mut std::fs::File, pending: &mut Vec<u8>, progress: &dyn Progress) {
    // Read what is new in bounded chunks: a command printing gigabytes without a newline must not
    // make the control plane hold them.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tail.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            progress.output(&String::from_utf8_lossy(&pending[..i]));
            pending.drain(..=i);
        }
        if pending.len() > MAX_PENDING {
            progress.output(&String::from_utf8_lossy(pending));
            pending.clear();
        }
    }
}

/// The longest partial line kept while waiting for its newline.
const MAX_PENDING: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_keeps_what_is_between_the_markers_minus_shell_bookkeeping() {
        let out = b"motd noise\nMARKPATH=/usr/bin:/opt/x\0NVM_DIR=/root/.nvm\0PWD=/\0SHLVL=2\0_=/bin/cat\0MARKtrailing";
        assert_eq!(
            parse_probe(out, b"MARK"),
            vec!["PATH=/usr/bin:/opt/x", "NVM_DIR=/root/.nvm"]
        );
        assert!(parse_probe(b"no markers", b"MARK").is_empty());
    }

    #[test]
    fn the_folder_script_quotes_the_folder_and_leaves_system_folders_alone() {
        let s = owner_sync_script(&OwnerSync::FolderFollowsUser, "dev", "/w/$(touch /pwned)");
        assert!(s.contains("'/w/$(touch /pwned)'"), "{s}");
        assert!(!s.contains("\"/w/$("), "{s}");
        for f in [
            "/",
            "/usr",
            "/etc/",
            "/home",
            "/workspaces",
            "/usr/local",
            "/w/../etc",
        ] {
            let s = owner_sync_script(&OwnerSync::FolderFollowsUser, "dev", f);
            assert!(!s.contains("chown"), "{f}: {s}");
        }
        let s = owner_sync_script(&OwnerSync::FolderFollowsUser, "dev", "/workspaces/app");
        assert!(s.contains("chown -R"), "{s}");
    }

    #[test]
    fn quoting_survives_quotes_in_commands() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn the_background_script_runs_hooks_in_order_and_stops_at_a_failure() {
        let script = background_script(&[
            (
                "postCreateCommand".into(),
                vec![LifecycleCommand::Shell("echo a; exit 4".into())],
            ),
            (
                "postStartCommand".into(),
                vec![LifecycleCommand::Exec(vec!["echo".into(), "b".into()])],
            ),
        ]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4));
        assert!(
            text.contains("== postCreateCommand (in the background)\na\n"),
            "{text}"
        );
        assert!(
            text.contains("== postCreateCommand failed with exit code 4"),
            "{text}"
        );
        assert!(!text.contains("\nb\n"), "{text}");
    }

    #[test]
    fn the_background_script_runs_an_object_in_parallel_and_reports_each_failure() {
        let script = background_script(&[(
            "postStartCommand".into(),
            vec![LifecycleCommand::Parallel(vec![
                (
                    "ok".into(),
                    LifecycleCommand::Shell("sleep 0.2; echo slow".into()),
                ),
                (
                    "bad".into(),
                    LifecycleCommand::Exec(vec!["sh".into(), "-c".into(), "exit 9".into()]),
                ),
            ])],
        )]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(9), "{text}");
        assert!(text.contains("slow"), "both ran: {text}");
        assert!(
            text.contains("== postStartCommand:bad failed with exit code 9"),
            "{text}"
        );
        assert!(!text.contains("finished"), "{text}");
    }
}
