//! Warren's SFTP server: `warren __sftp-server` speaks SFTP version 3 (as OpenSSH's `sftp-server`
//! does, with the OpenSSH extensions clients use) on stdin and stdout.
//!
//! It runs *inside* a workspace, as an ordinary exec: as the remote user, in the workspace's
//! namespaces, cgroup, seccomp profile and capabilities. So it does no path checks of its own: what
//! it may read and write is what that user may, in that root, and nothing of the host is there to
//! see. The gateway starts it for the `sftp` subsystem, so `sftp`, `scp` (SFTP by default since
//! OpenSSH 9) and IDEs work on any image, even one without an SFTP server or a C library.
//!
//! Bad input never panics: packets are bounded ([`MAX_PACKET`]); a packet that cannot be parsed
//! gets `SSH_FX_BAD_MESSAGE`, an unknown one `SSH_FX_OP_UNSUPPORTED`; only a length that cannot
//! be framed (zero, or over the bound) ends the session, since nothing after it can be trusted.
#![forbid(unsafe_code)]

mod names;
mod wire;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wire::{Attrs, Out, Reader};

/// The hidden subcommand of the `warren` binary that runs this server.
pub const SUBCOMMAND: &str = "__sftp-server";

/// The largest packet accepted or sent (OpenSSH's `SFTP_MAX_MSG_LENGTH`).
pub const MAX_PACKET: usize = 256 * 1024;
/// The most data one READ returns or one WRITE should carry.
pub const MAX_IO: usize = MAX_PACKET - 1024;
/// Open file and directory handles at once.
pub const MAX_HANDLES: usize = 512;
/// Names per READDIR reply.
const DIR_BATCH: usize = 128;

// Packet types.
const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_LSTAT: u8 = 7;
const FXP_FSTAT: u8 = 8;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_REALPATH: u8 = 16;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_READLINK: u8 = 19;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;

// Status codes.
const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_FAILURE: u32 = 4;
const FX_BAD_MESSAGE: u32 = 5;
const FX_OP_UNSUPPORTED: u32 = 8;

// OPEN flags.
const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
const FXF_APPEND: u32 = 0x04;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const FXF_EXCL: u32 = 0x20;

/// The extensions announced in VERSION (name, version).
const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    ("copy-data", "1"),
    ("home-directory", "1"),
    ("users-groups-by-id@openssh.com", "1"),
];

/// Runs the server on stdin and stdout; the process's exit code.
pub fn main() -> i32 {
    let stdin = io::stdin();
    let stdout = io::stdout();
    match serve(stdin.lock(), stdout.lock()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "warren sftp-server: {e}");
            1
        }
    }
}

/// An answer to a request that failed: a status code and a message.
struct Fail(u32, String);

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        let code = match e.kind() {
            ErrorKind::NotFound => FX_NO_SUCH_FILE,
            ErrorKind::PermissionDenied => FX_PERMISSION_DENIED,
            // ENOTDIR: a path through a file names nothing; EPERM is a refusal.
            _ => match e.raw_os_error() {
                Some(20) => FX_NO_SUCH_FILE,
                Some(1) => FX_PERMISSION_DENIED,
                _ => FX_FAILURE,
            },
        };
        Fail(code, io_message(&e))
    }
}

impl From<rustix::io::Errno> for Fail {
    fn from(e: rustix::io::Errno) -> Fail {
        Fail::from(io::Error::from(e))
    }
}

impl From<wire::Malformed> for Fail {
    fn from(_: wire::Malformed) -> Fail {
        Fail(FX_BAD_MESSAGE, "malformed request".into())
    }
}

/// The error's text without Rust's ` (os error N)` suffix.
fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

type Res<T> = Result<T, Fail>;

enum Handle {
    File(File),
    Dir {
        path: PathBuf,
        /// `.` and `..` still to send (read_dir leaves them out; OpenSSH's server sends them).
        dots: Vec<&'static str>,
        entries: fs::ReadDir,
    },
}

/// One session's state.
struct Server {
    handles: HashMap<u32, Handle>,
    next_handle: u32,
    names: names::Names,
    home: Option<PathBuf>,
}

/// Serves one SFTP session on `input` and `output` until the client closes `input`.
pub fn serve(input: impl Read, output: impl Write) -> Result<(), String> {
    let mut r = BufReader::with_capacity(MAX_PACKET + 8, input);
    let mut w = BufWriter::with_capacity(MAX_PACKET + 8, output);
    let mut s = Server {
        handles: HashMap::new(),
        next_handle: 1,
        names: names::Names::load(),
        home: std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute()),
    };
    let mut packet = Vec::with_capacity(MAX_PACKET);
    let mut initialized = false;
    loop {
        // Answers go out once no more requests are waiting, so pipelined requests batch up.
        if r.buffer().is_empty() {
            w.flush().map_err(|e| format!("write: {e}"))?;
        }
        if !read_packet(&mut r, &mut packet)? {
            w.flush().map_err(|e| format!("write: {e}"))?;
            return Ok(());
        }
        let mut out = Out::default();
        if !initialized {
            if packet[0] != FXP_INIT {
                return Err(format!(
                    "the first packet must be SSH_FXP_INIT, not type {}",
                    packet[0]
                ));
            }
            // Whatever the client's version, the answer is 3 (clients then speak 3).
            out.begin(FXP_VERSION);
            out.u32(3);
            for (name, version) in EXTENSIONS {
                out.string(name.as_bytes());
                out.string(version.as_bytes());
            }
            initialized = true;
        } else {
            s.dispatch(&packet, &mut out);
        }
        w.write_all(&out.finish())
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// Reads one packet's body (type byte first) into `buf`; false at a clean end of input.
fn read_packet(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("input ended inside a packet length".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(format!(
            "bad packet length {len} (at most {MAX_PACKET}); closing the session"
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => "input ended inside a packet".to_string(),
        _ => format!("read: {e}"),
    })?;
    Ok(true)
}

fn path_of(bytes: &[u8]) -> Res<PathBuf> {
    if bytes.contains(&0) {
        return Err(Fail(FX_BAD_MESSAGE, "a path cannot contain NUL".into()));
    }
    if bytes.is_empty() {
        // OpenSSH's server takes "" as the current directory.
        return Ok(PathBuf::from("."));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

fn status(out: &mut Out, id: u32, code: u32, msg: &str) {
    out.begin(FXP_STATUS);
    out.u32(id);
    out.u32(code);
    out.string(msg.as_bytes());
    out.string(b"");
}

fn attrs_of(m: &Metadata) -> Attrs {
    Attrs {
        size: Some(m.size()),
        uid_gid: Some((m.uid(), m.gid())),
        perms: Some(m.mode()),
        times: Some((clamp_time(m.atime()), clamp_time(m.mtime()))),
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

impl Server {
    fn dispatch(&mut self, packet: &[u8], out: &mut Out) {
        let kind = packet[0];
        let mut p = Reader::new(&packet[1..]);
        let Ok(id) = p.u32() else {
            // Not even an id to answer to: the answer's id is 0.
            status(out, 0, FX_BAD_MESSAGE, "a request without an id");
            return;
        };
        let r = match kind {
            FXP_OPEN => self.open(&mut p, id, out),
            FXP_CLOSE => self.close(&mut p, id, out),
            FXP_READ => self.read(&mut p, id, out),
            FXP_WRITE => self.write(&mut p, id, out),
            FXP_LSTAT => self.stat(&mut p, id, out, false),
            FXP_STAT => self.stat(&mut p, id, out, true),
            FXP_FSTAT => self.fstat(&mut p, id, out),
            FXP_SETSTAT => self.setstat(&mut p, id, out, true),
            FXP_FSETSTAT => self.fsetstat(&mut p, id, out),
            FXP_OPENDIR => self.opendir(&mut p, id, out),
            FXP_READDIR => self.readdir(&mut p, id, out),
            FXP_REMOVE => p
                .end_path()
                .and_then(|path| Ok(fs::remove_file(path)?))
                .map(|()| status(out, id, FX_OK, "Success")),
            FXP_MKDIR => self.mkdir(&mut p, id, out),
            FXP_RMDIR => p
                .end_path()
                .and_then(|path| Ok(fs::remove_dir(path)?))
                .map(|()| status(out, id, FX_OK, "Success")),
            FXP_REALPATH => self.realpath(&mut p, id, out),
            FXP_RENAME => self.rename(&mut p, id, out),
            FXP_READLINK => self.readlink(&mut p, id, out),
            FXP_SYMLINK => self.symlink(&mut p, id, out),
            FXP_EXTENDED => self.extended(&mut p, id, out),
            FXP_INIT => Err(Fail(
                FX_BAD_MESSAGE,
                "the session is already initialized".into(),
            )),
            _ => Err(Fail(
                FX_OP_UNSUPPORTED,
                format!("unsupported request type {kind}"),
            )),
        };
        if let Err(Fail(code, msg)) = r {
            out.clear();
            status(out, id, code, &msg);
        }
    }

    fn new_handle(&mut self, h: Handle, id: u32, out: &mut Out) -> Res<()> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Fail(
                FX_FAILURE,
                format!("too many open handles (at most {MAX_HANDLES})"),
            ));
        }
        // Handle numbers are never reused within a session, so a stale handle finds nothing.
        let n = self.next_handle;
        self.next_handle = self
            .next_handle
            .checked_add(1)
            .ok_or_else(|| Fail(FX_FAILURE, "out of handles".into()))?;
        self.handles.insert(n, h);
        out.begin(FXP_HANDLE);
        out.u32(id);
        out.string(&n.to_be_bytes());
        Ok(())
    }

    fn handle_id(p: &mut Reader) -> Res<u32> {
        let h = p.string()?;
        let b: [u8; 4] = h
            .try_into()
            .map_err(|_| Fail(FX_FAILURE, "invalid handle".into()))?;
        Ok(u32::from_be_bytes(b))
    }

    fn file(&mut self, p: &mut Reader) -> Res<&mut File> {
        let n = Self::handle_id(p)?;
        match self.handles.get_mut(&n) {
            Some(Handle::File(f)) => Ok(f),
            _ => Err(Fail(FX_FAILURE, "invalid handle".into())),
        }
    }

    fn open(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let path = path_of(p.string()?)?;
        let flags = p.u32()?;
        let attrs = p.attrs()?;
        p.end()?;
        let mut o = OpenOptions::new();
        o.read(flags & FXF_READ != 0)
            .write(flags & FXF_WRITE != 0 || flags & FXF_APPEND != 0)
            .append(flags & FXF_APPEND != 0);
        if flags & FXF_CREAT != 0 {
            if flags & FXF_EXCL != 0 {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        if flags & FXF_TRUNC != 0 {
            o.truncate(true);
        }
        if flags & (FXF_READ | FXF_WRITE | FXF_APPEND) == 0 {
            return Err(Fail(
                FX_FAILURE,
                "open: neither read nor write asked for".into(),
            ));
        }
        o.mode(attrs.perms.map(|m| m & 0o7777).unwrap_or(0o666));
        let f = o.open(&path)?;
        self.new_handle(Handle::File(f), id, out)
    }

    fn close(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let n = Self::handle_id(p)?;
        p.end()?;
        match self.handles.remove(&n) {
            Some(_) => {
                status(out, id, FX_OK, "Success");
                Ok(())
            }
            None => Err(Fail(FX_FAILURE, "invalid handle".into())),
        }
    }

    fn read(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let f = self.file(p)?;
        let offset = p.u64()?;
        let len = p.u32()? as usize;
        p.end()?;
        let len = len.min(MAX_IO);
        out.begin(FXP_DATA);
        out.u32(id);
        let n = out.read_string_from(len, |buf| loop {
            match f.read_at(buf, offset) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r,
            }
        })?;
        if n == 0 && len > 0 {
            out.clear();
            status(out, id, FX_EOF, "End of file");
        }
        Ok(())
    }

    fn write(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let n = Self::handle_id(p)?;
        let offset = p.u64()?;
        let data = p.string()?;
        p.end()?;
        let Some(Handle::File(f)) = self.handles.get_mut(&n) else {
            return Err(Fail(FX_FAILURE, "invalid handle".into()));
        };
        f.write_all_at(data, offset)?;
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn stat(&mut self, p: &mut Reader, id: u32, out: &mut Out, follow: bool) -> Res<()> {
        let path = path_of(p.string()?)?;
        // Clients may send flags (version 4+); version 3 has none, so anything after is ignored.
        let m = if follow {
            fs::metadata(&path)?
        } else {
            fs::symlink_metadata(&path)?
        };
        out.begin(FXP_ATTRS);
        out.u32(id);
        out.attrs(&attrs_of(&m));
        Ok(())
    }

    fn fstat(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let n = Self::handle_id(p)?;
        let m = match self.handles.get(&n) {
            Some(Handle::File(f)) => f.metadata()?,
            Some(Handle::Dir { path, .. }) => fs::metadata(path)?,
            None => return Err(Fail(FX_FAILURE, "invalid handle".into())),
        };
        out.begin(FXP_ATTRS);
        out.u32(id);
        out.attrs(&attrs_of(&m));
        Ok(())
    }

    fn setstat(&mut self, p: &mut Reader, id: u32, out: &mut Out, follow: bool) -> Res<()> {
        let path = path_of(p.string()?)?;
        let a = p.attrs()?;
        p.end()?;
        set_attrs(&path, &a, follow)?;
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn fsetstat(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let n = Self::handle_id(p)?;
        let a = p.attrs()?;
        p.end()?;
        match self.handles.get(&n) {
            Some(Handle::File(f)) => {
                if let Some(size) = a.size {
                    f.set_len(size)?;
                }
                if let Some(perms) = a.perms {
                    f.set_permissions(fs::Permissions::from_mode(perms & 0o7777))?;
                }
                if let Some((uid, gid)) = a.uid_gid {
                    rustix::fs::fchown(
                        f,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )?;
                }
                if let Some((atime, mtime)) = a.times {
                    rustix::fs::futimens(f, &timestamps(atime, mtime))?;
                }
            }
            Some(Handle::Dir { path, .. }) => set_attrs(path, &a, true)?,
            None => return Err(Fail(FX_FAILURE, "invalid handle".into())),
        }
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn opendir(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let path = p.end_path()?;
        let entries = fs::read_dir(&path)?;
        self.new_handle(
            Handle::Dir {
                path,
                dots: vec!["..", "."],
                entries,
            },
            id,
            out,
        )
    }

    fn readdir(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let n = Self::handle_id(p)?;
        p.end()?;
        let Some(Handle::Dir {
            path,
            dots,
            entries,
        }) = self.handles.get_mut(&n)
        else {
            return Err(Fail(FX_FAILURE, "invalid handle".into()));
        };
        let mut batch: Vec<(OsString, Option<Metadata>)> = Vec::new();
        while batch.len() < DIR_BATCH {
            if let Some(d) = dots.pop() {
                batch.push((d.into(), fs::symlink_metadata(path.join(d)).ok()));
                continue;
            }
            match entries.next() {
                None => break,
                Some(Err(e)) if batch.is_empty() => return Err(e.into()),
                Some(Err(_)) => break,
                Some(Ok(e)) => {
                    let m = fs::symlink_metadata(e.path()).ok();
                    batch.push((e.file_name(), m));
                }
            }
        }
        if batch.is_empty() {
            status(out, id, FX_EOF, "End of file");
            return Ok(());
        }
        let now = now_secs();
        out.begin(FXP_NAME);
        out.u32(id);
        out.u32(batch.len() as u32);
        for (name, m) in &batch {
            out.string(name.as_bytes());
            match m {
                Some(m) => {
                    out.string(&names::long_name(name.as_bytes(), m, &self.names, now));
                    out.attrs(&attrs_of(m));
                }
                None => {
                    out.string(name.as_bytes());
                    out.attrs(&Attrs::default());
                }
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let path = path_of(p.string()?)?;
        let a = p.attrs()?;
        p.end()?;
        fs::DirBuilder::new()
            .mode(a.perms.map(|m| m & 0o7777).unwrap_or(0o777))
            .create(&path)?;
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn realpath(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let path = path_of(p.string()?)?;
        // Version 3 clients send nothing more; later drafts' control bytes are ignored.
        let real = resolve(&path)?;
        name_reply(out, id, real.as_os_str().as_bytes());
        Ok(())
    }

    fn rename(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let from = path_of(p.string()?)?;
        let to = path_of(p.string()?)?;
        p.end()?;
        // SSH_FXP_RENAME never replaces an existing target (posix-rename@openssh.com does).
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &from,
            rustix::fs::CWD,
            &to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                // A file system without RENAME_NOREPLACE: check, then rename.
                if fs::symlink_metadata(&to).is_ok() {
                    return Err(Fail(FX_FAILURE, "the target already exists".into()));
                }
                fs::rename(&from, &to)?;
            }
            Err(e) if e == rustix::io::Errno::EXIST => {
                return Err(Fail(FX_FAILURE, "the target already exists".into()))
            }
            Err(e) => return Err(e.into()),
        }
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn readlink(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let path = p.end_path()?;
        let target = fs::read_link(&path)?;
        name_reply(out, id, target.as_os_str().as_bytes());
        Ok(())
    }

    fn symlink(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        // OpenSSH sends the target first, then the link's path (the reverse of the draft), and
        // every client follows OpenSSH.
        let target = path_of(p.string()?)?;
        let link = path_of(p.string()?)?;
        p.end()?;
        std::os::unix::fs::symlink(&target, &link)?;
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    fn extended(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let name = p.string()?;
        match name {
            b"posix-rename@openssh.com" => {
                let from = path_of(p.string()?)?;
                let to = path_of(p.string()?)?;
                p.end()?;
                fs::rename(from, to)?;
                status(out, id, FX_OK, "Success");
            }
            b"hardlink@openssh.com" => {
                let from = path_of(p.string()?)?;
                let to = path_of(p.string()?)?;
                p.end()?;
                fs::hard_link(from, to)?;
                status(out, id, FX_OK, "Success");
            }
            b"statvfs@openssh.com" => {
                let path = p.end_path()?;
                let v = rustix::fs::statvfs(&path)?;
                statvfs_reply(out, id, &v);
            }
            b"fstatvfs@openssh.com" => {
                let n = Self::handle_id(p)?;
                p.end()?;
                let v = match self.handles.get(&n) {
                    Some(Handle::File(f)) => rustix::fs::fstatvfs(f)?,
                    Some(Handle::Dir { path, .. }) => rustix::fs::statvfs(path.as_path())?,
                    None => return Err(Fail(FX_FAILURE, "invalid handle".into())),
                };
                statvfs_reply(out, id, &v);
            }
            b"fsync@openssh.com" => {
                let f = self.file(p)?;
                f.sync_all()?;
                status(out, id, FX_OK, "Success");
            }
            b"lsetstat@openssh.com" => return self.setstat(p, id, out, false),
            b"limits@openssh.com" => {
                p.end()?;
                out.begin(FXP_EXTENDED_REPLY);
                out.u32(id);
                out.u64(MAX_PACKET as u64);
                out.u64(MAX_IO as u64);
                out.u64(MAX_IO as u64);
                out.u64(MAX_HANDLES as u64);
            }
            b"expand-path@openssh.com" => {
                let raw = p.string()?;
                p.end()?;
                let path = self.expand(raw)?;
                let real = resolve(&path)?;
                name_reply(out, id, real.as_os_str().as_bytes());
            }
            b"home-directory" => {
                let user = p.string()?;
                p.end()?;
                let home = if user.is_empty() {
                    self.home.clone()
                } else {
                    self.names.home(user).map(PathBuf::from)
                };
                let home = home.ok_or_else(|| Fail(FX_NO_SUCH_FILE, "no such user".into()))?;
                name_reply(out, id, home.as_os_str().as_bytes());
            }
            b"users-groups-by-id@openssh.com" => {
                let uids = wire::ids(p.string()?)?;
                let gids = wire::ids(p.string()?)?;
                p.end()?;
                out.begin(FXP_EXTENDED_REPLY);
                out.u32(id);
                out.u32_list_names(&uids, |u| self.names.user(u));
                out.u32_list_names(&gids, |g| self.names.group(g));
            }
            b"copy-data" => return self.copy_data(p, id, out),
            _ => {
                return Err(Fail(
                    FX_OP_UNSUPPORTED,
                    format!(
                        "unsupported extension `{}`",
                        String::from_utf8_lossy(&name[..name.len().min(64)])
                    ),
                ))
            }
        }
        Ok(())
    }

    fn copy_data(&mut self, p: &mut Reader, id: u32, out: &mut Out) -> Res<()> {
        let from = Self::handle_id(p)?;
        let mut offset = p.u64()?;
        let len = p.u64()?;
        let to = Self::handle_id(p)?;
        let mut to_offset = p.u64()?;
        p.end()?;
        let (Some(Handle::File(src)), Some(Handle::File(_))) =
            (self.handles.get(&from), self.handles.get(&to))
        else {
            return Err(Fail(FX_FAILURE, "invalid handle".into()));
        };
        let src = src.try_clone()?;
        let Some(Handle::File(dst)) = self.handles.get(&to) else {
            return Err(Fail(FX_FAILURE, "invalid handle".into()));
        };
        // Length 0 means to the end of the source.
        let mut left = if len == 0 { u64::MAX } else { len };
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match src.read_at(&mut buf[..want], offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            dst.write_all_at(&buf[..n], to_offset)?;
            offset += n as u64;
            to_offset += n as u64;
            left -= n as u64;
        }
        if len != 0 && left > 0 {
            return Err(Fail(FX_EOF, "the source ended first".into()));
        }
        status(out, id, FX_OK, "Success");
        Ok(())
    }

    /// `~` and `~/x` as the user's home (expand-path@openssh.com); `~user` as that user's.
    fn expand(&self, raw: &[u8]) -> Res<PathBuf> {
        let Some(rest) = raw.strip_prefix(b"~") else {
            return path_of(raw);
        };
        let (user, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let home = if user.is_empty() {
            self.home.clone()
        } else {
            self.names.home(user).map(PathBuf::from)
        };
        let home = home.ok_or_else(|| Fail(FX_NO_SUCH_FILE, "no home directory".into()))?;
        if tail.is_empty() {
            Ok(home)
        } else {
            Ok(home.join(path_of(tail)?))
        }
    }
}

/// Applies SETSTAT attributes to `path` (to a symbolic link itself when not `follow`).
fn set_attrs(path: &Path, a: &Attrs, follow: bool) -> Res<()> {
    let flags = if follow {
        rustix::fs::AtFlags::empty()
    } else {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    };
    if let Some(size) = a.size {
        if !follow && fs::symlink_metadata(path)?.file_type().is_symlink() {
            return Err(Fail(
                FX_FAILURE,
                "a symbolic link has no size to set".into(),
            ));
        }
        OpenOptions::new().write(true).open(path)?.set_len(size)?;
    }
    if let Some(perms) = a.perms {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(perms & 0o7777),
            flags,
        )?;
    }
    if let Some((uid, gid)) = a.uid_gid {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            flags,
        )?;
    }
    if let Some((atime, mtime)) = a.times {
        rustix::fs::utimensat(rustix::fs::CWD, path, &timestamps(atime, mtime), flags)?;
    }
    Ok(())
}

fn timestamps(atime: u32, mtime: u32) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: atime.into(),
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: mtime.into(),
            tv_nsec: 0,
        },
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn name_reply(out: &mut Out, id: u32, name: &[u8]) {
    out.begin(FXP_NAME);
    out.u32(id);
    out.u32(1);
    out.string(name);
    out.string(name);
    out.attrs(&Attrs::default());
}

fn statvfs_reply(out: &mut Out, id: u32, v: &rustix::fs::StatVfs) {
    out.begin(FXP_EXTENDED_REPLY);
    out.u32(id);
    let mut flag = 0u64;
    if v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        flag |= 1;
    }
    if v.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID) {
        flag |= 2;
    }
    for n in [
        v.f_bsize,
        v.f_frsize,
        v.f_blocks,
        v.f_bfree,
        v.f_bavail,
        v.f_files,
        v.f_ffree,
        v.f_favail,
        v.f_fsid,
        flag,
        v.f_namemax,
    ] {
        out.u64(n);
    }
}

/// The absolute, canonical form of `path` (relative to the current directory). A path whose last
/// components do not exist yet resolves as far as it exists, the rest taken as written with `.`
/// and `..` applied, as clients expect of REALPATH for a file about to be uploaded.
fn resolve(path: &Path) -> Res<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    match fs::canonicalize(&abs) {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
        Err(_) => {}
    }
    // Lexical: `..` never goes above `/`.
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(n) => parts.push(n),
            std::path::Component::Prefix(_) => {}
        }
    }
    // The longest existing prefix, canonicalized, then the rest.
    for keep in (0..=parts.len()).rev() {
        let mut head = PathBuf::from("/");
        head.extend(&parts[..keep]);
        if let Ok(real) = fs::canonicalize(&head) {
            let mut full = real;
            full.extend(&parts[keep..]);
            return Ok(full);
        }
    }
    let mut full = PathBuf::from("/");
    full.extend(&parts);
    Ok(full)
}

#[cfg(test)]
mod tests;
