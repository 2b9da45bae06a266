//! The store itself: blobs, unpacked layers, refs, locking and garbage collection.
//!
//! Every import goes through the same path, whatever its source (OCI layout, rootfs,
//! and later a registry): [`ImageStore::put_blob`] for each blob (verified by digest), then
//! [`ImageStore::commit_image`] which unpacks the layers and points the name at the manifest.
//!
//! Concurrency: writers (imports, resolve) hold a shared flock on `lock` for their whole
//! run; garbage collection holds it exclusively, so it never deletes blobs of an import in
//! flight. `refs.json` is rewritten (temp file + rename) under an exclusive flock on
//! `refs.lock`. Blobs and layers reach their final names only by atomic rename.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::digest::{sha256_hex, HashingWriter};
use crate::error::ImageError;
use crate::name::{parse_name, ImageName};
use crate::spec::{parse_json, ConfigFile, ImageConfig, Manifest};
use crate::unpack::{open_decompressed, unpack_layer};

/// How old an entry of `tmp/` must be before garbage collection removes it. Entries of
/// running imports are protected by the store lock; this only guards files written outside
/// it (the mmdebstrap output while it runs).
const TMP_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Largest manifest or config blob read into memory.
pub(crate) const MAX_JSON_BLOB: u64 = 8 * 1024 * 1024;

/// A local, content-addressed store of OCI images. See the crate docs for the layout.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// A summary of one stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Canonical `name:tag`.
    pub name: String,
    /// `sha256:…` digest of the manifest.
    pub digest: String,
    /// Bytes of the config and layer blobs as stored (compressed where the source was).
    pub size: u64,
    /// Number of layers.
    pub layers: usize,
    /// Creation time from the image config (RFC 3339), if recorded.
    pub created: Option<String>,
}

/// A resolved image, ready to be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Canonical `name:tag` (or the digest when resolved by digest).
    pub name: String,
    /// `sha256:…` digest of the manifest.
    pub digest: String,
    /// Runtime configuration from the image config.
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom layer first (overlayfs wants them reversed in
    /// `lowerdir=`). Shared by every user: never write to them.
    pub layer_dirs: Vec<PathBuf>,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Unpacked layer directories deleted.
    pub layers_removed: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RefsFile {
    version: u32,
    refs: BTreeMap<String, String>,
}

/// Holds a flock until dropped.
pub(crate) struct LockGuard {
    _file: File,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
    /// Opens (creating if needed) a store rooted at `root`, e.g. `/var/lib/warren/images`.
    ///
    /// New directories are created mode 0700: layers hold setuid binaries and device nodes
    /// that other users of the machine must not reach.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        for dir in [
            root.to_path_buf(),
            root.join("blobs"),
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir == root => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .recursive(true)
                        .create(&dir)
                        .map_err(ImageError::io("create", &dir))?;
                }
                Err(e) => return Err(ImageError::io("create", &dir)(e)),
            }
        }
        // Create the lock files up front so a read-only problem shows at open time.
        drop(store.lock_shared()?);
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    pub(crate) fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(sha256_hex(diff_id)?))
    }

    /// A fresh path under `tmp/` (nothing is created).
    pub(crate) fn tmp_path(&self, prefix: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()))
    }

    fn lock(&self, file: &str, op: FlockOperation) -> Result<LockGuard, ImageError> {
        let path = self.root.join(file);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(ImageError::io("open lock file", &path))?;
        loop {
            match rustix::fs::flock(&f, op) {
                Ok(()) => return Ok(LockGuard { _file: f }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ImageError::io("lock", &path)(e.into())),
            }
        }
    }

    /// Shared store lock: held by anything that adds blobs/layers or reads them for use.
    pub(crate) fn lock_shared(&self) -> Result<LockGuard, ImageError> {
        self.lock("lock", FlockOperation::LockShared)
    }

    /// Exclusive store lock: held by garbage collection.
    fn lock_exclusive(&self) -> Result<LockGuard, ImageError> {
        self.lock("lock", FlockOperation::LockExclusive)
    }

    fn lock_refs(&self) -> Result<LockGuard, ImageError> {
        self.lock("refs.lock", FlockOperation::LockExclusive)
    }

    /// Writes a blob from `reader`, verifying it against `expected` when given, and returns
    /// `(digest, size)`. A blob already present under `expected` is not read again.
    /// Callers hold the shared store lock.
    pub(crate) fn put_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64), ImageError> {
        if let Some(expected) = expected {
            let path = self.blob_path(expected)?;
            if let Ok(meta) = fs::metadata(&path) {
                return Ok((expected.to_string(), meta.len()));
            }
        }
        let tmp = self.tmp_path("blob");
        let file = File::create_new(&tmp).map_err(ImageError::io("create", &tmp))?;
        let result = (|| {
            let mut w = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
            io::copy(&mut reader, &mut w).map_err(|e| ImageError::Io {
                action: "copy",
                path: PathBuf::from(what),
                source: e,
            })?;
            let (buf, digest, size) = w.finish();
            let file = buf
                .into_inner()
                .map_err(|e| ImageError::io("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(ImageError::io("sync", &tmp))?;
            if let Some(expected) = expected {
                if expected != digest {
                    return Err(ImageError::DigestMismatch {
                        what: what.to_string(),
                        expected: expected.to_string(),
                        actual: digest,
                    });
                }
            }
            let dest = self.blob_path(&digest)?;
            fs::rename(&tmp, &dest).map_err(ImageError::io("store blob", &dest))?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Moves a fully written, synced temp file whose digest is known into the blob store;
    /// returns its size.
    pub(crate) fn adopt_blob(&self, tmp: &Path, digest: &str) -> Result<u64, ImageError> {
        let dest = self.blob_path(digest)?;
        let size = fs::metadata(tmp)
            .map_err(ImageError::io("inspect", tmp))?
            .len();
        fs::rename(tmp, &dest).map_err(ImageError::io("store blob", &dest))?;
        Ok(size)
    }

    /// Stores bytes as a blob; returns `(digest, size)`.
    pub(crate) fn put_blob_bytes(
        &self,
        bytes: &[u8],
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64), ImageError> {
        self.put_blob(bytes, expected, what)
    }

    pub(crate) fn read_blob_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
        what: &str,
    ) -> Result<T, ImageError> {
        let path = self.blob_path(digest)?;
        let mut bytes = Vec::new();
        File::open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ImageError::Corrupt {
                        reason: format!("{what} blob {digest} is missing"),
                    }
                } else {
                    ImageError::io("open", &path)(e)
                }
            })?
            .take(MAX_JSON_BLOB)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io("read", &path))?;
        parse_json(&bytes, format!("{what} {digest}"))
    }

    /// Makes sure the layer with `diff_id` is unpacked from the blob `blob_digest`; returns
    /// its directory. Callers hold the shared store lock.
    pub(crate) fn ensure_layer(
        &self,
        blob_digest: &str,
        diff_id: &str,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blob_path(blob_digest)?;
        let (reader, _) = open_decompressed(&blob)?;
        self.unpack_into_store(reader, Some(diff_id))
    }

    /// Unpacks a decompressed layer stream into `layers/<diff_id hex>` via a temp dir and an
    /// atomic rename; with `expected` set, a stream hashing differently is refused.
    /// Returns the layer directory. Callers hold the shared store lock.
    pub(crate) fn unpack_into_store(
        &self,
        reader: impl Read,
        expected: Option<&str>,
    ) -> Result<PathBuf, ImageError> {
        Ok(self.unpack_into_store_with_id(reader, expected)?.0)
    }

    pub(crate) fn unpack_into_store_with_id(
        &self,
        reader: impl Read,
        expected: Option<&str>,
    ) -> Result<(PathBuf, String), ImageError> {
        let tmp = self.tmp_path("layer");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(ImageError::io("create", &tmp))?;
        let result = (|| {
            let diff_id = unpack_layer(reader, &tmp)?;
            if let Some(expected) = expected {
                if expected != diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: "uncompressed layer (diff_id)".to_string(),
                        expected: expected.to_string(),
                        actual: diff_id,
                    });
                }
            }
            let dest = self.layer_path(&diff_id)?;
            // Flush the unpacked files before the layer gets its final name.
            let dir = File::open(&tmp).map_err(ImageError::io("open", &tmp))?;
            rustix::fs::syncfs(&dir).map_err(|e| ImageError::io("sync", &tmp)(e.into()))?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => {}
                // Another process unpacked the same layer first: keep theirs.
                Err(_) if dest.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                }
                Err(e) => return Err(ImageError::io("store layer", &dest)(e)),
            }
            Ok((dest, diff_id))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Points `name` at an already stored manifest after making sure its config and layer
    /// blobs are present and every layer is unpacked. This is the last step of every import.
    /// Callers hold the shared store lock.
    pub(crate) fn commit_image(
        &self,
        name: &ImageName,
        manifest_digest: &str,
    ) -> Result<ImageInfo, ImageError> {
        let (manifest, config) = self.load(manifest_digest)?;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            self.ensure_layer(&layer.digest, diff_id)?;
        }
        self.update_refs(|refs| {
            refs.insert(name.canonical(), manifest_digest.to_string());
            Ok(())
        })?;
        Ok(info(name.canonical(), manifest_digest, &manifest, &config))
    }

    pub(crate) fn load_manifest(
        &self,
        manifest_digest: &str,
    ) -> Result<(Manifest, ConfigFile), ImageError> {
        self.load(manifest_digest)
    }

    /// Reads a stored manifest and its config, checking they agree on the layer count.
    fn load(&self, manifest_digest: &str) -> Result<(Manifest, ConfigFile), ImageError> {
        let manifest: Manifest = self.read_blob_json(manifest_digest, "manifest")?;
        let config: ConfigFile = self.read_blob_json(&manifest.config.digest, "image config")?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Corrupt {
                reason: format!(
                    "manifest {manifest_digest} has {} layers but its config lists {} diff_ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        Ok((manifest, config))
    }

    /// The manifest digest `name` points at, if any.
    pub(crate) fn ref_of(&self, name: &ImageName) -> Result<Option<String>, ImageError> {
        Ok(self.read_refs()?.refs.get(&name.canonical()).cloned())
    }

    fn read_refs(&self) -> Result<RefsFile, ImageError> {
        let path = self.root.join("refs.json");
        match fs::read(&path) {
            Ok(bytes) => parse_json(&bytes, "refs.json"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RefsFile {
                version: 1,
                refs: BTreeMap::new(),
            }),
            Err(e) => Err(ImageError::io("read", &path)(e)),
        }
    }

    /// Read-modify-write of refs.json under its lock, replaced atomically.
    fn update_refs(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let _guard = self.lock_refs()?;
        let mut refs = self.read_refs()?;
        change(&mut refs.refs)?;
        refs.version = 1;
        let path = self.root.join("refs.json");
        let tmp = self.tmp_path("refs");
        let bytes = serde_json::to_vec_pretty(&refs).map_err(|source| ImageError::Json {
            what: "refs.json".to_string(),
            source,
        })?;
        let result = (|| {
            let mut f = File::create_new(&tmp).map_err(ImageError::io("create", &tmp))?;
            f.write_all(&bytes).map_err(ImageError::io("write", &tmp))?;
            f.sync_all().map_err(ImageError::io("sync", &tmp))?;
            fs::rename(&tmp, &path).map_err(ImageError::io("replace", &path))?;
            if let Ok(dir) = File::open(&self.root) {
                let _ = dir.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// All stored images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let _guard = self.lock_shared()?;
        let refs = self.read_refs()?;
        refs.refs
            .iter()
            .map(|(name, digest)| {
                let (manifest, config) = self.load(digest)?;
                Ok(info(name.clone(), digest, &manifest, &config))
            })
            .collect()
    }

    /// Finds an image by name (`name[:tag]`) or by manifest digest (`sha256:<hex>`) and
    /// returns its config and unpacked layers (re-unpacking any that went missing).
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        // Held from reading the ref to returning: a concurrent removal cannot collect the
        // image half-way.
        let _guard = self.lock_shared()?;
        let (canonical, digest) = if sha256_hex(name).is_ok() {
            if !self.blob_path(name)?.is_file() {
                return Err(ImageError::NotFound {
                    name: name.to_string(),
                });
            }
            (name.to_string(), name.to_string())
        } else {
            let canonical = parse_name(name)?.canonical();
            let refs = self.read_refs()?;
            let digest =
                refs.refs
                    .get(&canonical)
                    .cloned()
                    .ok_or_else(|| ImageError::NotFound {
                        name: canonical.clone(),
                    })?;
            (canonical, digest)
        };
        let (manifest, config) = self.load(&digest)?;
        let layer_dirs = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| self.ensure_layer(&layer.digest, diff_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image {
            name: canonical,
            digest,
            config: config
                .config
                .as_ref()
                .map(ImageConfig::from)
                .unwrap_or_default(),
            layer_dirs,
        })
    }

    /// Removes an image name, then garbage-collects what no other image needs.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        self.remove_with(name, &[])
    }

    /// Like [`ImageStore::remove`], but refuses with [`ImageError::InUse`] when `in_use`
    /// (names or manifest digests that workspaces run from) covers the image, and keeps the
    /// content of every digest in `in_use` through the garbage collection.
    pub fn remove_with(&self, name: &str, in_use: &[String]) -> Result<(), ImageError> {
        let canonical = parse_name(name)?.canonical();
        let _guard = self.lock_exclusive()?;
        self.update_refs(|refs| {
            let digest = refs
                .get(&canonical)
                .cloned()
                .ok_or_else(|| ImageError::NotFound {
                    name: canonical.clone(),
                })?;
            let other_names_keep_it = refs.iter().any(|(n, d)| *d == digest && *n != canonical);
            let used = in_use.iter().any(|u| {
                if sha256_hex(u).is_ok() {
                    *u == digest && !other_names_keep_it
                } else {
                    parse_name(u)
                        .map(|n| n.canonical() == canonical)
                        .unwrap_or(false)
                }
            });
            if used {
                return Err(ImageError::InUse {
                    name: canonical.clone(),
                });
            }
            refs.remove(&canonical);
            Ok(())
        })?;
        self.gc_locked(in_use)?;
        Ok(())
    }

    /// Deletes blobs and unpacked layers that no name (nor any digest in `keep`) needs,
    /// and stale temp files. Waits for running imports to finish first.
    pub fn gc(&self, keep: &[String]) -> Result<GcReport, ImageError> {
        let _guard = self.lock_exclusive()?;
        self.gc_locked(keep)
    }

    fn gc_locked(&self, keep: &[String]) -> Result<GcReport, ImageError> {
        let refs = self.read_refs()?;
        let mut roots: Vec<&str> = refs.refs.values().map(String::as_str).collect();
        for k in keep {
            if sha256_hex(k).is_ok() && self.blob_path(k)?.is_file() {
                roots.push(k);
            }
        }
        let mut blobs: HashSet<String> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for digest in roots {
            // Any unreadable root aborts the collection: better keep garbage than lose data.
            let (manifest, config) = self.load(digest)?;
            blobs.insert(sha256_hex(digest)?.to_string());
            blobs.insert(sha256_hex(&manifest.config.digest)?.to_string());
            for l in &manifest.layers {
                blobs.insert(sha256_hex(&l.digest)?.to_string());
            }
            for d in &config.rootfs.diff_ids {
                layers.insert(sha256_hex(d)?.to_string());
            }
        }
        let mut report = GcReport::default();
        let blob_dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).map_err(ImageError::io("read", &blob_dir))? {
            let entry = entry.map_err(ImageError::io("read", &blob_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                fs::remove_file(entry.path()).map_err(ImageError::io("remove", entry.path()))?;
                report.blobs_removed += 1;
            }
        }
        let layer_dir = self.root.join("layers");
        for entry in fs::read_dir(&layer_dir).map_err(ImageError::io("read", &layer_dir))? {
            let entry = entry.map_err(ImageError::io("read", &layer_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !layers.contains(&name) {
                // Move it out of its final name first so a crash never leaves half a layer.
                let doomed = self.tmp_path("gc");
                fs::rename(entry.path(), &doomed)
                    .map_err(ImageError::io("remove", entry.path()))?;
                fs::remove_dir_all(&doomed).map_err(ImageError::io("remove", &doomed))?;
                report.layers_removed += 1;
            }
        }
        // Build cache entries whose layers are gone can never hit again.
        self.prune_build_cache();
        let tmp_dir = self.root.join("tmp");
        let now = SystemTime::now();
        for entry in fs::read_dir(&tmp_dir).map_err(ImageError::io("read", &tmp_dir))? {
            let entry = entry.map_err(ImageError::io("read", &tmp_dir))?;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > TMP_MAX_AGE);
            if old {
                let p = entry.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        Ok(report)
    }
}

pub(crate) fn info(
    name: String,
    digest: &str,
    manifest: &Manifest,
    config: &ConfigFile,
) -> ImageInfo {
    ImageInfo {
        name,
        digest: digest.to_string(),
        size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
        layers: manifest.layers.len(),
        created: config.created.clone(),
    }
}
