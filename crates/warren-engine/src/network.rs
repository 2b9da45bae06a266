//! Workspace networks as the control plane sees them: the plan in force (stored with the workspace,
//! handed to the runtime before every start and at every change), the workspace's address and
//! counters, and the runtime's denial journal turned into `network.denied` events.

use warren_runtime::network::{Attachment, Denial, EgressPlan, NetCounters};
use warren_store::{NetworkColumns, NewEvent, WorkspaceRecord};

use crate::{blocking, Engine, EngineError, WsRef};

/// The `kv` key of how far the denial journal has been read.
const JOURNAL_CURSOR: &str = "network.denials.cursor";

impl Engine {
    /// The network workspaces get: Warren's (an address on the bridge, NAT, the resolver, the plan
    /// enforced), except under gVisor, whose own network stack Warren cannot police yet: those get
    /// loopback only (nothing gets out, which is the safe side of a policy).
    pub(crate) fn workspace_network(&self) -> warren_runtime::Network {
        if self.cfg.oci.is_sandboxed_kernel() {
            warren_runtime::Network::Isolated
        } else {
            warren_runtime::Network::Egress
        }
    }

    /// Removes the host network state (chains, sets, veths, addresses) of workspaces that are gone
    /// or no longer running: what a crash left behind.
    pub(crate) async fn gc_network(&self) -> Result<(), EngineError> {
        let live: Vec<String> = self.store.list().await?.into_iter().map(|r| r.id).collect();
        let rt = self.runtime.clone();
        blocking(move || Ok(rt.gc_network(&live)?)).await
    }

    /// The plan in force for a workspace: the one recorded with it, or the engine's default.
    pub async fn egress_plan(&self, rec: &WorkspaceRecord) -> Result<EgressPlan, EngineError> {
        let cols = self
            .store
            .network_columns(&rec.id)
            .await?
            .unwrap_or_default();
        match cols.plan.as_deref() {
            None | Some("") => Ok(self.cfg.default_egress.clone()),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                EngineError::Internal(format!(
                    "workspace {} has an unreadable network plan: {e}",
                    rec.name
                ))
            }),
        }
    }

    /// Records a workspace's own network policy and the plan in force, and hands the plan to the
    /// runtime at once when the workspace exists there (a running one follows it from its next
    /// connection and name lookup). A workspace not created yet gets it at its first start.
    pub async fn set_network(
        &self,
        rec: &WorkspaceRecord,
        own: Option<String>,
        plan: &EgressPlan,
    ) -> Result<(), EngineError> {
        let json = serde_json::to_string(plan).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.store
            .set_network_columns(
                &rec.id,
                &NetworkColumns {
                    own,
                    plan: Some(json),
                },
            )
            .await?;
        let rt = self.runtime.clone();
        let id = rec.id.clone();
        let plan = plan.clone();
        blocking(move || {
            if rt.address(&id).is_some() {
                rt.set_egress(&id, &plan)?;
            }
            Ok(())
        })
        .await
    }

    /// Applies the workspace's recorded plan again if it is not `applied` (it changed meanwhile).
    pub(crate) async fn reapply_if_changed(
        &self,
        rec: &WorkspaceRecord,
        applied: &EgressPlan,
    ) -> Result<(), EngineError> {
        let mut applied = applied.clone();
        loop {
            let latest = self.egress_plan(rec).await?;
            if latest == applied {
                return Ok(());
            }
            let rt = self.runtime.clone();
            let id = rec.id.clone();
            let plan = latest.clone();
            blocking(move || Ok(rt.set_egress(&id, &plan)?)).await?;
            applied = latest;
        }
    }

    /// The workspace's address on Warren's network, if it has one (cheap: no counters read).
    pub async fn address(
        &self,
        ws: impl Into<WsRef>,
    ) -> Result<Option<std::net::Ipv4Addr>, EngineError> {
        let rec = self.get(ws).await?;
        Ok(self.runtime.address(&rec.id))
    }

    /// The workspace's address on Warren's network and its counters (`None`: it has none, e.g.
    /// it was never started or its runtime has no network of Warren's).
    pub async fn attachment(
        &self,
        ws: impl Into<WsRef>,
    ) -> Result<Option<(Attachment, NetCounters)>, EngineError> {
        let rec = self.get(ws).await?;
        let rt = self.runtime.clone();
        blocking(move || Ok(rt.attachment(&rec.id)?)).await
    }

    /// Turns new records of the runtime's denial journal into `network.denied` events of the
    /// workspaces they concern (records of workspaces that are gone are skipped). Returns the
    /// records that became events (the server also appends them to the workspace's session
    /// audit). Idempotent across restarts: the read position is stored after the events, and an
    /// event's dedupe key is its journal position, so a record is returned once.
    pub async fn ingest_denials(&self) -> Result<Vec<(WorkspaceRecord, Denial)>, EngineError> {
        let from: u64 = self
            .store
            .kv_get(JOURNAL_CURSOR)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rt = self.runtime.clone();
        let (records, next) = blocking(move || Ok(rt.denials(from)?)).await?;
        let mut recorded = Vec::new();
        for (i, d) in records.into_iter().enumerate() {
            let Some(rec) = self.store.get(&d.workspace).await? else {
                continue;
            };
            let mut ev = NewEvent::about("network.denied", &rec, denial_message(&d));
            ev.reason = Some(d.kind.clone());
            ev.data = serde_json::to_value(&d).unwrap_or_default();
            ev.dedupe_key = Some(format!("network.denied:{from}:{i}"));
            if self.store.insert_event(&ev).await?.is_some() {
                // The workspace's session audit too (hash-chained, exported with its session).
                let session = warren_store::session::SessionEvent::EgressDenied {
                    reason: d.kind.clone(),
                    address: d.address.map(|a| a.to_string()),
                    port: d.port,
                    name: d.name.clone(),
                    why: d.why.clone(),
                    count: d.count,
                    time: d.time.clone(),
                };
                self.store
                    .append_audit(warren_store::session::session_record(&rec, None, &session))
                    .await?;
                recorded.push((rec, d));
            }
        }
        // A crash before this line reads the same records again next time; their dedupe keys make
        // the events already written no-ops.
        if next != from {
            self.store.kv_set(JOURNAL_CURSOR, &next.to_string()).await?;
        }
        Ok(recorded)
    }
}

/// The plan of a workspace under one policy (a template's, or a server's default).
pub fn plan_of(
    policy: &warren_api::net::NetworkPolicy,
) -> Result<EgressPlan, warren_api::net::RuleError> {
    let (stage, limits) = policy.check()?;
    Ok(EgressPlan {
        stages: vec![stage],
        limits,
    })
}

/// Everything public but the protected ranges: host-local workspaces' plan.
pub fn allow_all() -> EgressPlan {
    EgressPlan {
        stages: vec![warren_api::net::Checked {
            mode: warren_api::net::EgressMode::AllowAll,
            allow: Vec::new(),
            deny: Vec::new(),
        }],
        limits: Default::default(),
    }
}

/// One line about a denial, for people.
pub fn denial_message(d: &Denial) -> String {
    let what = match (&d.name, d.address, d.port) {
        (Some(n), Some(a), Some(p)) => format!("{n} ({a}:{p})"),
        (Some(n), _, _) => n.clone(),
        (None, Some(a), Some(p)) => format!("{a}:{p}"),
        (None, Some(a), None) => a.to_string(),
        (None, None, _) => "?".into(),
    };
    let proto = d
        .protocol
        .as_deref()
        .map(|p| format!(" {p}"))
        .unwrap_or_default();
    let times = if d.count > 1 {
        format!(" ({} times)", d.count)
    } else {
        String::new()
    };
    if d.kind == "suppressed" {
        return format!("refusals not recorded one by one: {}", d.why);
    }
    let kind = match d.kind.as_str() {
        "dns" => "name lookup refused",
        "proxy" => "HTTP/TLS destination refused",
        _ => "connection refused",
    };
    format!("{kind}:{proto} {what}: {}{times}", d.why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(kind: &str) -> Denial {
        Denial {
            time: "2026-11-23T08:00:00Z".into(),
            workspace: "w".into(),
            kind: kind.into(),
            address: Some("203.0.113.9".parse().unwrap()),
            port: Some(443),
            protocol: Some("tcp".into()),
            name: None,
            why: "deny 203.0.113.0/24".into(),
            count: 1,
        }
    }

    #[test]
    fn messages_name_the_destination_and_the_reason() {
        assert_eq!(
            denial_message(&denial("connect")),
            "connection refused: tcp 203.0.113.9:443: deny 203.0.113.0/24"
        );
        let mut d = denial("dns");
        d.name = Some("evil.test".into());
        d.address = None;
        d.port = None;
        d.protocol = None;
        d.why = "not allowed".into();
        d.count = 7;
        assert_eq!(
            denial_message(&d),
            "name lookup refused: evil.test: not allowed (7 times)"
        );
    }
}
