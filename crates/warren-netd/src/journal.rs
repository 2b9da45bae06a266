//! The denial journal, `ROOT/.net/denials.jsonl`: one `Denial` per line, rate-limited per
//! (workspace, kind, address or name, port) and minute: the first denial of a minute is written at
//! once, the rest of that minute as one record with their count when the minute ends (`flush`).
//! Past `MAX_BYTES` the file is renamed to `denials.jsonl.1` (replacing the previous one).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use warren_runtime::network::Denial;

/// Size past which the journal rotates.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most keys tracked at once; past it, denials are written as they come.
const MAX_KEYS: usize = 20_000;

type Key = (String, String, String, Option<u16>);

struct Window {
    start: SystemTime,
    /// The first folded denial (its time is the record's), and how many were folded.
    folded: Option<Denial>,
}

/// The journal.
pub struct Journal {
    path: PathBuf,
    max_bytes: u64,
    windows: Mutex<HashMap<Key, Window>>,
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

impl Journal {
    /// A journal at `path`.
    pub fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            max_bytes: MAX_BYTES,
            windows: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    fn with_max(path: PathBuf, max_bytes: u64) -> Journal {
        Journal {
            max_bytes,
            ..Journal::new(path)
        }
    }

    /// Notes one denial at `now` (its `time` and `count` are set here).
    pub fn note(&self, mut d: Denial, now: SystemTime) {
        d.time = rfc3339(now);
        d.count = 1;
        let k = key(&d);
        let mut out = Vec::new();
        {
            let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            match w.get_mut(&k) {
                Some(win) if !ended(win.start, now) => match &mut win.folded {
                    Some(f) => f.count += 1,
                    None => win.folded = Some(d),
                },
                _ => {
                    if let Some(old) = w.remove(&k).and_then(|win| win.folded) {
                        out.push(old);
                    }
                    if w.len() >= MAX_KEYS {
                        Self::take_ended(&mut w, now, &mut out);
                    }
                    if w.len() < MAX_KEYS {
                        w.insert(
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
        self.write(&out);
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

    /// Writes the folded records of the windows that ended by `now`.
    pub fn flush(&self, now: SystemTime) {
        let mut out = Vec::new();
        {
            let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            Self::take_ended(&mut w, now, &mut out);
        }
        self.write(&out);
    }

    /// Writes every folded record now (netd is stopping).
    pub fn close(&self) {
        let mut out = Vec::new();
        {
            let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            for (_, win) in w.drain() {
                out.extend(win.folded);
            }
        }
        self.write(&out);
    }

    fn write(&self, records: &[Denial]) {
        if records.is_empty() {
            return;
        }
        let mut text = String::new();
        for r in records {
            if let Ok(line) = serde_json::to_string(r) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if let Err(e) = self.append(text.as_bytes()) {
            eprintln!("warren netd: cannot write {}: {e}", self.path.display());
        }
    }

    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        if let Ok(m) = std::fs::metadata(&self.path) {
            if m.len() >= self.max_bytes {
                let mut old = self.path.clone().into_os_string();
                old.push(".1");
                std::fs::rename(&self.path, old)?;
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(bytes)
    }
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

    fn read(p: &std::path::Path) -> Vec<Denial> {
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
        assert_eq!(read(&path).len(), 1, "the first is written at once");
        for s in 1..=9 {
            j.note(denial("w1", "dns", Some("a.com"), None), at(s));
        }
        // Other keys are not held back by it.
        j.note(denial("w1", "dns", Some("b.com"), None), at(5));
        j.note(denial("w2", "dns", Some("a.com"), None), at(5));
        j.note(denial("w1", "connect", None, Some(443)), at(5));
        j.note(denial("w1", "connect", None, Some(80)), at(5));
        assert_eq!(read(&path).len(), 5);
        j.flush(at(59));
        assert_eq!(read(&path).len(), 5, "the minute has not ended");
        j.flush(at(60));
        let all = read(&path);
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
        assert_eq!(read(&path).len(), 7);
        // A denial after the window ended, without a flush in between, writes the fold first.
        j.note(denial("w1", "dns", Some("a.com"), None), at(62));
        j.note(denial("w1", "dns", Some("a.com"), None), at(130));
        let all = read(&path);
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
        assert!(rotated.exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 1000 + 300);
        let total = read(&path).len() + read(&rotated).len();
        assert!(total < 20, "older records went with the rotation");
        assert!(read(&path)
            .iter()
            .any(|d| d.name.as_deref() == Some("n19.com")));
    }
}
