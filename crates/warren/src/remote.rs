//! Workspace commands against a server: the same verbs as the embedded engine (`up`, `list`,
//! `exec`, `shell`, `start`, `stop`, `restart`, `delete`, `logs`), plus `create` from a template,
//! `jobs`, `cancel` and `extend`. Transitions run as server jobs; unless `--detach`, the CLI
//! follows the job's log on stderr and fails when the job fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use warren_api::template::{parse_cli_param, parse_duration, Ceilings, ParamSpec};
use warren_api::v1::{Accepted, CreateWorkspace, ExecRequest, Job};
use warren_api::{Workspace, WorkspaceName, WorkspaceState};
use warren_engine::Progress;

use crate::cli::{Cmd, CreateArgs, ExecArgs, ListArgs, LogsArgs, UpArgs};
use crate::client::{has_code, seg, Client, WorkspaceQuery};
use crate::context::Remote;
use crate::output::{table, user_error, Printer};

/// The most a folder may weigh once packed for upload (the server's default body limit).
pub const MAX_UPLOAD: u64 = 64 << 20;

/// Runs `cmd` against the server `remote`.
pub async fn run(cmd: Cmd, remote: &Remote, json: bool) -> Result<u8> {
    let client = Client::for_remote(remote)?;
    let c = &client;
    match cmd {
        Cmd::Up(a) => up(c, a, json).await,
        Cmd::Create(a) => create(c, a, json).await,
        Cmd::List(a) => list(c, a, json).await,
        Cmd::Exec(a) => exec(remote, a).await,
        Cmd::Shell {
            workspace,
            session: Some(session),
            ..
        } => crate::terminal::run(remote, &workspace, &session).await,
        Cmd::Shell {
            workspace, user, ..
        } => {
            let req = ExecRequest {
                command: warren_api::v1::shell_fallback(),
                login_shell: true,
                user,
                tty: Some((24, 80)),
                ..Default::default()
            };
            crate::wsexec::run(remote, &workspace, req).await
        }
        Cmd::Start(a) => transition(c, &a.workspace, "start", a.detach, json).await,
        Cmd::Stop(a) => transition(c, &a.workspace, "stop", a.detach, json).await,
        Cmd::Restart(a) => transition(c, &a.workspace, "restart", a.detach, json).await,
        Cmd::Delete {
            workspace,
            force,
            detach,
        } => delete(c, &workspace, force, detach, json).await,
        Cmd::Logs(a) => logs(c, a, json).await,
        Cmd::Jobs { workspace } => jobs(c, &workspace, json).await,
        Cmd::Cancel { job } => {
            let j = c.cancel_job(&job).await?;
            if json {
                print_json(&j)?;
            } else {
                eprintln!("Job {} ({}) is {}.", j.id, j.kind, j.status);
            }
            Ok(0)
        }
        Cmd::Extend { workspace, by } => {
            parse_duration(&by)
                .map_err(|e| user_error(format!("--by `{by}`: {e}"), "e.g. --by 2h"))?;
            let ws = c.extend(&workspace, &by).await?;
            if json {
                print_json(&ws)?;
            } else {
                let at = ws.deadline_at.clone().unwrap_or_default();
                eprintln!("Workspace {} now has a deadline of {at}.", ws.name);
                println!("{at}");
            }
            Ok(0)
        }
        Cmd::Stats { .. } => Err(user_error(
            "`warren stats` is not available against a server yet",
            "run it on the server's host with --local",
        )),
        Cmd::Login(a) => {
            let code = a.approve.unwrap_or_default();
            crate::admin::approve(c, &code, json).await
        }
        Cmd::Whoami => crate::admin::whoami(c, remote, json).await,
        // Dispatched by `cli::run` before a target is chosen.
        Cmd::Mcp => crate::mcp_cmd::run(false, remote.name.as_deref()).await,
        Cmd::Template(t) => crate::admin::template(c, t, json).await,
        Cmd::Token(t) => crate::admin::token(c, t, json).await,
        Cmd::SshKey(k) => crate::admin::ssh_key(c, k, json).await,
        Cmd::Secret(s) => crate::secret_cmd::secret(c, s, json).await,
        Cmd::SshAccess(a) => crate::admin::ssh_access(c, a, json).await,
        Cmd::Ssh(a) if a.stdio => crate::ssh::stdio(remote, &a.workspace).await,
        Cmd::Ssh(a) => crate::ssh::ssh(remote, &a.workspace, a.identity.as_deref(), &a.command),
        Cmd::ConfigSsh(a) => crate::ssh::config_ssh(c, remote, a.remove, a.ssh_config).await,
        Cmd::Ports(a) => crate::ports::ports(c, a, json).await,
        Cmd::Policy(p) => crate::policy_cmd::policy(c, p, json).await,
        Cmd::Task(t) => crate::task_cmd::task(c, t, json).await,
        Cmd::Net(n) => crate::net_cmd::net(c, n, json).await,
        Cmd::Keepalive { workspace, every } => {
            crate::policy_cmd::keepalive(c, &workspace, every, json).await
        }
        Cmd::Events(a) => crate::policy_cmd::events(c, a, json).await,
        Cmd::PortForward(a) => crate::ports::port_forward(remote, &a.workspace, &a.ports).await,
        Cmd::User(u) => crate::admin::user(c, u, json).await,
        Cmd::Team(t) => crate::admin::team(c, t, json).await,
        Cmd::Audit(a) => crate::admin::audit(c, a, json).await,
        Cmd::Webhook(w) => crate::admin::webhook(c, w, json).await,
        Cmd::Quota(q) => crate::quota_cmd::quota(c, q, json).await,
        Cmd::Cost(a) => crate::quota_cmd::cost(c, a, json).await,
        // Dispatched earlier: they never reach a server this way.
        Cmd::Logout { .. }
        | Cmd::Context(_)
        | Cmd::Image(_)
        | Cmd::Build(_)
        | Cmd::Reconcile
        | Cmd::Bench(_)
        | Cmd::Server(_)
        | Cmd::Devcontainer(_) => Ok(0),
    }
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a job log line the way the embedded engine prints progress.
fn job_line(line: &str) {
    if let Some(step) = line.strip_prefix("==> ") {
        Printer.step(step);
    } else if let Some(w) = line.strip_prefix("warning: ") {
        Printer.warn(w);
    } else {
        Printer.output(line);
    }
}

fn is_active(status: &str) -> bool {
    matches!(status, "pending" | "running")
}

/// Follows a job's log on stderr until it ends; returns the finished job, or an error when it
/// failed or was canceled.
pub async fn follow_job(c: &Client, job: &Job, what: &str) -> Result<Job> {
    let path = format!("/jobs/{}/logs", seg(&job.id));
    // Ctrl-C stops following, not the job: say so, and how to pick it up again.
    tokio::select! {
        r = c.follow_log(&path, job_line) => { r?; }
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            Printer.warn(&format!(
                "stopped following; the job goes on on the server. Follow it again with `warren logs --job {} --follow`, or cancel it with `warren cancel {}`",
                job.id, job.id
            ));
            std::process::exit(128 + libc::SIGINT);
        }
    }
    // Whatever the stream said, the job record is the truth; it may take a moment to settle.
    let mut delay = Duration::from_millis(100);
    let done = loop {
        let j = c.job(&job.id).await?;
        if !is_active(&j.status) {
            break j;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    match done.status.as_str() {
        "succeeded" => Ok(done),
        status => {
            let why = done
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Err(user_error(
                format!("{what} {status}{why}"),
                format!("the job's log: `warren logs --job {}`", done.id),
            ))
        }
    }
}

/// Prints the outcome of a transition: the workspace name (text) or `{workspace, job}` (JSON).
async fn report(c: &Client, accepted: &Accepted, job: &Job, json: bool, name: bool) -> Result<()> {
    let ws = match c.workspace(&accepted.workspace.id).await {
        Ok(ws) => ws,
        Err(_) => accepted.workspace.clone(),
    };
    if json {
        print_json(&serde_json::json!({ "workspace": ws, "job": job }))?;
    } else if name {
        println!("{}", ws.name);
    }
    Ok(())
}

/// Prints what `--detach` returns: the job id (text) or the accepted answer (JSON).
fn detached(accepted: &Accepted, json: bool) -> Result<u8> {
    if json {
        print_json(accepted)?;
    } else {
        eprintln!(
            "Job {} ({}) accepted. Follow it with: warren logs --job {} --follow",
            accepted.job.id, accepted.job.kind, accepted.job.id
        );
        println!("{}", accepted.job.id);
    }
    Ok(0)
}

async fn transition(c: &Client, ws: &str, action: &str, detach: bool, json: bool) -> Result<u8> {
    let accepted = c.transition(ws, action).await?;
    if detach {
        return detached(&accepted, json);
    }
    let job = follow_job(c, &accepted.job, &format!("{action} of workspace {ws}")).await?;
    report(c, &accepted, &job, json, false).await?;
    Ok(0)
}

async fn delete(c: &Client, ws: &str, force: bool, detach: bool, json: bool) -> Result<u8> {
    if !force {
        let w = c.workspace(ws).await?;
        if matches!(w.state, WorkspaceState::Running | WorkspaceState::Starting) {
            return Err(user_error(
                format!("workspace `{ws}` is {}", w.state),
                format!(
                    "stop it first with `warren stop {ws}`, or delete it anyway with `warren delete --force {ws}`"
                ),
            ));
        }
    }
    let accepted = c.delete_workspace(ws).await?;
    if detach {
        return detached(&accepted, json);
    }
    let job = follow_job(c, &accepted.job, &format!("delete of workspace {ws}")).await?;
    if json {
        print_json(&serde_json::json!({ "deleted": accepted.workspace.name, "job": job }))?;
    }
    Ok(0)
}

fn limits(cpus: Option<f64>, memory: Option<u64>, pids: Option<u64>) -> Result<Option<Ceilings>> {
    if let Some(c) = cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(user_error(
                format!("--cpus {c} must be positive"),
                "e.g. --cpus 1.5",
            ));
        }
    }
    if pids == Some(0) {
        return Err(user_error("--pids must be positive", "e.g. --pids 4096"));
    }
    let l = Ceilings {
        cpus,
        memory_mb: memory.map(|b| b.div_ceil(1 << 20)),
        disk_mb: None,
        pids,
    };
    Ok((l != Ceilings::default()).then_some(l))
}

/// A one-line description of a template's parameters, for hints.
fn params_hint(template: &str, specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        return format!("template `{template}` takes no parameters");
    }
    let list: Vec<String> = specs
        .iter()
        .map(|s| {
            let mut d = format!("{} ({}", s.name, s.r#type.as_str());
            if let Some(def) = &s.default {
                d.push_str(&format!(", default {def}"));
            } else if s.required {
                d.push_str(", required");
            }
            if let Some(opts) = &s.options {
                let o: Vec<String> = opts.iter().map(|v| v.to_string()).collect();
                d.push_str(&format!(", one of {}", o.join(" ")));
            }
            d.push(')');
            d
        })
        .collect();
    format!(
        "template `{template}` takes: {}; e.g. --param {}=VALUE",
        list.join(", "),
        specs[0].name
    )
}

async fn create(c: &Client, a: CreateArgs, json: bool) -> Result<u8> {
    WorkspaceName::new(a.name.clone())
        .map_err(|e| user_error(e.to_string(), "names are DNS labels, e.g. my-project"))?;
    if let Some(t) = &a.ttl {
        parse_duration(t).map_err(|e| user_error(format!("--ttl `{t}`: {e}"), "e.g. --ttl 8h"))?;
    }
    let version = c.version(&a.template, a.template_version).await?;
    let mut parameters = BTreeMap::new();
    for p in &a.params {
        let (k, v) = parse_cli_param(&version.parameters, p).map_err(|e| {
            user_error(e.to_string(), params_hint(&a.template, &version.parameters))
        })?;
        parameters.insert(k, v);
    }
    let body = CreateWorkspace {
        name: a.name.clone(),
        template: Some(a.template.clone()),
        template_version: Some(version.number),
        parameters,
        ttl: a.ttl.clone(),
        limits: limits(a.cpus, a.memory, a.pids)?,
        team: a.team.clone(),
        secrets: a.secrets.clone(),
        ..Default::default()
    };
    let accepted = c.create_workspace(&body).await.map_err(|e| {
        if has_code(&e, "invalid_parameter") {
            let api = e.downcast_ref::<crate::client::ApiError>().cloned();
            if let Some(mut api) = api {
                api.hint
                    .get_or_insert_with(|| params_hint(&a.template, &version.parameters));
                return api.into();
            }
        }
        e
    })?;
    if a.detach {
        return detached(&accepted, json);
    }
    let job = follow_job(c, &accepted.job, &format!("create of workspace {}", a.name)).await?;
    if !json {
        eprintln!(
            "Workspace {} is running. Try: warren exec {} -- uname -a   or   warren shell {}",
            a.name, a.name, a.name
        );
    }
    report(c, &accepted, &job, json, true).await?;
    Ok(0)
}

/// The devcontainer.json of a project folder, as the embedded engine looks for it.
fn has_devcontainer(dir: &Path) -> bool {
    dir.join(".devcontainer/devcontainer.json").is_file()
        || dir.join(".devcontainer.json").is_file()
}

async fn up(c: &Client, a: UpArgs, json: bool) -> Result<u8> {
    let dir = std::fs::canonicalize(&a.dir).map_err(|e| {
        user_error(
            format!("cannot open project folder {}: {e}", a.dir.display()),
            "give the folder that holds .devcontainer/devcontainer.json",
        )
    })?;
    let name = match &a.name {
        Some(n) => WorkspaceName::new(n.clone())
            .map_err(|e| user_error(e.to_string(), "names are DNS labels, e.g. my-project"))?,
        None => warren_api::workspace_name_from_dir(
            &dir.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    };
    let name = name.to_string();
    let limits = limits(a.cpus, a.memory, a.pids.map(|p| p.max(0) as u64))?;
    let existing = match c.workspace(&name).await {
        Ok(ws) => Some(ws),
        Err(e) if has_code(&e, "not_found") => None,
        Err(e) => return Err(e),
    };
    if let Some(ws) = existing {
        if a.recreate {
            Printer.step(&format!("Deleting workspace {name} to create it again"));
            let accepted = c.delete_workspace(&name).await?;
            follow_job(c, &accepted.job, &format!("delete of workspace {name}")).await?;
        } else {
            return up_existing(c, ws, a.detach, json).await;
        }
    }
    if !has_devcontainer(&dir) {
        return Err(user_error(
            format!(
                "{} has no .devcontainer/devcontainer.json or .devcontainer.json",
                dir.display()
            ),
            "create one with at least {\"image\": \"debian:bookworm\"}",
        ));
    }
    // initializeCommand runs here, on the user's machine, as with a local `up`; the server never
    // runs it.
    if let Ok(loaded) = warren_devcontainer::load(&dir) {
        if let Some(cmd) = &loaded.config.initialize_command {
            Printer.step("Running initializeCommand on this machine");
            warren_engine::run_initialize_command(cmd, &dir, &Printer).await?;
        }
    }
    Printer.step(&format!("Uploading {}", dir.display()));
    let d = dir.clone();
    let tar = tokio::task::spawn_blocking(move || pack_dir(&d, MAX_UPLOAD)).await??;
    let file = c.upload(tar).await?;
    let body = CreateWorkspace {
        name: name.clone(),
        file_id: Some(file.id),
        limits,
        wait_all: a.wait_all,
        team: a.team.clone(),
        secrets: a.secrets.clone(),
        ..Default::default()
    };
    let accepted = c.create_workspace(&body).await?;
    if a.detach {
        return detached(&accepted, json);
    }
    let job = follow_job(c, &accepted.job, &format!("create of workspace {name}")).await?;
    if !json {
        eprintln!(
            "Workspace {name} is running. Try: warren exec {name} -- uname -a   or   warren shell {name}"
        );
    }
    report(c, &accepted, &job, json, true).await?;
    Ok(0)
}

/// `up` of a workspace that exists on the server: nothing to do if it runs, follow its job if
/// one is active, else start it.
async fn up_existing(c: &Client, ws: Workspace, detach: bool, json: bool) -> Result<u8> {
    let name = ws.name.to_string();
    let done = |ws: &Workspace| -> Result<u8> {
        if json {
            print_json(&serde_json::json!({ "workspace": ws, "job": null }))?;
        } else {
            eprintln!("Workspace {name} is running.");
            println!("{name}");
        }
        Ok(0)
    };
    match ws.state {
        WorkspaceState::Running => done(&ws),
        WorkspaceState::Pending
        | WorkspaceState::Starting
        | WorkspaceState::Stopping
        | WorkspaceState::Deleting => {
            // A job is at work: follow it, then look again.
            if let Some(job) = c
                .workspace_jobs(&ws.id)
                .await?
                .into_iter()
                .find(|j| is_active(&j.status))
            {
                if detach {
                    if json {
                        print_json(&serde_json::json!({ "workspace": ws, "job": job }))?;
                    } else {
                        println!("{}", job.id);
                    }
                    return Ok(0);
                }
                Printer.step(&format!("Following the {} job of {name}", job.kind));
                follow_job(c, &job, &format!("{} of workspace {name}", job.kind)).await?;
            }
            let ws = c.workspace(&ws.id).await?;
            if ws.state == WorkspaceState::Running {
                return done(&ws);
            }
            Box::pin(up_existing(c, ws, detach, json)).await
        }
        _ => {
            let accepted = c.transition(&ws.id, "start").await?;
            if detach {
                return detached(&accepted, json);
            }
            let job = follow_job(c, &accepted.job, &format!("start of workspace {name}")).await?;
            if !json {
                eprintln!("Workspace {name} is running.");
            }
            report(c, &accepted, &job, json, true).await?;
            Ok(0)
        }
    }
}

/// A writer that refuses to grow past a size.
struct Capped {
    buf: Vec<u8>,
    cap: u64,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.cap {
            self.over = true;
            return Err(std::io::Error::other("upload size limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_big(dir: &Path, cap: u64) -> anyhow::Error {
    user_error(
        format!(
            "{} is too large to upload: more than {} MiB once packed",
            dir.display(),
            cap >> 20
        ),
        "move large files (build output, caches, data sets) out of the folder, or push a template (`warren template push`) that fetches them in a lifecycle command",
    )
}

/// Packs `dir` as an uncompressed tar with paths relative to it, in a stable order. Symlinks
/// are stored as links, never followed; sockets are skipped. Fails past `cap` bytes.
pub fn pack_dir(dir: &Path, cap: u64) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let total: u64 = files
        .iter()
        .filter_map(|(full, _)| std::fs::symlink_metadata(full).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    if total > cap {
        return Err(too_big(dir, cap));
    }
    let mut b = tar::Builder::new(Capped {
        buf: Vec::new(),
        cap,
        over: false,
    });
    b.follow_symlinks(false);
    for (full, rel) in &files {
        let r = b.append_path_with_name(full, rel);
        if let Err(e) = r {
            if b.get_ref().over {
                return Err(too_big(dir, cap));
            }
            return Err(e).with_context(|| format!("pack {}", full.display()));
        }
    }
    let out = match b.into_inner() {
        Ok(w) => w,
        Err(_) => return Err(too_big(dir, cap)),
    };
    Ok(out.buf)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .with_context(|| format!("read {}", here.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("read {}", here.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let r = rel.join(e.file_name());
        let ft = e
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            continue;
        }
        out.push((path, r.clone()));
        if ft.is_dir() {
            walk(root, &r, out)?;
        }
    }
    Ok(())
}

async fn list(c: &Client, a: ListArgs, json: bool) -> Result<u8> {
    let q = WorkspaceQuery {
        owner: if a.all {
            Some("all".into())
        } else {
            a.owner.clone()
        },
        status: a.status.clone(),
        template: a.template.clone(),
    };
    let list = c.workspaces(&q).await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    let others = a.all || a.owner.is_some();
    let users: BTreeMap<String, String> = if others {
        c.users()
            .await
            .map(|u| u.into_iter().map(|u| (u.id, u.username)).collect())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let mut r = vec![w.name.to_string(), w.state.to_string()];
            if others {
                r.push(
                    users
                        .get(&w.owner_id)
                        .cloned()
                        .unwrap_or_else(|| w.owner_id.clone()),
                );
            }
            r.extend([
                w.image.clone(),
                w.created_at.clone(),
                w.deadline_at.clone().unwrap_or_else(|| "-".into()),
            ]);
            r
        })
        .collect();
    let header: &[&str] = if others {
        &["NAME", "STATE", "OWNER", "IMAGE", "CREATED", "DEADLINE"]
    } else {
        &["NAME", "STATE", "IMAGE", "CREATED", "DEADLINE"]
    };
    print!("{}", table(header, &rows));
    Ok(0)
}

async fn exec(remote: &Remote, a: ExecArgs) -> Result<u8> {
    let mut env = BTreeMap::new();
    for e in &a.env {
        let Some((k, v)) = e.split_once('=') else {
            return Err(user_error(
                format!("--env `{e}` is not KEY=VALUE"),
                "e.g. --env RUST_LOG=debug",
            ));
        };
        env.insert(k.to_string(), v.to_string());
    }
    let req = ExecRequest {
        command: a.command,
        env,
        cwd: a.workdir,
        user: a.user,
        tty: a.tty.then_some((24, 80)),
        ..Default::default()
    };
    crate::wsexec::run(remote, &a.workspace, req).await
}

async fn logs(c: &Client, a: LogsArgs, json: bool) -> Result<u8> {
    let path = match (&a.job, &a.workspace) {
        (Some(j), _) => format!("/jobs/{}/logs", seg(j)),
        (None, Some(ws)) => format!("/workspaces/{}/logs", seg(ws)),
        (None, None) => {
            return Err(user_error(
                "give a workspace or --job JOB",
                "e.g. warren logs my-ws, or warren logs --job JOB",
            ))
        }
    };
    if a.follow {
        let end = c
            .follow_log(&path, |line| {
                let mut out = std::io::stdout().lock();
                let _ = if json {
                    writeln!(out, "{}", serde_json::json!({ "line": line }))
                } else {
                    writeln!(out, "{line}")
                };
                let _ = out.flush();
            })
            .await?;
        if let (Some(status), true) = (end, json) {
            println!("{}", serde_json::json!({ "end": status }));
        }
    } else {
        let text = c.log_text(&path).await?;
        if json {
            print_json(&serde_json::json!({ "log": text }))?;
        } else {
            print!("{text}");
        }
    }
    Ok(0)
}

async fn jobs(c: &Client, ws: &str, json: bool) -> Result<u8> {
    let jobs = c.workspace_jobs(ws).await?;
    if json {
        print_json(&jobs)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.kind.clone(),
                j.status.clone(),
                j.created_at.clone(),
                j.finished_at.clone().unwrap_or_else(|| "-".into()),
                j.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "KIND", "STATUS", "CREATED", "FINISHED", "ERROR"],
            &rows
        )
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_pack_relative_sorted_with_links_and_a_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join(".devcontainer")).unwrap();
        std::fs::write(d.join(".devcontainer/devcontainer.json"), "{}").unwrap();
        std::fs::write(d.join("b.txt"), "bee").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("a-link")).unwrap();
        let tar = pack_dir(d, MAX_UPLOAD).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut seen = vec![];
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "a-link" {
                assert!(e.header().entry_type().is_symlink());
            }
            seen.push(p);
        }
        assert_eq!(
            seen,
            [
                ".devcontainer",
                ".devcontainer/devcontainer.json",
                "a-link",
                "b.txt"
            ]
        );
        std::fs::write(d.join("big"), vec![0u8; 4096]).unwrap();
        let e = pack_dir(d, 2048).unwrap_err();
        assert!(e.to_string().contains("too large to upload"), "{e}");
        // The cap also holds for what the tar format adds.
        std::fs::remove_file(d.join("big")).unwrap();
        let e = pack_dir(d, 1024).unwrap_err();
        assert!(e.to_string().contains("too large to upload"), "{e}");
    }

    #[test]
    fn limits_convert_to_mib() {
        assert_eq!(limits(None, None, None).unwrap(), None);
        let l = limits(Some(1.5), Some((2 << 30) + 1), Some(100))
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.cpus, l.memory_mb, l.pids),
            (Some(1.5), Some(2049), Some(100))
        );
        assert!(limits(Some(0.0), None, None).is_err());
    }
}
