//! Validated workspace names and the derivation of a default name from a project folder.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest allowed workspace name (it doubles as a hostname label).
pub const MAX_NAME_LEN: usize = 63;

const RULE: &str = "names are 1-63 characters of lowercase letters, digits and '-', start with a letter and do not end with '-'";

/// Why a string is not a valid [`WorkspaceName`]. Each message restates the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWorkspaceName {
    /// The name is empty.
    #[error("workspace name is empty: {RULE}")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("workspace name is {len} characters long: {RULE}")]
    TooLong {
        /// Length of the rejected name in characters.
        len: usize,
    },
    /// The name contains a character outside `[a-z0-9-]`.
    #[error("workspace name {name:?} contains {ch:?}: {RULE}")]
    BadChar {
        /// The rejected name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// The name does not start with a letter.
    #[error("workspace name {0:?} does not start with a letter: {RULE}")]
    BadStart(String),
    /// The name ends with '-'.
    #[error("workspace name {0:?} ends with '-': {RULE}")]
    BadEnd(String),
}

/// A workspace name: 1-63 characters of `[a-z0-9-]`, starting with a letter, not ending with '-'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceName(String);

impl WorkspaceName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidWorkspaceName> {
        let name = name.into();
        let len = name.chars().count();
        if len == 0 {
            return Err(InvalidWorkspaceName::Empty);
        }
        if len > MAX_NAME_LEN {
            return Err(InvalidWorkspaceName::TooLong { len });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidWorkspaceName::BadChar { name, ch });
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(InvalidWorkspaceName::BadStart(name));
        }
        if name.ends_with('-') {
            return Err(InvalidWorkspaceName::BadEnd(name));
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name, returning the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkspaceName {
    type Err = InvalidWorkspaceName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for WorkspaceName {
    type Error = InvalidWorkspaceName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<WorkspaceName> for String {
    fn from(name: WorkspaceName) -> String {
        name.0
    }
}

impl AsRef<str> for WorkspaceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Turns a project folder's base name into a valid workspace name: lowercases it, replaces every
/// other character with '-', collapses and trims dashes, prefixes `ws-` when the result does not
/// start with a letter (`ws` alone when nothing is left) and truncates to [`MAX_NAME_LEN`].
pub fn workspace_name_from_dir(dir_basename: &str) -> WorkspaceName {
    let mut out = String::with_capacity(dir_basename.len());
    for c in dir_basename.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    let mut name = if trimmed.is_empty() {
        "ws".to_owned()
    } else if trimmed.starts_with(|c: char| c.is_ascii_lowercase()) {
        trimmed.to_owned()
    } else {
        format!("ws-{trimmed}")
    };
    // Only ASCII remains, so byte length equals character length.
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_end_matches('-');
    debug_assert!(WorkspaceName::new(name).is_ok(), "{name:?}");
    WorkspaceName(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "my-app", "web2", "a-b-c", &"a".repeat(63)] {
            assert_eq!(WorkspaceName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_invalid_names_with_the_reason() {
        assert_eq!(WorkspaceName::new(""), Err(InvalidWorkspaceName::Empty));
        assert_eq!(
            WorkspaceName::new("a".repeat(64)),
            Err(InvalidWorkspaceName::TooLong { len: 64 })
        );
        assert!(matches!(
            WorkspaceName::new("My-App"),
            Err(InvalidWorkspaceName::BadChar { ch: 'M', .. })
        ));
        assert!(matches!(
            WorkspaceName::new("my_app"),
            Err(InvalidWorkspaceName::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            WorkspaceName::new("1app"),
            Err(InvalidWorkspaceName::BadStart(_))
        ));
        assert!(matches!(
            WorkspaceName::new("-app"),
            Err(InvalidWorkspaceName::BadStart(_))
        ));
        assert!(matches!(
            WorkspaceName::new("app-"),
            Err(InvalidWorkspaceName::BadEnd(_))
        ));
        let msg = WorkspaceName::new("app-").unwrap_err().to_string();
        assert!(
            msg.contains("ends with '-'") && msg.contains("start with a letter"),
            "{msg}"
        );
    }

    #[test]
    fn serde_validates_names() {
        let name: WorkspaceName = serde_json::from_str("\"my-app\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"my-app\"");
        assert!(serde_json::from_str::<WorkspaceName>("\"Bad Name\"").is_err());
    }

    #[test]
    fn derives_names_from_folder_names() {
        let cases = [
            ("my-app", "my-app"),
            ("My App", "my-app"),
            ("My__Cool..Project!", "my-cool-project"),
            ("--weird--", "weird"),
            ("2048", "ws-2048"),
            ("_1st", "ws-1st"),
            ("", "ws"),
            ("!!!", "ws"),
            ("Café", "caf"),
            ("日本語", "ws"),
        ];
        for (dir, expected) in cases {
            assert_eq!(workspace_name_from_dir(dir).as_str(), expected, "{dir:?}");
        }
    }

    #[test]
    fn derived_names_are_truncated_without_a_trailing_dash() {
        let long = format!("{}-b", "a".repeat(62));
        assert_eq!(workspace_name_from_dir(&long).as_str(), "a".repeat(62));
        let digits = "9".repeat(100);
        let name = workspace_name_from_dir(&digits);
        assert_eq!(name.as_str().len(), MAX_NAME_LEN);
        assert!(name.as_str().starts_with("ws-9"));
    }
}
