//! Packing a root filesystem directory into a layer tar (ownership, modes, mtimes,
//! symlinks, hardlinks, device nodes and xattrs included; sockets skipped).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use crate::error::ImageError;
use crate::unpack::keep_xattr;

/// Writes a tar of everything below `src` (not `src` itself) to `out`, in sorted order so
/// the same tree always gives the same bytes.
pub(crate) fn pack_dir<W: Write>(src: &Path, out: W) -> Result<W, ImageError> {
    pack_tree(src, out, false)
}

/// Like [`pack_dir`], for an overlayfs upper directory: its whiteouts (0/0 character devices)
/// become `.wh.NAME` entries and its opaque directories (`trusted.overlay.opaque=y`) get a
/// `.wh..wh..opq` entry, as the OCI layer format wants.
pub(crate) fn pack_overlay_upper<W: Write>(src: &Path, out: W) -> Result<W, ImageError> {
    pack_tree(src, out, true)
}

fn pack_tree<W: Write>(src: &Path, out: W, overlay: bool) -> Result<W, ImageError> {
    let mut builder = Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = src.join(&rel_dir);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(ImageError::io("read directory", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ImageError::io("read directory", &dir))?;
        names.sort();
        // Children directories are pushed in reverse so they pop in sorted order.
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel_dir.join(&name);
            let full = src.join(&rel);
            let meta = fs::symlink_metadata(&full).map_err(ImageError::io("inspect", &full))?;
            let ft = meta.file_type();
            if ft.is_socket() {
                continue;
            }
            if overlay && ft.is_char_device() && meta.rdev() == 0 {
                let mut wh_name = std::ffi::OsString::from(".wh.");
                wh_name.push(&name);
                let mut header = Header::new_gnu();
                header.set_entry_type(EntryType::Regular);
                header.set_mode(0);
                header.set_mtime(0);
                header.set_size(0);
                builder
                    .append_data(&mut header, rel_dir.join(wh_name), io::empty())
                    .map_err(ImageError::io("write tar for", &full))?;
                continue;
            }
            let xattrs = read_xattrs(&full)?;
            if !xattrs.is_empty() {
                append_pax_xattrs(&mut builder, &xattrs)
                    .map_err(ImageError::io("write tar for", &full))?;
            }
            let mut header = Header::new_gnu();
            header.set_mode(meta.mode() & 0o7777);
            header.set_uid(u64::from(meta.uid()));
            header.set_gid(u64::from(meta.gid()));
            header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
            header.set_size(0);
            let write_err = ImageError::io("write tar for", &full);
            if ft.is_dir() {
                header.set_entry_type(EntryType::Directory);
                builder
                    .append_data(&mut header, &rel, io::empty())
                    .map_err(write_err)?;
                if overlay && is_opaque(&full) {
                    let mut wh = Header::new_gnu();
                    wh.set_entry_type(EntryType::Regular);
                    wh.set_mode(0);
                    wh.set_mtime(0);
                    wh.set_size(0);
                    builder
                        .append_data(&mut wh, rel.join(".wh..wh..opq"), io::empty())
                        .map_err(ImageError::io("write tar for", &full))?;
                }
                subdirs.push(rel);
            } else if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(ImageError::io("read symlink", &full))?;
                header.set_entry_type(EntryType::Symlink);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(write_err)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&key) {
                        header.set_entry_type(EntryType::Link);
                        builder
                            .append_link(&mut header, &rel, first)
                            .map_err(write_err)?;
                        continue;
                    }
                    links.insert(key, rel.clone());
                }
                header.set_entry_type(EntryType::Regular);
                header.set_size(meta.len());
                let file = File::open(&full).map_err(ImageError::io("open", &full))?;
                builder
                    .append_data(&mut header, &rel, file)
                    .map_err(write_err)?;
            } else {
                let kind = if ft.is_char_device() {
                    EntryType::Char
                } else if ft.is_block_device() {
                    EntryType::Block
                } else {
                    EntryType::Fifo
                };
                header.set_entry_type(kind);
                if kind != EntryType::Fifo {
                    let dev = meta.rdev();
                    header
                        .set_device_major(rustix::fs::major(dev))
                        .and_then(|_| header.set_device_minor(rustix::fs::minor(dev)))
                        .map_err(ImageError::io("write tar for", &full))?;
                }
                builder
                    .append_data(&mut header, &rel, io::empty())
                    .map_err(write_err)?;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    builder
        .into_inner()
        .map_err(ImageError::io("finish tar of", src))
}

/// Whether an overlayfs upper directory is opaque (hides the lower directories' contents).
fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value[..]), Ok(1) if value[0] == b'y')
}

/// Reads the extended attributes of a path (not following symlinks) worth carrying into a
/// layer.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    // XATTR_LIST_MAX and XATTR_SIZE_MAX on Linux are both 64 KiB.
    let mut list = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {
            return Ok(vec![])
        }
        Err(e) => {
            return Err(ImageError::io("list extended attributes of", path)(
                e.into(),
            ))
        }
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 65536];
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !keep_xattr(name) {
            continue;
        }
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(len) => out.push((name.to_string(), value[..len].to_vec())),
            Err(e) if e == rustix::io::Errno::NODATA => {}
            Err(e) => {
                return Err(ImageError::io("read extended attributes of", path)(
                    e.into(),
                ))
            }
        }
    }
    Ok(out)
}

/// Appends a PAX extended header carrying `SCHILY.xattr.*` records for the next entry.
fn append_pax_xattrs<W: Write>(b: &mut Builder<W>, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    let mut data = Vec::new();
    for (name, value) in xattrs {
        let key = format!("SCHILY.xattr.{name}");
        // A record is "<len> <key>=<value>\n" where <len> counts the whole record itself.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        loop {
            let total = rest + len.to_string().len();
            if total == len {
                break;
            }
            len = total;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_path("PaxHeaders/xattrs")?;
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn pack_then_unpack_keeps_tree_hardlinks_and_xattrs() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("usr/bin")).unwrap();
        fs::write(src.path().join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::hard_link(
            src.path().join("usr/bin/tool"),
            src.path().join("usr/bin/tool2"),
        )
        .unwrap();
        symlink("usr/bin", src.path().join("bin")).unwrap();
        let has_xattr = rustix::fs::lsetxattr(
            src.path().join("usr/bin/tool"),
            "user.warren",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();

        let tar = pack_dir(src.path(), Vec::new()).unwrap();
        assert_eq!(
            tar,
            pack_dir(src.path(), Vec::new()).unwrap(),
            "packing is deterministic"
        );
        let dest = tempfile::tempdir().unwrap();
        crate::unpack::unpack_layer(&tar[..], dest.path()).unwrap();

        let a = fs::metadata(dest.path().join("usr/bin/tool")).unwrap();
        let b = fs::metadata(dest.path().join("usr/bin/tool2")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hardlink preserved");
        assert_eq!(
            fs::read_link(dest.path().join("bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        if has_xattr {
            let mut buf = [0u8; 4];
            let n =
                rustix::fs::lgetxattr(dest.path().join("usr/bin/tool"), "user.warren", &mut buf)
                    .unwrap();
            assert_eq!(&buf[..n], b"v");
        }
    }
}
