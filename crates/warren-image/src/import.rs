//! Importing images from an OCI image layout (directory or tar) or from a root filesystem
//! (directory, tar, tar.gz or tar.zst).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::digest::{sha256_hex, HashingWriter};
use crate::error::ImageError;
use crate::name::{parse_name, ImageName};
use crate::pack::pack_dir;
use crate::spec::{
    host_arch, is_index_media_type, parse_json, ConfigFile, ContainerConfig, Descriptor, History,
    ImageConfig, Index, Manifest, RootFs, ANNOTATION_REF_NAME, MEDIA_CONFIG, MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST,
};
use crate::store::{ImageInfo, ImageStore, MAX_JSON_BLOB};
use crate::unpack::{open_decompressed, sanitize, Compression};

/// The `PATH` given to images whose config does not set one.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Removes a temp path when dropped.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            fs::remove_dir_all(&self.0)
        } else {
            fs::remove_file(&self.0)
        };
    }
}

impl ImageStore {
    /// Imports `src` under `name`, detecting whether it is an OCI image layout (a directory
    /// with `oci-layout`, or a tar of one) or a root filesystem (directory or tarball).
    /// `config` applies to root filesystems only; layouts carry their own.
    pub fn import(
        &self,
        src: &Path,
        name: &str,
        config: Option<ImageConfig>,
    ) -> Result<ImageInfo, ImageError> {
        if is_oci_layout(src)? {
            self.import_oci_layout(src, name)
        } else {
            self.import_rootfs(src, name, config)
        }
    }

    /// Imports an image from an OCI image layout directory, or a (optionally gzipped) tar of
    /// one, under `name`.
    ///
    /// When index.json lists several manifests, the one whose
    /// `org.opencontainers.image.ref.name` matches the tag of `name` wins, else the first for
    /// linux on this machine's architecture. Layers may be uncompressed, gzip or zstd.
    pub fn import_oci_layout(&self, src: &Path, name: &str) -> Result<ImageInfo, ImageError> {
        let name = parse_name(name)?;
        let _guard = self.lock_shared()?;
        let meta = fs::metadata(src).map_err(ImageError::io("open", src))?;
        if meta.is_dir() {
            self.import_layout_dir(src, src, &name)
        } else {
            let tmp = TempPath(self.tmp_path("layout"));
            extract_layout_tar(src, &tmp.0)?;
            self.import_layout_dir(&tmp.0, src, &name)
        }
    }

    fn import_layout_dir(
        &self,
        dir: &Path,
        shown: &Path,
        name: &ImageName,
    ) -> Result<ImageInfo, ImageError> {
        let invalid = |reason: String| ImageError::InvalidLayout {
            path: shown.to_path_buf(),
            reason,
        };
        if !dir.join("oci-layout").is_file() {
            return Err(invalid("there is no `oci-layout` file".to_string()));
        }
        let index_bytes = read_limited(&dir.join("index.json"))
            .map_err(|e| invalid(format!("cannot read index.json: {e}")))?;
        let index: Index = parse_json(&index_bytes, "index.json")?;
        let mut desc = select_manifest(&index.manifests, &name.tag, shown)?.clone();
        // Follow a nested index (multi-platform image) down to a manifest.
        for _ in 0..4 {
            if !is_index_media_type(&desc.media_type) {
                break;
            }
            let bytes = read_layout_blob(dir, &desc, shown)?;
            let nested: Index = parse_json(&bytes, format!("index {}", desc.digest))?;
            desc = select_manifest(&nested.manifests, &name.tag, shown)?.clone();
        }
        if is_index_media_type(&desc.media_type) {
            return Err(invalid("indexes are nested too deeply".to_string()));
        }

        let manifest_bytes = read_layout_blob(dir, &desc, shown)?;
        let manifest: Manifest = parse_json(&manifest_bytes, format!("manifest {}", desc.digest))?;
        let config_bytes = read_layout_blob(dir, &manifest.config, shown)?;
        let config: ConfigFile = parse_json(
            &config_bytes,
            format!("image config {}", manifest.config.digest),
        )?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(invalid(format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for d in &config.rootfs.diff_ids {
            sha256_hex(d)?;
        }
        for layer in &manifest.layers {
            let path = layout_blob_path(dir, &layer.digest)?;
            let file = File::open(&path)
                .map_err(|e| invalid(format!("layer blob {} is missing: {e}", layer.digest)))?;
            self.put_blob(
                file,
                Some(&layer.digest),
                &format!("layer {}", layer.digest),
            )?;
        }
        self.put_blob_bytes(&config_bytes, Some(&manifest.config.digest), "image config")?;
        self.put_blob_bytes(&manifest_bytes, Some(&desc.digest), "manifest")?;
        self.commit_image(name, &desc.digest)
    }

    /// Imports a root filesystem (a directory, or a tar / tar.gz / tar.zst of one) as a
    /// one-layer image under `name`. Without `config`, the image gets a default `PATH` and
    /// `/bin/sh` as its command.
    pub fn import_rootfs(
        &self,
        src: &Path,
        name: &str,
        config: Option<ImageConfig>,
    ) -> Result<ImageInfo, ImageError> {
        let name = parse_name(name)?;
        let _guard = self.lock_shared()?;
        let meta = fs::metadata(src).map_err(ImageError::io("open", src))?;
        let (layer_digest, layer_size, diff_id, media_type) = if meta.is_dir() {
            // Pack into a temp tar while hashing; that tar is the (uncompressed) layer blob.
            let tmp = TempPath(self.tmp_path("rootfs"));
            let file = File::create_new(&tmp.0).map_err(ImageError::io("create", &tmp.0))?;
            let w = pack_dir(src, HashingWriter::new(io::BufWriter::new(file)))?;
            let (buf, digest, _) = w.finish();
            let file = buf
                .into_inner()
                .map_err(|e| ImageError::io("write", &tmp.0)(e.into_error()))?;
            file.sync_all().map_err(ImageError::io("sync", &tmp.0))?;
            let size = self.adopt_blob(&tmp.0, &digest)?;
            self.ensure_layer(&digest, &digest)?;
            (digest.clone(), size, digest, MEDIA_LAYER_TAR)
        } else {
            // Unpack first: a tarball that is refused leaves no blob behind.
            let (reader, compression) = open_decompressed(src)?;
            let (_, diff_id) = self.unpack_into_store_with_id(reader, None)?;
            let file = File::open(src).map_err(ImageError::io("open", src))?;
            let (digest, size) = self.put_blob(file, None, "root filesystem tarball")?;
            let media = match compression {
                Compression::None => MEDIA_LAYER_TAR,
                Compression::Gzip => MEDIA_LAYER_GZIP,
                Compression::Zstd => MEDIA_LAYER_ZSTD,
            };
            (digest, size, diff_id, media)
        };

        let created = OffsetDateTime::now_utc().format(&Rfc3339).ok();
        let image_config = config.unwrap_or_else(|| ImageConfig {
            env: vec![DEFAULT_PATH.to_string()],
            cmd: vec!["/bin/sh".to_string()],
            ..ImageConfig::default()
        });
        let config_file = ConfigFile {
            created: created.clone(),
            architecture: host_arch().to_string(),
            os: "linux".to_string(),
            config: Some(ContainerConfig::from(&image_config)),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: vec![diff_id],
            },
            history: Some(vec![History {
                created,
                created_by: Some(format!("warren image import {}", src.display())),
                ..History::default()
            }]),
        };
        let config_bytes = to_json(&config_file, "image config")?;
        let (config_digest, config_size) =
            self.put_blob_bytes(&config_bytes, None, "image config")?;
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
            layers: vec![Descriptor {
                media_type: media_type.to_string(),
                digest: layer_digest,
                size: layer_size,
                annotations: None,
                platform: None,
            }],
            annotations: None,
        };
        let manifest_bytes = to_json(&manifest, "manifest")?;
        let (manifest_digest, _) = self.put_blob_bytes(&manifest_bytes, None, "manifest")?;
        self.commit_image(&name, &manifest_digest)
    }
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_JSON_BLOB)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn layout_blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join("blobs/sha256").join(sha256_hex(digest)?))
}

/// Reads a small (JSON) blob from a layout, verifying its digest.
fn read_layout_blob(dir: &Path, desc: &Descriptor, shown: &Path) -> Result<Vec<u8>, ImageError> {
    let path = layout_blob_path(dir, &desc.digest)?;
    let bytes = read_limited(&path).map_err(|e| ImageError::InvalidLayout {
        path: shown.to_path_buf(),
        reason: format!("cannot read blob {}: {e}", desc.digest),
    })?;
    let actual = crate::digest::digest_bytes(&bytes);
    if actual != desc.digest {
        return Err(ImageError::DigestMismatch {
            what: format!("blob {} in {}", desc.digest, shown.display()),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Picks the manifest for `tag` from an index's descriptors.
fn select_manifest<'a>(
    manifests: &'a [Descriptor],
    tag: &str,
    shown: &Path,
) -> Result<&'a Descriptor, ImageError> {
    let arch = host_arch();
    if let [only] = manifests {
        return Ok(only);
    }
    let ref_name = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .cloned()
    };
    let fits_platform = |d: &Descriptor| {
        d.platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == arch)
    };
    let tagged: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| ref_name(d).is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}"))))
        .collect();
    if let Some(d) = tagged
        .iter()
        .find(|d| fits_platform(d))
        .or_else(|| tagged.first())
    {
        return Ok(d);
    }
    if let Some(d) = manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    }) {
        return Ok(d);
    }
    if manifests.is_empty() {
        return Err(ImageError::InvalidLayout {
            path: shown.to_path_buf(),
            reason: "index.json lists no manifests".to_string(),
        });
    }
    Err(ImageError::NoMatchingManifest {
        path: shown.to_path_buf(),
        tag: tag.to_string(),
        arch: arch.to_string(),
        available: manifests.iter().filter_map(ref_name).collect(),
    })
}

/// Whether `src` is an OCI layout: a directory with `oci-layout`, or a tarball whose top
/// level holds `oci-layout` or `index.json`.
fn is_oci_layout(src: &Path) -> Result<bool, ImageError> {
    let meta = fs::metadata(src).map_err(ImageError::io("open", src))?;
    if meta.is_dir() {
        return Ok(src.join("oci-layout").is_file());
    }
    let (reader, _) = open_decompressed(src)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| ImageError::BadArchive {
        what: src.display().to_string(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::BadArchive {
            what: src.display().to_string(),
            reason: e.to_string(),
        })?;
        let Ok(path) = entry.path() else { continue };
        let Ok(rel) = sanitize(&path) else { continue };
        if rel == Path::new("oci-layout") || rel == Path::new("index.json") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Extracts the files of an OCI layout tarball (`oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`) into `dest`; everything else is ignored.
fn extract_layout_tar(src: &Path, dest: &Path) -> Result<(), ImageError> {
    let bad = |reason: String| ImageError::BadArchive {
        what: src.display().to_string(),
        reason,
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dest.join("blobs/sha256"))
        .map_err(ImageError::io("create", dest))?;
    let (reader, _) = open_decompressed(src)?;
    let mut archive = tar::Archive::new(reader);
    let mut wanted: BTreeMap<&str, ()> = BTreeMap::new();
    wanted.insert("oci-layout", ());
    wanted.insert("index.json", ());
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = sanitize(&path)?;
        let rel_str = rel.to_string_lossy().into_owned();
        let target = if wanted.contains_key(rel_str.as_str()) {
            dest.join(&rel)
        } else if let Some(hex) = rel_str.strip_prefix("blobs/sha256/") {
            if sha256_hex(&format!("sha256:{hex}")).is_err() {
                continue;
            }
            dest.join("blobs/sha256").join(hex)
        } else {
            continue;
        };
        let mut out = File::create(&target).map_err(ImageError::io("create", &target))?;
        io::copy(&mut entry, &mut out).map_err(|e| bad(format!("reading `{rel_str}`: {e}")))?;
    }
    Ok(())
}
