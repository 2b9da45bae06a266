//! `warren task`: run work in a fresh workspace (a task), follow it, list, show, cancel.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::Method;
use warren_api::task::TaskState;
use warren_api::v1::{CreateTask, TaskCreated, TaskList, TaskView};

use crate::client::{seg, Client, SseParser};
use crate::output::{table, user_error};
use crate::remote::print_json;

/// `warren task`.
#[derive(Subcommand, Debug)]
pub(crate) enum TaskCmd {
    /// Run a command in a fresh workspace on a clone of a repository; follows its output and
    /// exits with its exit code (unless --detach).
    Run(Box<TaskRunArgs>),
    /// List tasks, newest first.
    List {
        /// Only tasks in this state (queued, provisioning, running, collecting, succeeded,
        /// failed, timed-out, canceled).
        #[arg(long)]
        state: Option<String>,
        /// Only tasks with this label (key=value).
        #[arg(long)]
        label: Option<String>,
        /// `me` (default), `all`, or a username.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a task: state, reason, exit code, pushed branch, artifacts, diff.
    Show {
        /// Task id.
        id: String,
    },
    /// Print a task's log.
    Logs {
        /// Task id.
        id: String,
        /// Follow until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task (a queued one at once; a running one is stopped, collected, removed).
    Cancel {
        /// Task id.
        id: String,
    },
}

/// `warren task run`.
#[derive(Args, Debug)]
pub(crate) struct TaskRunArgs {
    /// Template of the workspace.
    #[arg(long, short)]
    template: String,
    /// Template parameter (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Repository to clone (http(s)://, git://, ssh://).
    #[arg(long)]
    repo: Option<String>,
    /// Branch to start from (default: the remote's default branch).
    #[arg(long)]
    base: Option<String>,
    /// Branch to create for the work (default warren/task-<id>).
    #[arg(long)]
    branch: Option<String>,
    /// Time limit from the start of the run (default 1h).
    #[arg(long)]
    time_limit: Option<String>,
    /// Stop after this long without output or activity (default 15m).
    #[arg(long)]
    idle_limit: Option<String>,
    /// Label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Secret the workspace gets (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Files to collect, as globs relative to the repository (repeatable).
    #[arg(long = "artifact", value_name = "GLOB")]
    artifacts: Vec<String>,
    /// Keep the workspace when the task ends.
    #[arg(long)]
    keep: bool,
    /// No command: an agent drives the workspace with the printed credential.
    #[arg(long)]
    interactive: bool,
    /// Print the task and return at once.
    #[arg(long, short)]
    detach: bool,
    /// Team charged.
    #[arg(long)]
    team: Option<String>,
    /// The command (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

fn kv(flag: &str, s: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| {
            user_error(
                format!("--{flag} `{s}`: expected KEY=VALUE"),
                format!("e.g. --{flag} team=core"),
            )
        })
}

/// The exit code `warren task run` ends with: the command's, else 124 for a time-out, 130 for a
/// cancel, 1 for any other failure.
fn exit_of(t: &TaskView) -> u8 {
    match (t.state, t.exit_code) {
        (TaskState::Succeeded, _) => 0,
        (TaskState::TimedOut, _) => 124,
        (TaskState::Canceled, _) => 130,
        (_, Some(c)) if c != 0 => (c & 0xff) as u8,
        _ => 1,
    }
}

pub(crate) async fn task(c: &Client, cmd: TaskCmd, json: bool) -> Result<u8> {
    match cmd {
        TaskCmd::Run(a) => run(c, *a, json).await,
        TaskCmd::List {
            state,
            label,
            owner,
        } => {
            let mut q: Vec<(&str, String)> = vec![];
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(l) = label {
                q.push(("label", l));
            }
            if let Some(o) = owner {
                q.push(("owner", o));
            }
            let resp = c.send(c.request(Method::GET, "/tasks").query(&q)).await?;
            let list: TaskList = serde_json::from_slice(&resp.bytes().await?)?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.state.to_string(),
                        t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                        t.pushed_branch.clone().unwrap_or_default(),
                        t.created_at.clone(),
                        t.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "STATE", "EXIT", "PUSHED", "CREATED", "REASON"],
                    &rows
                )
            );
            Ok(0)
        }
        TaskCmd::Show { id } => {
            let t: TaskView = c
                .call(Method::GET, &format!("/tasks/{}", seg(&id)), None::<&()>)
                .await?;
            if json {
                print_json(&t)?;
            } else {
                show(&t);
            }
            Ok(0)
        }
        TaskCmd::Logs { id, follow } => {
            if follow {
                let t = follow_logs(c, &id).await?;
                return Ok(exit_of(&t));
            }
            let resp = c
                .send(c.request(Method::GET, &format!("/tasks/{}/logs", seg(&id))))
                .await?;
            let b = resp.bytes().await?;
            std::io::stdout().write_all(&b)?;
            Ok(0)
        }
        TaskCmd::Cancel { id } => {
            let t: TaskView = c
                .call(
                    Method::POST,
                    &format!("/tasks/{}/cancel", seg(&id)),
                    Some(&serde_json::json!({})),
                )
                .await?;
            if json {
                print_json(&t)?;
            } else {
                eprintln!("Task {} is {}.", t.id, t.state);
            }
            Ok(0)
        }
    }
}

fn show(t: &TaskView) {
    println!("id:        {}", t.id);
    println!("state:     {}", t.state);
    if let Some(r) = &t.reason {
        println!("reason:    {r}");
    }
    if let Some(c) = t.exit_code {
        println!("exit code: {c}");
    }
    println!("template:  {}", t.template);
    if let Some(r) = &t.repo {
        println!("repo:      {r}");
    }
    println!("branch:    {}", t.branch);
    if let Some(p) = &t.pushed_branch {
        println!("pushed:    {p}");
    }
    if let Some(w) = &t.workspace_id {
        println!("workspace: {w}{}", if t.keep { " (kept)" } else { "" });
    }
    for a in &t.collected {
        println!("artifact:  {} ({} bytes)", a.path, a.size);
    }
    if let Some(d) = &t.diff {
        if !d.is_empty() {
            println!("\n{d}");
        }
    }
}

async fn run(c: &Client, a: TaskRunArgs, json: bool) -> Result<u8> {
    let mut parameters = BTreeMap::new();
    for p in &a.params {
        let (k, v) = kv("param", p)?;
        parameters.insert(k, serde_json::Value::String(v));
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = kv("label", l)?;
        labels.insert(k, v);
    }
    if a.command.is_empty() && !a.interactive {
        return Err(user_error(
            "no command: give it after `--`",
            "e.g. warren task run -t T --repo URL -- sh -c 'make test'",
        ));
    }
    let body = CreateTask {
        template: a.template,
        parameters,
        team: a.team,
        repo: a.repo,
        base_branch: a.base,
        branch: a.branch,
        command: (!a.command.is_empty()).then_some(a.command),
        interactive: a.interactive,
        time_limit: a.time_limit,
        idle_limit: a.idle_limit,
        labels,
        secrets: a.secrets,
        artifacts: a.artifacts,
        keep: a.keep,
        ..Default::default()
    };
    let created: TaskCreated = c.call(Method::POST, "/tasks", Some(&body)).await?;
    if json && (a.detach || a.interactive) {
        print_json(&created)?;
        return Ok(0);
    }
    eprintln!(
        "Task {} queued (branch {}).",
        created.task.id, created.task.branch
    );
    if let Some(cred) = &created.credential {
        eprintln!("Workspace credential (shown once; valid until the task ends):");
        println!("{cred}");
    }
    if a.detach || a.interactive {
        if !a.interactive {
            println!("{}", created.task.id);
        }
        return Ok(0);
    }
    let t = follow_logs(c, &created.task.id).await?;
    if json {
        print_json(&t)?;
    } else {
        eprintln!(
            "Task {} {}{}.",
            t.id,
            t.state,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        if let Some(p) = &t.pushed_branch {
            eprintln!("Pushed branch {p}.");
        }
    }
    Ok(exit_of(&t))
}

/// Streams a task's log to stdout until it ends; returns the finished task.
async fn follow_logs(c: &Client, id: &str) -> Result<TaskView> {
    let resp = c
        .send(
            c.request(Method::GET, &format!("/tasks/{}/logs", seg(id)))
                .query(&[("follow", "true")])
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await?;
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut out = std::io::stdout();
    'outer: while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| c.transport_error(e))?;
        for ev in parser.push(&chunk) {
            if ev.event == "end" {
                break 'outer;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) {
                if let Some(t) = v["text"].as_str() {
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                }
            }
        }
    }
    c.call(Method::GET, &format!("/tasks/{}", seg(id)), None::<&()>)
        .await
}
