use serde_json::json;

use super::*;

const H: Duration = Duration::from_secs(3600);
const M: Duration = Duration::from_secs(60);

fn template(v: serde_json::Value) -> PolicyDefaults {
    serde_json::from_value(v).unwrap()
}

fn own(v: serde_json::Value) -> WorkspacePolicy {
    serde_json::from_value(v).unwrap()
}

/// A running workspace created and started at T0, observed at T0 + `after`.
fn running(after: Duration) -> Facts {
    let t0 = OffsetDateTime::from_unix_timestamp(1_795_424_400).unwrap(); // 2026-11-23 09:00 UTC
    Facts {
        now: t0 + after,
        state: WorkspaceState::Running,
        created_at: t0,
        started_at: Some(t0),
        stopped_at: None,
        deadline_at: None,
        last_activity: None,
        open_sessions: false,
        busy_cpu: false,
        starting_since: None,
        autostart_occurrence: None,
    }
}

fn stopped(stopped_for: Duration) -> Facts {
    let mut f = running(H + stopped_for);
    f.state = WorkspaceState::Stopped;
    f.stopped_at = Some(f.created_at + H);
    f
}

#[test]
fn reasons_round_trip_and_match_serde() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
    }
}

#[test]
fn template_policies_validate_with_the_field_named() {
    template(json!({})).validate().unwrap();
    template(json!({"autostop": "8h", "max_lifetime": "8h", "idle_timeout": "30m"}))
        .validate()
        .unwrap();
    let cases = [
        (
            json!({"autostop": "9h", "max_lifetime": "8h"}),
            "`autostop` (9h) is longer than `max_lifetime` (8h)",
        ),
        (
            json!({"idle_timeout": "2h", "max_lifetime": "1h30m"}),
            "`idle_timeout` (2h) is longer than `max_lifetime` (1h30m)",
        ),
        (
            json!({"idle_timeout": "soon"}),
            "`idle_timeout`: invalid duration \"soon\"",
        ),
        (
            json!({"ttl": "8d", "ceilings": {"ttl": "7d"}}),
            "`ttl` (8d) is longer than its ceiling `ceilings.ttl` (7d)",
        ),
        (
            json!({"activity": {"cpu_threshold": 0}}),
            "`activity.cpu_threshold` must be a percentage",
        ),
        (
            json!({"activity": {"cpu_threshold": -5}}),
            "`activity.cpu_threshold` must be a percentage",
        ),
        (
            json!({"ceilings": {"dormancy": "x"}}),
            "`ceilings.dormancy`: invalid duration",
        ),
    ];
    for (v, expected) in cases {
        let e = template(v.clone()).validate().unwrap_err();
        assert!(e.starts_with(expected), "{v}: {e}");
    }
    // Unknown fields and wrong types are refused by serde.
    assert!(serde_json::from_value::<PolicyDefaults>(json!({"ttl": 60})).is_err());
    assert!(serde_json::from_value::<PolicyDefaults>(json!({"lifetime": "1h"})).is_err());
}

#[test]
fn workspace_values_stay_within_the_templates_ceilings() {
    let t = template(json!({
        "idle_timeout": "30m", "autostop": "8h", "max_lifetime": "12h",
        "ceilings": {"idle_timeout": "2h"}
    }));
    // Within the explicit ceiling: longer than the default is fine.
    let e = resolve(Some(&t), Some(&own(json!({"idle_timeout": "2h"})))).unwrap();
    assert_eq!(e.idle_timeout, Some(2 * H));
    let err = resolve(Some(&t), Some(&own(json!({"idle_timeout": "3h"})))).unwrap_err();
    assert_eq!(
        err,
        "`idle_timeout` (3h) is longer than the template allows (2h)"
    );
    // No explicit ceiling: the default is the ceiling; shorter is fine.
    assert_eq!(
        resolve(Some(&t), Some(&own(json!({"autostop": "1h"}))))
            .unwrap()
            .autostop,
        Some(H)
    );
    let err = resolve(Some(&t), Some(&own(json!({"autostop": "9h"})))).unwrap_err();
    assert_eq!(
        err,
        "`autostop` (9h) is longer than the template allows (8h)"
    );
    // Nothing set by the template: free, except for max_lifetime.
    let e = resolve(Some(&t), Some(&own(json!({"ttl": "30d"})))).unwrap();
    assert_eq!(e.ttl, Some(30 * 24 * H));
    let t2 = template(json!({"max_lifetime": "4h", "ceilings": {"autostop": "10h"}}));
    let err = resolve(Some(&t2), Some(&own(json!({"autostop": "5h"})))).unwrap_err();
    assert_eq!(
        err,
        "`autostop` (5h) is longer than the template's `max_lifetime` (4h)"
    );
    // Ephemeral templates stay ephemeral.
    let eph = template(json!({"delete_on_stop": true}));
    assert!(resolve(Some(&eph), Some(&own(json!({"delete_on_stop": false})))).is_err());
    assert!(
        resolve(None, Some(&own(json!({"delete_on_stop": true}))))
            .unwrap()
            .delete_on_stop
    );
    // Autostart: own schedule, or off.
    let sched =
        template(json!({"autostart": {"schedule": "0 9 * * 1-5", "timezone": "Europe/Berlin"}}));
    assert!(resolve(Some(&sched), None).unwrap().autostart.is_some());
    assert!(
        resolve(Some(&sched), Some(&own(json!({"autostart": "off"}))))
            .unwrap()
            .autostart
            .is_none()
    );
    assert!(serde_json::from_value::<WorkspacePolicy>(json!({"autostart": "on"})).is_err());
    // A template may keep schedules its own (so an autostart cannot dodge dormancy).
    let fixed = template(json!({"dormancy": "30d", "ceilings": {"autostart": false}}));
    let err = resolve(
        Some(&fixed),
        Some(&own(json!({"autostart": {"schedule": "0 0 1 * *"}}))),
    )
    .unwrap_err();
    assert!(
        err.starts_with("`autostart`: the template does not let"),
        "{err}"
    );
    assert!(resolve(Some(&fixed), Some(&own(json!({"autostart": "off"})))).is_ok());
}

#[test]
fn dormancy_warning_is_at_most_half_the_dormancy() {
    let e = template(json!({"dormancy": "12h"})).effective().unwrap();
    assert_eq!(e.dormancy_warning, 6 * H);
    let e = template(json!({"dormancy": "30d"})).effective().unwrap();
    assert_eq!(e.dormancy_warning, DEFAULT_DORMANCY_WARNING);
}

#[test]
fn nothing_happens_without_a_policy() {
    let p = Effective::default();
    for f in [running(1000 * H), stopped(1000 * H)] {
        assert_eq!(evaluate(&p, &f), Evaluation::default());
    }
}

#[test]
fn an_idle_workspace_stops_after_the_idle_timeout_and_is_warned_first() {
    let p = template(json!({"idle_timeout": "30m"}))
        .effective()
        .unwrap();
    let mut f = running(20 * M);
    f.last_activity = Some(f.created_at + 5 * M);
    // Idle since 09:05: stops at 09:35; at 09:20 nothing is due and no warning yet.
    let e = evaluate(&p, &f);
    assert_eq!(e.due, None);
    assert_eq!(e.next.unwrap().verdict, Verdict::Stop(Reason::Idle));
    assert_eq!(e.next.unwrap().at, f.created_at + 35 * M);
    assert!(!e.warn);
    f.now = f.created_at + 31 * M;
    assert!(evaluate(&p, &f).warn);
    f.now = f.created_at + 35 * M;
    assert_eq!(evaluate(&p, &f).due, Some(Verdict::Stop(Reason::Idle)));
}

#[test]
fn a_silent_open_session_counts_as_activity_only_if_the_policy_says_so() {
    let mut f = running(10 * H);
    f.open_sessions = true;
    let counts = template(json!({"idle_timeout": "30m"}))
        .effective()
        .unwrap();
    let e = evaluate(&counts, &f);
    assert_eq!(e.due, None);
    assert_eq!(e.next.unwrap().at, f.now + 30 * M);
    let ignores = template(json!({"idle_timeout": "30m", "activity": {"open_sessions": false}}))
        .effective()
        .unwrap();
    assert_eq!(
        evaluate(&ignores, &f).due,
        Some(Verdict::Stop(Reason::Idle))
    );
}

#[test]
fn a_short_idle_timeout_with_a_session_open_warns_of_nothing() {
    // Current use pushes the idle stop back at every instant: it is never coming, so there is
    // no warning (else a timeout under five minutes would warn at every pass).
    let p = template(json!({"idle_timeout": "1m"})).effective().unwrap();
    let mut f = running(H);
    f.open_sessions = true;
    for step in 0..5 {
        f.now += Duration::from_secs(step);
        let e = evaluate(&p, &f);
        assert_eq!((e.due, e.warn), (None, false), "{e:?}");
    }
    f.open_sessions = false;
    f.last_activity = Some(f.now);
    assert!(evaluate(&p, &f).warn);
}

#[test]
fn an_agent_keepalive_or_busy_cpu_prevents_an_idle_stop() {
    let p = template(json!({"idle_timeout": "30m", "activity": {"cpu_threshold": 20}}))
        .effective()
        .unwrap();
    let mut f = running(3 * H);
    f.last_activity = Some(f.now - 29 * M);
    assert_eq!(evaluate(&p, &f).due, None);
    f.last_activity = Some(f.now - 31 * M);
    assert_eq!(evaluate(&p, &f).due, Some(Verdict::Stop(Reason::Idle)));
    f.busy_cpu = true;
    assert_eq!(evaluate(&p, &f).due, None);
}

#[test]
fn activity_before_the_run_started_does_not_count_against_it() {
    let p = template(json!({"idle_timeout": "30m"}))
        .effective()
        .unwrap();
    let mut f = running(20 * M);
    f.last_activity = Some(f.created_at - 10 * H);
    assert_eq!(evaluate(&p, &f).due, None);
}

#[test]
fn the_deadline_comes_from_autostop_or_an_extension_never_past_max_lifetime() {
    let p = template(json!({"autostop": "8h", "max_lifetime": "12h"}))
        .effective()
        .unwrap();
    let f = running(8 * H);
    assert_eq!(evaluate(&p, &f).due, Some(Verdict::Stop(Reason::Deadline)));
    // Extended during this run to 10h: not due at 8h.
    let mut g = running(8 * H);
    g.deadline_at = Some(g.created_at + 10 * H);
    assert_eq!(evaluate(&p, &g).due, None);
    g.now = g.created_at + 10 * H;
    assert_eq!(evaluate(&p, &g).due, Some(Verdict::Stop(Reason::Deadline)));
    // An extension past the cap stops at the cap, for max_lifetime.
    let mut h = running(12 * H);
    h.deadline_at = Some(h.created_at + 20 * H);
    assert_eq!(
        evaluate(&p, &h).due,
        Some(Verdict::Stop(Reason::MaxLifetime))
    );
    // An extension from an earlier run does not apply to this one.
    let mut k = running(8 * H);
    k.deadline_at = Some(k.created_at - H);
    assert_eq!(evaluate(&p, &k).due, Some(Verdict::Stop(Reason::Deadline)));
    assert_eq!(
        deadline(&p, k.created_at, Some(k.created_at + 13 * H)),
        Some((k.created_at + 12 * H, Reason::MaxLifetime))
    );
}

#[test]
fn ttl_deletes_in_any_state_and_wins_over_a_stop() {
    let p = template(json!({"ttl": "1d", "autostop": "1h"}))
        .effective()
        .unwrap();
    let f = running(24 * H);
    assert_eq!(evaluate(&p, &f).due, Some(Verdict::Delete(Reason::Ttl)));
    let mut s = stopped(23 * H);
    assert_eq!(evaluate(&p, &s).due, Some(Verdict::Delete(Reason::Ttl)));
    s.state = WorkspaceState::Deleting;
    assert_eq!(evaluate(&p, &s).due, None);
}

#[test]
fn dormant_workspaces_are_warned_then_deleted() {
    let p = template(json!({"dormancy": "7d"})).effective().unwrap();
    let e = evaluate(&p, &stopped(5 * 24 * H));
    assert_eq!((e.due, e.warn), (None, false));
    let e = evaluate(&p, &stopped(6 * 24 * H + M));
    assert_eq!((e.due, e.warn), (None, true));
    assert_eq!(e.next.unwrap().verdict, Verdict::Delete(Reason::Dormancy));
    assert_eq!(
        evaluate(&p, &stopped(7 * 24 * H)).due,
        Some(Verdict::Delete(Reason::Dormancy))
    );
}

#[test]
fn ephemeral_workspaces_are_deleted_once_stopped() {
    let p = template(json!({"delete_on_stop": true}))
        .effective()
        .unwrap();
    assert_eq!(
        evaluate(&p, &stopped(Duration::ZERO)).due,
        Some(Verdict::Delete(Reason::DeleteOnStop))
    );
    assert_eq!(evaluate(&p, &running(H)).due, None);
}

#[test]
fn failed_workspaces_are_cleaned_up() {
    let p = template(json!({"failure_cleanup": "1h"}))
        .effective()
        .unwrap();
    let mut f = stopped(30 * M);
    f.state = WorkspaceState::Failed;
    assert_eq!(evaluate(&p, &f).due, None);
    f.now += 30 * M;
    assert_eq!(
        evaluate(&p, &f).due,
        Some(Verdict::Delete(Reason::FailureCleanup))
    );
}

#[test]
fn a_stuck_start_fails_after_the_start_timeout() {
    let p = template(json!({"start_timeout": "10m"}))
        .effective()
        .unwrap();
    let mut f = running(H);
    f.state = WorkspaceState::Starting;
    f.starting_since = Some(f.now - 9 * M);
    let e = evaluate(&p, &f);
    assert_eq!((e.due, e.warn), (None, false));
    f.starting_since = Some(f.now - 10 * M);
    assert_eq!(
        evaluate(&p, &f).due,
        Some(Verdict::FailStart(Reason::StartTimeout))
    );
    // The default applies without a policy.
    f.starting_since = Some(f.now - DEFAULT_START_TIMEOUT);
    assert_eq!(
        evaluate(&Effective::default(), &f).due,
        Some(Verdict::FailStart(Reason::StartTimeout))
    );
}

#[test]
fn autostart_fires_once_per_occurrence_after_the_stop_and_not_when_missed() {
    let p = template(json!({"autostart": {"schedule": "0 9 * * *"}}))
        .effective()
        .unwrap();
    let mut f = stopped(H); // stopped at 10:00, now 11:00
                            // The 09:00 occurrence is before the stop: nothing.
    f.autostart_occurrence = Some(f.created_at);
    assert_eq!(evaluate(&p, &f).due, None);
    // The next day's 09:00, seen at 09:01: start.
    f.now = f.created_at + 24 * H + M;
    f.autostart_occurrence = Some(f.created_at + 24 * H);
    assert_eq!(
        evaluate(&p, &f).due,
        Some(Verdict::Start(Reason::Autostart))
    );
    // Seen only at 10:00 (the server was down): missed, skipped.
    f.now = f.created_at + 25 * H;
    assert_eq!(evaluate(&p, &f).due, None);
    // Without a schedule in force the occurrence means nothing.
    f.now = f.created_at + 24 * H + M;
    assert_eq!(evaluate(&Effective::default(), &f).due, None);
}

/// A small deterministic generator, so the property test needs no dependency.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn opt_dur(&mut self) -> Option<String> {
        match self.next(3) {
            0 => None,
            _ => Some(format!("{}m", 1 + self.next(600))),
        }
    }
}

#[test]
fn evaluation_properties_hold_for_random_policies_and_facts() {
    let mut g = Lcg(42);
    let states = WorkspaceState::ALL;
    for _ in 0..20_000 {
        let autostop = g.opt_dur();
        let mut t = PolicyDefaults {
            ttl: g.opt_dur(),
            autostop,
            idle_timeout: g.opt_dur(),
            dormancy: g.opt_dur(),
            failure_cleanup: g.opt_dur(),
            delete_on_stop: Some(g.next(4) == 0),
            ..Default::default()
        };
        if g.next(2) == 0 {
            t.max_lifetime = Some("600m".into());
        }
        let Ok(p) = t.effective() else { continue };
        let mut f = running(Duration::from_secs(g.next(48 * 3600)));
        f.state = states[g.next(states.len() as u64) as usize];
        f.stopped_at =
            Some(f.created_at + Duration::from_secs(g.next(48 * 3600))).filter(|s| *s <= f.now);
        f.last_activity =
            Some(f.created_at + Duration::from_secs(g.next(48 * 3600))).filter(|a| *a <= f.now);
        f.open_sessions = g.next(2) == 0;
        f.deadline_at =
            (g.next(2) == 0).then(|| f.created_at + Duration::from_secs(g.next(48 * 3600)));
        let e = evaluate(&p, &f);
        // Pure: the same facts give the same answer.
        assert_eq!(evaluate(&p, &f), e);
        if let Some(n) = e.next {
            assert!(n.at > f.now, "{f:?}");
        }
        if e.warn {
            assert!(e.due.is_none() && e.next.is_some());
        }
        match e.due {
            Some(Verdict::Stop(r)) => {
                assert_eq!(f.state, WorkspaceState::Running);
                assert!(matches!(
                    r,
                    Reason::Idle | Reason::Deadline | Reason::MaxLifetime
                ));
                // A run never outlives max_lifetime: at the cap it is due.
            }
            Some(Verdict::Delete(Reason::Ttl)) => assert!(f.created_at + p.ttl.unwrap() <= f.now),
            Some(Verdict::Delete(_)) => {
                assert!(matches!(
                    f.state,
                    WorkspaceState::Stopped | WorkspaceState::Failed
                ))
            }
            Some(Verdict::Start(_)) | Some(Verdict::FailStart(_)) => {
                unreachable!("no facts for these")
            }
            None => {}
        }
        // A running workspace past its max lifetime always has something due.
        if f.state == WorkspaceState::Running
            && p.max_lifetime.is_some_and(|m| f.created_at + m <= f.now)
        {
            assert!(e.due.is_some(), "{p:?} {f:?}");
        }
        // Time only brings things closer: what is due stays due a minute later, unless it was
        // a stop replaced by a deletion.
        if let Some(d) = e.due {
            let mut later = f.clone();
            later.now += M;
            let again = evaluate(&p, &later).due;
            assert!(
                again == Some(d) || matches!(again, Some(Verdict::Delete(_))),
                "{d:?} then {again:?}"
            );
        }
    }
}
