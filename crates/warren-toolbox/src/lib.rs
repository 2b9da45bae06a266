//! `warren __toolbox OP JSON`: the in-workspace side of the toolbox API's file operations.
//!
//! The server runs it inside a workspace (from the read-only `/.warren` tools mount, through the
//! same exec as any command: the workspace's namespaces, cgroup, seccomp and user), so every path
//! it touches is resolved by the container's kernel view as that user: a symlink or `..` can
//! never reach the host, and the user's permissions hold. It never follows symlinks when walking
//! trees (list, search, tar, watch).
//!
//! Protocol (the server in `warren-server`'s `routes::workspaces::toolbox::files` speaks it):
//! - argv: `__toolbox OP JSON` where JSON holds the operation's arguments.
//! - Uploads (`write`, `tar-in`) read framed stdin: chunks of a 4-byte big-endian length and
//!   that many bytes; a zero length commits. Stdin ending without it (the client went away, the
//!   upload was too large) aborts: nothing is left behind.
//! - Streaming answers (`read`, `tar-out`, `watch`) first write one line `{"ready": {...}}` on
//!   stderr, then the data on stdout.
//! - Other answers are one JSON value on stdout.
//! - Failures: one line `{"error": {"code", "message"}}` on stderr and exit status 2. Codes:
//!   `not_found`, `invalid_request`, `permission_denied`, `exists`, `payload_too_large`, `io`.
#![forbid(unsafe_code)]

mod diff;
mod glob;
mod tarball;
mod watch;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

/// The subcommand of the `warren` binary.
pub const SUBCOMMAND: &str = "__toolbox";

/// Exit status of a failure reported on stderr.
pub const EXIT_FAILED: i32 = 2;

/// Files larger than this are skipped by content search.
pub const SEARCH_MAX_FILE: u64 = 10 << 20;

/// Text files up to this size (old and new) get a diff in a write's answer.
pub const DIFF_MAX: u64 = 256 << 10;

/// The header of one frame of an upload's stdin.
pub fn frame_header(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

/// A failure, as reported to the server.
#[derive(Debug)]
pub struct Fail {
    /// Machine code (see the module documentation).
    pub code: &'static str,
    /// One line.
    pub message: String,
}

impl Fail {
    fn new(code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Fail {
        Fail::new("invalid_request", message)
    }

    /// An I/O error on `path`, classified.
    fn io(path: &Path, e: &io::Error) -> Fail {
        let code = match e.kind() {
            io::ErrorKind::NotFound => "not_found",
            io::ErrorKind::PermissionDenied => "permission_denied",
            io::ErrorKind::AlreadyExists => "exists",
            _ => match e.raw_os_error() {
                Some(libc_errno::EPERM) | Some(libc_errno::EROFS) => "permission_denied",
                Some(libc_errno::ENOTDIR)
                | Some(libc_errno::EISDIR)
                | Some(libc_errno::ENOTEMPTY)
                | Some(libc_errno::EINVAL)
                | Some(libc_errno::ELOOP)
                | Some(libc_errno::ENAMETOOLONG)
                | Some(libc_errno::EXDEV)
                | Some(libc_errno::EBUSY)
                | Some(libc_errno::ENOSPC)
                | Some(libc_errno::EDQUOT)
                | Some(libc_errno::ETXTBSY) => "invalid_request",
                _ => "io",
            },
        };
        let text = e.to_string();
        // `No such file or directory (os error 2)` → `No such file or directory`.
        let text = text
            .split(" (os error")
            .next()
            .unwrap_or(&text)
            .to_lowercase();
        Fail::new(code, format!("{}: {text}", path.display()))
    }
}

/// The errno values classified above (from rustix, so no libc dependency).
#[allow(non_snake_case)]
mod libc_errno {
    use rustix::io::Errno;
    pub const EPERM: i32 = Errno::PERM.raw_os_error();
    pub const EROFS: i32 = Errno::ROFS.raw_os_error();
    pub const ENOTDIR: i32 = Errno::NOTDIR.raw_os_error();
    pub const EISDIR: i32 = Errno::ISDIR.raw_os_error();
    pub const ENOTEMPTY: i32 = Errno::NOTEMPTY.raw_os_error();
    pub const EINVAL: i32 = Errno::INVAL.raw_os_error();
    pub const ELOOP: i32 = Errno::LOOP.raw_os_error();
    pub const ENAMETOOLONG: i32 = Errno::NAMETOOLONG.raw_os_error();
    pub const EXDEV: i32 = Errno::XDEV.raw_os_error();
    pub const EBUSY: i32 = Errno::BUSY.raw_os_error();
    pub const ENOSPC: i32 = Errno::NOSPC.raw_os_error();
    pub const EDQUOT: i32 = Errno::DQUOT.raw_os_error();
    pub const ETXTBSY: i32 = Errno::TXTBSY.raw_os_error();
}

type R<T> = Result<T, Fail>;

/// Runs `warren __toolbox OP JSON` (`args` without the program and subcommand); the exit status.
pub fn main(args: &[String]) -> i32 {
    let res = match args {
        [op, json] => match serde_json::from_str::<Value>(json) {
            Ok(v) => run(op, v),
            Err(e) => Err(Fail::invalid(format!("arguments: {e}"))),
        },
        _ => Err(Fail::invalid("usage: warren __toolbox OP JSON")),
    };
    match res {
        Ok(()) => 0,
        Err(f) => {
            report(&f);
            EXIT_FAILED
        }
    }
}

fn report(f: &Fail) {
    let line = json!({"error": {"code": f.code, "message": f.message}});
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

/// Tells the server a streaming answer starts.
fn ready(v: Value) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{}", json!({ "ready": v }));
    let _ = e.flush();
}

fn answer(v: &Value) -> R<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, v).map_err(|e| Fail::new("io", e.to_string()))?;
    let _ = out.write_all(b"\n");
    out.flush().map_err(|e| Fail::new("io", e.to_string()))
}

fn args<T: for<'de> Deserialize<'de>>(v: Value) -> R<T> {
    serde_json::from_value(v).map_err(|e| Fail::invalid(format!("arguments: {e}")))
}

fn run(op: &str, v: Value) -> R<()> {
    match op {
        "read" => read(args(v)?),
        "write" => write(args(v)?),
        "list" => list(args(v)?),
        "stat" => {
            let a: PathArg = args(v)?;
            let p = checked(&a.path)?;
            let m = fs::symlink_metadata(&p).map_err(|e| Fail::io(&p, &e))?;
            answer(&info(&p, &m))
        }
        "mkdir" => mkdir(args(v)?),
        "move" => mv(args(v)?),
        "remove" => remove(args(v)?),
        "chmod" => chmod(args(v)?),
        "search" => search(args(v)?),
        "tar-out" => tarball::out(args(v)?),
        "tar-in" => tarball::extract(args(v)?),
        "watch" => watch::run(args(v)?),
        _ => Err(Fail::invalid(format!("unknown operation `{op}`"))),
    }
}

#[derive(Deserialize)]
struct PathArg {
    path: String,
}

/// A path given by the client: not empty, no NUL; relative ones are against the current
/// directory (the workspace folder, where the server starts the toolbox). Made absolute
/// lexically (symlinks stay as named).
pub(crate) fn checked(p: &str) -> R<PathBuf> {
    if p.is_empty() {
        return Err(Fail::invalid("path: empty"));
    }
    if p.contains('\0') {
        return Err(Fail::invalid("path: contains a NUL byte"));
    }
    let p = Path::new(p);
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        let cwd = std::env::current_dir().map_err(|e| Fail::io(Path::new("."), &e))?;
        Ok(cwd.join(p))
    }
}

fn parse_mode(m: &str) -> R<u32> {
    let t = m.strip_prefix("0o").unwrap_or(m);
    match u32::from_str_radix(t, 8) {
        Ok(v) if v <= 0o7777 && !t.is_empty() => Ok(v),
        _ => Err(Fail::invalid(format!(
            "mode `{m}`: expected octal permissions such as 0644"
        ))),
    }
}

fn kind(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

/// A `FileInfo` (see `warren_api::toolbox_files`).
pub(crate) fn info(p: &Path, m: &fs::Metadata) -> Value {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mut v = json!({
        "name": name,
        "path": p.to_string_lossy(),
        "kind": kind(m),
        "size": m.len(),
        "mode": format!("{:04o}", m.mode() & 0o7777),
        "mtime": m.mtime(),
        "uid": m.uid(),
        "gid": m.gid(),
    });
    if m.file_type().is_symlink() {
        if let Ok(t) = fs::read_link(p) {
            v["target"] = Value::String(t.to_string_lossy().into_owned());
        }
    }
    v
}

fn copy_err(p: &Path, e: io::Error) -> Fail {
    Fail::io(p, &e)
}

// ---- read ----

fn read(a: PathArg) -> R<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = checked(&a.path)?;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; refused below anyway.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&p)
        .map_err(|e| Fail::io(&p, &e))?;
    let m = f.metadata().map_err(|e| Fail::io(&p, &e))?;
    if m.is_dir() {
        return Err(Fail::invalid(format!(
            "{}: is a directory (download it as a tar with format=tar, or list it)",
            p.display()
        )));
    }
    if !m.is_file() {
        return Err(Fail::invalid(format!(
            "{}: not a regular file",
            p.display()
        )));
    }
    let _ = rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty());
    // Files the kernel makes up as they are read (`/proc`) say size 0: no length then.
    let size = m.len();
    ready(
        json!({"size": if size > 0 { Some(size) } else { None }, "mode": format!("{:04o}", m.mode() & 0o7777)}),
    );
    let mut out = io::stdout().lock();
    let n = if size > 0 {
        io::copy(&mut (&f).take(size), &mut out).map_err(|e| copy_err(&p, e))?
    } else {
        io::copy(&mut (&f), &mut out).map_err(|e| copy_err(&p, e))?
    };
    out.flush().map_err(|e| copy_err(&p, e))?;
    if size > 0 && n < size {
        return Err(Fail::new(
            "io",
            format!("{}: the file shrank while it was read", p.display()),
        ));
    }
    Ok(())
}

// ---- framed stdin ----

/// Stdin as framed by the server: `Read` of the payload; `committed` once the zero frame came.
pub(crate) struct Framed<R: Read> {
    inner: R,
    left: usize,
    committed: bool,
    /// Bytes read so far.
    pub(crate) total: u64,
    max: u64,
}

impl<R: Read> Framed<R> {
    pub(crate) fn new(inner: R, max: u64) -> Self {
        Framed {
            inner,
            left: 0,
            committed: false,
            total: 0,
            max,
        }
    }

    pub(crate) fn committed(&self) -> bool {
        self.committed
    }

    /// Reads to the commit frame (the tar reader may stop at the end-of-archive blocks).
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink())?;
        Ok(())
    }
}

/// The upload ended without committing.
pub(crate) fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the upload was interrupted")
}

/// The upload is over its limit.
pub(crate) fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, "the upload is over the limit")
}

impl<R: Read> Read for Framed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.committed || buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            let mut h = [0u8; 4];
            match self.inner.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(aborted()),
                Err(e) => return Err(e),
            }
            let n = u32::from_be_bytes(h) as usize;
            if n == 0 {
                self.committed = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(aborted());
        }
        self.left -= n;
        self.total += n as u64;
        if self.total > self.max {
            return Err(too_large());
        }
        Ok(n)
    }
}

/// Maps an error of reading an upload.
pub(crate) fn upload_err(p: &Path, e: io::Error, max: u64) -> Fail {
    match e.kind() {
        io::ErrorKind::FileTooLarge => Fail::new(
            "payload_too_large",
            format!("the upload is larger than the limit of {max} bytes"),
        ),
        io::ErrorKind::UnexpectedEof => Fail::invalid("the upload was interrupted"),
        _ => Fail::io(p, &e),
    }
}

// ---- write ----

#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mkdir: bool,
    max: u64,
}

/// A temporary file removed on drop unless kept.
pub(crate) struct Temp {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl Temp {
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let m = fs::symlink_metadata(&self.path);
            if m.map(|m| m.is_dir()).unwrap_or(false) {
                let _ = fs::remove_dir_all(&self.path);
            } else {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// A fresh name next to `target` (same directory, so renaming is atomic).
pub(crate) fn temp_name(target: &Path) -> PathBuf {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short: String = name.chars().take(100).collect();
    target.with_file_name(format!(
        ".{short}.warren-{}-{nanos:08x}",
        std::process::id()
    ))
}

fn write(a: WriteArgs) -> R<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let given = checked(&a.path)?;
    let mode = a.mode.as_deref().map(parse_mode).transpose()?;
    // Writing through a symlink writes its target (as an editor would).
    let target = match fs::canonicalize(&given) {
        Ok(t) => t,
        Err(_) => given.clone(),
    };
    let old = fs::metadata(&target).ok();
    if let Some(m) = &old {
        if m.is_dir() {
            return Err(Fail::invalid(format!(
                "{}: is a directory",
                target.display()
            )));
        }
        if !m.is_file() {
            return Err(Fail::invalid(format!(
                "{}: not a regular file",
                target.display()
            )));
        }
    }
    let parent = target
        .parent()
        .ok_or_else(|| Fail::invalid("path: names no file"))?
        .to_path_buf();
    if a.mkdir {
        fs::create_dir_all(&parent).map_err(|e| Fail::io(&parent, &e))?;
    }
    match fs::metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Fail::invalid(format!(
                "{}: not a directory",
                parent.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::new(
                "not_found",
                format!(
                    "{}: no such directory (pass mkdir=true to create it)",
                    parent.display()
                ),
            ))
        }
        Err(e) => return Err(Fail::io(&parent, &e)),
    }
    // The old content, for the diff, before anything changes.
    let old_text = match &old {
        Some(m) if m.len() <= DIFF_MAX => fs::read(&target).ok(),
        _ => None,
    };
    let tmp_path = temp_name(&target);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| Fail::io(&target, &e))?;
    let tmp = Temp {
        path: tmp_path,
        keep: false,
    };
    let mut input = Framed::new(io::stdin().lock(), a.max);
    let mut hash = sha2::Sha256::new();
    let mut head: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(upload_err(&target, e, a.max)),
        };
        hash.update(&buf[..n]);
        if (head.len() as u64) <= DIFF_MAX {
            let room = (DIFF_MAX as usize + 1).saturating_sub(head.len());
            head.extend_from_slice(&buf[..n.min(room)]);
        }
        f.write_all(&buf[..n]).map_err(|e| Fail::io(&target, &e))?;
    }
    if !input.committed() {
        return Err(Fail::invalid("the upload was interrupted"));
    }
    let size = input.total;
    let perm = mode
        .or(old.as_ref().map(|m| m.mode() & 0o7777))
        .unwrap_or(0o644);
    f.set_permissions(fs::Permissions::from_mode(perm))
        .map_err(|e| Fail::io(&target, &e))?;
    // Root replacing someone's file keeps its owner.
    if let Some(m) = &old {
        if rustix::process::geteuid().is_root() {
            let _ = rustix::fs::fchown(
                &f,
                Some(rustix::fs::Uid::from_raw(m.uid())),
                Some(rustix::fs::Gid::from_raw(m.gid())),
            );
            let _ = f.set_permissions(fs::Permissions::from_mode(perm));
        }
    }
    f.sync_all().map_err(|e| Fail::io(&target, &e))?;
    drop(f);
    fs::rename(&tmp.path, &target).map_err(|e| Fail::io(&target, &e))?;
    tmp.keep();
    if let Ok(d) = fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    let diff = if size <= DIFF_MAX {
        let old_bytes: &[u8] = old_text.as_deref().unwrap_or(b"");
        let oldok = old.is_none() || old_text.is_some();
        match (oldok, text(old_bytes), text(&head)) {
            (true, Some(o), Some(n)) => {
                let name = target.to_string_lossy();
                let from = if old.is_some() {
                    format!("a{name}")
                } else {
                    "/dev/null".to_string()
                };
                Some(diff::unified(o, n, &from, &format!("b{name}")))
            }
            _ => None,
        }
    } else {
        None
    };
    answer(&json!({
        "path": target.to_string_lossy(),
        "size": size,
        "sha256": hex::encode(hash.finalize()),
        "diff": diff,
    }))
}

/// Text: UTF-8 without NUL bytes.
fn text(b: &[u8]) -> Option<&str> {
    if b.contains(&0) {
        return None;
    }
    std::str::from_utf8(b).ok()
}

// ---- list ----

#[derive(Deserialize)]
struct ListArgs {
    path: String,
    #[serde(default)]
    recursive: bool,
    limit: usize,
}

/// Walks `root` without following symlinks, depth first in path order, calling `f` on each
/// entry (not on `root`); `f` returns false to stop. Unreadable directories are skipped.
pub(crate) fn walk(root: &Path, recursive: bool, f: &mut dyn FnMut(&Path, &fs::Metadata) -> bool) {
    fn sorted(d: &Path) -> std::vec::IntoIter<PathBuf> {
        let mut v: Vec<PathBuf> = match fs::read_dir(d) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => vec![],
        };
        v.sort();
        v.into_iter()
    }
    let mut stack = vec![sorted(root)];
    while let Some(it) = stack.last_mut() {
        let Some(p) = it.next() else {
            stack.pop();
            continue;
        };
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !f(&p, &m) {
            return;
        }
        if recursive && m.is_dir() {
            stack.push(sorted(&p));
        }
    }
}

fn dir_arg(path: &str) -> R<PathBuf> {
    let p = checked(path)?;
    let m = fs::metadata(&p).map_err(|e| Fail::io(&p, &e))?;
    if !m.is_dir() {
        return Err(Fail::invalid(format!("{}: not a directory", p.display())));
    }
    // Reading it may be refused even when stat is not.
    fs::read_dir(&p).map_err(|e| Fail::io(&p, &e))?;
    Ok(p)
}

fn list(a: ListArgs) -> R<()> {
    let p = dir_arg(&a.path)?;
    let mut out = vec![];
    let mut truncated = false;
    walk(&p, a.recursive, &mut |q, m| {
        if out.len() >= a.limit {
            truncated = true;
            return false;
        }
        out.push(info(q, m));
        true
    });
    answer(&json!({"entries": out, "truncated": truncated}))
}

// ---- mkdir, move, remove, chmod ----

#[derive(Deserialize)]
struct MkdirArgs {
    path: String,
    #[serde(default)]
    parents: bool,
    #[serde(default)]
    mode: Option<String>,
}

fn mkdir(a: MkdirArgs) -> R<()> {
    use std::os::unix::fs::DirBuilderExt;
    let p = checked(&a.path)?;
    let mode = a
        .mode
        .as_deref()
        .map(parse_mode)
        .transpose()?
        .unwrap_or(0o755);
    let mut b = fs::DirBuilder::new();
    b.recursive(a.parents).mode(mode);
    b.create(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Fail::new("exists", format!("{}: already exists", p.display()))
        } else {
            Fail::io(&p, &e)
        }
    })?;
    let m = fs::symlink_metadata(&p).map_err(|e| Fail::io(&p, &e))?;
    if !m.is_dir() {
        return Err(Fail::new(
            "exists",
            format!("{}: exists and is not a directory", p.display()),
        ));
    }
    answer(&info(&p, &m))
}

#[derive(Deserialize)]
struct MoveArgs {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

fn mv(a: MoveArgs) -> R<()> {
    let from = checked(&a.from)?;
    let to = checked(&a.to)?;
    fs::symlink_metadata(&from).map_err(|e| Fail::io(&from, &e))?;
    let flags = if a.overwrite {
        rustix::fs::RenameFlags::empty()
    } else {
        rustix::fs::RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(rustix::fs::CWD, &from, rustix::fs::CWD, &to, flags).map_err(
        |e| {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::AlreadyExists {
                Fail::new(
                    "exists",
                    format!(
                        "{}: already exists (pass overwrite=true to replace it)",
                        to.display()
                    ),
                )
            } else if e.raw_os_error() == Some(libc_errno::EXDEV) {
                Fail::invalid(format!(
                    "{} and {} are on different filesystems: copy and remove instead",
                    from.display(),
                    to.display()
                ))
            } else {
                Fail::io(&to, &e)
            }
        },
    )?;
    let m = fs::symlink_metadata(&to).map_err(|e| Fail::io(&to, &e))?;
    answer(&info(&to, &m))
}

#[derive(Deserialize)]
struct RemoveArgs {
    path: String,
    #[serde(default)]
    recursive: bool,
}

fn remove(a: RemoveArgs) -> R<()> {
    let p = checked(&a.path)?;
    let m = fs::symlink_metadata(&p).map_err(|e| Fail::io(&p, &e))?;
    if m.is_dir() {
        let r = if a.recursive {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_dir(&p)
        };
        r.map_err(|e| {
            if e.raw_os_error() == Some(libc_errno::ENOTEMPTY) {
                Fail::invalid(format!(
                    "{}: directory not empty (pass recursive=true to remove it all)",
                    p.display()
                ))
            } else {
                Fail::io(&p, &e)
            }
        })?;
    } else {
        fs::remove_file(&p).map_err(|e| Fail::io(&p, &e))?;
    }
    answer(&json!({"removed": p.to_string_lossy()}))
}

#[derive(Deserialize)]
struct ChmodArgs {
    path: String,
    mode: String,
}

fn chmod(a: ChmodArgs) -> R<()> {
    let p = checked(&a.path)?;
    let mode = parse_mode(&a.mode)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(|e| Fail::io(&p, &e))?;
    let m = fs::symlink_metadata(&p).map_err(|e| Fail::io(&p, &e))?;
    answer(&info(&p, &m))
}

// ---- search ----

#[derive(Deserialize)]
struct SearchArgs {
    path: String,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    content: Option<String>,
    limit: usize,
}

fn search(a: SearchArgs) -> R<()> {
    let root = dir_arg(&a.path)?;
    let pat = match &a.glob {
        Some(g) => Some(glob::Pattern::new(g).map_err(Fail::invalid)?),
        None => None,
    };
    let needle = a.content.as_deref().map(str::as_bytes);
    if pat.is_none() && needle.is_none() {
        return Err(Fail::invalid("give glob or content"));
    }
    if needle.is_some_and(|n| n.is_empty()) {
        return Err(Fail::invalid("content: empty"));
    }
    let mut out = vec![];
    let mut truncated = false;
    let mut skipped = 0u64;
    walk(&root, true, &mut |p, m| {
        let rel = p.strip_prefix(&root).unwrap_or(p).to_string_lossy();
        if let Some(pat) = &pat {
            if !pat.matches(&rel) {
                return true;
            }
        }
        let Some(needle) = needle else {
            if out.len() >= a.limit {
                truncated = true;
                return false;
            }
            out.push(json!({"path": p.to_string_lossy()}));
            return true;
        };
        if !m.is_file() {
            return true;
        }
        if m.len() > SEARCH_MAX_FILE {
            skipped += 1;
            return true;
        }
        let Ok(data) = fs::read(p) else {
            skipped += 1;
            return true;
        };
        if data[..data.len().min(8192)].contains(&0) {
            return true;
        }
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            if find(line, needle) {
                if out.len() >= a.limit {
                    truncated = true;
                    return false;
                }
                let mut t = String::from_utf8_lossy(line).into_owned();
                if t.len() > 1000 {
                    let mut cut = 1000;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t.truncate(cut);
                }
                out.push(json!({"path": p.to_string_lossy(), "line": i + 1, "text": t.trim_end_matches('\r')}));
            }
        }
        true
    });
    answer(&json!({"matches": out, "truncated": truncated, "skipped": skipped}))
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_commits_only_on_the_zero_frame() {
        let mut data = vec![];
        data.extend_from_slice(&frame_header(3));
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&frame_header(2));
        data.extend_from_slice(b"de");
        let mut r = Framed::new(&data[..], 100);
        let mut out = vec![];
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!r.committed());
        data.extend_from_slice(&frame_header(0));
        let mut r = Framed::new(&data[..], 100);
        let mut out = vec![];
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcde");
        assert!(r.committed());
        let mut r = Framed::new(&data[..], 4);
        let e = r.read_to_end(&mut vec![]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("rwx").is_err());
        assert!(parse_mode("99").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn paths_refuse_empty_and_nul() {
        assert_eq!(checked("").unwrap_err().code, "invalid_request");
        assert_eq!(checked("a\0b").unwrap_err().code, "invalid_request");
        assert!(checked("rel").unwrap().is_absolute());
    }
}
