//! Workspace ports: sharing levels, port numbers as the API takes them, the subdomain form of
//! preview URLs, and `portsAttributes` matching. Pure; the server enforces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who may reach a workspace port through its preview URLs. Ordered from narrowest to widest.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PortSharing {
    /// The workspace's owner, and whoever the policy lets exec in it (admins). The default.
    #[default]
    Owner,
    /// Any signed-in, active user of the server.
    Organization,
    /// Anyone, without credentials.
    Public,
}

impl PortSharing {
    /// Every level, narrowest first.
    pub const ALL: [PortSharing; 3] = [
        PortSharing::Owner,
        PortSharing::Organization,
        PortSharing::Public,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            PortSharing::Owner => "owner",
            PortSharing::Organization => "organization",
            PortSharing::Public => "public",
        }
    }
}

impl fmt::Display for PortSharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortSharing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PortSharing::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!("unknown sharing level `{s}`: expected owner, organization or public")
            })
    }
}

/// A TCP port as the API takes it in a path: 1-65535, decimal digits only.
pub fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port `{s}` is not a number from 1 to 65535"));
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port `{s}` is out of range: 1 to 65535")),
    }
}

/// The one DNS label of a preview host in the subdomain form: `<port>--<workspace>--<user>`
/// (`3000--web--alice.preview.example.com`). Workspace names and usernames are
/// `[a-z][a-z0-9-]*`; a name containing `--` has no subdomain form (the label would be
/// ambiguous), nor has a label longer than 63 characters. Both then use the path form.
pub fn subdomain_label(port: u16, workspace: &str, user: &str) -> Option<String> {
    if workspace.contains("--") || user.contains("--") {
        return None;
    }
    let label = format!("{port}--{workspace}--{user}");
    (label.len() <= 63).then_some(label)
}

/// Parses a subdomain label made by [`subdomain_label`]: (port, workspace, user).
pub fn parse_subdomain_label(label: &str) -> Option<(u16, &str, &str)> {
    let mut parts = label.split("--");
    let (port, ws, user) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let port = parse_port(port).ok()?;
    let ok = |s: &str| crate::WorkspaceName::new(s).is_ok();
    (ok(ws) && ok(user)).then_some((port, ws, user))
}

/// Whether a `portsAttributes` key (a port number, a range `3000-3010`, or a regular expression
/// tested against the port's decimal form) applies to `port`. Regular expressions are handed to
/// `is_regex_match` so this crate needs no regex engine.
pub fn attributes_key_matches(
    key: &str,
    port: u16,
    is_regex_match: impl Fn(&str, &str) -> bool,
) -> bool {
    let key = key.trim();
    if let Ok(n) = key.parse::<u32>() {
        return n == u32::from(port);
    }
    if let Some((a, b)) = key.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            return (a..=b).contains(&u32::from(port));
        }
    }
    is_regex_match(key, &port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_levels_round_trip_and_order() {
        for l in PortSharing::ALL {
            assert_eq!(l.as_str().parse::<PortSharing>().unwrap(), l);
            assert_eq!(
                serde_json::to_string(&l).unwrap(),
                format!("\"{}\"", l.as_str())
            );
        }
        assert!(PortSharing::Owner < PortSharing::Organization);
        assert!(PortSharing::Organization < PortSharing::Public);
        let e = "everyone".parse::<PortSharing>().unwrap_err();
        assert!(e.contains("`everyone`"), "{e}");
        assert_eq!(PortSharing::default(), PortSharing::Owner);
    }

    #[test]
    fn ports_are_1_to_65535_in_decimal() {
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in [
            "0", "65536", "70000", "", "-1", "+80", "8o", "0x50", "123456", " 80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomain_labels_are_unambiguous() {
        assert_eq!(
            subdomain_label(3000, "web", "alice").as_deref(),
            Some("3000--web--alice")
        );
        assert_eq!(
            parse_subdomain_label("3000--web--alice"),
            Some((3000, "web", "alice"))
        );
        assert_eq!(
            parse_subdomain_label("8080--my-app--bob-2"),
            Some((8080, "my-app", "bob-2"))
        );
        // Names with `--` have no subdomain form, so no label has two readings.
        assert_eq!(subdomain_label(80, "a--b", "c"), None);
        assert_eq!(subdomain_label(80, "a", "b--c"), None);
        assert_eq!(subdomain_label(80, &"a".repeat(40), &"b".repeat(20)), None);
        for bad in [
            "3000--a--b--c",
            "3000--web",
            "0--web--alice",
            "x--web--alice",
            "3000--Web--alice",
            "3000--web--",
            "3000----alice",
            "3000--web-alice",
        ] {
            assert_eq!(parse_subdomain_label(bad), None, "{bad}");
        }
    }

    #[test]
    fn attribute_keys_match_numbers_ranges_and_patterns() {
        let no_regex = |_: &str, _: &str| false;
        assert!(attributes_key_matches("3000", 3000, no_regex));
        assert!(!attributes_key_matches("3000", 13000, no_regex));
        assert!(attributes_key_matches("3000-3005", 3003, no_regex));
        assert!(!attributes_key_matches("3000-3005", 3006, no_regex));
        let saw = std::cell::Cell::new(false);
        attributes_key_matches("30[0-9]+", 3001, |k, p| {
            saw.set(k == "30[0-9]+" && p == "3001");
            true
        });
        assert!(saw.get());
    }
}
