//! COPY and ADD, done on the host without a sandbox: the sources are laid out in a staging
//! directory exactly where they land in the image (with the image's own parent directories,
//! found through its symlinks), and that directory becomes the step's layer.
//!
//! Sources come from the build context (minus `.dockerignore`) or, with `--from`, from another
//! stage's or image's layers. Paths never leave their root. In the context, source paths
//! follow symlinks as Docker's do, but resolved inside the context ([`Root::resolve`]: an
//! absolute target starts at the context root, `..` stops there), and every file is reached
//! through directory descriptors without following any symlink ([`crate::confined`]); in
//! layers, [`LayerView::resolve`] does the same inside the image. Symlinks inside copied
//! directories are copied as symlinks, never followed.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::confined::{self, Root};
use crate::ignore::{glob, Ignore};
use crate::view::{components, LayerView};

/// Where COPY reads from.
pub enum Source<'a> {
    /// The build context directory.
    Context {
        /// The context directory, held open.
        root: Root,
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
    /// Where its bytes are on the host (for messages; context files are opened through
    /// [`Source::open`]).
    pub host: PathBuf,
    /// Its metadata (a symlink named as a source is followed, inside its root).
    pub meta: Metadata,
    /// Its resolved components (no symlink among them).
    comps: Vec<String>,
}

/// One entry met while walking a source: something that can be read without following a
/// symlink.
pub enum Node<'a> {
    /// A host path in an image's layers (immutable, resolved without following symlinks).
    Host(&'a Path),
    /// A name in an open directory of the build context.
    At(&'a OwnedFd, &'a str),
}

impl Node<'_> {
    /// The target of this symlink.
    pub fn read_link(&self) -> io::Result<PathBuf> {
        match self {
            Node::Host(p) => fs::read_link(p),
            Node::At(d, n) => confined::read_link_at(*d, n),
        }
    }

    /// Opens this regular file, which must still be the one `meta` describes.
    pub fn open(&self, meta: &Metadata) -> io::Result<File> {
        let f = match self {
            Node::Host(p) => {
                let f = File::from(rustix::fs::open(
                    *p,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )?);
                let m = f.metadata()?;
                if !m.is_file() {
                    return Err(io::Error::other(format!(
                        "{} is not a regular file",
                        p.display()
                    )));
                }
                if !confined::same_file(meta, &m) {
                    return Err(io::Error::other(format!("{} changed", p.display())));
                }
                f
            }
            Node::At(d, n) => confined::open_file_at(*d, n, Some(meta))?,
        };
        Ok(f)
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The entries of the context directory `comps` (resolved) that `.dockerignore` leaves, with
/// their metadata (symlinks not followed), sorted. An excluded directory is still listed when
/// an exception may re-include something in it (`build` + `!build/keep`).
fn context_children(
    dir: &OwnedFd,
    comps: &[String],
    ignore: &Ignore,
) -> io::Result<Vec<(String, Metadata)>> {
    let mut out = Vec::new();
    for name in confined::list_at(dir)? {
        let mut rel = comps.to_vec();
        rel.push(name.clone());
        let rel = rel.join("/");
        let Ok(m) = confined::lstat_at(dir, &name) else {
            continue;
        };
        if !ignore.excluded(&rel) || (m.is_dir() && ignore.may_include_below(&rel)) {
            out.push((name, m));
        }
    }
    Ok(out)
}

impl Source<'_> {
    /// Expands one source (wildcards allowed in any component) into items.
    pub fn expand(&self, src: &str) -> Result<Vec<Item>, String> {
        let wanted = components(src);
        match self {
            Source::Context { root, ignore } => {
                // (the path as written, with wildcards matched; its resolved components)
                let mut found: Vec<(Vec<String>, Vec<String>)> = vec![(vec![], vec![])];
                for c in &wanted {
                    let mut next = Vec::new();
                    for (rel, res) in found {
                        let res = root.resolve(&res, true)?;
                        if has_glob(c) {
                            let Ok(dir) = root.dir(&res) else { continue };
                            let children = context_children(&dir, &res, ignore)
                                .map_err(|e| format!("cannot list `{}`: {e}", rel.join("/")))?;
                            for (name, _) in children {
                                if glob(c, &name) {
                                    let (mut nr, mut nc) = (rel.clone(), res.clone());
                                    nr.push(name.clone());
                                    nc.push(name);
                                    next.push((nr, nc));
                                }
                            }
                        } else {
                            let (mut nr, mut nc) = (rel, res);
                            nr.push(c.clone());
                            nc.push(c.clone());
                            next.push((nr, nc));
                        }
                    }
                    found = next;
                }
                let mut items = Vec::new();
                for (rel, res) in found {
                    let rel = rel.join("/");
                    if !rel.is_empty() && ignore.excluded(&rel) {
                        continue;
                    }
                    let comps = root.resolve(&res, true)?;
                    let real = comps.join("/");
                    // What a symlink leads to must not be excluded either (Docker never sends
                    // excluded files to the builder).
                    if !real.is_empty() && ignore.excluded(&real) {
                        continue;
                    }
                    let Ok(meta) = root.lstat(&comps) else {
                        continue;
                    };
                    if meta.file_type().is_symlink() {
                        continue;
                    }
                    items.push(Item {
                        rel: if rel.is_empty() { ".".into() } else { rel },
                        host: root.path().join(&real),
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

    /// Opens the regular file `item` for reading (ADD's archives).
    pub fn open(&self, item: &Item) -> Result<File, String> {
        let fail = |e: io::Error| format!("cannot read `{}`: {e}", item.rel);
        match self {
            Source::Context { root, .. } => {
                let (dir, name) = root.entry(&item.comps).map_err(fail)?;
                Node::At(&dir, &name).open(&item.meta).map_err(fail)
            }
            Source::Layers(_) => Node::Host(&item.host).open(&item.meta).map_err(fail),
        }
    }

    /// Visits `item` and everything below it (sorted), with paths relative to the item.
    /// Symlinks below the item are visited, never followed.
    fn walk(
        &self,
        item: &Item,
        visit: &mut dyn FnMut(&str, &Node<'_>, &Metadata) -> Result<(), String>,
    ) -> Result<(), String> {
        type Visit<'v> = dyn FnMut(&str, &Node<'_>, &Metadata) -> Result<(), String> + 'v;
        fn child_rel(rel: &str, name: &str) -> String {
            if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            }
        }
        fn go_layers(
            view: &LayerView,
            comps: &mut Vec<String>,
            rel: &str,
            host: &Path,
            meta: &Metadata,
            visit: &mut Visit<'_>,
        ) -> Result<(), String> {
            visit(rel, &Node::Host(host), meta)?;
            if meta.is_dir() {
                for (name, child) in view.read_dir(comps) {
                    let Ok(m) = fs::symlink_metadata(&child) else {
                        continue;
                    };
                    comps.push(name.clone());
                    go_layers(view, comps, &child_rel(rel, &name), &child, &m, visit)?;
                    comps.pop();
                }
            }
            Ok(())
        }
        fn go_context(
            ignore: &Ignore,
            comps: &mut Vec<String>,
            rel: &str,
            parent: &OwnedFd,
            name: &str,
            meta: &Metadata,
            visit: &mut Visit<'_>,
        ) -> Result<(), String> {
            visit(rel, &Node::At(parent, name), meta)?;
            if meta.is_dir() {
                let shown = if rel.is_empty() { "." } else { rel };
                let dir = confined::open_dir_at(parent, name, Some(meta))
                    .map_err(|e| format!("cannot open `{shown}`: {e}"))?;
                let children = context_children(&dir, comps, ignore)
                    .map_err(|e| format!("cannot list `{shown}`: {e}"))?;
                for (child, m) in children {
                    comps.push(child.clone());
                    go_context(
                        ignore,
                        comps,
                        &child_rel(rel, &child),
                        &dir,
                        &child,
                        &m,
                        visit,
                    )?;
                    comps.pop();
                }
            }
            Ok(())
        }
        let mut comps = item.comps.clone();
        match self {
            Source::Layers(view) => go_layers(view, &mut comps, "", &item.host, &item.meta, visit),
            Source::Context { root, ignore } => {
                let (dir, name) = root
                    .entry(&item.comps)
                    .map_err(|e| format!("cannot open `{}`: {e}", item.rel))?;
                let now = if name == "." {
                    File::from(dir.try_clone().map_err(|e| e.to_string())?).metadata()
                } else {
                    confined::lstat_at(&dir, &name)
                }
                .map_err(|e| format!("cannot open `{}`: {e}", item.rel))?;
                if !confined::same_file(&now, &item.meta)
                    || now.file_type() != item.meta.file_type()
                {
                    return Err(format!("`{}` changed during the build", item.rel));
                }
                go_context(ignore, &mut comps, "", &dir, &name, &item.meta, visit)
            }
        }
    }

    /// A digest of `item`'s tree: names, types, modes, sizes, contents and link targets (not
    /// times or owners, as BuildKit), for the cache key.
    pub fn digest(&self, item: &Item) -> Result<String, String> {
        let mut h = Sha256::new();
        self.walk(item, &mut |rel, node, meta| {
            let ft = meta.file_type();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(format!("{:o}", meta.mode()).as_bytes());
            if ft.is_symlink() {
                let t = node.read_link().map_err(|e| e.to_string())?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if ft.is_file() {
                h.update(meta.len().to_le_bytes());
                let mut f = node
                    .open(meta)
                    .map_err(|e| format!("cannot read `{}/{rel}`: {e}", item.rel))?;
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
        src.walk(item, &mut |rel, node, meta| {
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
                let link = node.read_link().map_err(|e| fail("read link for", e))?;
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
                let mut from = node.open(meta).map_err(|e| fail("read the source of", e))?;
                let mut to = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|e| fail("create", e))?;
                io::copy(&mut from, &mut to).map_err(|e| fail("write", e))?;
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

/// Whether `f` (read from its start, left rewound) is a gzip-compressed file.
fn is_gzip(f: &mut File) -> io::Result<bool> {
    f.rewind()?;
    let mut head = [0u8; 2];
    let gz = f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
    f.rewind()?;
    Ok(gz)
}

/// Whether the open file `f` is a tar archive (plain or gzip), as ADD auto-extracts. Leaves it
/// rewound.
pub fn is_tar(f: &mut File) -> bool {
    let Ok(gz) = is_gzip(f) else {
        return false;
    };
    let mut block = vec![0u8; 512];
    let ok = if gz {
        flate2::read::GzDecoder::new(&mut *f)
            .read_exact(&mut block)
            .is_ok()
    } else {
        f.read_exact(&mut block).is_ok()
    };
    f.rewind().is_ok() && ok && &block[257..262] == b"ustar"
}

/// Extracts the (plain or gzip) tar archive `f` (named `name` in messages) into the stage
/// directory `dest`, keeping owners and modes; entries that would leave `dest` are refused by
/// the tar reader.
pub fn extract_tar(mut f: File, name: &str, dest: &Path) -> Result<(), String> {
    let gz = is_gzip(&mut f).map_err(|e| format!("cannot read {name}: {e}"))?;
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
        let mut msg = format!("cannot extract {name}: {e}");
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
