//! Reading a workspace's files from the host without following its symlinks out of it.
//!
//! The supervisor and the runtime run as host root and sometimes read files of a workspace's root
//! filesystem or image layers (`/etc/passwd`, the image's home directory). Those files are controlled
//! by the image and by the workspace's own processes, so a symlink such as `/etc/passwd -> /etc/shadow`
//! or `/root -> /etc` must resolve inside the workspace's root, never on the host. Every path here is
//! resolved with `openat2(RESOLVE_IN_ROOT)`, and directory walks never follow symlinks.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Opens `rel` as if `root` were `/`: `..` and absolute symlinks stay inside `root`.
pub fn open(root: &Path, rel: &str, flags: OFlag) -> std::io::Result<OwnedFd> {
    let dir = File::open(root)?;
    open_at(&dir, rel, flags)
}

fn open_at(root: &File, rel: &str, flags: OFlag) -> std::io::Result<OwnedFd> {
    let path = CString::new(rel.trim_start_matches('/')).map_err(std::io::Error::other)?;
    let path = if path.as_bytes().is_empty() {
        CString::new(".").expect("no NUL")
    } else {
        path
    };
    let how = OpenHow {
        flags: (flags | OFlag::O_CLOEXEC).bits() as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads `path` (NUL-terminated, alive for the call) and `how` (a properly laid out
    // `struct open_how` of the size passed); it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Largest file [`read_to_string`] reads: configuration files, not data.
pub const MAX_READ: u64 = 1 << 20;

/// Reads the regular file `rel` of the root filesystem `root` as text (at most [`MAX_READ`] bytes).
/// FIFOs, devices and sockets are refused without blocking: the workspace controls what is there.
pub fn read_to_string(root: &Path, rel: &str) -> std::io::Result<String> {
    let fd = open(root, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{rel} is not a regular file"
        )));
    }
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether `rel` is an executable regular file inside `root` (some execute bit set).
pub fn is_executable(root: &Path, rel: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    open(root, rel, OFlag::O_PATH)
        .map(File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `rel` is a directory inside `root`.
pub fn is_dir(root: &Path, rel: &str) -> bool {
    open(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY).is_ok()
}

/// Copies the directory `rel` of `root` (resolved inside `root`) into the existing host directory
/// `dst`, keeping modes, owners and symlinks (copied as links, never followed). Returns false when
/// `rel` is not a directory.
pub fn copy_dir(root: &Path, rel: &str, dst: &Path) -> std::io::Result<bool> {
    let src = match open(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    copy_fd_tree(src, dst)?;
    Ok(true)
}

fn copy_fd_tree(src: OwnedFd, dst: &Path) -> std::io::Result<()> {
    let meta = File::from(src.try_clone()?).metadata()?;
    let mut dir =
        Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(src)).map_err(std::io::Error::from)?;
    let dir_fd = dir.as_raw_fd();
    let mut entries = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(std::io::Error::from)?;
        let name = e.file_name().to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        entries.push(name);
    }
    for name in entries {
        let to = dst
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()));
        let st = nix::sys::stat::fstatat(
            Some(dir_fd),
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)?;
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFDIR {
            let fd = nix::fcntl::openat(
                Some(dir_fd),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
            // SAFETY: openat returned a new descriptor that we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            fs::create_dir(&to)?;
            copy_fd_tree(fd, &to)?;
        } else if fmt == libc::S_IFLNK {
            let target = nix::fcntl::readlinkat(Some(dir_fd), name.as_c_str())
                .map_err(std::io::Error::from)?;
            std::os::unix::fs::symlink(target, &to)?;
            std::os::unix::fs::lchown(&to, Some(st.st_uid), Some(st.st_gid))?;
        } else if fmt == libc::S_IFREG {
            let fd = nix::fcntl::openat(
                Some(dir_fd),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
            // SAFETY: openat returned a new descriptor that we now own.
            let mut from = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)?;
            std::io::copy(&mut from, &mut out)?;
            std::os::unix::fs::lchown(&to, Some(st.st_uid), Some(st.st_gid))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(st.st_mode & 0o7777))?;
        }
        // Devices, sockets and fifos are not copied into a home volume.
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root_never_on_the_host() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("host-secret");
        fs::write(&outside, "host data").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/shadow"), "inside data").unwrap();
        // Absolute and relative escapes both land inside `root`.
        symlink("/etc/shadow", root.join("etc/passwd")).unwrap();
        symlink(&outside, root.join("abs-escape")).unwrap();
        symlink("../../../../../host-secret", root.join("rel-escape")).unwrap();
        assert_eq!(read_to_string(&root, "etc/passwd").unwrap(), "inside data");
        assert!(read_to_string(&root, "abs-escape").is_err());
        assert!(read_to_string(&root, "rel-escape").is_err());
        assert!(read_to_string(&root, "../host-secret").is_err());
        assert!(is_dir(&root, "/etc") && !is_dir(&root, "etc/shadow"));
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        nix::unistd::mkfifo(&root.join("etc/passwd"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(
            read_to_string(root, "etc/passwd").is_err(),
            "a FIFO with no writer must not block"
        );
        nix::sys::stat::mknod(
            &root.join("etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        assert!(
            read_to_string(root, "etc/group").is_err(),
            "/dev/zero must not be read"
        );
        fs::write(root.join("etc/big"), vec![b'a'; (MAX_READ + 10) as usize]).unwrap();
        assert_eq!(
            read_to_string(root, "etc/big").unwrap().len() as u64,
            MAX_READ
        );
    }

    #[test]
    fn copying_a_home_keeps_links_as_links_and_cannot_be_pointed_at_host_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("home/dev/.config")).unwrap();
        fs::write(root.join("home/dev/.config/app"), "cfg").unwrap();
        symlink("/etc", root.join("home/dev/etc-link")).unwrap();
        // An image whose /root is a symlink to /etc must not make Warren copy the host's /etc.
        symlink("/etc", root.join("root")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/only-in-image"), "x").unwrap();
        let dst = t.path().join("vol");
        fs::create_dir(&dst).unwrap();
        assert!(copy_dir(&root, "/home/dev", &dst).unwrap());
        assert_eq!(fs::read_to_string(dst.join(".config/app")).unwrap(), "cfg");
        assert!(fs::symlink_metadata(dst.join("etc-link"))
            .unwrap()
            .file_type()
            .is_symlink());
        let dst2 = t.path().join("vol2");
        fs::create_dir(&dst2).unwrap();
        assert!(copy_dir(&root, "/root", &dst2).unwrap());
        let names: Vec<_> = fs::read_dir(&dst2)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("only-in-image")],
            "the image's /etc, not the host's"
        );
        assert!(!copy_dir(&root, "/nonexistent", &dst2).unwrap());
    }
}
