//! Uploaded files: tar archives of project folders and template folders.
//!
//! `POST /api/v1/files` takes a tar archive (optionally gzip-compressed), checks every entry,
//! and stores the uncompressed tar content-addressed at `STATE/files/<sha256>.tar`. Templates
//! (`file_id` of a version) and workspaces made from a folder refer to it by that hash.
//!
//! An archive is refused when an entry has an absolute path or a `..` component, is a device
//! node or FIFO, is a symlink whose target is absolute or leaves the archive's root, is a hard
//! link to anything but a regular file earlier in the archive, or lies beneath a symlink; and
//! when there are more than [`MAX_ENTRIES`] entries or more than [`MAX_UNPACKED`] bytes of
//! content. [`extract`] applies the same checks again to the stored file (it never trusts it),
//! never follows a symlink when writing, and sets plain permissions: no setuid, setgid or sticky
//! bits, no ownership taken from the archive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Decision, Op, Owner};
use warren_api::v1::FileUploaded;
use warren_api::ErrorCode;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{forbidden, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Most bytes of file content an archive may unpack to.
pub const MAX_UNPACKED: u64 = 512 << 20;

/// Most bytes of tar stream (content, headers, padding) read from an archive.
const MAX_STREAM: u64 = MAX_UNPACKED + (64 << 20);

/// Longest GNU long name or long link accepted.
const MAX_LONG_NAME: u64 = 64 << 10;

/// Largest PAX extended header accepted.
const MAX_PAX: u64 = 1 << 20;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload))
}

/// `STATE/files`.
pub fn files_dir(state: &AppState) -> PathBuf {
    state.cfg.state_dir.join("files")
}

/// Whether `id` looks like a file id: 64 lowercase hex digits (a SHA-256).
pub fn is_file_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where the file `id` is stored (`STATE/files/<id>.tar`). 400 when `id` is not 64 lowercase hex
/// digits, so an id can never name another path.
pub fn file_path(state: &AppState, id: &str) -> ApiResult<PathBuf> {
    if !is_file_id(id) {
        return Err(ApiError::bad_request(format!(
            "file id `{}` is not a SHA-256 (64 lowercase hex digits)",
            clip(id)
        ))
        .hint("use the `id` that POST /api/v1/files answered"));
    }
    Ok(files_dir(state).join(format!("{id}.tar")))
}

fn clip(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Removes the listed paths when dropped (temporary files of a failed upload).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Uploads a tar archive (a project or template folder); answers its content hash.
///
/// The body is a tar archive (`application/x-tar`) or a gzip-compressed one
/// (`application/gzip`; gzip is also recognized by its magic bytes). It is stored uncompressed.
/// Entries with absolute paths, `..`, device nodes, FIFOs, or links leaving the archive are
/// refused, as are archives of more than 10,000 entries or 512 MiB unpacked.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", security(("token" = [])),
    request_body(description = "a tar archive, optionally gzip-compressed",
        content(("application/x-tar"), ("application/gzip"))),
    responses((status = 201, body = FileUploaded), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> ApiResult<impl IntoResponse> {
    may_upload(&caller)?;
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let declared_gzip = match content_type.as_deref() {
        Some("application/gzip" | "application/x-gzip" | "application/x-compressed-tar") => true,
        Some("application/x-tar" | "application/tar" | "application/octet-stream") | None => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported Content-Type `{}`: expected application/x-tar or application/gzip",
                clip(other)
            ))
            .hint("send a tar archive (`tar -c`), optionally gzip-compressed"))
        }
    };
    let limit = state.cfg.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "request body too large",
        )
        .hint("the server's max_body_bytes setting sets the limit")
    };
    let declared_len = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }

    let dir = files_dir(&state);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body_path = dir.join(format!(".upload-{nonce}"));
    let _cleanup = Cleanup(vec![body_path.clone()]);
    let mut out = tokio::fs::File::create(&body_path)
        .await
        .map_err(|e| ApiError::internal(format!("create {}: {e}", body_path.display())))?;
    let mut stream = req.into_body().into_data_stream();
    let mut received: usize = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        received = received.saturating_add(chunk.len());
        if received > limit {
            return Err(too_large());
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("write {}: {e}", body_path.display())))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal(format!("write {}: {e}", body_path.display())))?;
    drop(out);
    if received == 0 {
        return Err(ApiError::bad_request("empty body: expected a tar archive"));
    }

    let (id, size) =
        tokio::task::spawn_blocking(move || ingest(&body_path, &dir, declared_gzip, &nonce))
            .await
            .map_err(ApiError::internal)??;
    state
        .store
        .put_file(
            &id,
            i64::try_from(size).unwrap_or(i64::MAX),
            &caller.user.id,
        )
        .await?;
    let note = AuditNote::target("file", &id, &id);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(FileUploaded { id, size }),
    ))
}

/// Uploading is for anyone who may push a template or create a workspace from a folder.
fn may_upload(caller: &Caller) -> ApiResult<()> {
    let tpl = caller.check(Op::TemplateWrite, None);
    let ws = caller.check(Op::WorkspaceWrite(Owner::Own), None);
    if tpl == Decision::Allow || ws == Decision::Allow {
        return Ok(());
    }
    Err(match ws {
        Decision::Forbidden(f) => forbidden(f),
        _ => ApiError::forbidden("this token may not upload files"),
    })
}

/// Decompresses (when gzip) and checks the uploaded body at `body_path`, stores the tar as
/// `dir/<sha256>.tar` and returns (id, size). Bad archives are 400 and leave nothing behind.
fn ingest(
    body_path: &Path,
    dir: &Path,
    declared_gzip: bool,
    nonce: &str,
) -> ApiResult<(String, u64)> {
    let internal = |what: &str, e: io::Error| ApiError::internal(format!("{what}: {e}"));
    let mut f = File::open(body_path).map_err(|e| internal("open upload", e))?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(internal("read upload", e)),
        }
    }
    f.rewind().map_err(|e| internal("read upload", e))?;
    let is_gzip = got == 2 && magic == [0x1f, 0x8b];
    if declared_gzip && !is_gzip {
        return Err(ApiError::bad_request(
            "invalid archive: the body is not gzip-compressed, but Content-Type says it is",
        ));
    }
    let input: Box<dyn Read> = if is_gzip {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let tar_tmp = dir.join(format!(".tar-{nonce}"));
    let mut cleanup = Cleanup(vec![tar_tmp.clone()]);
    let out = File::create(&tar_tmp).map_err(|e| internal("create temporary tar", e))?;
    let mut tee = Tee {
        inner: input,
        out: io::BufWriter::new(out),
        hasher: Sha256::new(),
        count: 0,
    };
    walk(&mut tee, |_, _| Ok(()))
        .map_err(|e| ApiError::bad_request(format!("invalid archive: {e}")))?;
    // Keep whatever follows the end-of-archive marker, so the hash covers the whole stream.
    io::copy(&mut tee, &mut io::sink())
        .map_err(|e| ApiError::bad_request(format!("invalid archive: {e}")))?;
    let Tee {
        out, hasher, count, ..
    } = tee;
    let out = out
        .into_inner()
        .map_err(|e| internal("write temporary tar", e.into_error()))?;
    out.sync_all()
        .map_err(|e| internal("write temporary tar", e))?;
    drop(out);
    let id = hex::encode(hasher.finalize());
    let dest = dir.join(format!("{id}.tar"));
    fs::rename(&tar_tmp, &dest).map_err(|e| internal("store the archive", e))?;
    cleanup.0.clear();
    Ok((id, count))
}

/// Copies everything read through it to `out` and hashes it; refuses more than [`MAX_STREAM`].
struct Tee<R: Read, W: Write> {
    inner: R,
    out: W,
    hasher: Sha256,
    count: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > MAX_STREAM {
            return Err(too_big());
        }
        self.hasher.update(&buf[..n]);
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Refuses more than [`MAX_STREAM`] bytes.
struct Capped<R: Read> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > MAX_STREAM {
            return Err(too_big());
        }
        Ok(n)
    }
}

fn too_big() -> io::Error {
    io::Error::other(format!(
        "more than {} MiB when unpacked",
        MAX_UNPACKED >> 20
    ))
}

/// What an archive entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (or a hard link to one).
    File,
    /// A symbolic link.
    Symlink,
}

/// One checked archive entry.
#[derive(Debug, Clone)]
pub struct Item {
    /// Path relative to the root, normalized (no `.`, `..` or leading `/`); never empty.
    pub path: PathBuf,
    /// Mode bits from the archive.
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// What to create.
    pub what: What,
}

/// The kind of a checked entry and what it needs.
#[derive(Debug, Clone)]
pub enum What {
    /// A directory.
    Dir,
    /// A regular file of this many bytes (the data follows in the reader).
    File(u64),
    /// A symlink to this (relative, contained) target.
    Symlink(PathBuf),
    /// A hard link to this earlier regular file (normalized path from the root).
    Hardlink(PathBuf),
}

/// Tracks what an archive has declared so far, to refuse entries beneath symlinks or files and
/// changes of kind.
#[derive(Default)]
struct Checker {
    entries: usize,
    headers: usize,
    content: u64,
    kinds: HashMap<PathBuf, Kind>,
}

fn show(p: &[u8]) -> String {
    clip(&String::from_utf8_lossy(p))
}

/// Normalizes an entry path: refuses absolute paths and `..`; drops `.`.
fn normalize(raw: &[u8]) -> Result<PathBuf, String> {
    if raw.contains(&0) {
        return Err(format!("`{}`: NUL byte in path", show(raw)));
    }
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "`{}`: paths with `..` are not allowed in the archive",
                    show(raw)
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{}`: absolute paths are not allowed in the archive",
                    show(raw)
                ))
            }
        }
    }
    Ok(out)
}

/// Checks a symlink target: relative, with `..` only as leading components, and no more of them
/// than the link's depth. Together with "no entry beneath a symlink" this keeps every link
/// inside the root, whatever other links the path crosses.
fn check_link_target(entry: &Path, target: &[u8]) -> Result<PathBuf, String> {
    let shown = || format!("symlink `{}` -> `{}`", entry.display(), show(target));
    if target.is_empty() {
        return Err(format!("{}: empty target", shown()));
    }
    if target.contains(&0) {
        return Err(format!("{}: NUL byte in target", shown()));
    }
    let t = Path::new(OsStr::from_bytes(target));
    let depth = entry.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut seen_normal = false;
    for c in t.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{}: absolute link targets are not allowed in the archive",
                    shown()
                ))
            }
            Component::ParentDir if seen_normal => {
                return Err(format!(
                    "{}: `..` is allowed only at the start of a link target",
                    shown()
                ))
            }
            Component::ParentDir => {
                ups += 1;
                if ups > depth {
                    return Err(format!("{}: points outside the archive", shown()));
                }
            }
            Component::CurDir => {}
            Component::Normal(_) => seen_normal = true,
        }
    }
    Ok(t.to_path_buf())
}

impl Checker {
    /// Checks the entry at `path` of kind `kind`, recording it.
    fn place(&mut self, path: &Path, kind: Kind) -> Result<(), String> {
        let mut prefix = PathBuf::new();
        let comps: Vec<_> = path.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            prefix.push(c);
            match self.kinds.get(&prefix) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink) => {
                    return Err(format!(
                        "`{}` lies beneath `{}`, which is a symlink",
                        path.display(),
                        prefix.display()
                    ))
                }
                Some(Kind::File) => {
                    return Err(format!(
                        "`{}` lies beneath `{}`, which is a file",
                        path.display(),
                        prefix.display()
                    ))
                }
                None => {
                    self.kinds.insert(prefix.clone(), Kind::Dir);
                }
            }
        }
        match self.kinds.get(path) {
            Some(Kind::Dir) if kind != Kind::Dir => {
                return Err(format!(
                    "`{}` is a directory and then not a directory",
                    path.display()
                ))
            }
            Some(k) if *k != Kind::Dir && kind == Kind::Dir => {
                return Err(format!(
                    "`{}` is not a directory and then a directory",
                    path.display()
                ))
            }
            _ => {}
        }
        self.kinds.insert(path.to_path_buf(), kind);
        Ok(())
    }
}

/// Reads the data of an extension header of at most `max` bytes.
fn read_small<R: Read>(e: &mut tar::Entry<'_, R>, max: u64, what: &str) -> Result<Vec<u8>, String> {
    if e.size() > max {
        return Err(format!("{what} of {} bytes is too large", e.size()));
    }
    let mut v = Vec::with_capacity(e.size() as usize);
    e.read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// Reads a tar stream, checking every entry, and calls `visit` for each one to create, with
/// the entry's data for regular files. Errors are one line, without the "invalid archive" prefix.
pub fn walk<R: Read>(
    reader: R,
    mut visit: impl FnMut(&Item, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
        .raw(true);
    let mut ck = Checker::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in entries {
        let mut e = entry.map_err(|e| e.to_string())?;
        ck.headers += 1;
        if ck.headers > 4 * (MAX_ENTRIES + 1) {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let ty = e.header().entry_type();
        if ty.is_gnu_longname() || ty.is_gnu_longlink() {
            let slot = if ty.is_gnu_longname() {
                &mut long_name
            } else {
                &mut long_link
            };
            if slot.is_some() {
                return Err("two GNU long-name headers for one entry".into());
            }
            let mut v = read_small(&mut e, MAX_LONG_NAME, "a GNU long name")?;
            while v.last() == Some(&0) {
                v.pop();
            }
            *slot = Some(v);
            continue;
        }
        if ty.is_pax_local_extensions() {
            if pax.is_some() {
                return Err("two PAX headers for one entry".into());
            }
            pax = Some(read_small(&mut e, MAX_PAX, "a PAX header")?);
            continue;
        }
        if ty.is_pax_global_extensions() {
            // Comments such as `git archive`'s commit id; nothing in them is used.
            read_small(&mut e, MAX_PAX, "a PAX global header")?;
            ck.entries += 1;
            if ck.entries > MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            continue;
        }
        ck.entries += 1;
        if ck.entries > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }

        // The entry's real path and link target: PAX, then GNU long names, then the header.
        let mut path_bytes = long_name.take();
        let mut link_bytes = long_link.take();
        if let Some(p) = pax.take() {
            for ext in tar::PaxExtensions::new(&p) {
                let ext = ext.map_err(|e| format!("malformed PAX header: {e}"))?;
                let key = ext.key_bytes();
                if key == b"path" {
                    path_bytes = Some(ext.value_bytes().to_vec());
                } else if key == b"linkpath" {
                    link_bytes = Some(ext.value_bytes().to_vec());
                } else if key == b"size" {
                    let v = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    if v != Some(e.size()) {
                        return Err(
                            "PAX size records that differ from the header are not supported".into(),
                        );
                    }
                } else if key.starts_with(b"GNU.sparse.") {
                    return Err("sparse files are not supported".into());
                }
            }
        }
        let path_bytes = path_bytes.unwrap_or_else(|| e.header().path_bytes().into_owned());
        let path = normalize(&path_bytes)?;
        let header = e.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        let what = if ty.is_dir() {
            What::Dir
        } else if ty.is_file() || ty.is_contiguous() {
            What::File(e.size())
        } else if ty.is_symlink() || ty.is_hard_link() {
            let target = link_bytes
                .or_else(|| e.header().link_name_bytes().map(|c| c.into_owned()))
                .unwrap_or_default();
            if ty.is_symlink() {
                What::Symlink(check_link_target(&path, &target)?)
            } else {
                let t = normalize(&target)
                    .map_err(|m| format!("hard link `{}`: target {m}", path.display()))?;
                if ck.kinds.get(&t) != Some(&Kind::File) {
                    return Err(format!(
                        "hard link `{}` -> `{}`: the target must be a regular file earlier in the archive",
                        path.display(),
                        t.display()
                    ));
                }
                What::Hardlink(t)
            }
        } else if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            return Err(format!(
                "`{}`: device nodes and FIFOs are not allowed in the archive",
                show(&path_bytes)
            ));
        } else if ty.is_gnu_sparse() {
            return Err(format!(
                "`{}`: sparse files are not supported",
                show(&path_bytes)
            ));
        } else {
            return Err(format!(
                "`{}`: unsupported entry type {:?}",
                show(&path_bytes),
                ty.as_byte() as char
            ));
        };
        ck.content = ck.content.saturating_add(e.size());
        if ck.content > MAX_UNPACKED {
            return Err(format!(
                "more than {} MiB when unpacked",
                MAX_UNPACKED >> 20
            ));
        }
        if path.as_os_str().is_empty() {
            if matches!(what, What::Dir) {
                continue; // the root itself (`./`)
            }
            return Err(format!("`{}`: empty path", show(&path_bytes)));
        }
        let kind = match what {
            What::Dir => Kind::Dir,
            What::File(_) | What::Hardlink(_) => Kind::File,
            What::Symlink(_) => Kind::Symlink,
        };
        ck.place(&path, kind)?;
        let item = Item {
            path,
            mode,
            mtime,
            what,
        };
        visit(&item, &mut e)?;
    }
    if long_name.is_some() || long_link.is_some() || pax.is_some() {
        return Err("the archive ends with a header that describes no entry".into());
    }
    Ok(())
}

/// Walks the stored archive `tar_path` (checking it again, see [`walk`]).
pub fn read_archive(
    tar_path: &Path,
    visit: impl FnMut(&Item, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let f = File::open(tar_path).map_err(|e| format!("open {}: {e}", tar_path.display()))?;
    walk(
        Capped {
            inner: BufReader::new(f),
            count: 0,
        },
        visit,
    )
}

/// Extracts the stored archive `tar_path` into `dest` (created if missing), checking every entry
/// again. Never follows a symlink when writing: parent directories are created here and an entry
/// whose parent is a symlink (or anything but a directory) is refused. Files get mode 0644 (0755
/// when the archive marks them executable), directories 0755; ownership is not restored.
pub fn extract(tar_path: &Path, dest: &Path) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    let m = fs::symlink_metadata(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    if !m.file_type().is_dir() {
        return Err(format!("{} is not a directory", dest.display()));
    }
    read_archive(tar_path, |item, data| {
        create(dest, item, data).map_err(|e| format!("`{}`: {e}", item.path.display()))
    })
}

/// Creates the directories of `rel` (relative to `root`) that are missing; refuses any that is
/// a symlink or not a directory.
pub fn ensure_dirs(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let mut shown = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(c) = c else {
            return Err(format!("bad path component in `{}`", rel.display()));
        };
        cur.push(c);
        shown.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("`{}` is a symlink", shown.display()))
            }
            Ok(_) => return Err(format!("`{}` is not a directory", shown.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| format!("create `{}`: {e}", shown.display()))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod `{}`: {e}", shown.display()))?;
            }
            Err(e) => return Err(format!("`{}`: {e}", shown.display())),
        }
    }
    Ok(())
}

/// Removes whatever non-directory is at `path` (never following a symlink). Refuses a directory.
pub fn clear_spot(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Err("a directory is in the way".into()),
        Ok(_) => fs::remove_file(path).map_err(|e| format!("remove: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `contents` as a new regular file `rel` under `root` with `mode`, replacing any
/// non-directory there without following symlinks.
pub fn write_file(root: &Path, rel: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    if let Some(parent) = rel.parent() {
        ensure_dirs(root, parent)?;
    }
    let full = root.join(rel);
    clear_spot(&full)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&full)
        .map_err(|e| format!("create: {e}"))?;
    f.write_all(contents).map_err(|e| format!("write: {e}"))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod: {e}"))?;
    Ok(())
}

fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn create(root: &Path, item: &Item, data: &mut dyn Read) -> Result<(), String> {
    let rel = &item.path;
    if let Some(parent) = rel.parent() {
        ensure_dirs(root, parent)?;
    }
    let full = root.join(rel);
    match &item.what {
        What::Dir => match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_dir() => Ok(()),
            Ok(_) => Err("something other than a directory is in the way".into()),
            Err(_) => ensure_dirs(root, rel),
        },
        What::File(size) => {
            clear_spot(&full)?;
            let mode = file_mode(item.mode);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&full)
                .map_err(|e| format!("create: {e}"))?;
            let copied = io::copy(&mut data.take(*size), &mut f).map_err(|e| e.to_string())?;
            if copied != *size {
                return Err("truncated archive".into());
            }
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod: {e}"))?;
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(item.mtime);
            let _ = f.set_modified(mtime);
            Ok(())
        }
        What::Symlink(target) => {
            clear_spot(&full)?;
            std::os::unix::fs::symlink(target, &full).map_err(|e| format!("symlink: {e}"))
        }
        What::Hardlink(target) => {
            if let Some(parent) = target.parent() {
                // The target's directories must exist and be real directories already.
                let mut cur = root.to_path_buf();
                for c in parent.components() {
                    cur.push(c);
                    let m = fs::symlink_metadata(&cur).map_err(|e| e.to_string())?;
                    if !m.file_type().is_dir() {
                        return Err(format!(
                            "hard link target `{}` lies beneath a non-directory",
                            target.display()
                        ));
                    }
                }
            }
            let full_target = root.join(target);
            let m = fs::symlink_metadata(&full_target)
                .map_err(|e| format!("hard link target `{}`: {e}", target.display()))?;
            if !m.file_type().is_file() {
                return Err(format!(
                    "hard link target `{}` is not a regular file",
                    target.display()
                ));
            }
            clear_spot(&full)?;
            fs::hard_link(&full_target, &full).map_err(|e| format!("hard link: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw entry: path, type, link target, data.
    type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    /// A tar with raw headers, so that entries the `tar` builder would refuse can be written.
    fn raw_tar(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, ty, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o4755);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend([0u8; 1024]);
        out
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        walk(bytes, |_, _| Ok(()))
    }

    use tar::EntryType as T;

    #[test]
    fn bad_entries_are_refused() {
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (vec![("../x", T::Regular, "", b"x")], "`..`"),
            (vec![("a/../../x", T::Regular, "", b"x")], "`..`"),
            (vec![("/etc/x", T::Regular, "", b"x")], "absolute paths"),
            (vec![("l", T::Symlink, "/etc/passwd", b"")], "absolute link"),
            (vec![("l", T::Symlink, "../x", b"")], "outside"),
            (vec![("a/l", T::Symlink, "../../x", b"")], "outside"),
            (
                vec![("a/b/l", T::Symlink, "c/../../..", b"")],
                "only at the start",
            ),
            (
                vec![("l", T::Symlink, "sub", b""), ("l/x", T::Regular, "", b"x")],
                "beneath `l`, which is a symlink",
            ),
            (vec![("h", T::Link, "/etc/passwd", b"")], "absolute"),
            (vec![("h", T::Link, "nope", b"")], "regular file earlier"),
            (vec![("d", T::Char, "", b"")], "device nodes"),
            (vec![("d", T::Block, "", b"")], "device nodes"),
            (vec![("f", T::Fifo, "", b"")], "FIFOs"),
            (
                vec![("a/x", T::Regular, "", b"x"), ("a", T::Symlink, "b", b"")],
                "a directory and then",
            ),
        ];
        for (entries, want) in cases {
            let e = check(&raw_tar(&entries)).unwrap_err();
            assert!(e.contains(want), "{entries:?}: {e}");
        }
    }

    #[test]
    fn good_entries_pass() {
        let t = raw_tar(&[
            ("./", T::Directory, "", b""),
            ("a/b/f", T::Regular, "", b"hello"),
            ("a/b/up", T::Symlink, "../../a", b""),
            ("a/b/sib", T::Symlink, "./f", b""),
            ("a/h", T::Link, "a/b/f", b""),
        ]);
        check(&t).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("x.tar");
        fs::write(&tar_path, &t).unwrap();
        let dest = dir.path().join("out");
        extract(&tar_path, &dest).unwrap();
        assert_eq!(fs::read(dest.join("a/h")).unwrap(), b"hello");
        let m = fs::symlink_metadata(dest.join("a/b/f")).unwrap();
        // setuid dropped.
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::read_link(dest.join("a/b/up")).unwrap(),
            PathBuf::from("../../a")
        );
    }

    #[test]
    fn too_many_entries_and_too_much_content() {
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("d{i}")).collect();
        let entries: Vec<Entry> = names
            .iter()
            .map(|n| (n.as_str(), T::Directory, "", &b""[..]))
            .collect();
        let e = check(&raw_tar(&entries)).unwrap_err();
        assert!(e.contains("more than 10000 entries"), "{e}");

        // A header claiming a huge file.
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_size(MAX_UNPACKED + 1);
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend([0u8; 1024]);
        let e = check(&t).unwrap_err();
        assert!(e.contains("512 MiB"), "{e}");
    }

    #[test]
    fn extraction_never_writes_through_an_existing_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        // Something (not the archive) left a symlink in the destination.
        std::os::unix::fs::symlink(&outside, dest.join("s")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dest.join("f")).unwrap();
        let tar_path = dir.path().join("x.tar");
        fs::write(&tar_path, raw_tar(&[("s/pwned", T::Regular, "", b"x")])).unwrap();
        let e = extract(&tar_path, &dest).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        // A file over a symlink replaces the link, not its target.
        fs::write(&tar_path, raw_tar(&[("f", T::Regular, "", b"x")])).unwrap();
        extract(&tar_path, &dest).unwrap();
        assert!(fs::symlink_metadata(dest.join("f")).unwrap().is_file());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn file_ids_are_hashes() {
        assert!(is_file_id(&"a".repeat(64)));
        assert!(!is_file_id(&"A".repeat(64)));
        assert!(!is_file_id("../../etc/passwd"));
        assert!(!is_file_id(&"a".repeat(63)));
    }
}
