//! `warren quota` (show, set, unset, override, overrides, revoke) and `warren cost` against a
//! server.

use anyhow::Result;
use reqwest::Method;
use warren_api::v1::{
    CreateOverride, MyQuota, Quota, QuotaLimits, QuotaOverride, QuotaStatus, UsageReport,
};

use crate::cli::{CostArgs, QuotaCmd, QuotaSubject};
use crate::client::{seg, Client};
use crate::output::{table, user_error};
use crate::remote::print_json;

/// The API path of a subject (`/quotas/users/alice`), or of the default.
fn path(who: &QuotaSubject, default_allowed: bool) -> Result<String> {
    match (&who.user, &who.team, who.default) {
        (Some(u), None, false) => Ok(format!("/quotas/users/{}", seg(u))),
        (None, Some(t), false) => Ok(format!("/quotas/teams/{}", seg(t))),
        (None, None, true) if default_allowed => Ok("/quotas/default".into()),
        _ => Err(user_error(
            if default_allowed {
                "say whose quota: --user NAME, --team NAME or --default"
            } else {
                "say whose: --user NAME or --team NAME"
            },
            "e.g. warren quota show --user alice",
        )),
    }
}

fn units(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

fn limit<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "unlimited".into())
}

/// A quota status as a few lines for people.
fn print_status(s: &QuotaStatus) {
    let l = &s.limits;
    println!("{} {} (limits: {})", s.subject, s.name, s.source);
    if s.unlimited {
        println!("  an override lifts every limit");
    }
    println!(
        "  workspaces running  {} of {}",
        s.workspaces,
        limit(l.max_workspaces)
    );
    println!(
        "  cpus                {} of {}",
        units(s.cpus),
        limit(l.max_cpus.map(units))
    );
    println!(
        "  memory (MiB)        {} of {}",
        s.memory_mb,
        limit(l.max_memory_mb)
    );
    if s.unlimited_workspaces > 0 {
        println!(
            "  ({} running without a CPU or memory limit)",
            s.unlimited_workspaces
        );
    }
    match &s.budget {
        Some(b) => {
            let extra = if b.extra > 0.0 {
                format!(" + {} extra", units(b.extra))
            } else {
                String::new()
            };
            println!(
                "  budget              {} of {}{extra} this {} ({}%, {} left; then {})",
                units(b.used),
                units(b.budget),
                b.period,
                b.percent.floor(),
                units(b.left),
                b.on_exhausted
            );
        }
        None => println!("  budget              none"),
    }
    for o in &s.overrides {
        println!("  override {}: {}", o.id, describe_override(o));
    }
}

fn describe_override(o: &QuotaOverride) -> String {
    let what = if o.unlimited {
        "unlimited".to_owned()
    } else {
        format!("+{} budget", units(o.extra_budget.unwrap_or(0.0)))
    };
    let note = o
        .note
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!("{what} until {}{note}", o.expires_at)
}

/// `warren quota ...`.
pub async fn quota(c: &Client, cmd: QuotaCmd, json: bool) -> Result<u8> {
    match cmd {
        QuotaCmd::Show { who } => {
            if who.user.is_none() && who.team.is_none() && !who.default {
                let me: MyQuota = c.call(Method::GET, "/me/quota", None::<&()>).await?;
                if json {
                    print_json(&me)?;
                } else {
                    print_status(&me.user);
                    for t in &me.teams {
                        print_status(t);
                    }
                }
            } else if who.default {
                let q: Quota = c.call(Method::GET, "/quotas/default", None::<&()>).await?;
                if json {
                    print_json(&q)?;
                } else {
                    println!(
                        "default quota of users: {}",
                        serde_json::to_string(&q.limits)?
                    );
                }
            } else {
                let s: QuotaStatus = c
                    .call(Method::GET, &path(&who, false)?, None::<&()>)
                    .await?;
                if json {
                    print_json(&s)?;
                } else {
                    print_status(&s);
                }
            }
            Ok(0)
        }
        QuotaCmd::Set {
            who,
            max_workspaces,
            max_cpus,
            max_memory,
            budget,
            period,
            on_exhausted,
        } => {
            let body = QuotaLimits {
                max_workspaces,
                max_cpus,
                max_memory_mb: max_memory.map(|b| b >> 20),
                budget,
                budget_period: period,
                on_exhausted,
            };
            let p = path(&who, true)?;
            let v: serde_json::Value = c.call(Method::PUT, &p, Some(&body)).await?;
            if json {
                print_json(&v)?;
            } else {
                eprintln!("Quota set: {}", serde_json::to_string(&body)?);
            }
            Ok(0)
        }
        QuotaCmd::Unset { who } => {
            let p = path(&who, true)?;
            c.call_empty(Method::DELETE, &p, None::<&()>).await?;
            if json {
                print_json(&serde_json::json!({ "removed": p }))?;
            } else {
                eprintln!("Quota removed.");
            }
            Ok(0)
        }
        QuotaCmd::Override {
            who,
            extra_budget,
            unlimited,
            duration,
            until,
            note,
        } => {
            let body = CreateOverride {
                extra_budget,
                unlimited,
                expires_at: until,
                duration,
                note,
            };
            let p = format!("{}/overrides", path(&who, false)?);
            let o: QuotaOverride = c.call(Method::POST, &p, Some(&body)).await?;
            if json {
                print_json(&o)?;
            } else {
                eprintln!(
                    "Override {} granted to {} {}: {}.",
                    o.id,
                    o.subject,
                    o.name,
                    describe_override(&o)
                );
                println!("{}", o.id);
            }
            Ok(0)
        }
        QuotaCmd::Overrides { who } => {
            let p = format!("{}/overrides", path(&who, false)?);
            let list: Vec<QuotaOverride> = c.call(Method::GET, &p, None::<&()>).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|o| {
                        vec![
                            o.id.clone(),
                            if o.unlimited {
                                "unlimited".into()
                            } else {
                                format!("+{}", units(o.extra_budget.unwrap_or(0.0)))
                            },
                            o.expires_at.clone(),
                            if o.active {
                                "yes".into()
                            } else if o.revoked_at.is_some() {
                                "revoked".into()
                            } else {
                                "expired".into()
                            },
                            o.created_by.clone(),
                            o.note.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "GRANTS", "EXPIRES", "ACTIVE", "BY", "NOTE"], &rows)
                );
            }
            Ok(0)
        }
        QuotaCmd::Revoke { who, id } => {
            let p = format!("{}/overrides/{}", path(&who, false)?, seg(&id));
            c.call_empty(Method::DELETE, &p, None::<&()>).await?;
            if json {
                print_json(&serde_json::json!({ "revoked": id }))?;
            } else {
                eprintln!("Override {id} revoked.");
            }
            Ok(0)
        }
    }
}

/// `warren cost`.
pub async fn cost(c: &Client, a: CostArgs, json: bool) -> Result<u8> {
    if json && a.csv {
        return Err(user_error(
            "--json and --csv are exclusive",
            "pick one export format",
        ));
    }
    let mut q: Vec<(&str, String)> = vec![("group_by", a.by.clone())];
    if let Some(f) = &a.from {
        q.push(("from", f.clone()));
    }
    if let Some(t) = &a.to {
        q.push(("to", t.clone()));
    }
    if a.csv {
        q.push(("format", "csv".into()));
        let resp = c.send(c.request(Method::GET, "/usage").query(&q)).await?;
        let text = resp.text().await.map_err(|e| c.transport_error(e))?;
        print!("{text}");
        return Ok(0);
    }
    let resp = c.send(c.request(Method::GET, "/usage").query(&q)).await?;
    let bytes = resp.bytes().await.map_err(|e| c.transport_error(e))?;
    let r: UsageReport = serde_json::from_slice(&bytes).map_err(|e| {
        user_error(
            format!("unexpected answer from the server to /usage: {e}"),
            "the server may run a different version of Warren than this CLI",
        )
    })?;
    if json {
        print_json(&r)?;
        return Ok(0);
    }
    let head = a.by.to_ascii_uppercase();
    let mut rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                row.name.clone(),
                format!("{:.2}", row.hours_running),
                format!("{:.2}", row.hours_stopped),
                format!("{:.2}", row.cost),
            ]
        })
        .collect();
    rows.push(vec![
        "TOTAL".into(),
        format!("{:.2}", r.total.hours_running),
        format!("{:.2}", r.total.hours_stopped),
        format!("{:.2}", r.total.cost),
    ]);
    eprintln!("Usage from {} to {}:", r.from, r.to);
    print!(
        "{}",
        table(
            &[head.as_str(), "HOURS RUNNING", "HOURS STOPPED", "COST"],
            &rows
        )
    );
    Ok(0)
}
