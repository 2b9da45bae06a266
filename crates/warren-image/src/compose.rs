//! Making new images out of stored ones: the image builder's side of the store.
//!
//! A build starts from a parent image's [`ImageState`] (its layers, config and history), adds
//! layers made from directories ([`ImageStore::layer_from_upper`] for a build sandbox's overlay
//! upper directory, [`ImageStore::layer_from_dir`] for a plain tree) and config changes, and
//! ends with [`ImageStore::commit_state`], which writes the config and manifest and points a
//! name at them. Every step's result can be remembered under a cache key
//! ([`ImageStore::cache_put`], `buildcache/<hex>.json`) so that a rebuild reuses it.
//!
//! Layers written here are uncompressed tars: building is local, and hashing once is cheaper
//! than compressing. Their bytes depend only on the tree (sorted entries, no access times).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::digest::{digest_bytes, sha256_hex, HashingWriter};
use crate::error::ImageError;
use crate::name::parse_name;
use crate::pack::{pack_dir, pack_overlay_upper};
use crate::spec::{
    host_arch, ConfigFile, ContainerConfig, Descriptor, History, ImageConfig, Manifest, RootFs,
    MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
};
use crate::store::{ImageInfo, ImageStore, LockGuard};

/// One stored layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:…` of the blob as stored.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar (the config's `diff_id`).
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

/// Everything an image is made of apart from its name: what a build step produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageState {
    /// Layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// The runtime configuration.
    pub config: ImageConfig,
    /// One entry per step (layer or config-only), oldest first.
    pub history: Vec<History>,
    /// OCI architecture (e.g. `amd64`).
    pub architecture: String,
}

/// Keeps the store's garbage collection from running while held (a build writes layers that no
/// name refers to yet).
pub struct StoreHold {
    _guard: LockGuard,
}

/// The current time in RFC 3339, for history entries.
pub fn now_rfc3339() -> Option<String> {
    OffsetDateTime::now_utc().format(&Rfc3339).ok()
}

impl ImageStore {
    /// Holds off garbage collection until the returned value is dropped.
    pub fn hold(&self) -> Result<StoreHold, ImageError> {
        Ok(StoreHold {
            _guard: self.lock_shared()?,
        })
    }

    /// The state of a stored image (by name or manifest digest), to build on.
    pub fn image_state(&self, name: &str) -> Result<ImageState, ImageError> {
        let image = self.resolve(name)?;
        let (manifest, config) = self.load_manifest(&image.digest)?;
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, d)| LayerRef {
                digest: l.digest.clone(),
                diff_id: d.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect();
        Ok(ImageState {
            layers,
            config: image.config,
            history: config.history.unwrap_or_default(),
            architecture: if config.architecture.is_empty() {
                host_arch().to_string()
            } else {
                config.architecture
            },
        })
    }

    /// The unpacked directories of a state's layers, bottom first (unpacking any missing one).
    pub fn layer_dirs(&self, state: &ImageState) -> Result<Vec<PathBuf>, ImageError> {
        let _guard = self.lock_shared()?;
        state
            .layers
            .iter()
            .map(|l| self.ensure_layer(&l.digest, &l.diff_id))
            .collect()
    }

    /// Stores the overlayfs upper directory `upper` as a layer: whiteouts (0/0 character
    /// devices) become `.wh.NAME`, opaque directories get `.wh..wh..opq`. `None` when `upper`
    /// is empty (the step changed nothing).
    pub fn layer_from_upper(&self, upper: &Path) -> Result<Option<LayerRef>, ImageError> {
        self.layer_from(upper, true)
    }

    /// Stores the directory tree `dir` (ownership, modes, times, links, xattrs) as a layer;
    /// `None` when it is empty.
    pub fn layer_from_dir(&self, dir: &Path) -> Result<Option<LayerRef>, ImageError> {
        self.layer_from(dir, false)
    }

    fn layer_from(&self, dir: &Path, overlay: bool) -> Result<Option<LayerRef>, ImageError> {
        let empty = fs::read_dir(dir)
            .map_err(ImageError::io("read directory", dir))?
            .next()
            .is_none();
        if empty {
            return Ok(None);
        }
        let _guard = self.lock_shared()?;
        let tmp = self.tmp_path("built-layer");
        let result = (|| {
            let file = File::create_new(&tmp).map_err(ImageError::io("create", &tmp))?;
            let w = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
            let w = if overlay {
                pack_overlay_upper(dir, w)?
            } else {
                pack_dir(dir, w)?
            };
            let (buf, digest, _) = w.finish();
            let file = buf
                .into_inner()
                .map_err(|e| ImageError::io("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(ImageError::io("sync", &tmp))?;
            let size = self.adopt_blob(&tmp, &digest)?;
            self.ensure_layer(&digest, &digest)?;
            Ok(LayerRef {
                digest: digest.clone(),
                diff_id: digest,
                size,
                media_type: MEDIA_LAYER_TAR.to_string(),
            })
        })();
        let _ = fs::remove_file(&tmp);
        result.map(Some)
    }

    /// Writes the config and manifest of `state` and points `name` at them. The config's
    /// creation time is that of the last history entry, so the same state always gives the
    /// same image digest.
    pub fn commit_state(&self, name: &str, state: &ImageState) -> Result<ImageInfo, ImageError> {
        let name = parse_name(name)?;
        let _guard = self.lock_shared()?;
        let config_file = ConfigFile {
            created: state.history.iter().rev().find_map(|h| h.created.clone()),
            architecture: state.architecture.clone(),
            os: "linux".to_string(),
            config: Some(ContainerConfig::from(&state.config)),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: state.layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            history: Some(state.history.clone()),
        };
        let config_bytes = to_json(&config_file, "image config")?;
        // With the digest known up front, a blob already stored is not written (and synced) again:
        // an unchanged rebuild writes nothing.
        let (config_digest, config_size) = self.put_blob_bytes(
            &config_bytes,
            Some(&digest_bytes(&config_bytes)),
            "image config",
        )?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_string()),
            config: Descriptor {
                media_type: MEDIA_CONFIG.to_string(),
                digest: config_digest,
                size: config_size,
                annotations: None,
                platform: None,
            },
            layers: state
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    annotations: None,
                    platform: None,
                })
                .collect(),
            annotations: None,
        };
        let manifest_bytes = to_json(&manifest, "manifest")?;
        let (manifest_digest, _) = self.put_blob_bytes(
            &manifest_bytes,
            Some(&digest_bytes(&manifest_bytes)),
            "manifest",
        )?;
        if self.ref_of(&name)?.as_deref() == Some(manifest_digest.as_str()) {
            // Already this image: leave refs.json alone.
            let (manifest, config) = self.load_manifest(&manifest_digest)?;
            for (l, d) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
                self.ensure_layer(&l.digest, d)?;
            }
            return Ok(crate::store::info(
                name.canonical(),
                &manifest_digest,
                &manifest,
                &config,
            ));
        }
        self.commit_image(&name, &manifest_digest)
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        let hex = hex::encode(Sha256::digest(key.as_bytes()));
        self.root().join("buildcache").join(format!("{hex}.json"))
    }

    /// The state remembered under the build cache key `key`, if every blob it needs is still
    /// in the store (garbage collection may have taken some).
    pub fn cache_get(&self, key: &str) -> Option<ImageState> {
        let bytes = fs::read(self.cache_path(key)).ok()?;
        let state: ImageState = serde_json::from_slice(&bytes).ok()?;
        let complete = state.layers.iter().all(|l| {
            sha256_hex(&l.digest).is_ok()
                && sha256_hex(&l.diff_id).is_ok()
                && self.blob_path(&l.digest).is_ok_and(|p| p.is_file())
        });
        complete.then_some(state)
    }

    /// Removes build cache entries that name a blob the store no longer has (after garbage
    /// collection, which keeps only what named images need).
    pub(crate) fn prune_build_cache(&self) {
        let Ok(rd) = fs::read_dir(self.root().join("buildcache")) else {
            return;
        };
        for e in rd.flatten() {
            let stale = match fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageState>(&b).ok())
            {
                Some(state) => !state
                    .layers
                    .iter()
                    .all(|l| self.blob_path(&l.digest).is_ok_and(|p| p.is_file())),
                None => true,
            };
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Remembers `state` under the build cache key `key` (atomically replacing any older one).
    pub fn cache_put(&self, key: &str, state: &ImageState) -> Result<(), ImageError> {
        let path = self.cache_path(key);
        let dir = self.root().join("buildcache");
        fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        let bytes = to_json(state, "build cache entry")?;
        let tmp = self.tmp_path("cache");
        let result = (|| {
            let mut f = File::create_new(&tmp).map_err(ImageError::io("create", &tmp))?;
            f.write_all(&bytes).map_err(ImageError::io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(ImageError::io("store", &path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn upper_whiteouts_and_opaque_dirs_become_oci_whiteouts_and_back() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("var/cache")).unwrap();
        fs::write(upper.join("etc/new"), b"new\n").unwrap();
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .is_ok()
            && rustix::fs::lsetxattr(
                upper.join("var/cache"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .is_ok();
        if !made {
            eprintln!("skipped: needs root (mknod, trusted xattrs)");
            return;
        }
        let tar = pack_overlay_upper(&upper, Vec::new()).unwrap();
        assert_eq!(tar, pack_overlay_upper(&upper, Vec::new()).unwrap());
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
        }
        assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
        assert!(
            names.contains(&"var/cache/.wh..wh..opq".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n == "etc/gone"), "{names:?}");

        let store = ImageStore::open(&tmp.path().join("store")).unwrap();
        let layer = store.layer_from_upper(&upper).unwrap().unwrap();
        let dir = store.layer_path(&layer.diff_id).unwrap();
        let meta = fs::symlink_metadata(dir.join("etc/gone")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(fs::read(dir.join("etc/new")).unwrap(), b"new\n");
        // A cache entry lives as long as its layers: garbage collection (nothing names this
        // layer) removes both.
        let state = ImageState {
            layers: vec![layer.clone()],
            config: ImageConfig::default(),
            history: vec![],
            architecture: "amd64".into(),
        };
        store.cache_put("k", &state).unwrap();
        assert_eq!(store.cache_get("k"), Some(state));
        store.gc(&[]).unwrap();
        assert_eq!(store.cache_get("k"), None);
        assert!(!store.cache_path("k").exists());
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(store.layer_from_upper(&empty).unwrap(), None);
    }
}
