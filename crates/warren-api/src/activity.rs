//! Workspace activity: what counts as someone (or an agent) using a workspace. Idle-shutdown
//! policies read it; the kinds are part of the API.

use serde::{Deserialize, Serialize};

/// A kind of activity on a workspace.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// An SSH session (gateway or API tunnel): at open, while data flows, at close.
    Ssh,
    /// A command run through the exec API.
    Exec,
    /// A terminal (PTY) through the API or the web terminal: at open, on input, at close.
    Pty,
    /// A request or connection through a preview URL or a port forward.
    Port,
    /// An explicit keep-alive (an agent saying it is still working).
    Keepalive,
    /// A state-changing API call on the workspace by someone allowed to change it (extend,
    /// policy, ports, start...), or an upload into it.
    Api,
    /// Its processes used more CPU than the template's `activity.cpu_threshold` (only noted
    /// when a policy asks for it).
    Cpu,
}

impl ActivityKind {
    /// Every kind.
    pub const ALL: [ActivityKind; 7] = [
        ActivityKind::Ssh,
        ActivityKind::Exec,
        ActivityKind::Pty,
        ActivityKind::Port,
        ActivityKind::Keepalive,
        ActivityKind::Api,
        ActivityKind::Cpu,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Ssh => "ssh",
            ActivityKind::Exec => "exec",
            ActivityKind::Pty => "pty",
            ActivityKind::Port => "port",
            ActivityKind::Keepalive => "keepalive",
            ActivityKind::Api => "api",
            ActivityKind::Cpu => "cpu",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ActivityKind> {
        ActivityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for k in ActivityKind::ALL {
            assert_eq!(ActivityKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(ActivityKind::parse("idle"), None);
    }
}
