//! Feature references: the keys of `features` (and of `dependsOn`, and the entries of
//! `installsAfter` and `overrideFeatureInstallOrder`), parsed like the reference CLI does.

use std::path::{Component, Path, PathBuf};

use crate::error::FeatureError;

/// The registry and namespace the legacy short ids moved to.
pub const LEGACY_NAMESPACE: &str = "ghcr.io/devcontainers/features";

/// Features of `microsoft/vscode-dev-containers` that moved to [`LEGACY_NAMESPACE`] unchanged.
const MIGRATED: [&str; 18] = [
    "aws-cli",
    "azure-cli",
    "desktop-lite",
    "docker-in-docker",
    "docker-from-docker",
    "dotnet",
    "git",
    "git-lfs",
    "github-cli",
    "java",
    "kubectl-helm-minikube",
    "node",
    "powershell",
    "python",
    "ruby",
    "rust",
    "sshd",
    "terraform",
];

/// Features that moved and were renamed.
const RENAMED: [(&str, &str); 2] = [("golang", "go"), ("common", "common-utils")];

/// Features that became options of another feature: (old id, new id, option set to true).
pub(crate) const INTO_OPTIONS: [(&str, &str, &str); 3] = [
    ("gradle", "java", "installGradle"),
    ("maven", "java", "installMaven"),
    ("jupyterlab", "python", "installJupyterlab"),
];

/// An OCI reference to a feature, e.g. `ghcr.io/devcontainers/features/node:1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `ghcr.io` (may carry a port).
    pub registry: String,
    /// `devcontainers/features`.
    pub namespace: String,
    /// `node`.
    pub id: String,
    /// `ghcr.io/devcontainers/features/node`.
    pub resource: String,
    /// `devcontainers/features/node` (the repository in the registry).
    pub path: String,
    /// The tag (`latest` when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// `sha256:...` when pinned by digest.
    pub digest: Option<String>,
}

impl OciRef {
    /// The tag or digest to ask the registry for.
    pub fn version(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// Where a feature comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureRef {
    /// An OCI artifact.
    Oci(OciRef),
    /// `https://.../devcontainer-feature-<id>.tgz`.
    Tarball {
        /// The URL as given.
        url: String,
        /// The id taken from the file name.
        id: String,
    },
    /// A folder next to devcontainer.json (`./name`).
    Local {
        /// The resolved folder (inside the config folder).
        path: PathBuf,
        /// The folder's name.
        id: String,
    },
}

impl FeatureRef {
    /// The feature id implied by the reference (the manifest's `id` may differ for renamed
    /// features).
    pub fn id(&self) -> &str {
        match self {
            FeatureRef::Oci(r) => &r.id,
            FeatureRef::Tarball { id, .. } | FeatureRef::Local { id, .. } => id,
        }
    }
}

/// Maps the legacy short ids (`node`, `golang`, ...) to their OCI home, as the reference does;
/// returns the id unchanged otherwise. The second value is a warning when a mapping happened.
pub fn map_legacy_id(id: &str) -> (String, Option<String>) {
    if MIGRATED.contains(&id) {
        return (
            format!("{LEGACY_NAMESPACE}/{id}:1"),
            Some(format!(
                "feature `{id}` uses the deprecated short form; using `{LEGACY_NAMESPACE}/{id}:1` \
                 (write that in devcontainer.json)"
            )),
        );
    }
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == id) {
        return (
            format!("{LEGACY_NAMESPACE}/{new}:1"),
            Some(format!(
                "feature `{id}` uses the deprecated short form; using `{LEGACY_NAMESPACE}/{new}:1` \
                 (write that in devcontainer.json)"
            )),
        );
    }
    (id.to_string(), None)
}

/// Parses a feature reference. `config_dir` is the folder holding devcontainer.json; local
/// references resolve against it and must stay inside it. Legacy short ids must already have
/// gone through [`map_legacy_id`].
pub fn parse_reference(user_id: &str, config_dir: &Path) -> Result<FeatureRef, FeatureError> {
    let invalid = |reason: String, hint: Option<&str>| FeatureError::InvalidReference {
        feature: user_id.to_string(),
        reason,
        hint: hint.map(str::to_string),
    };
    if user_id.trim().is_empty() {
        return Err(invalid(
            "the feature reference is empty".to_string(),
            Some("name a feature, e.g. `ghcr.io/devcontainers/features/node:1` or `./my-feature`"),
        ));
    }
    if !user_id.contains('/') && !user_id.contains('\\') {
        return Err(invalid(
            "legacy feature references without a registry are not supported".to_string(),
            Some(
                "use a published feature (e.g. `ghcr.io/devcontainers/features/NAME:1`, see \
                 https://containers.dev/features), or prefix a local feature folder with `./`",
            ),
        ));
    }
    if user_id.starts_with("https://") {
        return parse_tarball(user_id).map_err(|r| invalid(r, Some(
            "a tarball URL must end in `devcontainer-feature-<id>.tgz`, with an id of letters, digits, `-` and `_`",
        )));
    }
    if user_id.starts_with("http://") {
        return Err(invalid(
            "feature tarballs are fetched over https only".to_string(),
            Some("serve the tarball over https"),
        ));
    }
    if user_id.starts_with("./") || user_id.starts_with("../") || user_id.starts_with('/') {
        return parse_local(user_id, config_dir);
    }
    parse_oci(user_id).map_err(|reason| {
        invalid(
            reason,
            Some(
                "OCI feature references look like `REGISTRY/NAMESPACE/ID[:TAG|@sha256:DIGEST]`, \
                 e.g. `ghcr.io/devcontainers/features/node:1`",
            ),
        )
    })
}

fn parse_tarball(url: &str) -> Result<FeatureRef, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".to_string());
    }
    let name = parsed.path().rsplit('/').next().unwrap_or("");
    // The reference matches `devcontainer-feature-(.*).tgz` anywhere in the file name.
    const PREFIX: &str = "devcontainer-feature-";
    let id = name.find(PREFIX).and_then(|p| {
        let rest = &name[p + PREFIX.len()..];
        // `(.*)` is greedy and `.` matches any character before `tgz`.
        rest.rfind("tgz").filter(|&i| i >= 1).map(|i| {
            let mut end = i - 1;
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            rest[..end].to_string()
        })
    });
    match id {
        None => Err(format!(
            "expected the tarball's file name to be `devcontainer-feature-<id>.tgz`, got `{name}`"
        )),
        Some(id)
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Err(format!(
                "the feature id `{id}` in the tarball's name must be letters, digits, `-` or `_`"
            ))
        }
        Some(id) => Ok(FeatureRef::Tarball {
            url: parsed.to_string(),
            id,
        }),
    }
}

/// Where a local reference points, without requiring it to exist (for `installsAfter` and
/// `overrideFeatureInstallOrder` entries, which the reference never opens). `..` may not leave
/// the config folder.
pub fn local_path_lexical(user_id: &str, config_dir: &Path) -> Result<PathBuf, FeatureError> {
    let invalid = |reason: &str| FeatureError::InvalidReference {
        feature: user_id.to_string(),
        reason: reason.to_string(),
        hint: Some(
            "local features are folders inside the folder holding devcontainer.json, written \
             as `./NAME`"
                .to_string(),
        ),
    };
    let mut rel = PathBuf::new();
    for c in Path::new(user_id).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => rel.push(p),
            Component::ParentDir => {
                if !rel.pop() {
                    return Err(invalid(
                        "the path leaves the folder holding devcontainer.json",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "an absolute path to a local feature is not allowed",
                ))
            }
        }
    }
    let base = config_dir
        .canonicalize()
        .map_err(FeatureError::io("resolve", config_dir))?;
    Ok(base.join(rel))
}

fn parse_local(user_id: &str, config_dir: &Path) -> Result<FeatureRef, FeatureError> {
    let invalid = |reason: String| FeatureError::InvalidReference {
        feature: user_id.to_string(),
        reason,
        hint: Some(
            "local features are folders inside the folder holding devcontainer.json, written \
             as `./NAME`"
                .to_string(),
        ),
    };
    if Path::new(user_id).is_absolute() {
        return Err(invalid(
            "an absolute path to a local feature is not allowed".to_string(),
        ));
    }
    // Lexical normalisation first: `..` may not climb above the config folder.
    let mut rel = PathBuf::new();
    for c in Path::new(user_id).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => rel.push(p),
            Component::ParentDir => {
                if !rel.pop() {
                    return Err(invalid(
                        "the path leaves the folder holding devcontainer.json".to_string(),
                    ));
                }
            }
            _ => return Err(invalid("the path is not relative".to_string())),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(invalid(
            "the path names the config folder itself".to_string(),
        ));
    }
    let id = Path::new(user_id.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = config_dir.join(&rel);
    // Then the real location: symlinks may not lead out either.
    let base = config_dir
        .canonicalize()
        .map_err(FeatureError::io("resolve", config_dir))?;
    let real = path.canonicalize().map_err(|e| FeatureError::Fetch {
        feature: user_id.to_string(),
        reason: format!("cannot open {}: {e}", path.display()),
        hint: Some("the path is relative to the folder holding devcontainer.json".to_string()),
    })?;
    if !real.starts_with(&base) || real == base {
        return Err(invalid(
            "the path leads (through a link) out of the folder holding devcontainer.json"
                .to_string(),
        ));
    }
    Ok(FeatureRef::Local { path: real, id })
}

fn valid_path(path: &str) -> bool {
    // ^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$
    !path.is_empty()
        && path.split('/').all(|comp| {
            let b = comp.as_bytes();
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            let sep = |c: u8| matches!(c, b'.' | b'_' | b'-');
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || sep(c))
                && !b.windows(2).any(|w| sep(w[0]) && sep(w[1]))
        })
}

fn valid_tag(tag: &str) -> bool {
    // ^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parses an OCI feature reference (`getRef` in the reference: lowercased, `@sha256:` digests,
/// `:tag`, default tag `latest`).
pub fn parse_oci(input: &str) -> Result<FeatureRef, String> {
    let input = input.to_lowercase();
    if input.starts_with('.') {
        return Err("an OCI reference cannot start with `.`".to_string());
    }
    let last_slash = input.rfind('/');
    let (resource, tag, digest) = if let Some(at) = input.rfind('@') {
        let digest = &input[at + 1..];
        let Some((alg, hash)) = digest.split_once(':') else {
            return Err(format!(
                "cannot parse digest `{digest}`, expected `sha256:<hex>`"
            ));
        };
        if alg != "sha256" {
            return Err(format!(
                "digest algorithm `{alg}` is not supported, use sha256"
            ));
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{digest}` is not a sha256 digest (64 hex digits)"));
        }
        (input[..at].to_string(), None, Some(digest.to_string()))
    } else {
        match input.rfind(':') {
            Some(colon) if last_slash.is_some_and(|s| colon > s) => (
                input[..colon].to_string(),
                Some(input[colon + 1..].to_string()),
                None,
            ),
            _ => (input.clone(), Some("latest".to_string()), None),
        }
    };
    if let Some(tag) = &tag {
        if !valid_tag(tag) {
            return Err(format!(
                "tag `{tag}` is not valid (letters, digits, `._-`, at most 128 characters)"
            ));
        }
    }
    let mut parts: Vec<&str> = resource.split('/').collect();
    // The reference redirects the renamed `devcontainers-contrib` namespace.
    if parts.get(1) == Some(&"devcontainers-contrib") {
        parts[1] = "devcontainers-extra";
    }
    let resource = parts.join("/");
    if parts.len() < 3 {
        return Err(format!(
            "`{resource}` is not REGISTRY/NAMESPACE/ID (the namespace is missing)"
        ));
    }
    let registry = parts[0].to_string();
    if !(registry.contains('.') || registry.starts_with("localhost")) {
        return Err(format!(
            "`{registry}` is not a registry host name (GitHub release references \
             `owner/repo/feature@tag` are deprecated and not supported)"
        ));
    }
    let id = parts[parts.len() - 1].to_string();
    let namespace = parts[1..parts.len() - 1].join("/");
    let path = format!("{namespace}/{id}");
    if !valid_path(&path) {
        return Err(format!(
            "`{path}` is not a valid repository path (lowercase letters and digits separated by `._-` and `/`)"
        ));
    }
    Ok(FeatureRef::Oci(OciRef {
        registry,
        namespace,
        id,
        resource,
        path,
        tag,
        digest,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(s: &str) -> OciRef {
        match parse_oci(s).unwrap() {
            FeatureRef::Oci(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oci_references_parse_like_the_reference() {
        let r = oci("ghcr.io/devcontainers/features/node:1");
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.namespace, "devcontainers/features");
        assert_eq!(r.id, "node");
        assert_eq!(r.resource, "ghcr.io/devcontainers/features/node");
        assert_eq!(r.path, "devcontainers/features/node");
        assert_eq!(r.version(), "1");
        let r = oci("GHCR.io/Devcontainers/features/Node");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.resource, "ghcr.io/devcontainers/features/node");
        let r = oci("ghcr.io/devcontainers-contrib/features/deno:1");
        assert_eq!(r.resource, "ghcr.io/devcontainers-extra/features/deno");
        assert_eq!(r.path, "devcontainers-extra/features/deno");
        let r = oci("localhost:5000/a/b/c");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = oci(&format!("127.0.0.1:5000/a/b/c@{d}"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag, None);
        assert_eq!(r.version(), d);
        for bad in [
            "ghcr.io/a/b@sha512:00",
            "ghcr.io/a/b@sha256:xyz",
            "ghcr.io/a/b:-x",
            "ghcr.io/b",
            "owner/repo/feature",
            "ghcr.io/a/B__c",
            ".ghcr.io/a/b",
        ] {
            assert!(parse_oci(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_short_ids_map_like_the_reference() {
        assert_eq!(
            map_legacy_id("node").0,
            "ghcr.io/devcontainers/features/node:1"
        );
        assert_eq!(
            map_legacy_id("golang").0,
            "ghcr.io/devcontainers/features/go:1"
        );
        assert_eq!(
            map_legacy_id("common").0,
            "ghcr.io/devcontainers/features/common-utils:1"
        );
        assert_eq!(map_legacy_id("fish").0, "fish");
        let e = parse_reference("fish", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("`fish`"));
        assert!(e.hint().unwrap().contains("./"));
    }

    #[test]
    fn tarball_names_carry_the_id() {
        match parse_reference(
            "https://example.com/r/devcontainer-feature-go_x.tgz",
            Path::new("/"),
        )
        .unwrap()
        {
            FeatureRef::Tarball { id, .. } => assert_eq!(id, "go_x"),
            other => panic!("{other:?}"),
        }
        for bad in [
            "https://example.com/feature.tgz",
            "https://example.com/devcontainer-feature-a.b.tgz",
            "https://example.com/devcontainer-feature-.tgz",
            "http://example.com/devcontainer-feature-a.tgz",
        ] {
            assert!(parse_reference(bad, Path::new("/")).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_paths_stay_inside_the_config_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join(".devcontainer");
        std::fs::create_dir_all(cfg.join("a")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), cfg.join("link")).unwrap();
        match parse_reference("./a", &cfg).unwrap() {
            FeatureRef::Local { id, path } => {
                assert_eq!(id, "a");
                assert!(path.ends_with(".devcontainer/a"));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "../outside",
            "./a/../../outside",
            "/etc",
            "./link",
            "./missing",
        ] {
            let e = parse_reference(bad, &cfg).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
            assert!(e.hint().is_some());
        }
        // `..` that stays inside is fine.
        assert!(parse_reference("./x/../a", &cfg).is_ok());
    }

    #[test]
    fn every_feature_reference_in_the_corpus_configs_is_understood() {
        let Some(corpus) = crate::corpus_dir() else {
            eprintln!("corpus not found; skipped");
            return;
        };
        let entries = std::fs::read_dir(corpus.join("configs")).unwrap();
        let mut seen = 0;
        for e in entries {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(
                &warren_devcontainer::jsonc_to_json(&text).unwrap_or_default(),
            ) else {
                continue;
            };
            let Some(features) = v.get("features").and_then(|f| f.as_object()) else {
                continue;
            };
            for key in features.keys() {
                seen += 1;
                let (mapped, _) = map_legacy_id(key);
                if mapped.starts_with("./") || mapped.starts_with("../") {
                    assert!(local_path_lexical(&mapped, Path::new("/")).is_ok(), "{key}");
                    continue;
                }
                match parse_reference(&mapped, Path::new("/")) {
                    Ok(FeatureRef::Oci(r)) => assert!(!r.id.is_empty(), "{key}"),
                    Ok(FeatureRef::Tarball { id, .. }) => assert!(!id.is_empty(), "{key}"),
                    Ok(other) => panic!("{key}: {other:?}"),
                    // Only forms the reference cannot fetch either may fail: short ids it
                    // does not map, and GitHub-release references (no registry host).
                    Err(err) => {
                        let first = key.split('/').next().unwrap_or("");
                        assert!(!first.contains('.'), "{key}: {err}");
                        assert!(!err.to_string().contains('\n') && err.hint().is_some());
                    }
                }
            }
        }
        assert!(seen > 40, "{seen}");
    }
}
