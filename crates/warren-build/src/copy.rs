//! COPY and ADD, done on the host without a sandbox: the sources are laid out in a staging
//! directory exactly where they land in the image (with the image's own parent directories,
//! found through its symlinks), and that directory becomes the step's layer.
//!
//! Sources come from the build context (minus `.dockerignore`) or, with `--from`, from another
//! stage's or image's layers. Paths never leave their root: context paths are cleaned lexically
//! and a top-level symlink must resolve inside the context; symlinks inside copied directories
//! are copied as symlinks, never followed.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ignore::{glob, Ignore};
use crate::view::{components, LayerView};

/// Where COPY reads from.
pub enum Source<'a> {
    /// The build context directory.
    Context {
        /// Canonical context directory.
        root: PathBuf,
        /// Its `.dockerignore`.
        ignore: &'a Ignore,
    },
    /// Another stage's or image's filesystem.
    Layers(&'a LayerView),
}

/// One source after wildcard expansion.
pub struct Item {
    /// Path relative to the source's root, for messages and hashing.
    pub rel: String,
    /// Where its bytes are on the host.
    pub host: PathBuf,
    /// Its metadata (a top-level symlink in the context is followed).
    pub meta: Metadata,
    /// Resolved components (layer sources) for listing directories.
    comps: Vec<String>,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Source<'_> {
    fn children(&self, comps: &[String], host: &Path) -> Vec<(String, PathBuf)> {
        match self {
            Source::Context { ignore, .. } => {
                let mut out: Vec<(String, PathBuf)> = match fs::read_dir(host) {
                    Ok(rd) => rd
                        .flatten()
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect(),
                    Err(_) => vec![],
                };
                out.retain(|(name, path)| {
                    let mut rel = comps.to_vec();
                    rel.push(name.clone());
                    let rel = rel.join("/");
                    // An excluded directory is still walked when an exception may re-include
                    // something in it (`build` + `!build/keep`).
                    !ignore.excluded(&rel)
                        || (fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
                            && ignore.may_include_below(&rel))
                });
                out.sort();
                out
            }
            Source::Layers(view) => view.read_dir(comps).into_iter().collect(),
        }
    }

    /// Expands one source (wildcards allowed in any component) into items.
    pub fn expand(&self, src: &str) -> Result<Vec<Item>, String> {
        let wanted = components(src);
        match self {
            Source::Context { root, ignore } => {
                let mut found: Vec<(Vec<String>, PathBuf)> = vec![(vec![], root.clone())];
                for c in &wanted {
                    let mut next = Vec::new();
                    for (comps, host) in found {
                        if has_glob(c) {
                            for (name, p) in self.children(&comps, &host) {
                                if glob(c, &name) {
                                    let mut nc = comps.clone();
                                    nc.push(name);
                                    next.push((nc, p));
                                }
                            }
                        } else {
                            let mut nc = comps.clone();
                            nc.push(c.clone());
                            next.push((nc, host.join(c)));
                        }
                    }
                    found = next;
                }
                let mut items = Vec::new();
                for (comps, host) in found {
                    let rel = comps.join("/");
                    if !rel.is_empty() && ignore.excluded(&rel) {
                        continue;
                    }
                    let Ok(lmeta) = fs::symlink_metadata(&host) else {
                        continue;
                    };
                    let (host, meta) = if lmeta.file_type().is_symlink() {
                        let real = fs::canonicalize(&host).map_err(|e| {
                            format!("source `{rel}` is a symlink that cannot be followed: {e}")
                        })?;
                        if !real.starts_with(root) {
                            return Err(format!(
                                "source `{rel}` is a symlink to {}, outside the build context",
                                real.display()
                            ));
                        }
                        let m = fs::metadata(&real).map_err(|e| e.to_string())?;
                        (real, m)
                    } else {
                        (host, lmeta)
                    };
                    items.push(Item {
                        rel: if rel.is_empty() { ".".into() } else { rel },
                        host,
                        meta,
                        comps,
                    });
                }
                Ok(items)
            }
            Source::Layers(view) => {
                let mut found: Vec<Vec<String>> = vec![vec![]];
                for c in &wanted {
                    let mut next = Vec::new();
                    for comps in found {
                        let comps = view.resolve(&format!("/{}", comps.join("/")), true)?;
                        if has_glob(c) {
                            for name in view.read_dir(&comps).into_keys() {
                                if glob(c, &name) {
                                    let mut nc = comps.clone();
                                    nc.push(name);
                                    next.push(nc);
                                }
                            }
                        } else {
                            let mut nc = comps.clone();
                            nc.push(c.clone());
                            next.push(nc);
                        }
                    }
                    found = next;
                }
                let mut items = Vec::new();
                for comps in found {
                    let comps = view.resolve(&format!("/{}", comps.join("/")), true)?;
                    if let Some((host, meta)) = view.lookup(&comps) {
                        items.push(Item {
                            rel: format!("/{}", comps.join("/")),
                            host,
                            meta,
                            comps,
                        });
                    }
                }
                Ok(items)
            }
        }
    }

    /// Visits `item` and everything below it (sorted), with paths relative to the item.
    fn walk(
        &self,
        item: &Item,
        visit: &mut dyn FnMut(&str, &Path, &Metadata) -> Result<(), String>,
    ) -> Result<(), String> {
        fn go(
            src: &Source<'_>,
            comps: &mut Vec<String>,
            rel: &str,
            host: &Path,
            meta: &Metadata,
            visit: &mut dyn FnMut(&str, &Path, &Metadata) -> Result<(), String>,
        ) -> Result<(), String> {
            visit(rel, host, meta)?;
            if meta.is_dir() {
                for (name, child) in src.children(comps, host) {
                    let Ok(m) = fs::symlink_metadata(&child) else {
                        continue;
                    };
                    comps.push(name.clone());
                    let r = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    go(src, comps, &r, &child, &m, visit)?;
                    comps.pop();
                }
            }
            Ok(())
        }
        let mut comps = item.comps.clone();
        go(self, &mut comps, "", &item.host, &item.meta, visit)
    }

    /// A digest of `item`'s tree: names, types, modes, sizes, contents and link targets (not
    /// times or owners, as BuildKit), for the cache key.
    pub fn digest(&self, item: &Item) -> Result<String, String> {
        let mut h = Sha256::new();
        self.walk(item, &mut |rel, host, meta| {
            let ft = meta.file_type();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(format!("{:o}", meta.mode()).as_bytes());
            if ft.is_symlink() {
                let t = fs::read_link(host).map_err(|e| e.to_string())?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if ft.is_file() {
                h.update(meta.len().to_le_bytes());
                let mut f =
                    File::open(host).map_err(|e| format!("cannot read {}: {e}", host.display()))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            h.update([1]);
            Ok(())
        })?;
        Ok(hex::encode(h.finalize()))
    }
}

/// Builds a layer's tree in a staging directory.
pub struct Stage<'a> {
    /// The staging directory (the layer's root).
    pub root: PathBuf,
    /// The parent image, for the real parent directories.
    pub view: &'a LayerView,
    /// Directory times to restore once their children are written (deepest last).
    dir_times: Vec<(PathBuf, i64, i64)>,
}

fn set_times(path: &Path, secs: i64, nsecs: i64) -> io::Result<()> {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nsecs as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nsecs as _,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

impl<'a> Stage<'a> {
    /// A stage for a layer on top of `view`.
    pub fn new(root: PathBuf, view: &'a LayerView) -> Stage<'a> {
        Stage {
            root,
            view,
            dir_times: Vec::new(),
        }
    }

    /// Makes sure the image directory `comps` (already resolved) exists in the stage, with the
    /// parent image's metadata where it has the directory, else root-owned 0755.
    pub fn ensure_dir(&mut self, comps: &[String]) -> Result<PathBuf, String> {
        let mut p = self.root.clone();
        for i in 0..comps.len() {
            p.push(&comps[i]);
            if p.is_dir() {
                continue;
            }
            fs::create_dir(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
            match self.view.lookup(&comps[..=i]) {
                Some((_, m)) if m.is_dir() => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(m.mode() & 0o7777))
                        .map_err(|e| e.to_string())?;
                    std::os::unix::fs::lchown(&p, Some(m.uid()), Some(m.gid()))
                        .map_err(|e| e.to_string())?;
                    self.dir_times.push((p.clone(), m.mtime(), m.mtime_nsec()));
                }
                Some(_) => {
                    return Err(format!(
                        "/{} is not a directory in the image",
                        comps[..=i].join("/")
                    ))
                }
                None => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(p)
    }

    /// Copies `item` (a whole tree for a directory: its contents) to the stage path `dest`,
    /// owned by `owner` (root when unset) with `chmod` overriding modes when set.
    pub fn copy_item(
        &mut self,
        src: &Source<'_>,
        item: &Item,
        dest: &Path,
        owner: (u32, u32),
        chmod: Option<u32>,
    ) -> Result<(), String> {
        let mut times = Vec::new();
        src.walk(item, &mut |rel, host, meta| {
            let target = if rel.is_empty() {
                dest.to_path_buf()
            } else {
                dest.join(rel)
            };
            let ft = meta.file_type();
            let fail =
                |what: &str, e: io::Error| format!("cannot {what} {}: {e}", target.display());
            if ft.is_dir() {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&target).map_err(|e| fail("replace", e))?;
                        fs::create_dir(&target).map_err(|e| fail("create", e))?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(|e| fail("create", e))?,
                }
                // The destination directory itself keeps the image's mode when it had one.
                if !(rel.is_empty() && self.view_has(dest)) {
                    let mode = chmod.unwrap_or(meta.mode() & 0o7777);
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| fail("chmod", e))?;
                    std::os::unix::fs::lchown(&target, Some(owner.0), Some(owner.1))
                        .map_err(|e| fail("chown", e))?;
                    times.push((target.clone(), meta.mtime(), meta.mtime_nsec()));
                }
            } else if ft.is_symlink() {
                let link = fs::read_link(host).map_err(|e| fail("read link for", e))?;
                let _ = fs::remove_file(&target);
                symlink(&link, &target).map_err(|e| fail("create symlink", e))?;
                std::os::unix::fs::lchown(&target, Some(owner.0), Some(owner.1))
                    .map_err(|e| fail("chown", e))?;
                set_times(&target, meta.mtime(), meta.mtime_nsec())
                    .map_err(|e| fail("set times of", e))?;
            } else if ft.is_file() {
                if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err(format!(
                        "cannot copy file `{}` over directory {}",
                        item.rel,
                        target.display()
                    ));
                }
                let _ = fs::remove_file(&target);
                fs::copy(host, &target).map_err(|e| fail("write", e))?;
                let mode = chmod.unwrap_or(meta.mode() & 0o7777);
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(|e| fail("chmod", e))?;
                std::os::unix::fs::lchown(&target, Some(owner.0), Some(owner.1))
                    .map_err(|e| fail("chown", e))?;
                set_times(&target, meta.mtime(), meta.mtime_nsec())
                    .map_err(|e| fail("set times of", e))?;
            }
            // Sockets, FIFOs and devices are not copied (as Docker).
            Ok(())
        })?;
        for (p, s, n) in times.into_iter().rev() {
            let _ = set_times(&p, s, n);
        }
        Ok(())
    }

    fn view_has(&self, stage_path: &Path) -> bool {
        let Ok(rel) = stage_path.strip_prefix(&self.root) else {
            return false;
        };
        let comps: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        self.view.lookup(&comps).is_some()
    }

    /// Restores the copied parent directories' times (writing children changed them).
    pub fn finish(self) {
        for (p, s, n) in self.dir_times.into_iter().rev() {
            let _ = set_times(&p, s, n);
        }
    }
}

/// Whether the file at `path` is a tar archive (plain or gzip), as ADD auto-extracts.
pub fn is_tar(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 2];
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut reader: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut block = vec![0u8; 512];
    if reader.read_exact(&mut block).is_err() {
        return false;
    }
    &block[257..262] == b"ustar"
}

/// Extracts a (plain or gzip) tar archive into the stage directory `dest`, keeping owners and
/// modes; entries that would leave `dest` are refused by the tar reader.
pub fn extract_tar(path: &Path, dest: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut head = [0u8; 2];
    let gz = File::open(path)
        .and_then(|mut g| g.read_exact(&mut head))
        .is_ok()
        && head == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    a.unpack(dest).map_err(|e| {
        let mut msg = format!("cannot extract {}: {e}", path.display());
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

/// Resolves `user[:group]` (names or ids) against the image's `/etc/passwd` and `/etc/group`.
pub fn resolve_owner(view: &LayerView, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = view.read_file(file)?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() == Some(&name) && f.len() > 3 {
                Some((f[2].parse().ok()?, f[3].parse().unwrap_or(0)))
            } else if f.first() == Some(&name) && f.len() > 2 {
                Some((f[2].parse().ok()?, 0))
            } else {
                None
            }
        })
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            lookup("/etc/passwd", user)
                .ok_or_else(|| format!("user `{user}` is not in the image's /etc/passwd"))?
                .0
        }
    };
    // As Docker documents: without a group, the gid is the uid.
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup("/etc/group", g)
                    .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}
