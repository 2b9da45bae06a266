//! A test image with git: the busybox root of [`crate::common::busybox_rootfs`] plus the host's
//! Debian git (`/usr/bin/git`, `/usr/lib/git-core`, `/usr/share/git-core`) and the libraries and
//! loader `ldd` lists for its programs (git over HTTP included). `scripts/deps` installs git.
//!
//! Use: `#[path = "common/gitimg.rs"] mod gitimg;` next to `mod common;`, then
//! `gitimg::import_gitbox(&server)` imports it as `gitbox` (remote user `dev`, uid 1000, who
//! owns `/home/dev`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{busybox_rootfs, warren_exe, TestServer};

/// The image name [`import_gitbox`] uses.
pub const GITBOX: &str = "gitbox";

/// The host's Debian git.
const GIT: &str = "/usr/bin/git";

fn must(c: &mut Command) -> std::process::Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The absolute paths `ldd` lists for `exe` (libraries and the loader); none for a script.
fn libraries(exe: &Path) -> Vec<PathBuf> {
    let o = Command::new("ldd").arg(exe).output().unwrap();
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
    }
    out
}

/// Is `p` an ELF file (a program `ldd` can read)?
fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Writes a busybox root with git into `dir` (which must not exist yet).
pub fn gitbox_rootfs(dir: &Path) {
    assert!(
        Path::new(GIT).exists() && Path::new("/usr/lib/git-core").is_dir(),
        "Debian's git is installed (scripts/deps)"
    );
    busybox_rootfs(dir);
    // dev owns its home, as in real images (git writes ~/.gitconfig there).
    std::os::unix::fs::chown(dir.join("home/dev"), Some(1000), Some(1000)).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
    std::fs::create_dir_all(dir.join("usr/share")).unwrap();
    // `cp -a` keeps git-core's symlinks (most of its programs are links to `git`).
    must(
        Command::new("cp")
            .args(["-a", GIT])
            .arg(dir.join("usr/bin/git")),
    );
    must(
        Command::new("cp")
            .args(["-a", "/usr/lib/git-core"])
            .arg(dir.join("usr/lib/")),
    );
    if Path::new("/usr/share/git-core").is_dir() {
        must(
            Command::new("cp")
                .args(["-a", "/usr/share/git-core"])
                .arg(dir.join("usr/share/")),
        );
    }
    // The libraries of git and of every program in git-core (git-remote-http among them).
    let mut libs = std::collections::BTreeSet::new();
    let mut programs = vec![PathBuf::from(GIT)];
    for e in std::fs::read_dir("/usr/lib/git-core").unwrap().flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) && is_elf(&p) {
            programs.push(p);
        }
    }
    for p in &programs {
        libs.extend(libraries(p));
    }
    assert!(
        libs.iter().any(|l| l.to_string_lossy().contains("libcurl")),
        "git-remote-http's libraries were found: {libs:?}"
    );
    for lib in libs {
        let dest = dir.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // Follows the library's symlink: the copy is the file itself under the name ldd gave.
        std::fs::copy(&lib, &dest).unwrap();
    }
}

/// The git root of this test process, made once (a few tens of MB) and imported by each server:
/// `TMP/warren-gitbox-<pid>`; those of test processes that are gone are removed first.
fn shared_rootfs() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = PathBuf::from(std::env::var("WARREN_TEST_TMP").unwrap_or_else(|_| "/tmp".into()));
        for e in std::fs::read_dir(&tmp).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("warren-gitbox-") {
                let gone = pid
                    .parse::<u32>()
                    .map(|p| !Path::new(&format!("/proc/{p}")).exists())
                    .unwrap_or(false);
                if gone {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("warren-gitbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = dir.join("rootfs");
        gitbox_rootfs(&rootfs);
        rootfs
    })
}

/// Imports the git image into `s` as `name`.
pub fn import_as(s: &TestServer, name: &str) {
    let rootfs = shared_rootfs();
    let o = Command::new(warren_exe())
        .args(["image", "import"])
        .arg(rootfs)
        .arg(name)
        .env("WARREN_STATE_DIR", s.state())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Imports the git image into `s` as [`GITBOX`].
pub fn import_gitbox(s: &TestServer) {
    import_as(s, GITBOX)
}
