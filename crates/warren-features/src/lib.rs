//! Dev Container Features (<https://containers.dev/implementors/features/>), behaving like the
//! reference implementation (`devcontainers/cli`).
//!
//! Two steps:
//!
//! 1. [`prepare`] takes the config's `features` (reference → options, in config order) and its
//!    `overrideFeatureInstallOrder`, fetches every feature (and, recursively, every `dependsOn`
//!    dependency) into a content-addressed cache, validates manifests and option values, and
//!    computes the install order. OCI features come from registries through
//!    [`warren_image::registry`]; `https://.../devcontainer-feature-<id>.tgz` tarballs over
//!    https; `./name` folders from beside devcontainer.json.
//! 2. [`Resolved::build_plan`] writes a build context and returns a Dockerfile (FROM, USER, COPY,
//!    RUN, ENV) that installs each feature in its own layer, plus the features'
//!    `devcontainer.metadata` entries.
//!
//! ```no_run
//! # async fn f() -> Result<(), warren_features::FeatureError> {
//! use std::path::Path;
//! use serde_json::json;
//! let features = vec![("ghcr.io/devcontainers/features/node:1".to_string(), json!({"version": "20"}))];
//! let resolved = warren_features::prepare(
//!     &features,
//!     &[],
//!     Path::new("/project/.devcontainer"),
//!     Path::new("/var/lib/warren/features"),
//!     &warren_features::FetchOptions::default(),
//! )
//! .await?;
//! for w in &resolved.warnings { eprintln!("warning: {w}"); }
//! let plan = resolved.build_plan(
//!     "debian:bookworm",
//!     &warren_features::BuildUsers::new("root"),
//!     Path::new("/tmp/ctx"),
//! )?;
//! // Build plan.dockerfile in plan.context_dir; merge plan.metadata into the image's label.
//! # let _ = plan; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod fetch;
pub mod manifest;
pub mod options;
mod order;
mod plan;
pub mod reference;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use warren_image::registry::{ClientOptions, RegistryClient};

pub use error::FeatureError;
pub use fetch::{FEATURE_CONFIG_MEDIA_TYPE, FEATURE_LAYER_MEDIA_TYPE};
pub use manifest::{FeatureManifest, OptionSpec};
pub use plan::{BuildPlan, BuildUsers, FEATURES_DEST};
pub use reference::{FeatureRef, OciRef};

use order::{Node, SourceKey};
use reference::{map_legacy_id, parse_reference, INTO_OPTIONS, LEGACY_NAMESPACE};

/// How features are fetched.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Extra trusted root certificates (PEM) for registries and tarball servers.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// Ask registries again for tags and tarball URLs already in the cache. Without it, a
    /// cached tag or URL is used as is and `prepare` needs no network for it.
    pub refresh: bool,
    /// Per-request timeout (default: 30 s to connect, 10 min per request).
    pub timeout: Option<Duration>,
    /// Fetch only from public addresses (features of a server's users: no loopback, private or
    /// link-local registries and tarball hosts). Local folders are unaffected.
    pub public_only: bool,
}

/// Where a resolved feature came from.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureSource {
    /// An OCI artifact, by the digest of its manifest.
    Oci {
        reference: OciRef,
        manifest_digest: String,
    },
    /// An https tarball, by the digest of its bytes.
    Tarball { url: String, digest: String },
    /// A folder beside devcontainer.json.
    Local { path: PathBuf },
}

/// A feature ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFeature {
    /// The reference as written (a `features` key, or a `dependsOn` key of another feature).
    pub user_id: String,
    /// Where it came from.
    pub source: FeatureSource,
    /// Its `devcontainer-feature.json`.
    pub manifest: FeatureManifest,
    /// The options as given (object, version string or boolean).
    pub options: Value,
    /// The option values it is installed with (defaults applied), in manifest order.
    pub values: Vec<(String, Value)>,
    /// The folder holding its files (in the cache, or the local folder).
    pub dir: PathBuf,
    /// `None` for features of the config; the depending feature's reference for features
    /// pulled in by `dependsOn`.
    pub required_by: Option<String>,
    /// The legacy id the reference used, when the feature has since been renamed.
    pub renamed_from: Option<String>,
}

impl ResolvedFeature {
    /// The id implied by the reference (names the feature's folder in the build context).
    pub fn source_id(&self) -> &str {
        match &self.source {
            FeatureSource::Oci { reference, .. } => &reference.id,
            FeatureSource::Tarball { url, .. } => url.rsplit('/').next().map_or("feature", |n| {
                n.strip_prefix("devcontainer-feature-")
                    .and_then(|n| n.strip_suffix(".tgz"))
                    .unwrap_or(n)
            }),
            FeatureSource::Local { path } => path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("feature"),
        }
    }
}

/// The features to install, in install order.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Install order: dependencies first, then `installsAfter`, `overrideFeatureInstallOrder`
    /// and the reference's tie-breaking.
    pub features: Vec<ResolvedFeature>,
    /// Things the user should see (deprecated forms, unknown options).
    pub warnings: Vec<String>,
}

impl Resolved {
    /// Writes the build context into `context_dir` (created; must be empty) and returns the
    /// Dockerfile and the features' image-metadata entries. See [`BuildPlan`].
    pub fn build_plan(
        &self,
        base_image: &str,
        users: &BuildUsers,
        context_dir: &Path,
    ) -> Result<BuildPlan, FeatureError> {
        plan::build_plan(self, base_image, users, context_dir)
    }

    /// The features' `devcontainer.metadata` entries, in install order.
    pub fn metadata(&self) -> Vec<Value> {
        self.features.iter().map(plan::metadata_entry).collect()
    }
}

/// The `features` object of a devcontainer.json as an ordered list (serde_json's map is sorted
/// by key; callers with the config's own order should pass that instead).
pub fn features_from_map(map: &Map<String, Value>) -> Vec<(String, Value)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Features folded into options of another feature (`gradle`, `maven`, `jupyterlab`), as the
/// reference's `updateDeprecatedFeaturesIntoOptions` does.
fn fold_deprecated_into_options(
    features: &[(String, Value)],
    warnings: &mut Vec<String>,
) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = features.to_vec();
    for (old, new, option) in INTO_OPTIONS {
        if !features.iter().any(|(k, _)| k == old) {
            continue;
        }
        warnings.push(format!(
            "feature `{old}` is deprecated and is now part of `{LEGACY_NAMESPACE}/{new}` (option `{option}`)"
        ));
        let qualified = format!("{LEGACY_NAMESPACE}/{new}");
        let existing = out
            .iter_mut()
            .find(|(k, _)| k == new || *k == qualified || k.starts_with(&format!("{qualified}:")));
        match existing {
            Some((_, value)) => {
                let mut merged = match value {
                    Value::Object(m) => m.clone(),
                    Value::String(s) => {
                        let mut m = Map::new();
                        m.insert("version".to_string(), Value::String(s.clone()));
                        m
                    }
                    _ => Map::new(),
                };
                merged.insert(option.to_string(), Value::Bool(true));
                *value = Value::Object(merged);
            }
            None => {
                let mut m = Map::new();
                m.insert(option.to_string(), Value::Bool(true));
                out.push((format!("{qualified}:1"), Value::Object(m)));
            }
        }
    }
    out.retain(|(k, _)| !INTO_OPTIONS.iter().any(|(old, _, _)| k == old));
    out
}

/// A node's fetched content.
struct Fetched {
    source: FeatureSource,
    dir: PathBuf,
    manifest: FeatureManifest,
    ref_id: String,
}

struct Preparer<'a> {
    fetcher: fetch::Fetcher,
    config_dir: &'a Path,
    warnings: Vec<String>,
}

impl Preparer<'_> {
    /// Maps legacy short ids and parses the reference.
    fn reference(&mut self, user_id: &str, warn: bool) -> Result<FeatureRef, FeatureError> {
        let (mapped, warning) = map_legacy_id(user_id);
        if let (true, Some(w)) = (warn, warning) {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        parse_reference(&mapped, self.config_dir).map_err(|e| match e {
            FeatureError::InvalidReference { reason, hint, .. } => FeatureError::InvalidReference {
                feature: user_id.to_string(),
                reason,
                hint,
            },
            other => other,
        })
    }

    /// The source key of a reference without fetching (soft dependencies, overrides).
    fn unfetched_key(&mut self, user_id: &str) -> Result<SourceKey, FeatureError> {
        if user_id.starts_with("./") || user_id.starts_with("../") {
            let path = reference::local_path_lexical(user_id, self.config_dir)?;
            // Use the real path when it exists, as fetched local features do.
            let path = path.canonicalize().unwrap_or(path);
            return Ok(SourceKey::Local {
                path: path.to_string_lossy().into_owned(),
            });
        }
        Ok(match self.reference(user_id, false)? {
            FeatureRef::Oci(r) => SourceKey::Oci {
                registry: r.registry,
                namespace: r.namespace,
                id: r.id,
                resource: r.resource,
                tag: r.tag,
                digest: String::new(),
            },
            FeatureRef::Tarball { url, .. } => SourceKey::Tarball { url },
            FeatureRef::Local { path, .. } => SourceKey::Local {
                path: path.to_string_lossy().into_owned(),
            },
        })
    }

    /// Fetches a feature and reads its manifest.
    async fn fetch(&mut self, user_id: &str) -> Result<(SourceKey, Fetched), FeatureError> {
        let reference = self.reference(user_id, true)?;
        let ref_id = reference.id().to_string();
        let (key, source, dir) = match reference {
            FeatureRef::Oci(r) => {
                let resolved = self.fetcher.resolve_oci(user_id, &r).await?;
                let dir = self
                    .fetcher
                    .fetch_oci_tree(user_id, &r, &resolved.layer_digest)
                    .await?;
                (
                    SourceKey::Oci {
                        registry: r.registry.clone(),
                        namespace: r.namespace.clone(),
                        id: r.id.clone(),
                        resource: r.resource.clone(),
                        tag: r.tag.clone(),
                        digest: resolved.manifest_digest.clone(),
                    },
                    FeatureSource::Oci {
                        reference: r,
                        manifest_digest: resolved.manifest_digest,
                    },
                    dir,
                )
            }
            FeatureRef::Tarball { url, .. } => {
                let (digest, dir) = self.fetcher.fetch_tarball(user_id, &url).await?;
                (
                    SourceKey::Tarball { url: url.clone() },
                    FeatureSource::Tarball { url, digest },
                    dir,
                )
            }
            FeatureRef::Local { path, .. } => (
                SourceKey::Local {
                    path: path.to_string_lossy().into_owned(),
                },
                FeatureSource::Local { path: path.clone() },
                path,
            ),
        };
        let manifest_path = dir.join("devcontainer-feature.json");
        let text = read_manifest_file(user_id, &manifest_path)?;
        let manifest = manifest::parse_manifest(user_id, &text)?;
        if !dir.join("install.sh").is_file() {
            return Err(FeatureError::InvalidManifest {
                feature: user_id.to_string(),
                reason: "the feature has no install.sh".to_string(),
            });
        }
        Ok((
            key,
            Fetched {
                source,
                dir,
                manifest,
                ref_id,
            },
        ))
    }
}

/// Fetches, validates and orders the features of a config.
///
/// - `features`: the config's `features`, reference → options (an object of options, a version
///   string, or a boolean), in config order.
/// - `override_install_order`: the config's `overrideFeatureInstallOrder`.
/// - `config_dir`: the folder holding devcontainer.json; `./name` references resolve against it
///   and must stay inside it (also for `dependsOn` of local features, as in the reference).
/// - `cache_dir`: where fetched features are kept, content-addressed; created if missing.
///
/// Errors name the feature and the reason on one line; [`FeatureError::hint`] says what to do.
///
/// The future is `Send`. Network I/O is async; cache and archive file I/O is done inline
/// (features are small), so run it on a multi-threaded runtime.
pub async fn prepare(
    features: &[(String, Value)],
    override_install_order: &[String],
    config_dir: &Path,
    cache_dir: &Path,
    options: &FetchOptions,
) -> Result<Resolved, FeatureError> {
    let mut warnings = Vec::new();
    let user_features = fold_deprecated_into_options(features, &mut warnings);
    if user_features.is_empty() {
        return Ok(Resolved {
            features: Vec::new(),
            warnings,
        });
    }
    let client = RegistryClient::new(&ClientOptions {
        extra_root_certs_pem: options.extra_root_certs_pem.clone(),
        timeout: options.timeout,
        user_agent: None,
        public_only: options.public_only,
    })
    .map_err(|e| FeatureError::InvalidOption {
        feature: "(fetch options)".to_string(),
        reason: e.to_string(),
        hint: e.hint(),
    })?;
    let mut p = Preparer {
        fetcher: fetch::Fetcher::new(client, cache_dir, options.refresh)?,
        config_dir,
        warnings,
    };

    // (1) The dependency graph: a FIFO worklist, equal features merged.
    let mut arena: Vec<Node> = Vec::new();
    let mut fetched: Vec<Option<Fetched>> = Vec::new();
    let mut required_by: Vec<Option<usize>> = Vec::new();
    let mut queue: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    for (user_id, opts) in &user_features {
        arena.push(Node::leaf(
            user_id,
            opts.clone(),
            SourceKey::Local {
                path: String::new(),
            },
        ));
        fetched.push(None);
        required_by.push(None);
        queue.push_back(arena.len() - 1);
    }
    let mut acc: Vec<usize> = Vec::new();
    while let Some(current) = queue.pop_front() {
        let user_id = arena[current].user_id.clone();
        let (key, f) = p.fetch(&user_id).await?;
        arena[current].source = key;
        if acc
            .iter()
            .any(|&a| order::equals(&arena[a], &arena[current]))
        {
            continue;
        }
        let m = &f.manifest;
        let mut aliases = vec![m.id.clone()];
        aliases.extend(m.legacy_ids.iter().cloned());
        arena[current].aliases = Some(aliases);
        for (dep_id, dep_opts) in &m.depends_on {
            arena.push(Node::leaf(
                dep_id,
                dep_opts.clone(),
                SourceKey::Local {
                    path: String::new(),
                },
            ));
            fetched.push(None);
            required_by.push(Some(current));
            let idx = arena.len() - 1;
            arena[current].depends_on.push(idx);
            queue.push_back(idx);
        }
        for soft_id in &m.installs_after {
            let key = p.unfetched_key(soft_id).map_err(|e| match e {
                FeatureError::InvalidReference { reason, hint, .. } => {
                    FeatureError::InvalidReference {
                        feature: user_id.clone(),
                        reason: format!("installsAfter entry `{soft_id}`: {reason}"),
                        hint,
                    }
                }
                other => other,
            })?;
            arena[current]
                .installs_after
                .push(Node::leaf(soft_id, Value::Object(Map::new()), key));
        }
        fetched[current] = Some(f);
        acc.push(current);
    }

    // (2) Round priorities from overrideFeatureInstallOrder.
    let mut overrides = Vec::new();
    for id in override_install_order {
        let key = p.unfetched_key(id).map_err(|e| match e {
            FeatureError::InvalidReference { reason, hint, .. } => FeatureError::InvalidReference {
                feature: id.clone(),
                reason: format!("in overrideFeatureInstallOrder: {reason}"),
                hint,
            },
            other => other,
        })?;
        overrides.push(Node::leaf(id, Value::Object(Map::new()), key));
    }
    order::apply_override(&mut arena, &acc, &overrides);

    // (3) Rounds.
    let ordered = order::install_order(&mut arena, &acc)?;

    let mut out = Vec::new();
    for idx in ordered {
        let Some(f) = fetched[idx].take() else {
            continue;
        };
        let node = &arena[idx];
        let (values, option_warnings) =
            options::resolve_values(&node.user_id, &f.manifest, &node.options)?;
        p.warnings.extend(option_warnings);
        let renamed_from = (f.manifest.id != f.ref_id && f.manifest.legacy_ids.contains(&f.ref_id))
            .then(|| f.ref_id.clone());
        if let Some(old) = &renamed_from {
            p.warnings.push(format!(
                "feature `{}` was renamed from `{old}` to `{}`; update the reference",
                node.user_id, f.manifest.id
            ));
        }
        if f.manifest.deprecated {
            p.warnings
                .push(format!("feature `{}` is deprecated", node.user_id));
        }
        out.push(ResolvedFeature {
            user_id: node.user_id.clone(),
            source: f.source,
            manifest: f.manifest,
            options: node.options.clone(),
            values,
            dir: f.dir,
            required_by: required_by[idx].map(|r| arena[r].user_id.clone()),
            renamed_from,
        });
    }
    Ok(Resolved {
        features: out,
        warnings: p.warnings,
    })
}

/// The largest `devcontainer-feature.json` read (1 MiB).
pub const MAX_MANIFEST_FILE_BYTES: u64 = 1 << 20;

/// Reads a feature's `devcontainer-feature.json`. A local feature's folder belongs to the
/// user, so the file must be a regular file (not a symlink, FIFO or device) of at most
/// [`MAX_MANIFEST_FILE_BYTES`], and the file opened must be the one checked.
pub(crate) fn read_manifest_file(feature: &str, path: &Path) -> Result<String, FeatureError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let fail = |reason: String| FeatureError::InvalidManifest {
        feature: feature.to_string(),
        reason,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(fail(
            "the feature has no devcontainer-feature.json (version 1 features are not supported)"
                .to_string(),
        )),
        Err(e) => return Err(fail(format!("cannot read {}: {e}", path.display()))),
    };
    if meta.file_type().is_symlink() {
        return Err(fail(format!(
            "{} is a symlink; it must be a regular file",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", path.display())));
    }
    let too_big = || {
        fail(format!(
            "{} is larger than {} KiB",
            path.display(),
            MAX_MANIFEST_FILE_BYTES / 1024
        ))
    };
    if meta.len() > MAX_MANIFEST_FILE_BYTES {
        return Err(too_big());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let opened = f
        .metadata()
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(fail(format!(
            "{} was replaced while it was read",
            path.display()
        )));
    }
    let mut buf = Vec::new();
    f.take(MAX_MANIFEST_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_MANIFEST_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(buf).map_err(|_| fail(format!("{} is not UTF-8", path.display())))
}

/// The shared devcontainer corpus, beside the repository (as the other crates' corpus tests
/// find it), if present.
#[cfg(test)]
pub(crate) fn corpus_dir() -> Option<PathBuf> {
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/devcontainer-corpus"),
        PathBuf::from("/work/shared/devcontainer-corpus"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prepare_can_run_on_a_spawned_task() {
        fn assert_send<T: Send>(_: &T) {}
        let list = Vec::new();
        let options = FetchOptions::default();
        let f = prepare(&list, &[], Path::new("/"), Path::new("/"), &options);
        assert_send(&f);
    }

    #[test]
    fn deprecated_features_fold_into_options() {
        let mut w = Vec::new();
        let out = fold_deprecated_into_options(
            &[
                ("maven".into(), json!(true)),
                ("ghcr.io/devcontainers/features/java:1".into(), json!("17")),
            ],
            &mut w,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, json!({"version": "17", "installMaven": true}));
        let out = fold_deprecated_into_options(&[("jupyterlab".into(), json!({}))], &mut w);
        assert_eq!(
            out,
            vec![(
                "ghcr.io/devcontainers/features/python:1".to_string(),
                json!({"installJupyterlab": true})
            )]
        );
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn local_manifests_must_be_small_regular_files() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().join("ok.json");
        std::fs::write(&ok, r#"{"id":"x"}"#).unwrap();
        assert_eq!(read_manifest_file("./x", &ok).unwrap(), r#"{"id":"x"}"#);
        let check = |path: &Path, want: &str| {
            let e = read_manifest_file("./evil", path).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, FeatureError::InvalidManifest { .. }) && msg.contains("./evil"),
                "{msg}"
            );
            assert!(msg.contains(want), "{msg} should say {want}");
        };
        // A symlink to /dev/zero would read forever; to a host file it would leak it.
        symlink("/dev/zero", tmp.path().join("zero.json")).unwrap();
        check(&tmp.path().join("zero.json"), "symlink");
        symlink(&ok, tmp.path().join("inside.json")).unwrap();
        check(&tmp.path().join("inside.json"), "symlink");
        std::fs::create_dir(tmp.path().join("dir.json")).unwrap();
        check(&tmp.path().join("dir.json"), "not a regular file");
        let big = tmp.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_MANIFEST_FILE_BYTES as usize + 1]).unwrap();
        check(&big, "larger than 1024 KiB");
        check(
            &tmp.path().join("missing.json"),
            "no devcontainer-feature.json",
        );
    }

    /// Through `prepare`: a local feature whose manifest is a symlink to `/dev/zero` (or to a
    /// host file) is refused at once, naming the feature, instead of being read forever. The
    /// read is synchronous, so `prepare` runs on a thread of its own and the test gives up on
    /// it rather than hanging.
    #[test]
    fn prepare_refuses_a_local_feature_manifest_symlink() {
        use std::os::unix::fs::symlink;
        let project = tempfile::tempdir().unwrap();
        let dc = project.path().join(".devcontainer");
        for (name, target) in [("zero", "/dev/zero"), ("host", "/etc/hostname")] {
            let dir = dc.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("install.sh"), "#!/bin/sh\n").unwrap();
            symlink(target, dir.join("devcontainer-feature.json")).unwrap();
        }
        let cache = tempfile::tempdir().unwrap();
        for id in ["./zero", "./host"] {
            let (tx, rx) = std::sync::mpsc::channel();
            let (dc, cache) = (dc.clone(), cache.path().to_path_buf());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let list = vec![(id.to_string(), json!({}))];
                let r = rt.block_on(prepare(&list, &[], &dc, &cache, &FetchOptions::default()));
                let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
            });
            let msg = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("prepare must not hang reading /dev/zero")
                .unwrap_err();
            assert!(msg.contains(id) && msg.contains("symlink"), "{msg}");
        }
    }
}
