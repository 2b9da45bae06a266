//! The tools mount: a read-only directory holding a copy of the `warren` binary, with the dynamic
//! loader and shared libraries it needs, bind-mounted read-only, `nosuid`, `nodev` at
//! [`MOUNT_POINT`] in every workspace. Warren's in-workspace helpers (the SFTP server) run from it
//! as ordinary execs, so they work on any image: one without an SFTP server, or without a C library
//! (the loader is invoked explicitly with `--library-path`, see [`command`]).
//!
//! The directory is content-addressed: `ROOT/.tools/<sha256 of names and contents>/` with `bin/warren`
//! and `lib/`. It is made once per binary: `ROOT/.tools/index/` remembers which directory the files
//! with a given identity (device, inode, size, times) went to, so later workspaces only `stat` them.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where the tools are mounted inside a workspace.
pub const MOUNT_POINT: &str = "/.warren";

/// The argv that runs the `warren` binary of the tools mount with `args`, inside a workspace whose
/// tools came from `exe`: through the copied loader when `exe` is dynamically linked.
pub fn command(exe: &Path, args: &[&str]) -> Vec<String> {
    let mut argv = Vec::new();
    if let Ok(Some(interp)) = interpreter(exe) {
        if let Some(name) = interp.file_name() {
            argv.push(format!("{MOUNT_POINT}/lib/{}", name.to_string_lossy()));
            argv.push("--library-path".into());
            argv.push(format!("{MOUNT_POINT}/lib"));
        }
    }
    argv.push(format!("{MOUNT_POINT}/bin/warren"));
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// The ELF interpreter (`PT_INTERP`) of `exe`, `None` for a static binary.
pub fn interpreter(exe: &Path) -> Result<Option<PathBuf>, String> {
    let mut f = fs::File::open(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    let mut head = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{}: {e}", exe.display())),
        }
    }
    head.truncate(n);
    parse_interp(&head).map_err(|e| format!("{}: {e}", exe.display()))
}

fn parse_interp(b: &[u8]) -> Result<Option<PathBuf>, String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if b[4] != 2 || b[5] != 1 {
        return Err("only 64-bit little-endian ELF files are supported".into());
    }
    let u16_at = |o: usize| -> Option<u64> {
        b.get(o..o.checked_add(2)?)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        b.get(o..o.checked_add(4)?)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        b.get(o..o.checked_add(8)?).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    };
    let bad = || "truncated ELF header".to_string();
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        let at = phoff
            .checked_add(i.checked_mul(phentsize).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        // PT_INTERP
        if u32_at(at).ok_or_else(bad)? != 3 {
            continue;
        }
        let off = u64_at(at.saturating_add(8)).ok_or_else(bad)? as usize;
        let size = u64_at(at.saturating_add(32)).ok_or_else(bad)? as usize;
        let raw = b
            .get(off..off.checked_add(size).ok_or_else(bad)?)
            .ok_or_else(|| "PT_INTERP beyond the first 64 KiB".to_string())?;
        let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
        let s = std::str::from_utf8(raw).map_err(|_| "PT_INTERP is not a path".to_string())?;
        if !s.starts_with('/') {
            return Err(format!("PT_INTERP {s} is not an absolute path"));
        }
        return Ok(Some(PathBuf::from(s)));
    }
    Ok(None)
}

/// The files of the tools directory: (path inside it, file on the host).
fn sources(exe: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = vec![("bin/warren".to_string(), exe.to_path_buf())];
    let Some(interp) = interpreter(exe)? else {
        return Ok(files);
    };
    let name = interp
        .file_name()
        .ok_or_else(|| format!("odd ELF interpreter {}", interp.display()))?
        .to_string_lossy()
        .into_owned();
    // The loader lists what it would load for `exe`, resolved as it resolves them (ld.so.cache,
    // RUNPATH, the default directories): the same as `ldd`, without running the program.
    let out = Command::new(&interp)
        .arg("--list")
        .arg(exe)
        .output()
        .map_err(|e| format!("{} --list: {e}", interp.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list {}: {}",
            interp.display(),
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    files.push((format!("lib/{name}"), interp.clone()));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        let Some((lib, rest)) = line.split_once(" => ") else {
            continue;
        };
        if rest.starts_with("not found") {
            return Err(format!("{}: {lib} not found", exe.display()));
        }
        let path = rest.split(" (").next().unwrap_or("").trim();
        if !path.starts_with('/') || lib.contains('/') || lib.is_empty() {
            continue;
        }
        let entry = format!("lib/{lib}");
        if !files.iter().any(|(n, _)| *n == entry) {
            files.push((entry, PathBuf::from(path)));
        }
    }
    Ok(files)
}

/// What identifies the files as they are on the host now (if any changed, this changes).
fn identity(files: &[(String, PathBuf)]) -> Result<String, String> {
    let mut h = Sha256::new();
    for (name, path) in files {
        let m = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        h.update(format!(
            "{name}\0{}\0{}:{}:{}:{}.{}:{}.{}\n",
            path.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ));
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

/// Makes (or finds) the tools directory for `exe` under `root/.tools`; returns its path.
pub fn prepare(root: &Path, exe: &Path) -> Result<PathBuf, String> {
    let base = root.join(".tools");
    let files = sources(exe)?;
    let key = identity(&files)?;
    let index = base.join("index").join(&key);
    if let Ok(hash) = fs::read_to_string(&index) {
        let hash = hash.trim();
        let dir = base.join(hash);
        if hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && dir.join("bin/warren").is_file()
        {
            return Ok(dir);
        }
    }
    let io = |what: &str, p: &Path| {
        let what = what.to_string();
        let p = p.display().to_string();
        move |e: std::io::Error| format!("tools: {what} {p}: {e}")
    };
    fs::create_dir_all(base.join("index")).map_err(io("create", &base))?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = base.join(format!(".tmp-{}-{seq}", std::process::id()));
    let r = fill(&tmp, &files).and_then(|hash| {
        let dir = base.join(&hash);
        set_mode(&tmp, 0o555).map_err(io("chmod", &tmp))?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Someone made the same directory first: theirs is as good.
            Err(_) if dir.join("bin/warren").is_file() => {
                let _ = set_mode(&tmp, 0o755);
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io("rename to", &dir)(e)),
        }
        let itmp = base
            .join("index")
            .join(format!(".{key}.tmp-{}", std::process::id()));
        fs::write(&itmp, &hash).map_err(io("write", &itmp))?;
        fs::rename(&itmp, &index).map_err(io("write", &index))?;
        collect_garbage(root, &hash);
        Ok(dir)
    });
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

/// Removes the tools directories of other binaries that no workspace's `config.json` names any
/// more (a stopped workspace is pointed at the current tools when it starts again), and the index
/// entries that lead to them. Mounted copies are unaffected: a mount outlives its source's name.
fn collect_garbage(root: &Path, keep: &str) {
    let base = root.join(".tools");
    let mut used = String::new();
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            if let Ok(c) = fs::read_to_string(e.path().join("bundle/config.json")) {
                used.push_str(&c);
            }
        }
    }
    let Ok(rd) = fs::read_dir(&base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_hash = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hash || name == keep || used.contains(&format!("/.tools/{name}")) {
            continue;
        }
        let _ = set_mode(&e.path(), 0o755);
        for sub in ["bin", "lib"] {
            let _ = set_mode(&e.path().join(sub), 0o755);
        }
        let _ = fs::remove_dir_all(e.path());
    }
    if let Ok(rd) = fs::read_dir(base.join("index")) {
        for e in rd.flatten() {
            let gone = fs::read_to_string(e.path())
                .map(|h| !base.join(h.trim()).join("bin/warren").is_file())
                .unwrap_or(false);
            if gone {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// Copies `files` into `dir`, hashing names and contents as they go; returns the hash.
fn fill(dir: &Path, files: &[(String, PathBuf)]) -> Result<String, String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (name, src) in files {
        let dst = dir.join(name);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("tools: {}: {e}", parent.display()))?;
        }
        let mut from = fs::File::open(src).map_err(|e| format!("tools: {}: {e}", src.display()))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)
            .map_err(|e| format!("tools: {}: {e}", dst.display()))?;
        let len = from
            .metadata()
            .map_err(|e| format!("tools: {}: {e}", src.display()))?
            .len();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(len.to_le_bytes());
        let mut copied = 0u64;
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("tools: read {}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.write_all(&buf[..n])
                .map_err(|e| format!("tools: write {}: {e}", dst.display()))?;
            copied += n as u64;
        }
        if copied != len {
            return Err(format!("tools: {} changed while copied", src.display()));
        }
        to.sync_all()
            .map_err(|e| format!("tools: write {}: {e}", dst.display()))?;
        set_mode(&dst, 0o555).map_err(|e| format!("tools: {}: {e}", dst.display()))?;
    }
    for sub in ["bin", "lib"] {
        let p = dir.join(sub);
        if p.is_dir() {
            set_mode(&p, 0o555).map_err(|e| format!("tools: {}: {e}", p.display()))?;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Sets (or, with `None`, removes) the tools mount in an OCI `config.json`; true when it changed.
pub fn set_mount(config: &mut serde_json::Value, tools: Option<&Path>) -> bool {
    let Some(mounts) = config["mounts"].as_array_mut() else {
        return false;
    };
    let before = mounts.clone();
    mounts.retain(|m| m["destination"] != MOUNT_POINT);
    if let Some(dir) = tools {
        // Last, so that nothing the configuration mounts can cover it.
        mounts.push(serde_json::json!({
            "destination": MOUNT_POINT, "type": "bind", "source": dir,
            "options": ["rbind", "ro", "nosuid", "nodev"]
        }));
    }
    *mounts != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_gets_a_loader_and_its_libraries() {
        let exe = std::env::current_exe().unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = prepare(root.path(), &exe).unwrap();
        assert!(dir.join("bin/warren").is_file());
        let interp = interpreter(&exe)
            .unwrap()
            .expect("tests are dynamically linked");
        let name = interp.file_name().unwrap().to_str().unwrap();
        assert!(dir.join("lib").join(name).is_file());
        assert!(dir.join("lib/libc.so.6").is_file());
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        // The same binary again: the same directory, found through the index.
        assert_eq!(prepare(root.path(), &exe).unwrap(), dir);
        assert_eq!(fs::read_dir(root.path().join(".tools")).unwrap().count(), 2);
        let argv = command(&exe, &["__sftp-server"]);
        assert_eq!(
            argv,
            [
                format!("/.warren/lib/{name}"),
                "--library-path".into(),
                "/.warren/lib".into(),
                "/.warren/bin/warren".into(),
                "__sftp-server".into()
            ]
        );
        // The copy runs through its own loader and libraries.
        let o = Command::new(dir.join("lib").join(name))
            .arg("--library-path")
            .arg(dir.join("lib"))
            .arg(dir.join("bin/warren"))
            .args(["--list"])
            .env("RUST_TEST_THREADS", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Another binary's tools: those of the first go once no workspace names them.
        let other = root.path().join("other-exe");
        fs::copy(&exe, &other).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&other)
            .unwrap()
            .write_all(b"different")
            .unwrap();
        let ws = root.path().join("ws1/bundle");
        fs::create_dir_all(&ws).unwrap();
        let mut config = serde_json::json!({"mounts": []});
        set_mount(&mut config, Some(&dir));
        fs::write(ws.join("config.json"), config.to_string()).unwrap();
        let dir2 = prepare(root.path(), &other).unwrap();
        assert_ne!(dir2, dir);
        assert!(dir.join("bin/warren").is_file(), "still named by ws1");
        fs::remove_dir_all(root.path().join("ws1")).unwrap();
        fs::remove_file(&other).unwrap();
        fs::copy(&exe, &other).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&other)
            .unwrap()
            .write_all(b"third")
            .unwrap();
        let dir3 = prepare(root.path(), &other).unwrap();
        assert!(!dir.exists() && !dir2.exists() && dir3.exists());
        assert_eq!(
            fs::read_dir(root.path().join(".tools/index"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn static_binaries_and_bad_files() {
        // busybox-static has no interpreter.
        assert_eq!(interpreter(Path::new("/bin/busybox")).unwrap(), None);
        assert_eq!(
            command(Path::new("/bin/busybox"), &["x"]),
            ["/.warren/bin/warren", "x"]
        );
        assert!(parse_interp(b"#!/bin/sh\n").is_err());
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        // A program header table far beyond the file.
        elf[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        elf[0x38] = 1;
        assert!(parse_interp(&elf).is_err());
    }

    #[test]
    fn the_mount_is_set_once_and_last() {
        let mut c = serde_json::json!({"mounts": [{"destination": "/proc"}]});
        assert!(set_mount(&mut c, Some(Path::new("/s/.tools/abc"))));
        assert!(!set_mount(&mut c, Some(Path::new("/s/.tools/abc"))));
        assert_eq!(c["mounts"].as_array().unwrap().len(), 2);
        assert_eq!(c["mounts"][1]["source"], "/s/.tools/abc");
        assert_eq!(
            c["mounts"][1]["options"],
            serde_json::json!(["rbind", "ro", "nosuid", "nodev"])
        );
        assert!(set_mount(&mut c, None));
        assert_eq!(c["mounts"].as_array().unwrap().len(), 1);
    }
}
