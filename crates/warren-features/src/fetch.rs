//! Fetching features into the cache: OCI artifacts, https tarballs, local folders.
//!
//! Cache layout (under the caller's cache folder):
//!
//! - `blobs/sha256/<hex>`: manifests, layers and tarballs, named by their digest.
//! - `refs/<sha256 of "registry/path:tag" or of the URL>`: the digest a tag or URL resolved to
//!   (a small JSON file), so that a second `prepare` needs no network.
//! - `trees/<hex>/`: a layer or tarball unpacked (safely), named by the archive's digest.
//! - `tmp/`: work area; results move into place by rename.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use warren_image::registry::{self, RegistryClient};

use crate::error::FeatureError;
use crate::reference::OciRef;

/// Media type of a feature artifact's config (the spec's `application/vnd.devcontainers`).
pub const FEATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.devcontainers";
/// Media type of a feature artifact's tar layer.
pub const FEATURE_LAYER_MEDIA_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";

/// The largest feature archive accepted, in bytes.
const MAX_ARCHIVE_BYTES: u64 = 512 * 1024 * 1024;
/// The most bytes a feature archive may unpack to.
const MAX_UNPACKED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The most entries a feature archive may hold.
const MAX_ENTRIES: usize = 100_000;

/// What an OCI reference resolved to.
#[derive(Debug, Clone)]
pub(crate) struct OciResolved {
    pub manifest_digest: String,
    pub layer_digest: String,
}

pub(crate) struct Fetcher {
    pub client: RegistryClient,
    pub cache: PathBuf,
    pub refresh: bool,
}

/// A name unique to this process and call, for work files (several `prepare` calls may run at
/// once, in one process or several).
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Fetcher {
    pub fn new(client: RegistryClient, cache: &Path, refresh: bool) -> Result<Self, FeatureError> {
        for d in ["blobs/sha256", "refs", "trees", "tmp"] {
            let p = cache.join(d);
            fs::create_dir_all(&p).map_err(FeatureError::io("create", &p))?;
        }
        Ok(Fetcher {
            client,
            cache: cache.to_path_buf(),
            refresh,
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, FeatureError> {
        let hex = registry::sha256_hex(digest).map_err(|e| FeatureError::Fetch {
            feature: digest.to_string(),
            reason: e.to_string(),
            hint: e.hint(),
        })?;
        Ok(self.cache.join("blobs/sha256").join(hex))
    }

    fn read_ref(&self, key: &str) -> Option<String> {
        let text = fs::read_to_string(self.cache.join("refs").join(sha_hex(key))).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        if v.get("ref").and_then(Value::as_str) != Some(key) {
            return None;
        }
        let d = v.get("digest")?.as_str()?.to_string();
        registry::sha256_hex(&d).ok()?;
        Some(d)
    }

    fn write_ref(&self, key: &str, digest: &str) -> Result<(), FeatureError> {
        let body = serde_json::json!({ "ref": key, "digest": digest }).to_string();
        self.write_atomic(&self.cache.join("refs").join(sha_hex(key)), body.as_bytes())
    }

    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), FeatureError> {
        let tmp = self.cache.join("tmp").join(format!(
            "{}.{}",
            dest.file_name().unwrap_or_default().to_string_lossy(),
            unique_suffix()
        ));
        fs::write(&tmp, data).map_err(FeatureError::io("write", &tmp))?;
        fs::rename(&tmp, dest).map_err(FeatureError::io("rename", dest))
    }

    /// Reads a cached blob, checking its digest (the cache may have been tampered with).
    fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let data = fs::read(self.blob_path(digest).ok()?).ok()?;
        (registry::digest_of(&data) == digest).then_some(data)
    }

    /// Resolves an OCI reference to its manifest and layer digests, from the cache when
    /// possible (tags are remembered unless `refresh`).
    pub async fn resolve_oci(
        &self,
        feature: &str,
        r: &OciRef,
    ) -> Result<OciResolved, FeatureError> {
        let tag_key = format!("{}/{}:{}", r.registry, r.path, r.version());
        let cached_digest = match &r.digest {
            Some(d) => Some(d.clone()),
            None if !self.refresh => self.read_ref(&tag_key),
            None => None,
        };
        let cached = cached_digest
            .as_deref()
            .and_then(|d| self.read_blob(d).map(|b| (d.to_string(), b)));
        let (digest, bytes) = match cached {
            Some(hit) => hit,
            None => {
                let m = self
                    .client
                    .get_manifest(
                        &r.registry,
                        &r.path,
                        r.version(),
                        &[registry::OCI_MANIFEST, registry::DOCKER_MANIFEST],
                    )
                    .await
                    .map_err(|e| FeatureError::fetch(feature, &e))?;
                self.write_atomic(&self.blob_path(&m.digest)?, &m.bytes)?;
                if r.digest.is_none() {
                    self.write_ref(&tag_key, &m.digest)?;
                }
                (m.digest, m.bytes)
            }
        };
        let layer_digest = parse_feature_manifest(feature, &bytes)?;
        Ok(OciResolved {
            manifest_digest: digest,
            layer_digest,
        })
    }

    /// Makes sure the layer is unpacked in the cache and returns the folder.
    pub async fn fetch_oci_tree(
        &self,
        feature: &str,
        r: &OciRef,
        layer_digest: &str,
    ) -> Result<PathBuf, FeatureError> {
        let tree = self.tree_path(layer_digest)?;
        if tree.is_dir() {
            return Ok(tree);
        }
        let blob = self.blob_path(layer_digest)?;
        if self.read_blob_ok(layer_digest, &blob).is_none() {
            self.client
                .get_blob_to_file(
                    &r.registry,
                    &r.path,
                    layer_digest,
                    &blob,
                    Some(MAX_ARCHIVE_BYTES),
                )
                .await
                .map_err(|e| FeatureError::fetch(feature, &e))?;
        }
        self.unpack_into_cache(feature, &blob, &tree)?;
        Ok(tree)
    }

    fn read_blob_ok(&self, digest: &str, path: &Path) -> Option<()> {
        let mut f = fs::File::open(path).ok()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        (format!("sha256:{}", hex::encode(h.finalize())) == digest).then_some(())
    }

    fn tree_path(&self, digest: &str) -> Result<PathBuf, FeatureError> {
        let hex = registry::sha256_hex(digest).map_err(|e| FeatureError::Fetch {
            feature: digest.to_string(),
            reason: e.to_string(),
            hint: e.hint(),
        })?;
        Ok(self.cache.join("trees").join(hex))
    }

    /// Fetches an https tarball (or finds it in the cache). Returns (digest, unpacked folder).
    pub async fn fetch_tarball(
        &self,
        feature: &str,
        url: &str,
    ) -> Result<(String, PathBuf), FeatureError> {
        let key = format!("url:{url}");
        if !self.refresh {
            if let Some(d) = self.read_ref(&key) {
                let tree = self.tree_path(&d)?;
                if tree.is_dir() {
                    return Ok((d, tree));
                }
            }
        }
        let fail = |reason: String, hint: Option<String>| FeatureError::Fetch {
            feature: feature.to_string(),
            reason,
            hint,
        };
        self.client
            .check_url(url)
            .map_err(|reason| fail(reason, None))?;
        let mut response = self
            .client
            .http()
            .get(url)
            .send()
            .await
            .map_err(|e| {
                fail(
                    registry::error_chain(&e),
                    Some("check the URL and this machine's network access; for a private CA, pass its certificate in the fetch options".to_string()),
                )
            })?;
        if !response.status().is_success() {
            return Err(fail(
                format!("{url} answered {}", response.status().as_u16()),
                Some("check the URL; the tarball may not be published there".to_string()),
            ));
        }
        let mut data = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            fail(
                registry::error_chain(&e),
                Some("the download broke off; try again".to_string()),
            )
        })? {
            if data.len() as u64 + chunk.len() as u64 > MAX_ARCHIVE_BYTES {
                return Err(fail(
                    format!("the tarball is larger than {MAX_ARCHIVE_BYTES} bytes"),
                    Some("check that the URL names a feature tarball".to_string()),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        if data.is_empty() {
            return Err(fail(
                format!("{url} returned an empty body"),
                Some("check that the URL names a feature tarball".to_string()),
            ));
        }
        let digest = registry::digest_of(&data);
        let blob = self.blob_path(&digest)?;
        self.write_atomic(&blob, &data)?;
        let tree = self.tree_path(&digest)?;
        if !tree.is_dir() {
            self.unpack_into_cache(feature, &blob, &tree)?;
        }
        self.write_ref(&key, &digest)?;
        Ok((digest, tree))
    }

    fn unpack_into_cache(
        &self,
        feature: &str,
        archive: &Path,
        tree: &Path,
    ) -> Result<(), FeatureError> {
        let work = self.cache.join("tmp").join(format!(
            "tree-{}-{}",
            unique_suffix(),
            tree.file_name().unwrap_or_default().to_string_lossy()
        ));
        if work.exists() {
            fs::remove_dir_all(&work).map_err(FeatureError::io("remove", &work))?;
        }
        fs::create_dir_all(&work).map_err(FeatureError::io("create", &work))?;
        let file = fs::File::open(archive).map_err(FeatureError::io("open", archive))?;
        if let Err(e) = unpack_safely(feature, file, &work) {
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
        match fs::rename(&work, tree) {
            Ok(()) => Ok(()),
            Err(_) if tree.is_dir() => {
                // Someone else unpacked the same content meanwhile.
                let _ = fs::remove_dir_all(&work);
                Ok(())
            }
            Err(e) => Err(FeatureError::Io {
                action: "rename",
                path: tree.to_path_buf(),
                source: e,
            }),
        }
    }
}

/// Checks a feature manifest (config media type, a tar layer) and returns the layer's digest.
fn parse_feature_manifest(feature: &str, bytes: &[u8]) -> Result<String, FeatureError> {
    let fail = |reason: String| FeatureError::Fetch {
        feature: feature.to_string(),
        reason,
        hint: Some(
            "the reference must name a dev container feature published as the features \
             distribution spec describes (e.g. with `devcontainer features publish`)"
                .to_string(),
        ),
    };
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| fail(format!("unreadable manifest: {e}")))?;
    let config_type = v
        .pointer("/config/mediaType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if config_type != FEATURE_CONFIG_MEDIA_TYPE {
        return Err(fail(format!(
            "the artifact is not a dev container feature (config media type `{config_type}`, expected `{FEATURE_CONFIG_MEDIA_TYPE}`)"
        )));
    }
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layer = layers
        .iter()
        .find(|l| l.get("mediaType").and_then(Value::as_str) == Some(FEATURE_LAYER_MEDIA_TYPE))
        .or_else(|| layers.first())
        .ok_or_else(|| fail("the manifest has no layer".to_string()))?;
    let digest = layer
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("the manifest's layer has no digest".to_string()))?;
    registry::sha256_hex(digest).map_err(|e| fail(e.to_string()))?;
    Ok(digest.to_string())
}

/// Unpacks a (possibly gzip-compressed) tar into `dest`, refusing absolute paths, `..`, paths
/// through links, links that lead outside, and anything but files, folders and links.
pub(crate) fn unpack_safely(
    feature: &str,
    reader: impl Read,
    dest: &Path,
) -> Result<(), FeatureError> {
    let mut reader = io::BufReader::new(reader);
    let head = io::BufRead::fill_buf(&mut reader).map_err(FeatureError::io("read", dest))?;
    let gz = head.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(input);
    let unsafe_entry = |entry: &str, reason: &str| FeatureError::UnsafeArchive {
        feature: feature.to_string(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let bad_archive = |e: io::Error| FeatureError::Fetch {
        feature: feature.to_string(),
        reason: format!("the archive is damaged: {e}"),
        hint: Some("re-publish the feature".to_string()),
    };
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in archive.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(unsafe_entry("*", "the archive holds too many entries"));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel =
            safe_relative(&name).ok_or_else(|| unsafe_entry(&name, "absolute path or `..`"))?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(unsafe_entry(&name, "an entry without a name"));
        }
        // No ancestor may be a symlink: writes must not be redirected.
        let mut cur = dest.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len() - 1] {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_entry(&name, "the path goes through a link"))
                }
                Ok(m) if !m.is_dir() => {
                    return Err(unsafe_entry(&name, "the path goes through a file"))
                }
                Ok(_) => {}
                Err(_) => fs::create_dir_all(&cur).map_err(FeatureError::io("create", &cur))?,
            }
        }
        let target = dest.join(&rel);
        let existing = fs::symlink_metadata(&target).ok();
        let clear = |target: &Path| -> Result<(), FeatureError> {
            if let Some(m) = &existing {
                if m.is_dir() {
                    return Err(unsafe_entry(&name, "replaces a folder"));
                }
                fs::remove_file(target).map_err(FeatureError::io("remove", target))?;
            }
            Ok(())
        };
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_some_and(|m| !m.is_dir()) {
                    return Err(unsafe_entry(&name, "a folder replaces a file or link"));
                }
                fs::create_dir_all(&target).map_err(FeatureError::io("create", &target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                clear(&target)?;
                total += entry.header().size().unwrap_or(0);
                if total > MAX_UNPACKED_BYTES {
                    return Err(unsafe_entry(&name, "the archive unpacks to too much data"));
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                let mut out =
                    fs::File::create(&target).map_err(FeatureError::io("create", &target))?;
                io::copy(&mut entry, &mut out).map_err(bad_archive)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o600))
                    .map_err(FeatureError::io("chmod", &target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| unsafe_entry(&name, "a link without a target"))?
                    .into_owned();
                if link.is_absolute() {
                    return Err(unsafe_entry(&name, "a link to an absolute path"));
                }
                let parent = rel.parent().unwrap_or(Path::new(""));
                let joined = parent.join(&link);
                if safe_relative(&joined.to_string_lossy()).is_none() {
                    return Err(unsafe_entry(&name, "a link that leads outside the feature"));
                }
                clear(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(FeatureError::io("link", &target))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| unsafe_entry(&name, "a hard link without a target"))?
                    .into_owned();
                let src_rel = safe_relative(&link.to_string_lossy()).ok_or_else(|| {
                    unsafe_entry(&name, "a hard link to a path outside the feature")
                })?;
                let src = dest.join(&src_rel);
                let m = fs::symlink_metadata(&src)
                    .map_err(|_| unsafe_entry(&name, "a hard link to a file not in the archive"))?;
                if !m.is_file() {
                    return Err(unsafe_entry(
                        &name,
                        "a hard link to something other than a file",
                    ));
                }
                clear(&target)?;
                fs::copy(&src, &target).map_err(FeatureError::io("copy", &target))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            _ => {
                return Err(unsafe_entry(
                    &name,
                    "device nodes, fifos and other special files are not allowed",
                ))
            }
        }
    }
    Ok(())
}

/// The normalised relative path of an archive entry, or None if it is absolute or climbs out.
pub(crate) fn safe_relative(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Copies a feature folder (files, folders, links that stay inside) for the build context.
pub(crate) fn copy_tree(feature: &str, src: &Path, dst: &Path) -> Result<(), FeatureError> {
    fs::create_dir_all(dst).map_err(FeatureError::io("create", dst))?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = src.join(&rel);
        let entries = fs::read_dir(&dir).map_err(FeatureError::io("read", &dir))?;
        for e in entries {
            let e = e.map_err(FeatureError::io("read", &dir))?;
            let r = rel.join(e.file_name());
            let from = src.join(&r);
            let to = dst.join(&r);
            let ft = e.file_type().map_err(FeatureError::io("stat", &from))?;
            if ft.is_dir() {
                fs::create_dir_all(&to).map_err(FeatureError::io("create", &to))?;
                stack.push(r);
            } else if ft.is_file() {
                fs::copy(&from, &to).map_err(FeatureError::io("copy", &from))?;
            } else if ft.is_symlink() {
                let link = fs::read_link(&from).map_err(FeatureError::io("read", &from))?;
                let joined = r.parent().unwrap_or(Path::new("")).join(&link);
                if link.is_absolute() || safe_relative(&joined.to_string_lossy()).is_none() {
                    return Err(FeatureError::UnsafeArchive {
                        feature: feature.to_string(),
                        entry: r.display().to_string(),
                        reason: "a link that leads outside the feature".to_string(),
                    });
                }
                std::os::unix::fs::symlink(&link, &to).map_err(FeatureError::io("link", &to))?;
            } else {
                return Err(FeatureError::UnsafeArchive {
                    feature: feature.to_string(),
                    entry: r.display().to_string(),
                    reason: "device nodes, fifos and sockets are not allowed".to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        // Write the name bytes directly: `set_path` refuses `..`, which is what we test.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn good_archives_unpack() {
        let data = tar_with(|b| {
            raw_entry(b, "./", tar::EntryType::Directory, None, b"");
            raw_entry(
                b,
                "./install.sh",
                tar::EntryType::Regular,
                None,
                b"#!/bin/sh\n",
            );
            raw_entry(b, "./lib/", tar::EntryType::Directory, None, b"");
            raw_entry(b, "./lib/x", tar::EntryType::Regular, None, b"x");
            raw_entry(b, "./lib/y", tar::EntryType::Symlink, Some("x"), b"");
            raw_entry(b, "./z", tar::EntryType::Link, Some("./lib/x"), b"");
        });
        let tmp = tempfile::tempdir().unwrap();
        unpack_safely("f", &data[..], tmp.path()).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("lib/y")).unwrap(), "x");
        assert_eq!(fs::read_to_string(tmp.path().join("z")).unwrap(), "x");
        let mode = fs::metadata(tmp.path().join("install.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn unsafe_archives_are_refused() {
        type Case = Vec<(&'static str, tar::EntryType, Option<&'static str>)>;
        let cases: Vec<Case> = vec![
            vec![("../evil", tar::EntryType::Regular, None)],
            vec![("a/../../evil", tar::EntryType::Regular, None)],
            vec![("/etc/evil", tar::EntryType::Regular, None)],
            vec![("l", tar::EntryType::Symlink, Some("/etc"))],
            vec![("l", tar::EntryType::Symlink, Some("../.."))],
            vec![
                ("l", tar::EntryType::Symlink, Some(".")),
                ("l/x", tar::EntryType::Regular, None),
            ],
            vec![("h", tar::EntryType::Link, Some("../x"))],
            vec![("dev", tar::EntryType::Char, None)],
            vec![("blk", tar::EntryType::Block, None)],
            vec![("fifo", tar::EntryType::Fifo, None)],
        ];
        for case in cases {
            let data = tar_with(|b| {
                for (name, kind, link) in &case {
                    raw_entry(b, name, *kind, *link, b"");
                }
            });
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("d");
            fs::create_dir(&dest).unwrap();
            let e = unpack_safely("ghcr.io/x/y/z:1", &data[..], &dest).unwrap_err();
            assert!(
                matches!(e, FeatureError::UnsafeArchive { .. }),
                "{case:?}: {e}"
            );
            assert!(e.to_string().contains("ghcr.io/x/y/z:1"));
            assert!(!tmp.path().join("evil").exists());
        }
    }
}
