//! Directories as tar archives: `tar-out` writes one (never following symlinks: they are stored
//! as symlinks), `tar-in` extracts one into a staging directory inside the target, refusing
//! absolute names, `..`, links leading out of the tree, entries through a symlink, devices and
//! FIFOs, then moves what it made into place. A refused or interrupted archive leaves nothing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use crate::{answer, dir_arg, ready, upload_err, walk, Fail, Framed, Temp, R};

#[derive(Deserialize)]
pub(crate) struct OutArgs {
    path: String,
}

pub(crate) fn out(a: OutArgs) -> R<()> {
    let root = dir_arg(&a.path)?;
    ready(json!({}));
    let stdout = io::stdout().lock();
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(256 << 10, stdout));
    b.follow_symlinks(false);
    let mut failed: Option<Fail> = None;
    walk(&root, true, &mut |p, m| {
        let t = m.file_type();
        // Devices, FIFOs and sockets are left out.
        if !(t.is_dir() || t.is_file() || t.is_symlink()) {
            return true;
        }
        let rel = p.strip_prefix(&root).unwrap_or(p);
        if let Err(e) = b.append_path_with_name(p, rel) {
            failed = Some(Fail::io(p, &e));
            return false;
        }
        true
    });
    if let Some(f) = failed {
        return Err(f);
    }
    let mut w = b.into_inner().map_err(|e| Fail::io(&root, &e))?;
    w.flush().map_err(|e| Fail::io(&root, &e))
}

/// Files of an extraction listed (path, size, hash) for the session audit; the rest are counted.
const MAX_LISTED: usize = 1000;

/// A writer hashing what goes through.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    hash: sha2::Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Deserialize)]
pub(crate) struct InArgs {
    path: String,
    max: u64,
    #[serde(default)]
    mkdir: bool,
}

/// A tar entry's name as a relative path of normal components, or why not.
fn entry_path(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{}`: absolute names are refused", p.display()))
            }
            Component::ParentDir => {
                return Err(format!("`{}`: `..` in names is refused", p.display()))
            }
        }
    }
    Ok(out)
}

/// Whether a symlink at `rel` with target `target` stays inside the tree (lexically).
fn link_inside(rel: &Path, target: &Path) -> bool {
    let mut depth = rel.components().count() as isize - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !target.as_os_str().is_empty()
}

/// Whether the symlink at `rel` with target `target` resolves inside `stage`, following the
/// symlinks already staged (`l1 -> .` then `x/l2 -> ../l1/..` leaves the tree although each
/// looks inside on its own). Names not (yet) staged are taken as plain directories.
fn resolves_inside(stage: &Path, rel: &Path, target: &Path) -> bool {
    if !link_inside(rel, target) {
        return false;
    }
    let mut at: Vec<std::ffi::OsString> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = target
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            if at.pop().is_none() {
                return false;
            }
            continue;
        }
        if c == "/" {
            return false;
        }
        at.push(c);
        let here: PathBuf = at.iter().fold(stage.to_path_buf(), |p, c| p.join(c));
        if fs::symlink_metadata(&here).is_ok_and(|m| m.is_symlink()) {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let Ok(t) = fs::read_link(&here) else {
                return false;
            };
            if t.is_absolute() {
                return false;
            }
            at.pop();
            for c in t.components().rev() {
                todo.push_front(c.as_os_str().to_owned());
            }
        }
    }
    true
}

/// Every symlink under `dir` (inside `stage`) checked again once all are staged: a later link
/// can change where an earlier one leads.
fn check_links(stage: &Path, dir: &Path) -> R<()> {
    let rd = fs::read_dir(stage.join(dir)).map_err(|e| Fail::io(&stage.join(dir), &e))?;
    for e in rd.flatten() {
        let rel = dir.join(e.file_name());
        let m = fs::symlink_metadata(e.path()).map_err(|er| Fail::io(&e.path(), &er))?;
        if m.is_symlink() {
            let t = fs::read_link(e.path()).unwrap_or_default();
            if !resolves_inside(stage, &rel, &t) {
                return Err(Fail::invalid(format!(
                    "tar: symlink `{}` -> `{}` leads out of the directory",
                    rel.display(),
                    t.display()
                )));
            }
        } else if m.is_dir() {
            check_links(stage, &rel)?;
        }
    }
    Ok(())
}

/// Makes the directories leading to `rel` inside `stage`, refusing any that is not a directory
/// (a symlink from an earlier entry above all).
fn parents(stage: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = stage.to_path_buf();
    let n = rel.components().count();
    for c in rel.components().take(n.saturating_sub(1)) {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "`{}`: goes through `{}`, which is not a directory",
                    rel.display(),
                    cur.strip_prefix(stage).unwrap_or(&cur).display()
                ))
            }
            Err(_) => fs::create_dir(&cur).map_err(|e| e.to_string())?,
        }
    }
    Ok(())
}

pub(crate) fn extract(a: InArgs) -> R<()> {
    let given = crate::checked(&a.path)?;
    if a.mkdir {
        fs::create_dir_all(&given).map_err(|e| Fail::io(&given, &e))?;
    }
    let root = dir_arg(&a.path)?;
    let stage_path = crate::temp_name(&root.join("tar"));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&stage_path)
        .map_err(|e| Fail::io(&root, &e))?;
    let stage = Temp {
        path: stage_path,
        keep: false,
    };
    let mut input = Framed::new(io::stdin().lock(), a.max);
    let mut counts = (0u64, 0u64, 0u64);
    let mut dir_modes: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut written = vec![];
    let mut omitted = 0u64;
    {
        let mut ar = tar::Archive::new(&mut input);
        let entries = ar.entries().map_err(|e| upload_err(&root, e, a.max))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| upload_err(&root, e, a.max))?;
            let name = entry
                .path()
                .map_err(|e| Fail::invalid(format!("tar: bad entry name: {e}")))?
                .into_owned();
            let rel = entry_path(&name).map_err(|m| Fail::invalid(format!("tar: {m}")))?;
            let kind = entry.header().entry_type();
            if rel.as_os_str().is_empty() {
                // `./` itself.
                continue;
            }
            parents(&stage.path, &rel).map_err(|m| Fail::invalid(format!("tar: {m}")))?;
            let dest = stage.path.join(&rel);
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            let existing = fs::symlink_metadata(&dest).ok();
            if let Some(m) = &existing {
                if !(m.is_dir() && kind.is_dir()) {
                    if m.is_dir() {
                        return Err(Fail::invalid(format!(
                            "tar: `{}` appears twice",
                            rel.display()
                        )));
                    }
                    fs::remove_file(&dest).map_err(|e| Fail::io(&dest, &e))?;
                }
            }
            if kind.is_dir() {
                if existing.is_none() {
                    fs::create_dir(&dest).map_err(|e| Fail::io(&dest, &e))?;
                }
                dir_modes.insert(rel, mode | 0o700);
                counts.1 += 1;
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(|e| Fail::io(&dest, &e))?;
                let mut hw = Hashing {
                    inner: &mut f,
                    hash: sha2::Sha256::new(),
                    size: 0,
                };
                io::copy(&mut entry, &mut hw).map_err(|e| upload_err(&root, e, a.max))?;
                let (hash, size) = (hw.hash.finalize(), hw.size);
                if written.len() < MAX_LISTED {
                    written.push(json!({
                        "path": root.join(&rel).to_string_lossy(),
                        "size": size,
                        "sha256": hex::encode(hash),
                    }));
                } else {
                    omitted += 1;
                }
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| Fail::io(&dest, &e))?;
                if let Ok(t) = entry.header().mtime() {
                    let _ =
                        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
                }
                counts.0 += 1;
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !resolves_inside(&stage.path, &rel, &target) {
                    return Err(Fail::invalid(format!(
                        "tar: symlink `{}` -> `{}` leads out of the directory",
                        rel.display(),
                        target.display()
                    )));
                }
                std::os::unix::fs::symlink(&target, &dest).map_err(|e| Fail::io(&dest, &e))?;
                counts.2 += 1;
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let trel = entry_path(&target)
                    .map_err(|m| Fail::invalid(format!("tar: hard link {m}")))?;
                let src = stage.path.join(&trel);
                parents(&stage.path, &trel)
                    .map_err(|m| Fail::invalid(format!("tar: hard link {m}")))?;
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(Fail::invalid(format!(
                            "tar: hard link `{}` -> `{}`: no such file earlier in the archive",
                            rel.display(),
                            target.display()
                        )))
                    }
                }
                fs::hard_link(&src, &dest).map_err(|e| Fail::io(&dest, &e))?;
                counts.0 += 1;
            } else if matches!(
                kind,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
            ) {
                continue;
            } else {
                return Err(Fail::invalid(format!(
                    "tar: `{}`: devices, FIFOs and other special files are refused",
                    rel.display()
                )));
            }
        }
    }
    input.finish().map_err(|e| upload_err(&root, e, a.max))?;
    if !input.committed() {
        return Err(Fail::invalid("the upload was interrupted"));
    }
    check_links(&stage.path, Path::new(""))?;
    // Nothing is moved before every conflict is known: a refused archive leaves nothing.
    check_merge(&stage.path, &root)?;
    // Directory modes last (a read-only directory would have refused its entries).
    for (rel, mode) in dir_modes.iter().rev() {
        let _ = fs::set_permissions(stage.path.join(rel), fs::Permissions::from_mode(*mode));
    }
    merge(&stage.path, &root, Path::new(""), &dir_modes)?;
    drop(stage);
    answer(&json!({
        "path": root.to_string_lossy(),
        "files": counts.0,
        "dirs": counts.1,
        "symlinks": counts.2,
        "bytes": input.total,
        "written": written,
        "written_omitted": omitted,
    }))
}

/// Refuses (before anything moves) an archive that has a non-directory where `dst` has a
/// directory.
fn check_merge(src: &Path, dst: &Path) -> R<()> {
    let rd = fs::read_dir(src).map_err(|e| Fail::io(src, &e))?;
    for e in rd.flatten() {
        let from = e.path();
        let to = dst.join(e.file_name());
        let fm = fs::symlink_metadata(&from).map_err(|e| Fail::io(&from, &e))?;
        if let Ok(tm) = fs::symlink_metadata(&to) {
            if tm.is_dir() && fm.is_dir() {
                check_merge(&from, &to)?;
            } else if tm.is_dir() {
                return Err(Fail::new(
                    "exists",
                    format!(
                        "{}: is a directory; the archive has a file there",
                        to.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Moves everything in `src` into `dst`: new names are renamed in, directories present on both
/// sides are merged, other existing entries replaced. A directory in `dst` is never replaced by
/// something that is not one. An existing directory gets a mode only from an explicit entry
/// (`modes`, by path under the root), keeping its setuid/setgid/sticky bits.
fn merge(src: &Path, dst: &Path, rel: &Path, modes: &BTreeMap<PathBuf, u32>) -> R<()> {
    let rd = fs::read_dir(src).map_err(|e| Fail::io(src, &e))?;
    for e in rd.flatten() {
        let from = e.path();
        let to = dst.join(e.file_name());
        let sub = rel.join(e.file_name());
        let fm = fs::symlink_metadata(&from).map_err(|e| Fail::io(&from, &e))?;
        match fs::symlink_metadata(&to) {
            Err(_) => fs::rename(&from, &to).map_err(|e| Fail::io(&to, &e))?,
            Ok(tm) if tm.is_dir() && fm.is_dir() => {
                merge(&from, &to, &sub, modes)?;
                if let Some(m) = modes.get(&sub) {
                    let keep = tm.permissions().mode() & 0o7000;
                    let _ = fs::set_permissions(&to, fs::Permissions::from_mode(keep | m));
                }
            }
            Ok(tm) if tm.is_dir() => {
                return Err(Fail::new(
                    "exists",
                    format!(
                        "{}: is a directory; the archive has a file there",
                        to.display()
                    ),
                ))
            }
            Ok(_) => {
                if fm.is_dir() {
                    fs::remove_file(&to).map_err(|e| Fail::io(&to, &e))?;
                }
                fs::rename(&from, &to).map_err(|e| Fail::io(&to, &e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links() {
        assert!(entry_path(Path::new("/etc/passwd")).is_err());
        assert!(entry_path(Path::new("a/../../b")).is_err());
        assert_eq!(entry_path(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(link_inside(Path::new("a/l"), Path::new("../b")));
        assert!(link_inside(Path::new("a/l"), Path::new("x/y")));
        assert!(!link_inside(Path::new("l"), Path::new("../x")));
        assert!(!link_inside(Path::new("a/l"), Path::new("../../x")));
        assert!(!link_inside(Path::new("a/l"), Path::new("/etc")));
        assert!(!link_inside(Path::new("l"), Path::new("")));
    }

    #[test]
    fn chained_symlinks_that_leave_the_stage_are_refused() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let stage = t.path();
        // `l1 -> .` is inside; `x/l2 -> ../l1/..` looks inside lexically but l1 is the root,
        // so l1/.. is its parent.
        assert!(resolves_inside(stage, Path::new("l1"), Path::new(".")));
        symlink(".", stage.join("l1")).unwrap();
        fs::create_dir(stage.join("x")).unwrap();
        assert!(!resolves_inside(
            stage,
            Path::new("x/l2"),
            Path::new("../l1/..")
        ));
        // Planted anyway (as a later entry would change an earlier one's meaning), `x/l3 ->
        // l2/outside` follows it out, and the final pass finds it.
        symlink("../l1/..", stage.join("x/l2")).unwrap();
        assert!(!resolves_inside(
            stage,
            Path::new("x/l3"),
            Path::new("l2/outside")
        ));
        assert!(check_links(stage, Path::new("")).is_err());
        // Plain links that stay inside still pass, through staged links too.
        fs::remove_file(stage.join("x/l2")).unwrap();
        symlink("../l1", stage.join("x/l2")).unwrap();
        assert!(resolves_inside(stage, Path::new("x/l3"), Path::new("l2/x")));
        assert!(check_links(stage, Path::new("")).is_ok());
        // A loop is refused, not followed forever.
        symlink("loop", stage.join("loop")).unwrap();
        assert!(!resolves_inside(stage, Path::new("y"), Path::new("loop")));
    }

    #[test]
    fn a_conflicting_archive_moves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("stage"), t.path().join("dst"));
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/new"), "n").unwrap();
        fs::write(src.join("b_new"), "n").unwrap();
        fs::write(src.join("z"), "file where a directory is").unwrap();
        fs::create_dir_all(dst.join("a")).unwrap();
        fs::create_dir_all(dst.join("z")).unwrap();
        assert!(check_merge(&src, &dst).is_err());
        assert!(!dst.join("a/new").exists());
        assert!(!dst.join("b_new").exists());
        fs::remove_file(src.join("z")).unwrap();
        check_merge(&src, &dst).unwrap();
        merge(&src, &dst, Path::new(""), &BTreeMap::new()).unwrap();
        assert!(dst.join("a/new").exists() && dst.join("b_new").exists());
    }

    #[test]
    fn existing_directories_keep_their_mode() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("stage"), t.path().join("dst"));
        for d in ["p/q", "e"] {
            fs::create_dir_all(src.join(d)).unwrap();
            fs::create_dir_all(dst.join(d)).unwrap();
        }
        fs::write(src.join("p/q/f"), "x").unwrap();
        fs::set_permissions(dst.join("p"), fs::Permissions::from_mode(0o2775)).unwrap();
        fs::set_permissions(dst.join("e"), fs::Permissions::from_mode(0o3777)).unwrap();
        // Only `e` has an entry in the archive (0755): `p` and `p/q` are passed through.
        let modes = BTreeMap::from([(PathBuf::from("e"), 0o755)]);
        merge(&src, &dst, Path::new(""), &modes).unwrap();
        let mode = |p: &str| fs::metadata(dst.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("p"), 0o2775);
        assert_eq!(mode("e"), 0o3755, "the entry's bits, the special bits kept");
        assert!(dst.join("p/q/f").exists());
    }
}
