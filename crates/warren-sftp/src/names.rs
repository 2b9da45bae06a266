//! User and group names from the workspace's own `/etc/passwd` and `/etc/group` (read directly:
//! no NSS, which an image without a C library lacks anyway), and `ls -l`-style long names.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

/// Files larger than this are not read (names then show as numbers).
const MAX_DB: u64 = 4 << 20;

#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    homes: HashMap<Vec<u8>, String>,
    groups: HashMap<u32, String>,
}

fn read_db(path: &str) -> String {
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_DB).read_to_string(&mut s);
    }
    s
}

impl Names {
    pub fn load() -> Names {
        let mut n = Names::default();
        for line in read_db("/etc/passwd").lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 7 {
                if let Ok(uid) = f[2].parse() {
                    n.users.entry(uid).or_insert_with(|| f[0].to_string());
                }
                n.homes
                    .entry(f[0].as_bytes().to_vec())
                    .or_insert_with(|| f[5].to_string());
            }
        }
        for line in read_db("/etc/group").lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 {
                if let Ok(gid) = f[2].parse() {
                    n.groups.entry(gid).or_insert_with(|| f[0].to_string());
                }
            }
        }
        n
    }

    pub fn user(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups.get(&gid).cloned()
    }

    pub fn home(&self, user: &[u8]) -> Option<String> {
        self.homes.get(user).cloned().filter(|h| h.starts_with('/'))
    }
}

fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: bool, set: bool, lower: char, upper: char| match (x, set) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(mode & 0o100 != 0, mode & 0o4000 != 0, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(mode & 0o010 != 0, mode & 0o2000 != 0, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(mode & 0o001 != 0, mode & 0o1000 != 0, 't', 'T'));
    s
}

/// (year, month 1-12, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ls -l`'s date (UTC: a workspace may have no time zone data): the time for the last six
/// months, the year otherwise.
fn date(t: i64, now: i64) -> String {
    let (y, m, d) = civil(t.div_euclid(86_400));
    let secs = t.rem_euclid(86_400);
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    if t <= now && now - t < 182 * 86_400 {
        format!("{month} {d:>2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{month} {d:>2}  {y}")
    }
}

/// The long name READDIR sends for `ls -l` (the format of OpenSSH's server).
pub fn long_name(name: &[u8], m: &Metadata, names: &Names, now: i64) -> Vec<u8> {
    let user = names.user(m.uid()).unwrap_or_else(|| m.uid().to_string());
    let group = names.group(m.gid()).unwrap_or_else(|| m.gid().to_string());
    let mut s = format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} ",
        mode_string(m.mode()),
        m.nlink(),
        user,
        group,
        m.size(),
        date(m.mtime(), now)
    )
    .into_bytes();
    s.extend_from_slice(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_dates_print_as_ls_does() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        // 2024-03-05 14:07 UTC, seen a day later and two years later.
        let t = 1_709_647_620;
        assert_eq!(date(t, t + 86_400), "Mar  5 14:07");
        assert_eq!(date(t, t + 2 * 365 * 86_400), "Mar  5  2024");
    }
}
