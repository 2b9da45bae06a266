//! `watch`: inotify on a directory (and, recursively, the directories under it, including those
//! made later), written as JSON lines `{"kind": "created"|"modified"|"removed"|"renamed",
//! "path", "from"?}` on stdout until the server hangs up.

use std::collections::HashMap;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use serde::Deserialize;
use serde_json::json;

use crate::{dir_arg, ready, walk, Fail, R};

#[derive(Deserialize)]
pub(crate) struct Args {
    path: String,
    #[serde(default)]
    recursive: bool,
}

/// At most this many directories are watched (the kernel's per-user limit is often 8192).
const MAX_WATCHES: usize = 4096;

struct Watcher {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    recursive: bool,
}

impl Watcher {
    fn add(&mut self, dir: &Path) -> io::Result<()> {
        if self.dirs.len() >= MAX_WATCHES {
            return Ok(());
        }
        let mask = WatchFlags::CREATE
            | WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::ATTRIB
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DONT_FOLLOW
            | WatchFlags::ONLYDIR;
        let wd = inotify::add_watch(&self.fd, dir, mask)?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Watches `dir` and the directories under it; `announce`: report what is already in them
    /// (a directory made and filled before its watch was set).
    fn add_tree(&mut self, dir: &Path, out: &mut impl Write, announce: bool) -> io::Result<()> {
        self.add(dir)?;
        if !self.recursive {
            return Ok(());
        }
        let mut subdirs = vec![];
        walk(dir, true, &mut |p, m| {
            if announce {
                let _ = emit(out, "created", p, None);
            }
            if m.is_dir() {
                subdirs.push(p.to_path_buf());
            }
            true
        });
        for d in subdirs {
            let _ = self.add(&d);
        }
        Ok(())
    }
}

fn emit(out: &mut impl Write, kind: &str, p: &Path, from: Option<&Path>) -> io::Result<()> {
    let mut v = json!({"kind": kind, "path": p.to_string_lossy()});
    if let Some(f) = from {
        v["from"] = f.to_string_lossy().into_owned().into();
    }
    writeln!(out, "{v}")
}

pub(crate) fn run(a: Args) -> R<()> {
    let root = dir_arg(&a.path)?;
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)
        .map_err(|e| Fail::io(&root, &io::Error::from(e)))?;
    let mut w = Watcher {
        fd,
        dirs: HashMap::new(),
        recursive: a.recursive,
    };
    let mut out = io::stdout().lock();
    w.add_tree(&root, &mut io::sink(), false)
        .map_err(|e| Fail::io(&root, &e))?;
    ready(json!({"watches": w.dirs.len()}));
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
    // A rename's first half, waiting for its second (same cookie) in the same read.
    let mut moved_from: Option<(u32, PathBuf)> = None;
    let mut last_modified: Option<PathBuf> = None;
    let fd = w.fd.try_clone().map_err(|e| Fail::io(&root, &e))?;
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    loop {
        let ev = match reader.next() {
            Ok(ev) => ev,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Fail::io(&root, &io::Error::from(e))),
        };
        let flags = ev.events();
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            // Events were lost: the client should rescan.
            let _ = writeln!(
                out,
                "{}",
                json!({"kind": "overflow", "path": root.to_string_lossy()})
            );
            let _ = out.flush();
            continue;
        }
        let Some(dir) = w.dirs.get(&ev.wd()).cloned() else {
            continue;
        };
        if flags.contains(ReadFlags::IGNORED) {
            w.dirs.remove(&ev.wd());
            continue;
        }
        let path = match ev.file_name() {
            Some(n) => dir.join(std::ffi::OsStr::new(
                std::str::from_utf8(n.to_bytes()).unwrap_or("?"),
            )),
            None => continue,
        };
        let is_dir = flags.contains(ReadFlags::ISDIR);
        if !flags.intersects(ReadFlags::MODIFY | ReadFlags::CLOSE_WRITE | ReadFlags::ATTRIB) {
            last_modified = None;
        }
        let cookie = ev.cookie();
        // An unpaired MOVED_FROM is a removal (moved out of the tree).
        if let Some((c, from)) = moved_from.take() {
            if !(flags.contains(ReadFlags::MOVED_TO) && c == cookie) {
                let _ = emit(&mut out, "removed", &from, None);
            } else {
                let _ = emit(&mut out, "renamed", &path, Some(&from));
                if is_dir && w.recursive {
                    let _ = w.add_tree(&path, &mut io::sink(), false);
                }
                let _ = out.flush();
                continue;
            }
        }
        // Made here, or moved in from outside the tree.
        let r = if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
            let r = emit(&mut out, "created", &path, None);
            if is_dir && w.recursive {
                let _ = w.add_tree(&path, &mut out, true);
            }
            r
        } else if flags.contains(ReadFlags::MOVED_FROM) {
            moved_from = Some((cookie, path));
            Ok(())
        } else if flags.contains(ReadFlags::DELETE) {
            emit(&mut out, "removed", &path, None)
        } else if flags.intersects(ReadFlags::MODIFY | ReadFlags::CLOSE_WRITE | ReadFlags::ATTRIB) {
            // One write is MODIFY then CLOSE_WRITE: said once.
            if is_dir || last_modified.as_ref() == Some(&path) {
                Ok(())
            } else {
                let r = emit(&mut out, "modified", &path, None);
                last_modified = Some(path.clone());
                r
            }
        } else {
            Ok(())
        };
        if moved_from.is_some() && reader.is_buffer_empty() {
            if let Some((_, from)) = moved_from.take() {
                let _ = emit(&mut out, "removed", &from, None);
            }
        }
        // The server went away: stop.
        if r.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}
