//! Contexts: the servers the CLI knows (`contexts.json`), and which one a command talks to.
//!
//! The file lives in `$WARREN_CONFIG_DIR` (default `$XDG_CONFIG_HOME/warren`, else
//! `~/.config/warren`) with mode 0600, since it holds tokens:
//!
//! ```json
//! { "current": "name", "contexts": { "name": { "url": "...", "token": "...", "ca_cert": null } } }
//! ```
//!
//! Selection, first match wins: `--local` (embedded); `--context NAME` (or `WARREN_CONTEXT`);
//! `WARREN_URL` + `WARREN_TOKEN` (an ad-hoc context that is never saved); the current context;
//! else the embedded engine on this host.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::output::user_error;

/// The file's name inside the configuration directory.
pub const FILE_NAME: &str = "contexts.json";

/// One server and the credentials for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Base URL, e.g. `https://warren.example.com` (no trailing slash).
    pub url: String,
    /// API token (`wrn_...`).
    pub token: String,
    /// PEM file of a CA to trust besides the system's, for a server with a private certificate.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// The contents of `contexts.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contexts {
    /// The context used when none is named.
    #[serde(default)]
    pub current: Option<String>,
    /// Every context by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the CLI keeps its configuration.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WARREN_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("warren");
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config").join("warren")
}

impl Contexts {
    /// The path of the file.
    pub fn path() -> PathBuf {
        config_dir().join(FILE_NAME)
    }

    /// Reads the file (empty when it does not exist).
    pub fn load() -> Result<Contexts> {
        Self::load_from(&Self::path())
    }

    /// Reads `path` (empty when it does not exist).
    pub fn load_from(path: &Path) -> Result<Contexts> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contexts::default()),
            // A configuration directory we may not even look into belongs to someone else (a
            // HOME inherited through sudo or setpriv): there are no contexts for us. A file we
            // can see but not read is an error.
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    && std::fs::symlink_metadata(path).is_err() =>
            {
                return Ok(Contexts::default())
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            user_error(
                format!("{} is not a valid contexts file: {e}", path.display()),
                "fix or remove it, then sign in again with `warren login URL`",
            )
        })
    }

    /// Writes the file atomically with mode 0600 (its directory 0700 when created).
    pub fn save(&self) -> Result<()> {
        self.save_to(&Self::path())
    }

    /// Writes `path` atomically with mode 0600.
    pub fn save_to(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("create {}", dir.display()))?;
        }
        let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // The mode only applies to a new file; make sure of it anyway.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            text.push('\n');
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("write {}", path.display()))
        })
    }

    /// The context `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Context> {
        self.contexts.get(name).ok_or_else(|| self.unknown(name))
    }

    /// The error for a context that does not exist.
    pub fn unknown(&self, name: &str) -> anyhow::Error {
        let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "there are no contexts yet: `warren login URL` makes one".to_string()
        } else {
            format!(
                "known contexts: {} (`warren context list`)",
                known.join(", ")
            )
        };
        user_error(format!("no context named `{name}`"), hint)
    }
}

/// A server to talk to, as selected for this command.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The context's name; `None` for the ad-hoc `WARREN_URL` + `WARREN_TOKEN`.
    pub name: Option<String>,
    /// Base URL.
    pub url: String,
    /// Token.
    pub token: String,
    /// Extra CA certificate.
    pub ca_cert: Option<PathBuf>,
}

impl Remote {
    /// How to name it in messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("context `{n}` ({})", self.url),
            None => format!("{} (WARREN_URL)", self.url),
        }
    }
}

/// Where a command runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The engine embedded in this process, on this host.
    Embedded,
    /// A Warren server.
    Remote(Remote),
}

/// Picks the target from `--local`, `--context` (or `WARREN_CONTEXT`), `WARREN_URL` +
/// `WARREN_TOKEN`, and the current context.
pub fn select(local: bool, context: Option<&str>, contexts: &Contexts) -> Result<Target> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    select_with(
        local,
        context,
        env("WARREN_URL"),
        env("WARREN_TOKEN"),
        contexts,
    )
}

/// [`select`] with the environment given.
pub fn select_with(
    local: bool,
    context: Option<&str>,
    url: Option<String>,
    token: Option<String>,
    contexts: &Contexts,
) -> Result<Target> {
    if local {
        return Ok(Target::Embedded);
    }
    let named = |name: &str| -> Result<Target> {
        let c = contexts.get(name)?;
        Ok(Target::Remote(Remote {
            name: Some(name.to_string()),
            url: c.url.clone(),
            token: c.token.clone(),
            ca_cert: c.ca_cert.clone(),
        }))
    };
    if let Some(name) = context.filter(|n| !n.is_empty()) {
        return named(name);
    }
    match (url, token) {
        (Some(url), Some(token)) => {
            return Ok(Target::Remote(Remote {
                name: None,
                url: normalize_url(&url)?,
                token,
                ca_cert: std::env::var_os("WARREN_CA_CERT")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
            }))
        }
        (Some(_), None) => {
            return Err(user_error(
                "WARREN_URL is set but WARREN_TOKEN is not",
                "set both (a token from `warren token create`), or unset WARREN_URL",
            ))
        }
        _ => {}
    }
    match &contexts.current {
        // A current context that is gone is an error, not a silent switch to this host.
        Some(name) => named(name),
        None => Ok(Target::Embedded),
    }
}

/// Checks a server URL and puts it in canonical form: a scheme (`https://` when none is given),
/// no trailing slash, no query.
pub fn normalize_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let bad = |why: String| {
        user_error(
            format!("`{raw}` is not a server URL: {why}"),
            "give the server's address, e.g. https://warren.example.com or http://127.0.0.1:7080",
        )
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment".into()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The default context name for a server: its host.
pub fn default_name(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| "default".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctxs() -> Contexts {
        let mut c = Contexts::default();
        for (n, u) in [("a", "https://a.example"), ("b", "http://127.0.0.1:7080")] {
            c.contexts.insert(
                n.into(),
                Context {
                    url: u.into(),
                    token: format!("tok-{n}"),
                    ca_cert: None,
                },
            );
        }
        c
    }

    #[test]
    fn selection_order() {
        let mut c = ctxs();
        let url = || Some("http://x:1/".to_string());
        let tok = || Some("t".to_string());
        assert_eq!(
            select_with(false, None, None, None, &c).unwrap(),
            Target::Embedded
        );
        c.current = Some("a".into());
        let Target::Remote(r) = select_with(false, None, None, None, &c).unwrap() else {
            panic!()
        };
        assert_eq!((r.name.as_deref(), r.token.as_str()), (Some("a"), "tok-a"));
        // The environment wins over the current context.
        let Target::Remote(r) = select_with(false, None, url(), tok(), &c).unwrap() else {
            panic!()
        };
        assert_eq!((r.name, r.url.as_str()), (None, "http://x:1"));
        // --context wins over the environment.
        let Target::Remote(r) = select_with(false, Some("b"), url(), tok(), &c).unwrap() else {
            panic!()
        };
        assert_eq!(r.name.as_deref(), Some("b"));
        // --local wins over everything.
        assert_eq!(
            select_with(true, Some("b"), url(), tok(), &c).unwrap(),
            Target::Embedded
        );
        let e = select_with(false, Some("zz"), None, None, &c).unwrap_err();
        assert!(e.to_string().contains("no context named `zz`"), "{e}");
        assert!(select_with(false, None, url(), None, &c).is_err());
        // A dangling current context is an error, never a silent switch to this host.
        c.current = Some("gone".into());
        assert!(select_with(false, None, None, None, &c).is_err());
    }

    #[test]
    fn urls_normalize() {
        assert_eq!(
            normalize_url("https://w.example/").unwrap(),
            "https://w.example"
        );
        assert_eq!(
            normalize_url("w.example:8443").unwrap(),
            "https://w.example:8443"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:7080").unwrap(),
            "http://127.0.0.1:7080"
        );
        assert_eq!(
            normalize_url("https://w.example/warren/").unwrap(),
            "https://w.example/warren"
        );
        assert!(normalize_url("ftp://w.example").is_err());
        assert!(normalize_url("https://w.example/?a=b").is_err());
        assert_eq!(default_name("http://127.0.0.1:7080"), "127.0.0.1");
        assert_eq!(default_name("https://w.example"), "w.example");
        assert_eq!(default_name("http://[::1]:7080"), "::1");
    }

    #[test]
    fn file_round_trips_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join(FILE_NAME);
        assert_eq!(Contexts::load_from(&path).unwrap(), Contexts::default());
        let mut c = ctxs();
        c.current = Some("b".into());
        c.save_to(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(Contexts::load_from(&path).unwrap(), c);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["current"], "b");
        assert_eq!(v["contexts"]["a"]["ca_cert"], serde_json::Value::Null);
        std::fs::write(&path, "{").unwrap();
        assert!(Contexts::load_from(&path).is_err());
    }
}
