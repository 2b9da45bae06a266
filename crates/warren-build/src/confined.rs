//! Reading the build context without ever leaving it.
//!
//! The context is a folder its owner controls: for a server user's build, a folder they can
//! change from inside their workspace, even while the build runs. So nothing here opens a context
//! path by name from the host's root. Every access starts at a descriptor of the context root
//! and goes down one component at a time with `O_NOFOLLOW` (directories also `O_DIRECTORY`):
//! a symlink or anything else swapped in along the way makes the access fail instead of leading
//! out of the context. Regular files are opened `O_NONBLOCK` and checked after opening, so a
//! FIFO or device can never block or feed the builder.
//!
//! Symlinks the context holds are followed where Docker (BuildKit) follows them, for source
//! paths, but [`Root::resolve`] resolves them inside the context: an absolute target starts at
//! the context root and `..` stops there, as in a chroot.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{openat, Mode, OFlags};

/// Most symlinks followed while resolving one context path (as Linux's `MAXSYMLINKS`).
pub const MAX_LINKS: usize = 40;

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);
const ENTRY: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// The build context's root directory, held open.
#[derive(Debug, Clone)]
pub struct Root {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

/// Refuses a component that is not a plain name (no `/`, `.`, `..` or empty names reach the
/// kernel from here, whatever the callers pass).
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a file name"),
        ));
    }
    Ok(())
}

/// Whether two metadata describe the same file (device and inode).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn changed(what: &str) -> io::Error {
    io::Error::other(format!(
        "{what} changed while it was being read (was it replaced during the build?)"
    ))
}

/// The metadata of `name` in the directory `dir`, not following a symlink there.
pub fn lstat_at(dir: &impl AsFd, name: &str) -> io::Result<Metadata> {
    check_name(name)?;
    let fd = openat(dir, name, ENTRY, Mode::empty())?;
    File::from(fd).metadata()
}

/// The target of the symlink `name` in the directory `dir`.
pub fn read_link_at(dir: &impl AsFd, name: &str) -> io::Result<PathBuf> {
    check_name(name)?;
    let t = rustix::fs::readlinkat(dir, name, Vec::new())?;
    Ok(PathBuf::from(OsString::from_vec(t.into_bytes())))
}

/// Opens the regular file `name` in `dir` for reading: never through a symlink, never blocking
/// on a FIFO or device. With `expect`, the opened file must be that one (device and inode).
pub fn open_file_at(dir: &impl AsFd, name: &str, expect: Option<&Metadata>) -> io::Result<File> {
    check_name(name)?;
    let f = File::from(openat(dir, name, FILE, Mode::empty())?);
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(format!("`{name}` is not a regular file")));
    }
    if expect.is_some_and(|e| !same_file(e, &m)) {
        return Err(changed(name));
    }
    Ok(f)
}

/// Opens the directory `name` in `dir` (never through a symlink). With `expect`, it must be
/// that directory.
pub fn open_dir_at(dir: &impl AsFd, name: &str, expect: Option<&Metadata>) -> io::Result<OwnedFd> {
    if name != "." {
        check_name(name)?;
    }
    let fd = openat(dir, name, DIR, Mode::empty())?;
    if let Some(e) = expect {
        let m = File::from(fd.try_clone()?).metadata()?;
        if !same_file(e, &m) {
            return Err(changed(name));
        }
    }
    Ok(fd)
}

/// The names in the directory `dir` (without `.` and `..`), sorted.
pub fn list_at(dir: &impl AsFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

impl Root {
    /// Opens the (canonical) context directory `path`. Fails when `path` is a symlink or was
    /// replaced since it was canonicalized.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR, Mode::empty())?;
        if let Ok(actual) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            if actual != path {
                return Err(io::Error::other(format!(
                    "it was replaced while it was opened (it is now {})",
                    actual.display()
                )));
            }
        }
        Ok(Root {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    /// The context's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `comps` (resolved: no symlink in it may be followed).
    pub fn dir(&self, comps: &[String]) -> io::Result<OwnedFd> {
        let mut fd = open_dir_at(&*self.fd, ".", None)?;
        for c in comps {
            fd = open_dir_at(&fd, c, None)?;
        }
        Ok(fd)
    }

    /// The directory holding the entry `comps` and the entry's name in it (`.` for the root).
    pub fn entry(&self, comps: &[String]) -> io::Result<(OwnedFd, String)> {
        match comps.split_last() {
            None => Ok((self.dir(&[])?, ".".to_string())),
            Some((last, parent)) => Ok((self.dir(parent)?, last.clone())),
        }
    }

    /// The metadata of the entry `comps`, not following a symlink there.
    pub fn lstat(&self, comps: &[String]) -> io::Result<Metadata> {
        match comps.split_last() {
            None => File::from(self.dir(&[])?).metadata(),
            Some((last, parent)) => lstat_at(&self.dir(parent)?, last),
        }
    }

    /// Resolves the context path `comps` inside the context as Docker does: symlinks in every
    /// component (and in the last one when `follow_last`) are followed, but an absolute target
    /// starts again at the context root and `..` never climbs above it. Components that do not
    /// exist are kept as they are (the caller's lookup then finds nothing).
    pub fn resolve(&self, comps: &[String], follow_last: bool) -> Result<Vec<String>, String> {
        let mut pending: Vec<String> = comps.iter().rev().cloned().collect();
        let mut out: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            out.push(c);
            if pending.is_empty() && !follow_last {
                break;
            }
            let Ok(m) = self.lstat(&out) else { continue };
            if !m.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(format!(
                    "too many levels of symbolic links in `{}`",
                    comps.join("/")
                ));
            }
            let (dir, name) = self.entry(&out).map_err(|e| e.to_string())?;
            let target = read_link_at(&dir, &name)
                .map_err(|e| format!("cannot read the symlink `{}`: {e}", out.join("/")))?;
            let target = target.to_string_lossy().into_owned();
            out.pop();
            if target.starts_with('/') {
                out.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .rev(),
            );
        }
        Ok(out)
    }

    /// Reads the small regular file `name` at the top of the context: `None` when there is
    /// none; an error when it is a symlink, not a regular file or larger than `cap` bytes.
    pub fn read_top_file(&self, name: &str, cap: u64) -> Result<Option<String>, String> {
        let f = match open_file_at(&*self.fd, name, None) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(format!(
                    "{name} is a symlink; it must be a regular file in the build context"
                ))
            }
            Err(e) => return Err(format!("cannot read {name}: {e}")),
        };
        let mut buf = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if buf.len() as u64 > cap {
            return Err(format!("{name} is larger than {} KiB", cap / 1024));
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn s(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(ctx.join("etc")).unwrap();
        fs::create_dir_all(ctx.join("sub/deep")).unwrap();
        fs::write(ctx.join("etc/hostname"), "inside").unwrap();
        symlink("/", ctx.join("root")).unwrap();
        symlink("/etc", ctx.join("abs")).unwrap();
        symlink("../../../../../../..", ctx.join("sub/deep/up")).unwrap();
        symlink("deep/up", ctx.join("sub/chain")).unwrap();
        symlink("loop2", ctx.join("loop1")).unwrap();
        symlink("loop1", ctx.join("loop2")).unwrap();
        let root = Root::open(&fs::canonicalize(&ctx).unwrap()).unwrap();
        assert_eq!(
            root.resolve(&s("root/etc/hostname"), true).unwrap(),
            s("etc/hostname")
        );
        assert_eq!(
            root.resolve(&s("abs/hostname"), true).unwrap(),
            s("etc/hostname")
        );
        assert_eq!(root.resolve(&s("sub/chain/etc"), true).unwrap(), s("etc"));
        assert_eq!(
            root.resolve(&s("sub/deep/up"), false).unwrap(),
            s("sub/deep/up")
        );
        assert!(root
            .resolve(&s("loop1"), true)
            .unwrap_err()
            .contains("too many"));
        // Lookups never follow a symlink, whatever path they are given.
        assert!(root.lstat(&s("root/etc/hostname")).is_err());
        assert!(root.dir(&s("abs")).is_err());
        assert!(root.lstat(&s("..")).is_err());
        let (d, n) = root.entry(&s("etc/hostname")).unwrap();
        let mut text = String::new();
        open_file_at(&d, &n, None)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "inside");
    }

    #[test]
    fn top_files_must_be_small_regular_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(&fs::canonicalize(tmp.path()).unwrap()).unwrap();
        assert_eq!(root.read_top_file("x", 10).unwrap(), None);
        fs::write(tmp.path().join("x"), "12345").unwrap();
        assert_eq!(
            root.read_top_file("x", 10).unwrap().as_deref(),
            Some("12345")
        );
        assert!(root.read_top_file("x", 4).unwrap_err().contains("larger"));
        symlink("/etc/hostname", tmp.path().join("l")).unwrap();
        assert!(root.read_top_file("l", 10).unwrap_err().contains("symlink"));
        symlink("/dev/zero", tmp.path().join("z")).unwrap();
        assert!(root.read_top_file("z", 10).unwrap_err().contains("symlink"));
        fs::create_dir(tmp.path().join("d")).unwrap();
        assert!(root.read_top_file("d", 10).is_err());
        let fifo = tmp.path().join("fifo");
        if rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .is_ok()
        {
            assert!(root
                .read_top_file("fifo", 10)
                .unwrap_err()
                .contains("not a regular file"));
        }
    }
}
