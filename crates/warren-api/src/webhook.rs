//! Outgoing webhooks: which event kinds exist, the patterns a webhook subscribes with, and the
//! signature a receiver checks. Pure: the server stores, matches and sends.
//!
//! A pattern is `*` (every event), `PREFIX.*` (every kind under a known prefix: `workspace.*`,
//! `budget.*`, `network.*`), or one exact kind from [`EVENT_KINDS`]. Anything else is refused when the webhook
//! is made, so a typo never turns into a webhook that silently receives nothing.
//!
//! `webhook.test` events (`POST /webhooks/{id}/test`) go to the webhook they test only, and no
//! pattern matches them. `webhook.disabled` (the server disabled a failing webhook) goes to the
//! other webhooks that match it (`*` or the exact kind), never to the disabled one.

use sha2::{Digest, Sha256};

/// The prefixes patterns may name (`PREFIX.*`).
pub const PREFIXES: [&str; 4] = ["workspace", "budget", "network", "task"];

/// Every event kind a pattern may name exactly. A new kind of event is added here.
pub const EVENT_KINDS: [&str; 22] = [
    "workspace.created",
    "workspace.pending",
    "workspace.starting",
    "workspace.started",
    "workspace.stopping",
    "workspace.stopped",
    "workspace.deleting",
    "workspace.deleted",
    "workspace.failed",
    "workspace.stop_warning",
    "workspace.delete_warning",
    "workspace.start_refused",
    "budget.warning",
    "budget.exhausted",
    "webhook.disabled",
    "network.denied",
    "task.created",
    "task.started",
    "task.succeeded",
    "task.failed",
    "task.timed_out",
    "task.canceled",
];

/// The kind of the event `POST /webhooks/{id}/test` sends.
pub const TEST_KIND: &str = "webhook.test";

/// The most patterns a webhook may have.
pub const MAX_PATTERNS: usize = 64;

/// One subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`.
    All,
    /// `PREFIX.*`: kinds starting with `PREFIX.`.
    Prefix(String),
    /// One kind.
    Exact(String),
}

impl Pattern {
    /// Parses a pattern; the error is one line naming it.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let known = || {
            let p: Vec<String> = PREFIXES.iter().map(|p| format!("`{p}.*`")).collect();
            format!(
                "`*`, {} or an event kind such as `workspace.stopped`",
                p.join(", ")
            )
        };
        if s == "*" {
            return Ok(Pattern::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            if PREFIXES.contains(&prefix) {
                return Ok(Pattern::Prefix(prefix.to_owned()));
            }
            return Err(format!(
                "`{s}`: unknown event kind prefix `{prefix}` (expected {})",
                known()
            ));
        }
        if EVENT_KINDS.contains(&s) {
            return Ok(Pattern::Exact(s.to_owned()));
        }
        let why = match s.split_once('.') {
            _ if s.contains('*') => "`*` is allowed alone or as `PREFIX.*` only".to_owned(),
            Some((prefix, _)) if PREFIXES.contains(&prefix) => {
                let under: Vec<&str> = EVENT_KINDS
                    .iter()
                    .filter_map(|k| k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')))
                    .collect();
                format!(
                    "no event kind `{s}` (`{prefix}.` kinds: {})",
                    under.join(", ")
                )
            }
            Some((prefix, _)) => format!("unknown event kind prefix `{prefix}`"),
            None => "not an event kind".to_owned(),
        };
        Err(format!("`{s}`: {why} (expected {})", known()))
    }

    /// Whether an event of `kind` matches. `webhook.test` never does (see the module doc).
    pub fn matches(&self, kind: &str) -> bool {
        if kind == TEST_KIND {
            return false;
        }
        match self {
            Pattern::All => true,
            Pattern::Prefix(p) => kind
                .strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('.')),
            Pattern::Exact(k) => k == kind,
        }
    }

    /// The pattern as written.
    pub fn as_string(&self) -> String {
        match self {
            Pattern::All => "*".to_owned(),
            Pattern::Prefix(p) => format!("{p}.*"),
            Pattern::Exact(k) => k.clone(),
        }
    }
}

/// Parses a webhook's patterns (none given: `*`), dropping repeats. The error names the
/// offending pattern.
pub fn parse_patterns(list: &[String]) -> Result<Vec<Pattern>, String> {
    if list.is_empty() {
        return Err("give at least one pattern, or leave `events` out for every event".into());
    }
    if list.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} patterns"));
    }
    let mut out: Vec<Pattern> = Vec::new();
    for s in list {
        let p = Pattern::parse(s.trim())?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Whether any of `patterns` matches `kind`.
pub fn matches_any(patterns: &[Pattern], kind: &str) -> bool {
    patterns.iter().any(|p| p.matches(kind))
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`, hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Warren-Signature` header value of `body` sent at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    format!("t={t},v1={}", hmac_sha256_hex(secret.as_bytes(), &msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hmac_sha256_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            signature("s", 5, b"{}"),
            format!("t=5,v1={}", hmac_sha256_hex(b"s", b"5.{}"))
        );
    }

    #[test]
    fn patterns_parse_and_match() {
        let p = parse_patterns(&["workspace.*".into(), "budget.warning".into()]).unwrap();
        assert!(matches_any(&p, "workspace.stopped"));
        assert!(matches_any(&p, "budget.warning"));
        assert!(!matches_any(&p, "budget.exhausted"));
        assert!(!matches_any(&p, "workspaces.x"));
        let all = parse_patterns(&["*".into(), "*".into()]).unwrap();
        assert_eq!(all, vec![Pattern::All]);
        assert!(matches_any(&all, "budget.exhausted"));
        // Test events reach their webhook only, never through a pattern.
        assert!(!matches_any(&all, TEST_KIND));
        assert!(matches_any(&all, "webhook.disabled"));
        for k in EVENT_KINDS {
            assert_eq!(Pattern::parse(k).unwrap().as_string(), k);
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        for (bad, needle) in [
            ("foo.*", "unknown event kind prefix `foo`"),
            ("workspace.stoped", "no event kind `workspace.stoped`"),
            ("work*", "`*` is allowed alone"),
            ("webhook.test", "unknown event kind prefix `webhook`"),
            ("", "not an event kind"),
            ("**", "`*` is allowed alone"),
        ] {
            let e = parse_patterns(&[bad.into()]).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_patterns(&[]).is_err());
    }
}
