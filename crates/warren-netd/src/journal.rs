//! The denial journal, `ROOT/.net/denials.jsonl`: one `Denial` per line, rate-limited per
//! (workspace, kind, address or name, port) and minute: the first denial of a minute is written at
//! once, the rest of that minute as one record with their count when the minute ends (`flush`).
//! On top of that each workspace has a budget of `BUDGET` such keys a minute: past it, its
//! denials are only counted, and one `suppressed` record with the count is written when its
//! minute ends, so one workspace cannot flood the journal (and rotate everyone's history away).
//!
//! Writes happen on one writer thread fed by a bounded channel: callers (the DNS and proxy tasks)
//! never wait for the disk, records that do not fit in the channel are dropped and counted
//! (`dropped`, reported on stderr), and rotation (past `MAX_BYTES` the file is renamed to
//! `denials.jsonl.1`, replacing the previous one) has a single actor.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use warren_runtime::network::Denial;

/// Size past which the journal rotates.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Records a workspace may have written at once per minute (each a new key); past it they are
/// folded into one `suppressed` record.
pub const BUDGET: usize = 60;
/// Batches of records waiting for the writer.
const QUEUE: usize = 1024;
/// Most keys tracked at once; past it, denials are written as they come (within budgets).
const MAX_KEYS: usize = 20_000;

type Key = (String, String, String, Option<u16>);

struct Window {
    start: SystemTime,
    /// The first folded denial (its time is the record's), and how many were folded.
    folded: Option<Denial>,
}

/// A workspace's minute: how many records it had written, and what was suppressed.
struct Budget {
    start: SystemTime,
    used: usize,
    /// The first suppressed denial's time and how many were suppressed.
    suppressed: Option<(SystemTime, u64)>,
}

#[derive(Default)]
struct Limits {
    windows: HashMap<Key, Window>,
    budgets: HashMap<String, Budget>,
}

enum Msg {
    Records(Vec<Denial>),
    /// Answered once everything sent before is written.
    Sync(SyncSender<()>),
    /// Tests: the writer says it stopped, then waits for the second to be answered (or dropped).
    #[cfg(test)]
    Pause(SyncSender<()>, Receiver<()>),
}

/// The journal.
pub struct Journal {
    budget: usize,
    limits: Mutex<Limits>,
    tx: Mutex<Option<SyncSender<Msg>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: AtomicU64,
    reported: AtomicU64,
}

fn key(d: &Denial) -> Key {
    // The name when there is one (a `dns` or `proxy` denial), else the address.
    let what = match (&d.name, &d.address) {
        (Some(n), _) => n.clone(),
        (None, Some(a)) => a.to_string(),
        (None, None) => String::new(),
    };
    (d.workspace.clone(), d.kind.clone(), what, d.port)
}

/// `t` in RFC 3339, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn ended(start: SystemTime, now: SystemTime) -> bool {
    // A clock that went backwards ends the window too.
    now.duration_since(start).map_or(true, |d| d >= WINDOW)
}

/// The record standing for a workspace's suppressed denials.
fn suppressed(workspace: &str, first: SystemTime, n: u64, budget: usize) -> Denial {
    Denial {
        time: rfc3339(first),
        workspace: workspace.to_string(),
        kind: "suppressed".into(),
        address: None,
        port: None,
        protocol: None,
        name: None,
        why: format!("{n} more denials this minute (more than {budget} records a minute)"),
        count: n,
    }
}

impl Journal {
    /// A journal at `path`; starts its writer thread.
    pub fn new(path: PathBuf) -> Journal {
        Journal::with_opts(path, MAX_BYTES, BUDGET, QUEUE)
    }

    fn with_opts(path: PathBuf, max_bytes: u64, budget: usize, queue: usize) -> Journal {
        let (tx, rx) = sync_channel(queue);
        let p = path.clone();
        let writer = std::thread::Builder::new()
            .name("netd-journal".into())
            .spawn(move || writer(p, max_bytes, rx))
            .map_err(|e| eprintln!("warren netd: cannot start the journal writer: {e}"))
            .ok();
        Journal {
            budget,
            limits: Mutex::new(Limits::default()),
            tx: Mutex::new(writer.is_some().then_some(tx)),
            writer: Mutex::new(writer),
            dropped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    fn with_max(path: PathBuf, max_bytes: u64) -> Journal {
        Journal::with_opts(path, max_bytes, BUDGET, QUEUE)
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes one denial at `now` (its `time` and `count` are set here). Never waits for the disk.
    pub fn note(&self, mut d: Denial, now: SystemTime) {
        d.time = rfc3339(now);
        d.count = 1;
        let k = key(&d);
        let mut out = Vec::new();
        {
            let mut l = self.limits();
            let l = &mut *l;
            match l.windows.get_mut(&k) {
                Some(win) if !ended(win.start, now) => match &mut win.folded {
                    Some(f) => f.count += 1,
                    None => win.folded = Some(d),
                },
                _ => {
                    if let Some(old) = l.windows.remove(&k).and_then(|win| win.folded) {
                        out.push(old);
                    }
                    let b = l.budgets.entry(d.workspace.clone()).or_insert(Budget {
                        start: now,
                        used: 0,
                        suppressed: None,
                    });
                    if ended(b.start, now) {
                        if let Some((first, n)) = b.suppressed.take() {
                            out.push(suppressed(&d.workspace, first, n, self.budget));
                        }
                        b.start = now;
                        b.used = 0;
                    }
                    if b.used >= self.budget {
                        match &mut b.suppressed {
                            Some((_, n)) => *n += 1,
                            None => b.suppressed = Some((now, 1)),
                        }
                    } else {
                        b.used += 1;
                        if l.windows.len() >= MAX_KEYS {
                            Self::take_ended(&mut l.windows, now, &mut out);
                        }
                        if l.windows.len() < MAX_KEYS {
                            l.windows.insert(
                                k,
                                Window {
                                    start: now,
                                    folded: None,
                                },
                            );
                        }
                        out.push(d);
                    }
                }
            }
        }
        self.send(out);
    }

    fn take_ended(w: &mut HashMap<Key, Window>, now: SystemTime, out: &mut Vec<Denial>) {
        w.retain(|_, win| {
            if ended(win.start, now) {
                out.extend(win.folded.take());
                false
            } else {
                true
            }
        });
    }

    /// Writes the folded and suppressed records of the windows that ended by `now`.
    pub fn flush(&self, now: SystemTime) {
        let mut out = Vec::new();
        {
            let mut l = self.limits();
            Self::take_ended(&mut l.windows, now, &mut out);
            let budget = self.budget;
            l.budgets.retain(|ws, b| {
                if !ended(b.start, now) {
                    return true;
                }
                if let Some((first, n)) = b.suppressed.take() {
                    out.push(suppressed(ws, first, n, budget));
                }
                false
            });
        }
        self.send(out);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(dropped, Ordering::Relaxed);
        if dropped > reported {
            eprintln!(
                "warren netd: {} denial records dropped: the journal writer fell behind ({} in all)",
                dropped - reported,
                dropped
            );
        }
    }

    /// Writes every folded and suppressed record now and waits for the writer (netd is
    /// stopping).
    pub fn close(&self) {
        let mut out = Vec::new();
        {
            let mut l = self.limits();
            for (_, win) in l.windows.drain() {
                out.extend(win.folded);
            }
            let budget = self.budget;
            for (ws, b) in l.budgets.drain() {
                if let Some((first, n)) = b.suppressed {
                    out.push(suppressed(&ws, first, n, budget));
                }
            }
        }
        if !out.is_empty() {
            if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                // Stopping: this one may wait for room.
                let _ = tx.send(Msg::Records(out));
            }
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything noted so far is written.
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        let sent = match self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(t) => t.send(Msg::Sync(tx)).is_ok(),
            None => false,
        };
        if sent {
            let _ = rx.recv();
        }
    }

    fn send(&self, records: Vec<Denial>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            return;
        };
        match tx.try_send(Msg::Records(records)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    #[cfg(test)]
    fn pause(&self) -> SyncSender<()> {
        let (tx, rx) = sync_channel(1);
        let (stopped_tx, stopped) = sync_channel(1);
        if let Some(t) = self.tx.lock().unwrap().as_ref() {
            t.send(Msg::Pause(stopped_tx, rx)).unwrap();
        }
        stopped.recv().unwrap();
        tx
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The writer ends once the channel is gone and it has written what it holds.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: appends each batch, rotating first when the file is past `max_bytes`.
fn writer(path: PathBuf, max_bytes: u64, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Records(records) => {
                let mut text = String::new();
                for r in &records {
                    if let Ok(line) = serde_json::to_string(r) {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
                if let Err(e) = append(&path, max_bytes, text.as_bytes()) {
                    eprintln!("warren netd: cannot write {}: {e}", path.display());
                }
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
            #[cfg(test)]
            Msg::Pause(stopped, until) => {
                let _ = stopped.send(());
                let _ = until.recv();
            }
        }
    }
}

fn append(path: &std::path::Path, max_bytes: u64, bytes: &[u8]) -> std::io::Result<()> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.len() >= max_bytes {
            let mut old = path.to_path_buf().into_os_string();
            old.push(".1");
            std::fs::rename(path, old)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn denial(ws: &str, kind: &str, name: Option<&str>, port: Option<u16>) -> Denial {
        Denial {
            time: String::new(),
            workspace: ws.into(),
            kind: kind.into(),
            address: Some(Ipv4Addr::new(203, 0, 113, 1)),
            port,
            protocol: Some("tcp".into()),
            name: name.map(Into::into),
            why: "not allowed".into(),
            count: 0,
        }
    }

    /// The records in `p` once `j` wrote what it was given.
    fn read(j: &Journal, p: &std::path::Path) -> Vec<Denial> {
        j.sync();
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn rate_limits_per_key_and_minute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials.jsonl");
        let j = Journal::new(path.clone());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        j.note(denial("w1", "dns", Some("a.com"), None), at(0));
        assert_eq!(read(&j, &path).len(), 1, "the first is written at once");
        for s in 1..=9 {
            j.note(denial("w1", "dns", Some("a.com"), None), at(s));
        }
        // Other keys are not held back by it.
        j.note(denial("w1", "dns", Some("b.com"), None), at(5));
        j.note(denial("w2", "dns", Some("a.com"), None), at(5));
        j.note(denial("w1", "connect", None, Some(443)), at(5));
        j.note(denial("w1", "connect", None, Some(80)), at(5));
        assert_eq!(read(&j, &path).len(), 5);
        j.flush(at(59));
        assert_eq!(read(&j, &path).len(), 5, "the minute has not ended");
        j.flush(at(60));
        let all = read(&j, &path);
        assert_eq!(all.len(), 6);
        let folded = &all[5];
        assert_eq!(folded.name.as_deref(), Some("a.com"));
        assert_eq!(folded.workspace, "w1");
        assert_eq!(folded.count, 9);
        assert_eq!(
            folded.time,
            rfc3339(at(1)),
            "the first folded denial's time"
        );
        assert_eq!(all[0].count, 1);
        // A new minute starts fresh.
        j.note(denial("w1", "dns", Some("a.com"), None), at(61));
        assert_eq!(read(&j, &path).len(), 7);
        // A denial after the window ended, without a flush in between, writes the fold first.
        j.note(denial("w1", "dns", Some("a.com"), None), at(62));
        j.note(denial("w1", "dns", Some("a.com"), None), at(130));
        let all = read(&j, &path);
        assert_eq!(all.len(), 9);
        assert_eq!((all[7].count, all[8].count), (1, 1));
        assert_eq!(all[7].time, rfc3339(at(62)));
    }

    #[test]
    fn rotates_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials.jsonl");
        let j = Journal::with_max(path.clone(), 1000);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..20 {
            j.note(denial("w", "dns", Some(&format!("n{i}.com")), None), t0);
        }
        let rotated = dir.path().join("denials.jsonl.1");
        j.sync();
        assert!(rotated.exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 1000 + 300);
        let total = read(&j, &path).len() + read(&j, &rotated).len();
        assert!(total < 20, "older records went with the rotation");
        assert!(read(&j, &path)
            .iter()
            .any(|d| d.name.as_deref() == Some("n19.com")));
    }

    #[test]
    fn one_workspace_cannot_flood_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials.jsonl");
        let j = Journal::new(path.clone());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        j.note(denial("victim", "dns", Some("a.com"), None), at(0));
        // A flood of unique names from one workspace.
        for i in 0..10_000 {
            j.note(
                denial("flood", "dns", Some(&format!("n{i}.evil.test")), None),
                at(1),
            );
        }
        j.note(denial("victim", "dns", Some("b.com"), None), at(2));
        let all = read(&j, &path);
        let count = |w: &str| all.iter().filter(|d| d.workspace == w).count();
        assert_eq!(count("flood"), BUDGET);
        assert_eq!(count("victim"), 2, "the others are written as before");
        // The minute's end: one record for what was held back.
        j.flush(at(61));
        let all = read(&j, &path);
        let s: Vec<_> = all.iter().filter(|d| d.kind == "suppressed").collect();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].workspace, "flood");
        assert_eq!(s[0].count, 10_000 - BUDGET as u64);
        assert!(s[0].why.contains("9940 more"), "{}", s[0].why);
        assert_eq!(s[0].time, rfc3339(at(1)));
        // A new minute has a new budget.
        j.note(denial("flood", "dns", Some("again.test"), None), at(62));
        assert_eq!(read(&j, &path).len(), all.len() + 1);
        // Suppressed records pending at close are written.
        for i in 0..100 {
            j.note(
                denial("flood", "dns", Some(&format!("m{i}.test")), None),
                at(63),
            );
        }
        j.close();
        let all = read(&j, &path);
        assert_eq!(
            all.iter()
                .filter(|d| d.kind == "suppressed")
                .map(|d| d.count)
                .collect::<Vec<_>>(),
            vec![10_000 - BUDGET as u64, 100 - (BUDGET as u64 - 1)]
        );
    }

    #[test]
    fn a_writer_behind_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials.jsonl");
        let j = Journal::with_opts(path.clone(), MAX_BYTES, 1000, 4);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The writer is stuck (a slow disk, say): notes return at once.
        let resume = j.pause();
        for i in 0..20 {
            j.note(denial("w", "dns", Some(&format!("n{i}.test")), None), t0);
        }
        assert_eq!(j.dropped(), 16, "all but the queue's 4");
        resume.send(()).unwrap();
        assert_eq!(read(&j, &path).len(), 4);
    }

    #[test]
    fn concurrent_notes_rotate_once_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials.jsonl");
        let j = std::sync::Arc::new(Journal::with_opts(path.clone(), 4000, 1000, 100_000));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        j.note(
                            denial(&format!("w{t}"), "dns", Some(&format!("n{i}.test")), None),
                            t0,
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every line whole, the current file bounded, the last record there.
        let cur = read(&j, &path);
        let old = read(&j, &dir.path().join("denials.jsonl.1"));
        assert!(!cur.is_empty() && !old.is_empty());
        assert!(std::fs::metadata(&path).unwrap().len() < 4000 + 300);
        assert_eq!(j.dropped(), 0);
    }
}
