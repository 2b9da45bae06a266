//! `warren policy`, `warren keepalive` and `warren events`: a workspace's lifecycle policy, the
//! keep-alive an agent calls while it works, and the events that say what happened and why.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_api::policy::{Autostart, AutostartChoice, Off, WorkspacePolicy};
use warren_api::template::parse_duration;
use warren_api::v1::{EventView, PolicyStatus};

use crate::client::{seg, Client};
use crate::output::{table, user_error};

/// `warren policy`.
#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Show the policy in force (template defaults and ceilings, the workspace's own values) and
    /// what it does next.
    Show {
        /// Workspace name.
        workspace: String,
    },
    /// Set the workspace's own values, within the template's ceilings (others keep theirs).
    Set(PolicySetArgs),
    /// Drop the workspace's own values: the template's policy applies.
    Reset {
        /// Workspace name.
        workspace: String,
    },
}

/// `warren policy set`.
#[derive(Args, Debug)]
pub(crate) struct PolicySetArgs {
    /// Workspace name.
    pub workspace: String,
    /// Delete the workspace this long after it was created (e.g. 7d).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Stop each run this long after it starts, unless extended (e.g. 8h).
    #[arg(long)]
    pub autostop: Option<String>,
    /// Stop after this long without activity (e.g. 30m).
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Delete the workspace once it has been stopped this long (e.g. 30d).
    #[arg(long)]
    pub dormancy: Option<String>,
    /// Start it on a cron schedule (`"0 9 * * 1-5"`), or `off`.
    #[arg(long, value_name = "CRON|off")]
    pub autostart: Option<String>,
    /// Time zone of --autostart (IANA name, default UTC).
    #[arg(long, requires = "autostart")]
    pub timezone: Option<String>,
    /// Delete the workspace as soon as it stops.
    #[arg(long, value_name = "BOOL")]
    pub delete_on_stop: Option<bool>,
    /// Drop the workspace's own value of these fields (ttl, autostop, idle-timeout, dormancy,
    /// autostart, delete-on-stop).
    #[arg(long, value_name = "FIELD", value_delimiter = ',')]
    pub unset: Vec<String>,
}

/// `warren events`.
#[derive(Args, Debug)]
pub(crate) struct EventsArgs {
    /// Only this workspace's events.
    pub workspace: Option<String>,
    /// Keep printing events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// Only kinds starting with this (`workspace.stopped`, `budget.`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Everyone's events (admins and auditors).
    #[arg(long, conflicts_with_all = ["owner", "workspace"])]
    pub all: bool,
    /// This user's events.
    #[arg(long, conflicts_with = "workspace")]
    pub owner: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn check_duration(flag: &str, v: &Option<String>) -> Result<()> {
    if let Some(v) = v {
        parse_duration(v).map_err(|e| {
            user_error(
                format!("--{flag} `{v}`: {e}"),
                "durations look like 90s, 30m, 8h, 7d or 1h30m",
            )
        })?;
    }
    Ok(())
}

/// `warren policy ...`.
pub(crate) async fn policy(c: &Client, cmd: PolicyCmd, json: bool) -> Result<u8> {
    let status = match cmd {
        PolicyCmd::Show { workspace } => c.policy(&workspace).await?,
        PolicyCmd::Reset { workspace } => {
            c.set_policy(&workspace, &WorkspacePolicy::default())
                .await?
        }
        PolicyCmd::Set(a) => {
            for (flag, v) in [
                ("ttl", &a.ttl),
                ("autostop", &a.autostop),
                ("idle-timeout", &a.idle_timeout),
                ("dormancy", &a.dormancy),
            ] {
                check_duration(flag, v)?;
            }
            let mut own = c.policy(&a.workspace).await?.own;
            for field in &a.unset {
                match field.as_str() {
                    "ttl" => own.ttl = None,
                    "autostop" => own.autostop = None,
                    "idle-timeout" | "idle_timeout" => own.idle_timeout = None,
                    "dormancy" => own.dormancy = None,
                    "autostart" => own.autostart = None,
                    "delete-on-stop" | "delete_on_stop" => own.delete_on_stop = None,
                    other => return Err(user_error(
                        format!("--unset `{other}` is not a policy field"),
                        "fields: ttl, autostop, idle-timeout, dormancy, autostart, delete-on-stop",
                    )),
                }
            }
            own.ttl = a.ttl.or(own.ttl);
            own.autostop = a.autostop.or(own.autostop);
            own.idle_timeout = a.idle_timeout.or(own.idle_timeout);
            own.dormancy = a.dormancy.or(own.dormancy);
            own.delete_on_stop = a.delete_on_stop.or(own.delete_on_stop);
            if let Some(cron) = a.autostart {
                own.autostart = Some(if cron == "off" {
                    AutostartChoice::Off(Off::Off)
                } else {
                    AutostartChoice::Schedule(Autostart {
                        schedule: cron,
                        timezone: a.timezone.unwrap_or_else(|| "UTC".into()),
                    })
                });
            }
            c.set_policy(&a.workspace, &own).await?
        }
    };
    if json {
        print_json(&status)?;
    } else {
        print!("{}", describe(&status));
    }
    Ok(0)
}

/// The policy status for people.
fn describe(s: &PolicyStatus) -> String {
    let mut out = String::new();
    match &s.next {
        Some(n) => out.push_str(&format!(
            "Next: {} at {} ({})\n",
            n.action.replace('_', " "),
            n.at,
            n.reason.as_str().replace('_', " ")
        )),
        None => out.push_str("Next: nothing scheduled\n"),
    }
    if let Some(d) = &s.deadline_at {
        out.push_str(&format!("Deadline: {d} (`warren extend` moves it)\n"));
    }
    out.push_str(&format!(
        "Last activity: {}{}\n",
        s.last_activity_at.as_deref().unwrap_or("none"),
        if s.open_sessions {
            " (a session is open)"
        } else {
            ""
        }
    ));
    if let Some(r) = &s.stop_reason {
        out.push_str(&format!(
            "Last stop: {} ({r})\n",
            s.stopped_at.as_deref().unwrap_or("?")
        ));
    }
    if let Some(why) = &s.own_ignored {
        out.push_str(&format!("warning: {why}\n"));
    }
    let e = &s.effective;
    let own = serde_json::to_value(&s.own).unwrap_or_default();
    let source = |field: &str| {
        if own.get(field).is_some() {
            "workspace"
        } else {
            "template"
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = vec![
        vec!["ttl".into(), opt(&e.ttl), source("ttl").into()],
        vec![
            "autostop".into(),
            opt(&e.autostop),
            source("autostop").into(),
        ],
        vec![
            "idle_timeout".into(),
            opt(&e.idle_timeout),
            source("idle_timeout").into(),
        ],
        vec![
            "max_lifetime".into(),
            opt(&e.max_lifetime),
            "template".into(),
        ],
        vec![
            "autostart".into(),
            e.autostart
                .as_ref()
                .map(|a| format!("{} ({})", a.schedule, a.timezone))
                .unwrap_or_else(|| "-".into()),
            source("autostart").into(),
        ],
        vec![
            "dormancy".into(),
            opt(&e.dormancy),
            source("dormancy").into(),
        ],
        vec![
            "delete_on_stop".into(),
            e.delete_on_stop.to_string(),
            source("delete_on_stop").into(),
        ],
        vec![
            "start_timeout".into(),
            e.start_timeout.clone(),
            "template".into(),
        ],
        vec![
            "failure_cleanup".into(),
            opt(&e.failure_cleanup),
            "template".into(),
        ],
        vec![
            "open sessions count".into(),
            e.open_sessions_count.to_string(),
            "template".into(),
        ],
        vec![
            "cpu_threshold".into(),
            e.cpu_threshold
                .map(|t| format!("{t}%"))
                .unwrap_or_else(|| "-".into()),
            "template".into(),
        ],
    ];
    out.push_str(&table(&["POLICY", "VALUE", "FROM"], &rows));
    out
}

/// `warren keepalive WS [--every D]`.
pub(crate) async fn keepalive(
    c: &Client,
    workspace: &str,
    every: Option<String>,
    json: bool,
) -> Result<u8> {
    let every = every
        .map(|e| {
            parse_duration(&e)
                .map_err(|err| user_error(format!("--every `{e}`: {err}"), "e.g. --every 1m"))
        })
        .transpose()?;
    let mut failures = 0u32;
    loop {
        let s = match c.keepalive(workspace).await {
            Ok(s) => {
                failures = 0;
                s
            }
            // With --every, a passing failure (the server restarting, the network) must not end
            // the loop that keeps an agent's workspace alive: retry sooner, give up after a while.
            Err(e) if every.is_some() && failures < 10 => {
                failures += 1;
                eprintln!("warning: keep-alive failed ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(2 * u64::from(failures))).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if json {
            println!("{}", serde_json::to_string(&s)?);
        } else if every.is_none() {
            match &s.next {
                Some(n) => eprintln!(
                    "Kept {workspace} alive; next: {} at {} ({}).",
                    n.action.replace('_', " "),
                    n.at,
                    n.reason.as_str().replace('_', " ")
                ),
                None => eprintln!("Kept {workspace} alive; no policy stops it."),
            }
        }
        match every {
            Some(d) => tokio::time::sleep(d.max(Duration::from_secs(1))).await,
            None => return Ok(0),
        }
    }
}

fn event_line(e: &EventView) -> String {
    format!(
        "{}  {:<26} {:<16} {}",
        e.at,
        e.kind,
        e.workspace_name.as_deref().unwrap_or("-"),
        e.message
    )
}

/// `warren events`.
pub(crate) async fn events(c: &Client, a: EventsArgs, json: bool) -> Result<u8> {
    let path = match &a.workspace {
        Some(ws) => format!("/workspaces/{}/events", seg(ws)),
        None => "/events".to_owned(),
    };
    let mut query: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    if let Some(k) = a.kind {
        query.push(("kind", k));
    }
    if a.all {
        query.push(("owner", "all".into()));
    } else if let Some(o) = a.owner {
        query.push(("owner", o));
    }
    let print = |e: EventView| {
        if json {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        } else {
            println!("{}", event_line(&e));
        }
    };
    if a.follow {
        c.follow_events(&path, &query, print).await?;
    } else {
        let page = c.events(&path, &query).await?;
        if json {
            print_json(&page.events)?;
        } else {
            page.events.into_iter().for_each(print);
        }
    }
    Ok(0)
}
