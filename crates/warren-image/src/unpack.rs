//! Unpacking layer tars into directories usable as overlayfs lowerdirs.
//!
//! OCI whiteouts are converted to overlayfs form (`.wh.NAME` becomes a 0:0 character device
//! `NAME`, `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory). Ownership,
//! modes, mtimes, symlinks, in-layer hardlinks, device nodes and xattrs are preserved.
//! Entries with `..`, absolute paths, or paths through a symlink are refused, so nothing is
//! ever written outside the destination.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use rustix::fs::{AtFlags, FileType, Mode, Timestamps, XattrFlags, CWD};
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use tar::{Archive, EntryType};

use crate::digest::HashingReader;
use crate::error::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The compression of a layer blob, found by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Sniffs the compression of a stream from its first bytes.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        // A zstd skippable frame (zstd:chunked may start with one).
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
    {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Opens a file and returns a reader of its decompressed content, with its compression.
pub(crate) fn open_decompressed(path: &Path) -> Result<(Box<dyn Read>, Compression), ImageError> {
    let file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(ImageError::io("read", path))?;
    let compression = sniff(head);
    let boxed: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdReader::new(reader)),
    };
    Ok((boxed, compression))
}

/// A streaming zstd decoder that handles multiple and skippable frames.
struct ZstdReader<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    fn new(source: R) -> Self {
        ZstdReader {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = io::copy(
                            &mut (&mut self.source).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "truncated zstd skippable frame",
                            ));
                        }
                        continue;
                    }
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// Turns a tar entry path into a relative path of normal components, refusing `..` and
/// absolute paths. `.` components are dropped; the empty result means the root itself.
pub(crate) fn sanitize(path: &Path) -> Result<PathBuf, ImageError> {
    let refuse = |reason: &str| ImageError::UnsafeEntry {
        entry: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("the path contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("the path is absolute"))
            }
        }
    }
    Ok(out)
}

/// Directory metadata applied after all entries are written (a read-only mode or the mtime
/// would otherwise be disturbed by writing the directory's children).
struct DeferredDir {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

/// Unpacks a (decompressed) layer tar stream into `dest`, an existing empty directory.
///
/// Returns the `sha256:` digest of the whole uncompressed stream, i.e. the layer's diff_id.
pub(crate) fn unpack_layer(reader: impl Read, dest: &Path) -> Result<String, ImageError> {
    let is_root = rustix::process::geteuid().is_root();
    let mut hashing = HashingReader::new(reader);
    let mut deferred = Vec::new();
    {
        let mut archive = Archive::new(&mut hashing);
        let bad = |reason: String| ImageError::BadArchive {
            what: "layer".to_string(),
            reason,
        };
        let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            unpack_entry(&mut entry, dest, is_root, &mut deferred)?;
        }
    }
    // Directory metadata last, deepest first so a parent's mtime is not touched afterwards.
    for dir in deferred.iter().rev() {
        fs::set_permissions(&dir.path, Permissions::from_mode(dir.mode))
            .map_err(ImageError::io("set the mode of", &dir.path))?;
    }
    for dir in deferred.iter().rev() {
        set_mtime(&dir.path, dir.mtime)?;
    }
    let (diff_id, _) = hashing.finish().map_err(|e| ImageError::BadArchive {
        what: "layer".to_string(),
        reason: e.to_string(),
    })?;
    Ok(diff_id)
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    is_root: bool,
    deferred: &mut Vec<DeferredDir>,
) -> Result<(), ImageError> {
    let raw_path = entry
        .path()
        .map_err(|e| ImageError::BadArchive {
            what: "layer".to_string(),
            reason: e.to_string(),
        })?
        .into_owned();
    let entry_name = raw_path.display().to_string();
    let refuse = |reason: &str| ImageError::UnsafeEntry {
        entry: entry_name.clone(),
        reason: reason.to_string(),
    };
    let rel = sanitize(&raw_path)?;
    let kind = entry.header().entry_type();
    let header = entry.header().clone();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mtime = header.mtime().unwrap_or(0);

    if kind == EntryType::XGlobalHeader {
        return Ok(());
    }

    // The layer root itself ("./").
    if rel.as_os_str().is_empty() {
        if kind != EntryType::Directory {
            return Err(refuse("the root of the layer must be a directory"));
        }
        let xattrs = pax_xattrs(entry)?;
        apply_owner(dest, uid, gid, is_root)?;
        apply_xattrs(dest, &xattrs)?;
        deferred.push(DeferredDir {
            path: dest.to_path_buf(),
            mode,
            mtime,
        });
        return Ok(());
    }

    let file_name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();

    // Whiteouts.
    if file_name == WHITEOUT_OPAQUE {
        let dir = ensure_dir_path(dest, &parent_rel, &entry_name)?;
        rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| ImageError::io("mark as opaque", &dir)(e.into()))?;
        return Ok(());
    }
    if file_name.starts_with(".wh..wh.") {
        // Other AUFS metadata (e.g. `.wh..wh.plnk`) has no overlayfs meaning.
        return Ok(());
    }
    if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(refuse("malformed whiteout name"));
        }
        let parent = ensure_dir_path(dest, &parent_rel, &entry_name)?;
        let target = parent.join(hidden);
        remove_existing(&target, false)?;
        rustix::fs::mknodat(
            CWD,
            &target,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| ImageError::io("create whiteout", &target)(e.into()))?;
        return Ok(());
    }

    let parent = ensure_dir_path(dest, &parent_rel, &entry_name)?;
    let target = parent.join(rel.file_name().unwrap_or_default());
    let xattrs = pax_xattrs(entry)?;

    match kind {
        EntryType::Directory => {
            remove_existing(&target, true)?;
            if fs::symlink_metadata(&target).is_err() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&target)
                    .map_err(ImageError::io("create directory", &target))?;
            }
            apply_owner(&target, uid, gid, is_root)?;
            apply_xattrs(&target, &xattrs)?;
            deferred.push(DeferredDir {
                path: target,
                mode,
                mtime,
            });
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            remove_existing(&target, false)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(ImageError::io("create", &target))?;
            io::copy(entry, &mut file).map_err(|e| ImageError::BadArchive {
                what: "layer".to_string(),
                reason: format!("reading `{entry_name}`: {e}"),
            })?;
            drop(file);
            apply_owner(&target, uid, gid, is_root)?;
            fs::set_permissions(&target, Permissions::from_mode(mode))
                .map_err(ImageError::io("set the mode of", &target))?;
            apply_xattrs(&target, &xattrs)?;
            set_mtime(&target, mtime)?;
        }
        EntryType::Symlink => {
            let link = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| refuse("symlink without a target"))?
                .into_owned();
            remove_existing(&target, false)?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(ImageError::io("create symlink", &target))?;
            apply_owner(&target, uid, gid, is_root)?;
            apply_xattrs(&target, &xattrs)?;
            set_mtime(&target, mtime)?;
        }
        EntryType::Link => {
            let link = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| refuse("hardlink without a target"))?
                .into_owned();
            let link_rel = sanitize(&link).map_err(|_| {
                refuse(&format!(
                    "hardlink target `{}` is outside the layer",
                    link.display()
                ))
            })?;
            if link_rel.as_os_str().is_empty() {
                return Err(refuse("hardlink to the layer root"));
            }
            let link_parent = check_parents(dest, link_rel.parent().unwrap_or(Path::new("")))
                .map_err(|reason| refuse(&format!("hardlink target: {reason}")))?;
            let source = link_parent.join(link_rel.file_name().unwrap_or_default());
            match fs::symlink_metadata(&source) {
                Ok(m) if !m.is_dir() => {}
                Ok(_) => return Err(refuse("hardlink to a directory")),
                Err(_) => {
                    return Err(refuse(&format!(
                        "hardlink target `{}` is not in the layer",
                        link.display()
                    )))
                }
            }
            if source == target {
                return Ok(());
            }
            remove_existing(&target, false)?;
            fs::hard_link(&source, &target).map_err(ImageError::io("create hardlink", &target))?;
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let (file_type, dev) = match kind {
                EntryType::Char | EntryType::Block => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let ft = if kind == EntryType::Char {
                        FileType::CharacterDevice
                    } else {
                        FileType::BlockDevice
                    };
                    (ft, rustix::fs::makedev(major, minor))
                }
                _ => (FileType::Fifo, 0),
            };
            remove_existing(&target, false)?;
            rustix::fs::mknodat(CWD, &target, file_type, Mode::from_raw_mode(0o600), dev)
                .map_err(|e| ImageError::io("create device node", &target)(e.into()))?;
            apply_owner(&target, uid, gid, is_root)?;
            fs::set_permissions(&target, Permissions::from_mode(mode))
                .map_err(ImageError::io("set the mode of", &target))?;
            apply_xattrs(&target, &xattrs)?;
            set_mtime(&target, mtime)?;
        }
        // Other types (sockets have no tar type; PAX/GNU meta entries are consumed by the
        // reader) carry nothing to unpack.
        _ => {}
    }
    Ok(())
}

/// Collects `SCHILY.xattr.*` PAX records of an entry, dropping `trusted.overlay.*` (the
/// store writes overlay metadata itself; a layer must not smuggle in redirects) and
/// SELinux labels of the machine the tar was made on.
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let mut out = Vec::new();
    let exts = entry.pax_extensions().map_err(|e| ImageError::BadArchive {
        what: "layer".to_string(),
        reason: format!("bad PAX header: {e}"),
    })?;
    if let Some(exts) = exts {
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if keep_xattr(name) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn keep_xattr(name: &str) -> bool {
    !name.is_empty() && !name.starts_with("trusted.overlay.") && name != "security.selinux"
}

fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<(), ImageError> {
    for (name, value) in xattrs {
        rustix::fs::lsetxattr(path, name.as_str(), value, XattrFlags::empty())
            .map_err(|e| ImageError::io("set extended attribute on", path)(e.into()))?;
    }
    Ok(())
}

fn apply_owner(path: &Path, uid: u64, gid: u64, is_root: bool) -> Result<(), ImageError> {
    if !is_root {
        // Only root can give files away; an unprivileged store keeps the caller as owner.
        return Ok(());
    }
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(ImageError::UnsafeEntry {
            entry: path.display().to_string(),
            reason: "owner id out of range".to_string(),
        });
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ImageError::io("chown", path))
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), ImageError> {
    let ts = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ImageError::io("set the mtime of", path)(e.into()))
}

/// Removes whatever is at `path` (never following a symlink). A directory is kept when
/// `keep_dir` is set (a later directory entry only updates metadata).
fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(ImageError::io("remove", path))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("remove", path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("inspect", path)(e)),
    }
    Ok(())
}

/// Walks `rel` below `dest`, requiring every existing component to be a real directory.
/// Returns the full path, or a reason when a component is a symlink or not a directory
/// or is missing.
fn check_parents(dest: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut cur = dest.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "the path goes through the symlink `{}`",
                    comp_str(&cur, dest)
                ))
            }
            Ok(_) => return Err(format!("`{}` is not a directory", comp_str(&cur, dest))),
            Err(_) => return Err(format!("`{}` does not exist", comp_str(&cur, dest))),
        }
    }
    Ok(cur)
}

fn comp_str(full: &Path, dest: &Path) -> String {
    full.strip_prefix(dest)
        .unwrap_or(full)
        .display()
        .to_string()
}

/// Makes sure `rel` below `dest` is a directory, creating missing ones (mode 0755). Refuses
/// paths through symlinks or non-directories, so writes cannot escape `dest`.
fn ensure_dir_path(dest: &Path, rel: &Path, entry_name: &str) -> Result<PathBuf, ImageError> {
    let mut cur = dest.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "the path goes through the symlink"
                } else {
                    "a parent is not a directory:"
                };
                return Err(ImageError::UnsafeEntry {
                    entry: entry_name.to_string(),
                    reason: format!("{what} `{}`", comp_str(&cur, dest)),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(ImageError::io("create directory", &cur))?;
                fs::set_permissions(&cur, Permissions::from_mode(0o755))
                    .map_err(ImageError::io("set the mode of", &cur))?;
            }
            Err(e) => return Err(ImageError::io("inspect", &cur)(e)),
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_600_000_000);
        // Bypass the builder's own path checks so hostile paths can be written.
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn sanitize_refuses_parent_and_absolute_paths() {
        assert_eq!(
            sanitize(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert_eq!(sanitize(Path::new("./")).unwrap(), PathBuf::new());
        assert!(sanitize(Path::new("a/../../b")).is_err());
        assert!(sanitize(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn files_keep_content_mode_owner_and_mtime() {
        let data = tar_with(|b| file(b, "./etc/motd", b"hi\n", 0o4755));
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&data[..], dir.path()).unwrap();
        let p = dir.path().join("etc/motd");
        assert_eq!(fs::read(&p).unwrap(), b"hi\n");
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755, "setuid bit survives chown");
        assert_eq!(m.mtime(), 1_600_000_000);
        if rustix::process::geteuid().is_root() {
            assert_eq!((m.uid(), m.gid()), (1000, 1001));
        }
    }

    #[test]
    fn parent_dir_entries_are_refused_and_nothing_escapes() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        fs::create_dir(&dest).unwrap();
        let data = tar_with(|b| file(b, "../escape", b"x", 0o644));
        let err = unpack_layer(&data[..], &dest).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
        assert!(!outer.path().join("escape").exists());
        let data = tar_with(|b| file(b, "/abs-escape", b"x", 0o644));
        assert!(matches!(
            unpack_layer(&data[..], &dest).unwrap_err(),
            ImageError::UnsafeEntry { .. }
        ));
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        let victim = outer.path().join("victim");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&victim).unwrap();
        let data = tar_with(|b| {
            symlink(b, "evil", victim.to_str().unwrap());
            file(b, "evil/owned", b"x", 0o644);
        });
        let err = unpack_layer(&data[..], &dest).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!victim.join("owned").exists());
    }

    #[test]
    fn hardlink_outside_the_layer_is_refused() {
        let dest = tempfile::tempdir().unwrap();
        let data = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "shadow", "../../etc/shadow").unwrap();
        });
        let err = unpack_layer(&data[..], dest.path()).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
        assert!(!dest.path().join("shadow").exists());
    }

    #[test]
    fn whiteouts_become_overlay_char_devices_and_opaque_xattrs() {
        if !rustix::process::geteuid().is_root() {
            return; // mknod and trusted.* xattrs need root.
        }
        let data = tar_with(|b| {
            file(b, "etc/.wh.gone", b"", 0o644);
            file(b, "var/cache/.wh..wh..opq", b"", 0o644);
        });
        let dest = tempfile::tempdir().unwrap();
        unpack_layer(&data[..], dest.path()).unwrap();
        let m = fs::symlink_metadata(dest.path().join("etc/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!dest.path().join("etc/.wh.gone").exists());
        let mut buf = [0u8; 8];
        let n =
            rustix::fs::lgetxattr(dest.path().join("var/cache"), OPAQUE_XATTR, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
        assert!(!dest.path().join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn diff_id_covers_the_whole_stream() {
        let data = tar_with(|b| file(b, "a", b"1", 0o644));
        let dest = tempfile::tempdir().unwrap();
        let id = unpack_layer(&data[..], dest.path()).unwrap();
        assert_eq!(id, crate::digest::digest_bytes(&data));
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
    }
}
