//! Autostart schedules: a 5-field cron expression evaluated in an IANA time zone.
//!
//! Syntax (per field): `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, and comma lists of
//! these. Months accept `JAN`-`DEC`, days of week `SUN`-`SAT` (case-insensitive); day-of-week 0
//! and 7 are both Sunday. The macros `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly` and
//! `@yearly`/`@annually` stand for their usual expansions.
//!
//! Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted, a day
//! matches if EITHER matches; when either field starts with `*` (including `*/n`), a day must
//! match both.
//!
//! Times are local to the schedule's time zone. A local time skipped by a forward clock change
//! (the spring-forward gap) fires at the first instant after the gap; a local time that occurs
//! twice (fall-back) fires once, at the earlier instant.
//!
//! The only I/O is the time zone database, which is bundled into the binary (jiff's
//! `tzdb-bundle-always`), so results do not depend on the host's `/usr/share/zoneinfo`.

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use time::OffsetDateTime;

/// The hint appended to every cron syntax error.
const HINT: &str = "(cron: minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\")";

/// How far ahead `next_after` searches. Every expression `parse` accepts fires at least once in
/// any 400-year Gregorian cycle (a valid month/day falls on every weekday within one cycle).
const FORWARD_HORIZON_DAYS: i64 = 401 * 366;

/// How far back `last_at_or_before` looks.
const BACKWARD_HORIZON_SECS: i64 = 366 * 86_400;

/// A parsed autostart schedule: a 5-field cron expression in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    cron: String,
    tz_name: String,
    tz: TimeZone,
    fields: Fields,
}

/// The expanded fields, as bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    /// Bits 0..=59.
    minutes: u64,
    /// Bits 0..=23.
    hours: u64,
    /// Bits 1..=31.
    doms: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, 0 = Sunday.
    dows: u64,
    /// The day-of-month field starts with `*`.
    dom_star: bool,
    /// The day-of-week field starts with `*`.
    dow_star: bool,
}

/// A local wall-clock time at minute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Local {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

#[derive(Clone, Copy)]
enum Kind {
    Minute,
    Hour,
    Dom,
    Month,
    Dow,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Minute => "minute",
            Kind::Hour => "hour",
            Kind::Dom => "day-of-month",
            Kind::Month => "month",
            Kind::Dow => "day-of-week",
        }
    }

    /// The accepted numeric range (day-of-week accepts 7 as Sunday).
    fn range(self) -> (u32, u32) {
        match self {
            Kind::Minute => (0, 59),
            Kind::Hour => (0, 23),
            Kind::Dom => (1, 31),
            Kind::Month => (1, 12),
            Kind::Dow => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Kind::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            Kind::Dow => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// The value of a name: months count from 1, days of week from 0.
    fn name_value(self, s: &str) -> Option<u32> {
        let first = if matches!(self, Kind::Month) { 1 } else { 0 };
        self.names()
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| i as u32 + first)
    }
}

fn err(msg: impl std::fmt::Display) -> String {
    format!("`autostart.schedule`: {msg} {HINT}")
}

impl Schedule {
    /// Parses `cron` (5 fields: minute hour day-of-month month day-of-week) in time zone `tz`
    /// (IANA name like "Europe/Berlin", or "UTC"). Errors are one line naming the field and the bad
    /// part, with a hint, e.g. "`autostart.schedule`: hour 25 is out of range 0-23 (cron: minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\")".
    pub fn parse(cron: &str, tz: &str) -> Result<Schedule, String> {
        let cron = cron.trim();
        let fields = parse_fields(cron)?;
        if let Some(why) = never_fires(&fields) {
            return Err(err(format_args!("{cron:?} never fires ({why})")));
        }
        let tz_name = tz.trim();
        if tz_name.is_empty() {
            return Err(
                "`autostart.timezone`: the time zone is empty (use an IANA name like Europe/Berlin, or UTC)"
                    .to_string(),
            );
        }
        let zone = TimeZone::get(tz_name).map_err(|_| {
            format!(
                "`autostart.timezone`: unknown time zone {tz_name:?} (use an IANA name like Europe/Berlin, or UTC)"
            )
        })?;
        Ok(Schedule {
            cron: cron.to_string(),
            tz_name: tz_name.to_string(),
            tz: zone,
            fields,
        })
    }

    /// The cron expression as given (trimmed).
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The time zone name as given (trimmed).
    pub fn timezone(&self) -> &str {
        &self.tz_name
    }

    /// The first occurrence strictly after `after`.
    ///
    /// `None` only past the end of the supported calendar (year 9999): every expression that
    /// `parse` accepts fires again within 400 years.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let ts = to_jiff(after)?;
        let start = Local::from_civil(self.tz.to_datetime(ts));
        let limit = start.day_number() + FORWARD_HORIZON_DAYS;
        // The local → instant mapping is non-decreasing, and every local time before `start`
        // maps to an instant at or before `ts`, so the first matching local time at or after
        // `start` whose instant is after `ts` is the answer. Only local times in the second pass
        // of a fall-back fold are skipped by the `>` check.
        let mut cur = start;
        loop {
            let local = self.fields.next_match(cur, limit)?;
            let instant = self.resolve(local)?;
            if instant > ts {
                return from_jiff(instant);
            }
            cur = local.plus_minute();
        }
    }

    /// The latest occurrence at or before `at` (None if none within the last 366 days).
    pub fn last_at_or_before(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let ts = to_jiff(at)?;
        let wall = self.tz.to_datetime(ts);
        // When `at` is in the second pass of a fall-back fold, the whole fold (up to its end on
        // the earlier offset) maps to instants before `at`: start scanning from there.
        let start_civil = match self.tz.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Fold { before, after } if self.tz.to_offset(ts) == after => {
                before.to_datetime(ts)
            }
            _ => wall,
        };
        let start = Local::from_civil(start_civil);
        let limit = start.day_number() - 368;
        let earliest = ts.as_second() - BACKWARD_HORIZON_SECS;
        let mut cur = start;
        loop {
            let local = self.fields.prev_match(cur, limit)?;
            let instant = self.resolve(local)?;
            if instant <= ts {
                if instant.as_second() < earliest {
                    return None;
                }
                return from_jiff(instant);
            }
            cur = local.minus_minute();
        }
    }

    /// The instant a local occurrence fires at: the earlier instant of an ambiguous local time,
    /// the end of the gap for a skipped one.
    fn resolve(&self, local: Local) -> Option<Timestamp> {
        let dt = local.to_civil()?;
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
            AmbiguousOffset::Gap { before, after } => {
                // `dt` read with the later offset is an instant before the transition; the
                // next transition after it is where the gap ends.
                let just_before = after.to_timestamp(dt).ok()?;
                match self.tz.following(just_before).next() {
                    Some(t) => Some(t.timestamp()),
                    None => before.to_timestamp(dt).ok(),
                }
            }
        }
    }
}

fn to_jiff(t: OffsetDateTime) -> Option<Timestamp> {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).ok()
}

fn from_jiff(t: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond()).ok()
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse_fields(cron: &str) -> Result<Fields, String> {
    if cron.is_empty() {
        return Err(err("the schedule is empty"));
    }
    let expanded = if let Some(name) = cron.strip_prefix('@') {
        match name.to_ascii_lowercase().as_str() {
            "hourly" => "0 * * * *",
            "daily" | "midnight" => "0 0 * * *",
            "weekly" => "0 0 * * 0",
            "monthly" => "0 0 1 * *",
            "yearly" | "annually" => "0 0 1 1 *",
            "reboot" => {
                return Err(err(
                    "@reboot is not supported: an autostart schedule needs a time",
                ))
            }
            _ => {
                return Err(err(format_args!(
                    "unknown macro {cron:?} (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"
                )))
            }
        }
    } else {
        cron
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if parts.len() != 5 {
        let extra = if parts.len() == 6 || parts.len() == 7 {
            "; a seconds (or year) field is not supported"
        } else {
            ""
        };
        return Err(err(format_args!(
            "expected 5 fields, got {} in {cron:?}{extra}",
            parts.len()
        )));
    }
    let minutes = parse_field(parts[0], Kind::Minute)?;
    let hours = parse_field(parts[1], Kind::Hour)?;
    let doms = parse_field(parts[2], Kind::Dom)?;
    let months = parse_field(parts[3], Kind::Month)?;
    let mut dows = parse_field(parts[4], Kind::Dow)?;
    if dows & (1 << 7) != 0 {
        dows = (dows & !(1 << 7)) | 1;
    }
    Ok(Fields {
        minutes,
        hours,
        doms,
        months,
        dows,
        dom_star: parts[2].starts_with('*'),
        dow_star: parts[4].starts_with('*'),
    })
}

fn parse_field(field: &str, kind: Kind) -> Result<u64, String> {
    let name = kind.name();
    let mut set = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(err(format_args!(
                "{name} has an empty list item in {field:?}"
            )));
        }
        set |= parse_item(item, kind)?;
    }
    Ok(set)
}

fn parse_item(item: &str, kind: Kind) -> Result<u64, String> {
    let name = kind.name();
    let (lo_bound, hi_bound) = kind.range();
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(format_args!(
                    "{name} step {step:?} in {item:?} is not a number"
                )));
            }
            let step: u32 = step.parse().unwrap_or(u32::MAX);
            if step == 0 {
                return Err(err(format_args!(
                    "{name} step 0 in {item:?} is not allowed"
                )));
            }
            (base, Some(step))
        }
        None => (item, None),
    };
    let (lo, hi) = if base == "*" {
        // `*` for day-of-week means 0-6: 7 is only an alias for Sunday.
        let hi = if matches!(kind, Kind::Dow) {
            6
        } else {
            hi_bound
        };
        (lo_bound, hi)
    } else if let Some((a, b)) = base.split_once('-') {
        let a = parse_value(a, item, kind)?;
        let b = parse_value(b, item, kind)?;
        if a > b {
            return Err(err(format_args!(
                "{name} range {base:?} is reversed (write the smaller value first)"
            )));
        }
        (a, b)
    } else {
        let v = parse_value(base, item, kind)?;
        if step.is_some() {
            return Err(err(format_args!(
                "{name} step {item:?} needs a range: use \"*/n\" or \"a-b/n\""
            )));
        }
        (v, v)
    };
    let step = step.unwrap_or(1);
    let mut set = 0u64;
    let mut v = lo;
    while v <= hi {
        set |= 1 << v;
        match v.checked_add(step) {
            Some(n) => v = n,
            None => break,
        }
    }
    Ok(set)
}

fn parse_value(s: &str, item: &str, kind: Kind) -> Result<u32, String> {
    let name = kind.name();
    let (lo, hi) = kind.range();
    if s.is_empty() {
        return Err(err(format_args!("{name} has an empty value in {item:?}")));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ => Err(err(format_args!("{name} {s} is out of range {lo}-{hi}"))),
        };
    }
    if let Some(v) = kind.name_value(s) {
        return Ok(v);
    }
    let what = match kind {
        Kind::Month => "a number or month name (JAN-DEC)",
        Kind::Dow => "a number or day name (SUN-SAT)",
        _ => "a number",
    };
    Err(err(format_args!("{name} {s:?} is not {what}")))
}

/// Why an expression can never fire, if it cannot. Only day-of-month × month can be impossible
/// (e.g. February 30): a day-of-week restriction alone, or OR-ed with a day-of-month, fires
/// every week, and with the AND rule a valid month/day falls on every weekday within 400 years.
fn never_fires(f: &Fields) -> Option<String> {
    if !f.dow_star && !f.dom_star {
        return None;
    }
    let possible = (1..=12u32)
        .filter(|m| f.months & (1 << m) != 0)
        .any(|m| (1..=max_days_in_month(m)).any(|d| f.doms & (1 << d) != 0));
    if possible {
        None
    } else {
        Some("no month in the schedule has any of its days-of-month".to_string())
    }
}

fn max_days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------------
// Matching and searching in local time

/// The smallest set bit `>= from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = set >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The largest set bit `<= from`.
fn prev_bit(set: u64, from: u32) -> Option<u32> {
    let masked = if from >= 63 {
        set
    } else {
        set & ((1u64 << (from + 1)) - 1)
    };
    (masked != 0).then(|| 63 - masked.leading_zeros())
}

impl Fields {
    fn day_matches(&self, l: &Local) -> bool {
        let dom = self.doms & (1 << l.day) != 0;
        let dow = self.dows & (1 << l.weekday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    #[cfg(test)]
    fn matches(&self, l: &Local) -> bool {
        self.months & (1 << l.month) != 0
            && self.day_matches(l)
            && self.hours & (1 << l.hour) != 0
            && self.minutes & (1 << l.minute) != 0
    }

    /// The first matching local time at or after `cur`, giving up after day number `limit`.
    fn next_match(&self, mut cur: Local, limit: i64) -> Option<Local> {
        loop {
            if cur.day_number() > limit || cur.year > 9999 {
                return None;
            }
            if self.months & (1 << cur.month) == 0 {
                cur = match next_bit(self.months, cur.month + 1) {
                    Some(m) => Local::midnight(cur.year, m, 1),
                    None => Local::midnight(cur.year + 1, next_bit(self.months, 1)?, 1),
                };
                continue;
            }
            if !self.day_matches(&cur) {
                cur = cur.next_day();
                continue;
            }
            if self.hours & (1 << cur.hour) == 0 {
                match next_bit(self.hours, cur.hour + 1) {
                    Some(h) if h < 24 => {
                        cur.hour = h;
                        cur.minute = 0;
                    }
                    _ => cur = cur.next_day(),
                }
                continue;
            }
            if self.minutes & (1 << cur.minute) == 0 {
                match next_bit(self.minutes, cur.minute + 1) {
                    Some(m) if m < 60 => cur.minute = m,
                    _ => cur = cur.next_hour(),
                }
                continue;
            }
            return Some(cur);
        }
    }

    /// The last matching local time at or before `cur`, giving up before day number `limit`.
    fn prev_match(&self, mut cur: Local, limit: i64) -> Option<Local> {
        loop {
            if cur.day_number() < limit || cur.year < -9998 {
                return None;
            }
            if self.months & (1 << cur.month) == 0 {
                cur = match cur
                    .month
                    .checked_sub(1)
                    .and_then(|m| prev_bit(self.months, m))
                {
                    Some(m) if m >= 1 => Local::end_of_month(cur.year, m),
                    _ => Local::end_of_month(cur.year - 1, prev_bit(self.months, 12)?),
                };
                continue;
            }
            if !self.day_matches(&cur) {
                cur = cur.prev_day_end();
                continue;
            }
            if self.hours & (1 << cur.hour) == 0 {
                match cur
                    .hour
                    .checked_sub(1)
                    .and_then(|h| prev_bit(self.hours, h))
                {
                    Some(h) => {
                        cur.hour = h;
                        cur.minute = 59;
                    }
                    None => cur = cur.prev_day_end(),
                }
                continue;
            }
            if self.minutes & (1 << cur.minute) == 0 {
                match cur
                    .minute
                    .checked_sub(1)
                    .and_then(|m| prev_bit(self.minutes, m))
                {
                    Some(m) => cur.minute = m,
                    None => cur = cur.prev_hour_end(),
                }
                continue;
            }
            return Some(cur);
        }
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Local {
    fn from_civil(dt: jiff::civil::DateTime) -> Local {
        Local {
            year: i32::from(dt.year()),
            month: dt.month() as u32,
            day: dt.day() as u32,
            hour: dt.hour() as u32,
            minute: dt.minute() as u32,
        }
    }

    fn to_civil(self) -> Option<jiff::civil::DateTime> {
        jiff::civil::DateTime::new(
            i16::try_from(self.year).ok()?,
            self.month as i8,
            self.day as i8,
            self.hour as i8,
            self.minute as i8,
            0,
            0,
        )
        .ok()
    }

    fn midnight(year: i32, month: u32, day: u32) -> Local {
        Local {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
        }
    }

    fn end_of_month(year: i32, month: u32) -> Local {
        Local {
            year,
            month,
            day: days_in_month(year, month),
            hour: 23,
            minute: 59,
        }
    }

    /// Days since 1970-01-01 of this date (proleptic Gregorian).
    fn day_number(&self) -> i64 {
        // Shift the year to start in March so the leap day is the last day of the year.
        let (y, m) = if self.month <= 2 {
            (i64::from(self.year) - 1, i64::from(self.month) + 9)
        } else {
            (i64::from(self.year), i64::from(self.month) - 3)
        };
        let era = y.div_euclid(400);
        let year_of_era = y.rem_euclid(400);
        let day_of_year = (153 * m + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// 0 = Sunday. 1970-01-01 was a Thursday.
    fn weekday(&self) -> u32 {
        (self.day_number() + 4).rem_euclid(7) as u32
    }

    fn next_day(self) -> Local {
        if self.day < days_in_month(self.year, self.month) {
            Local::midnight(self.year, self.month, self.day + 1)
        } else if self.month < 12 {
            Local::midnight(self.year, self.month + 1, 1)
        } else {
            Local::midnight(self.year + 1, 1, 1)
        }
    }

    fn next_hour(self) -> Local {
        if self.hour < 23 {
            Local {
                hour: self.hour + 1,
                minute: 0,
                ..self
            }
        } else {
            self.next_day()
        }
    }

    fn plus_minute(self) -> Local {
        if self.minute < 59 {
            Local {
                minute: self.minute + 1,
                ..self
            }
        } else {
            self.next_hour()
        }
    }

    fn prev_day_end(self) -> Local {
        if self.day > 1 {
            Local {
                day: self.day - 1,
                hour: 23,
                minute: 59,
                ..self
            }
        } else if self.month > 1 {
            Local::end_of_month(self.year, self.month - 1)
        } else {
            Local::end_of_month(self.year - 1, 12)
        }
    }

    fn prev_hour_end(self) -> Local {
        if self.hour > 0 {
            Local {
                hour: self.hour - 1,
                minute: 59,
                ..self
            }
        } else {
            self.prev_day_end()
        }
    }

    fn minus_minute(self) -> Local {
        if self.minute > 0 {
            Local {
                minute: self.minute - 1,
                ..self
            }
        } else {
            self.prev_hour_end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn sched(cron: &str, tz: &str) -> Schedule {
        Schedule::parse(cron, tz).unwrap_or_else(|e| panic!("{cron:?} in {tz}: {e}"))
    }

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    fn fmt(t: Option<OffsetDateTime>) -> String {
        match t {
            Some(t) => t.format(&Rfc3339).unwrap(),
            None => "none".to_string(),
        }
    }

    fn next(s: &Schedule, t: &str) -> String {
        fmt(s.next_after(at(t)))
    }

    fn last(s: &Schedule, t: &str) -> String {
        fmt(s.last_at_or_before(at(t)))
    }

    /// The next `n` occurrences after `t`.
    fn series(s: &Schedule, t: &str, n: usize) -> Vec<String> {
        let mut cur = at(t);
        let mut out = Vec::new();
        for _ in 0..n {
            cur = s.next_after(cur).unwrap();
            out.push(cur.format(&Rfc3339).unwrap());
        }
        out
    }

    fn bits(set: u64) -> Vec<u32> {
        (0..64).filter(|b| set & (1 << b) != 0).collect()
    }

    #[test]
    fn syntax_forms_expand_to_the_expected_sets() {
        let f = sched("*/15 9-17/4 1,15,31 JAN-mar,Dec mon-FRI", "UTC").fields;
        assert_eq!(bits(f.minutes), vec![0, 15, 30, 45]);
        assert_eq!(bits(f.hours), vec![9, 13, 17]);
        assert_eq!(bits(f.doms), vec![1, 15, 31]);
        assert_eq!(bits(f.months), vec![1, 2, 3, 12]);
        assert_eq!(bits(f.dows), vec![1, 2, 3, 4, 5]);
        assert!(!f.dom_star && !f.dow_star);

        let f = sched("* * * * *", "UTC").fields;
        assert_eq!(bits(f.minutes), (0..60).collect::<Vec<_>>());
        assert_eq!(bits(f.hours), (0..24).collect::<Vec<_>>());
        assert_eq!(bits(f.doms), (1..32).collect::<Vec<_>>());
        assert_eq!(bits(f.months), (1..13).collect::<Vec<_>>());
        assert_eq!(bits(f.dows), (0..7).collect::<Vec<_>>());
        assert!(f.dom_star && f.dow_star);

        // A step larger than the range keeps only the start; a single number is itself.
        let f = sched("*/90 5 10-20/3 2 3", "UTC").fields;
        assert_eq!(bits(f.minutes), vec![0]);
        assert_eq!(bits(f.hours), vec![5]);
        assert_eq!(bits(f.doms), vec![10, 13, 16, 19]);
        assert_eq!(bits(f.months), vec![2]);
        assert_eq!(bits(f.dows), vec![3]);

        // Extra whitespace between and around fields is fine.
        let s = sched("  0   9\t* * 1-5 ", "UTC");
        assert_eq!(s.cron(), "0   9\t* * 1-5");
        assert_eq!(s.timezone(), "UTC");
    }

    #[test]
    fn month_and_day_names_are_case_insensitive_and_sunday_is_0_and_7() {
        let named = sched("0 0 * jan,FEB,Mar * ", "UTC").fields;
        let numbered = sched("0 0 * 1-3 *", "UTC").fields;
        assert_eq!(named.months, numbered.months);
        let f = sched("0 0 * * sun,Sat", "UTC").fields;
        assert_eq!(bits(f.dows), vec![0, 6]);
        assert_eq!(bits(sched("0 0 * * 7", "UTC").fields.dows), vec![0]);
        assert_eq!(bits(sched("0 0 * * 0", "UTC").fields.dows), vec![0]);
        // 5-7: Friday, Saturday, Sunday.
        assert_eq!(bits(sched("0 0 * * 5-7", "UTC").fields.dows), vec![0, 5, 6]);
        assert_eq!(
            bits(sched("0 0 * * FRI-SAT", "UTC").fields.dows),
            vec![5, 6]
        );
        // "0 0 * * 7" fires on Sundays: 2026-01-01 is a Thursday, so the 4th is the first Sunday.
        let s = sched("0 0 * * 7", "UTC");
        assert_eq!(
            series(&s, "2026-01-01T00:00:00Z", 2),
            vec!["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]
        );
    }

    #[test]
    fn macros_expand_to_their_cron_forms() {
        for (m, cron) in [
            ("@hourly", "0 * * * *"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@DAILY", "0 0 * * *"),
        ] {
            assert_eq!(sched(m, "UTC").fields, sched(cron, "UTC").fields, "{m}");
            assert_eq!(sched(m, "UTC").cron(), m);
        }
        let s = sched("@hourly", "UTC");
        assert_eq!(next(&s, "2026-05-05T10:00:00Z"), "2026-05-05T11:00:00Z");
    }

    #[test]
    fn every_error_is_one_line_naming_the_field_and_part_with_a_hint() {
        let cases = [
            ("", "the schedule is empty"),
            ("   ", "the schedule is empty"),
            ("0 9 * *", "expected 5 fields, got 4 in \"0 9 * *\""),
            (
                "0 0 9 * * *",
                "expected 5 fields, got 6 in \"0 0 9 * * *\"; a seconds (or year) field is not supported",
            ),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("0 25 * * *", "hour 25 is out of range 0-23"),
            ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
            ("0 0 32 * *", "day-of-month 32 is out of range 1-31"),
            ("0 0 * 13 *", "month 13 is out of range 1-12"),
            ("0 0 * 0 *", "month 0 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
            (
                "99999999999 * * * *",
                "minute 99999999999 is out of range 0-59",
            ),
            ("1,,2 * * * *", "minute has an empty list item in \"1,,2\""),
            ("0 9, * * *", "hour has an empty list item in \"9,\""),
            ("*/0 * * * *", "minute step 0 in \"*/0\" is not allowed"),
            ("0 1-5/0 * * *", "hour step 0 in \"1-5/0\" is not allowed"),
            ("*/ * * * *", "minute step \"\" in \"*/\" is not a number"),
            ("*/x * * * *", "minute step \"x\" in \"*/x\" is not a number"),
            ("0 17-9 * * *", "hour range \"17-9\" is reversed (write the smaller value first)"),
            (
                "0 0 * * FRI-MON",
                "day-of-week range \"FRI-MON\" is reversed (write the smaller value first)",
            ),
            ("0 0 * * 1-", "day-of-week has an empty value in \"1-\""),
            ("5/10 * * * *", "minute step \"5/10\" needs a range: use \"*/n\" or \"a-b/n\""),
            ("x * * * *", "minute \"x\" is not a number"),
            ("0 0 * FOO *", "month \"FOO\" is not a number or month name (JAN-DEC)"),
            ("0 0 * * MONDAY", "day-of-week \"MONDAY\" is not a number or day name (SUN-SAT)"),
            ("0 0 MON * *", "day-of-month \"MON\" is not a number"),
            (
                "0 0 31 2 *",
                "\"0 0 31 2 *\" never fires (no month in the schedule has any of its days-of-month)",
            ),
            (
                "0 0 30,31 FEB *",
                "\"0 0 30,31 FEB *\" never fires (no month in the schedule has any of its days-of-month)",
            ),
            (
                "0 0 31 4,6,9,11 *",
                "\"0 0 31 4,6,9,11 *\" never fires (no month in the schedule has any of its days-of-month)",
            ),
            (
                "0 0 31 4 */2",
                "\"0 0 31 4 */2\" never fires (no month in the schedule has any of its days-of-month)",
            ),
            ("@reboot", "@reboot is not supported: an autostart schedule needs a time"),
            (
                "@often",
                "unknown macro \"@often\" (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)",
            ),
        ];
        for (cron, msg) in cases {
            let e = Schedule::parse(cron, "UTC").expect_err(cron);
            assert_eq!(e, format!("`autostart.schedule`: {msg} {HINT}"), "{cron:?}");
            assert!(!e.contains('\n'));
        }
        // The example from the API documentation, verbatim.
        assert_eq!(
            Schedule::parse("0 25 * * *", "UTC").unwrap_err(),
            "`autostart.schedule`: hour 25 is out of range 0-23 (cron: minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\")"
        );
        assert_eq!(
            Schedule::parse("0 9 * * *", "Mars/Olympus").unwrap_err(),
            "`autostart.timezone`: unknown time zone \"Mars/Olympus\" (use an IANA name like Europe/Berlin, or UTC)"
        );
        assert_eq!(
            Schedule::parse("0 9 * * *", " ").unwrap_err(),
            "`autostart.timezone`: the time zone is empty (use an IANA name like Europe/Berlin, or UTC)"
        );
        // A POSIX TZ string or offset is not an IANA name.
        assert!(Schedule::parse("0 9 * * *", "+02:00").is_err());
        assert!(Schedule::parse("0 9 * * *", "CET-1CEST,M3.5.0,M10.5.0/3").is_err());
    }

    #[test]
    fn possible_on_some_days_only_is_accepted() {
        // Feb 29 exists in leap years; 31 in some listed month; with the OR rule a weekday makes
        // an impossible day-of-month harmless.
        for cron in ["0 0 29 2 *", "0 0 31 2,3 *", "0 0 31 2 1", "0 0 29 2 */7"] {
            sched(cron, "UTC");
        }
        // Feb 29 AND Sunday ("*/7" is Sunday only, and starts with `*`): 2004-02-29 was a Sunday,
        // the next is 28 years later, 2032-02-29 (2026-01-04 is a Sunday; 2032-02-29 is too).
        let s = sched("0 0 29 2 */7", "UTC");
        assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2032-02-29T00:00:00Z");
        // "0 0 31 2 1" is day 31 OR Monday, in February: fires on February Mondays.
        // 2026-02-02 is the first Monday of February 2026 (2026-01-05 was a Monday, +28 days).
        let s = sched("0 0 31 2 1", "UTC");
        assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2026-02-02T00:00:00Z");
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(
            sched("0 9 * * *", "Europe/Berlin").timezone(),
            "Europe/Berlin"
        );
        // 09:00 in Berlin in January (CET, +01:00) is 08:00Z.
        let s = sched("0 9 * * *", "Europe/Berlin");
        assert_eq!(next(&s, "2026-01-15T00:00:00Z"), "2026-01-15T08:00:00Z");
        // In July (CEST, +02:00) it is 07:00Z.
        assert_eq!(next(&s, "2026-07-15T00:00:00Z"), "2026-07-15T07:00:00Z");
        // Kathmandu is +05:45: 09:00 local is 03:15Z.
        let s = sched("0 9 * * *", "Asia/Kathmandu");
        assert_eq!(next(&s, "2026-07-15T00:00:00Z"), "2026-07-15T03:15:00Z");
        // Equality compares the expression and the zone.
        assert_eq!(sched("0 9 * * *", "UTC"), sched("0 9 * * *", "UTC"));
        assert_ne!(
            sched("0 9 * * *", "UTC"),
            sched("0 9 * * *", "Europe/Berlin")
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // 13th OR Friday. January 2026: the 1st is a Thursday, so Fridays are 2, 9, 16, 23, 30,
        // and the 13th is a Tuesday.
        let s = sched("0 0 13 * 5", "UTC");
        assert_eq!(
            series(&s, "2026-01-01T00:00:00Z", 5),
            vec![
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z",
                "2026-01-23T00:00:00Z",
            ]
        );
        // A list or range counts as restricted too: "1-31/2" is odd days OR Mondays.
        // January 2026 Mondays: 5, 12, 19, 26. After the 1st: 3, 5, 7, 9, 11, 12, 13.
        let s = sched("0 0 1-31/2 * 1", "UTC");
        assert_eq!(
            series(&s, "2026-01-01T00:00:00Z", 7),
            vec![
                "2026-01-03T00:00:00Z",
                "2026-01-05T00:00:00Z",
                "2026-01-07T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-11T00:00:00Z",
                "2026-01-12T00:00:00Z",
                "2026-01-13T00:00:00Z",
            ]
        );
        // Vixie: a field starting with `*` (here "*/2", odd days) is not a restriction, so
        // the day must match both: odd-day Mondays, i.e. 5 and 19 January 2026.
        let s = sched("0 0 */2 * 1", "UTC");
        assert_eq!(
            series(&s, "2026-01-01T00:00:00Z", 2),
            vec!["2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z"]
        );
        // Only the day-of-week restricted: weekdays.
        let s = sched("30 8 * * 1-5", "UTC");
        // Friday 2 January, then Monday 5 January.
        assert_eq!(
            series(&s, "2026-01-01T09:00:00Z", 2),
            vec!["2026-01-02T08:30:00Z", "2026-01-05T08:30:00Z"]
        );
    }

    #[test]
    fn february_29_fires_only_in_leap_years() {
        let s = sched("0 12 29 2 *", "UTC");
        assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2028-02-29T12:00:00Z");
        assert_eq!(next(&s, "2028-02-29T12:00:00Z"), "2032-02-29T12:00:00Z");
        // 2100 is not a leap year (divisible by 100, not by 400): 2096 → 2104.
        assert_eq!(next(&s, "2096-03-01T00:00:00Z"), "2104-02-29T12:00:00Z");
        // 2000 was (divisible by 400).
        assert_eq!(next(&s, "1999-01-01T00:00:00Z"), "2000-02-29T12:00:00Z");
        // Looking back: 2024-02-29 is 338 days before 2025-02-01, within the 366-day window...
        assert_eq!(last(&s, "2025-02-01T00:00:00Z"), "2024-02-29T12:00:00Z");
        // ...and more than 366 days before 2026-06-01.
        assert_eq!(last(&s, "2026-06-01T00:00:00Z"), "none");
        // Exactly 366 days after 2024-02-29T12:00Z is 2025-03-01T12:00Z (2024-02-29 → 2025-02-28
        // is 365 days): still found; one second later it is not.
        assert_eq!(last(&s, "2025-03-01T12:00:00Z"), "2024-02-29T12:00:00Z");
        assert_eq!(last(&s, "2025-03-01T12:00:01Z"), "none");
    }

    #[test]
    fn next_after_is_strictly_after_and_last_at_or_before_is_inclusive() {
        let s = sched("0 9 * * *", "UTC");
        assert_eq!(next(&s, "2026-05-05T09:00:00Z"), "2026-05-06T09:00:00Z");
        assert_eq!(
            next(&s, "2026-05-05T08:59:59.999999999Z"),
            "2026-05-05T09:00:00Z"
        );
        assert_eq!(
            next(&s, "2026-05-05T09:00:00.000000001Z"),
            "2026-05-06T09:00:00Z"
        );
        assert_eq!(last(&s, "2026-05-05T09:00:00Z"), "2026-05-05T09:00:00Z");
        assert_eq!(
            last(&s, "2026-05-05T08:59:59.999999999Z"),
            "2026-05-04T09:00:00Z"
        );
        assert_eq!(last(&s, "2026-05-05T23:59:59Z"), "2026-05-05T09:00:00Z");
        // Offsets of the input do not matter, only the instant: 11:00+02:00 is 09:00Z.
        assert_eq!(
            next(&s, "2026-05-05T11:00:00+02:00"),
            "2026-05-06T09:00:00Z"
        );
        // Year and month boundaries.
        let s = sched("59 23 31 12 *", "UTC");
        assert_eq!(next(&s, "2026-12-31T23:59:00Z"), "2027-12-31T23:59:00Z");
        assert_eq!(last(&s, "2027-01-01T00:00:00Z"), "2026-12-31T23:59:00Z");
        let s = sched("0 0 1 * *", "UTC");
        assert_eq!(last(&s, "2026-03-01T00:00:00Z"), "2026-03-01T00:00:00Z");
        assert_eq!(last(&s, "2026-02-28T23:59:00Z"), "2026-02-01T00:00:00Z");
        // Every minute.
        let s = sched("* * * * *", "UTC");
        assert_eq!(next(&s, "2026-05-05T09:00:30Z"), "2026-05-05T09:01:00Z");
        assert_eq!(last(&s, "2026-05-05T09:00:30Z"), "2026-05-05T09:00:00Z");
    }

    #[test]
    fn berlin_spring_forward_gap_fires_at_the_end_of_the_gap() {
        // 2026-03-29 (last Sunday of March): 02:00 CET (+01) jumps to 03:00 CEST (+02) at 01:00Z.
        let s = sched("30 2 * * *", "Europe/Berlin");
        // The day before: 02:30 CET = 01:30Z.
        assert_eq!(next(&s, "2026-03-27T12:00:00Z"), "2026-03-28T01:30:00Z");
        // 02:30 does not exist on the 29th: fires at 03:00 CEST = 01:00Z.
        assert_eq!(next(&s, "2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
        // Then 02:30 CEST = 00:30Z on the 30th.
        assert_eq!(next(&s, "2026-03-29T01:00:00Z"), "2026-03-30T00:30:00Z");
        assert_eq!(last(&s, "2026-03-29T01:00:00Z"), "2026-03-29T01:00:00Z");
        assert_eq!(last(&s, "2026-03-29T00:59:59Z"), "2026-03-28T01:30:00Z");
        assert_eq!(last(&s, "2026-03-30T00:29:00Z"), "2026-03-29T01:00:00Z");

        // Every 15 minutes: 02:00, 02:15, 02:30, 02:45 all fall into the gap and fire once, at
        // 03:00 CEST (01:00Z), together with 03:00 itself; then 03:15 CEST = 01:15Z.
        let s = sched("*/15 * * * *", "Europe/Berlin");
        assert_eq!(
            series(&s, "2026-03-29T00:30:00Z", 3),
            vec![
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z"
            ]
        );
        // A schedule that only fires inside the gap on that day (02:45) still fires once.
        let s = sched("45 2 29 3 *", "Europe/Berlin");
        assert_eq!(next(&s, "2026-01-01T00:00:00Z"), "2026-03-29T01:00:00Z");
    }

    #[test]
    fn berlin_fall_back_overlap_fires_once_at_the_earlier_instant() {
        // 2026-10-25 (last Sunday of October): 03:00 CEST (+02) falls back to 02:00 CET (+01) at
        // 01:00Z, so 02:30 local happens at 00:30Z and again at 01:30Z.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(next(&s, "2026-10-24T12:00:00Z"), "2026-10-25T00:30:00Z");
        // Not again at 01:30Z: next is 02:30 CET on the 26th = 01:30Z.
        assert_eq!(next(&s, "2026-10-25T00:30:00Z"), "2026-10-26T01:30:00Z");
        // From inside the second pass (01:15Z = 02:15 CET), the next is still the 26th.
        assert_eq!(next(&s, "2026-10-25T01:15:00Z"), "2026-10-26T01:30:00Z");
        // Looking back from the second pass finds the first pass.
        assert_eq!(last(&s, "2026-10-25T01:15:00Z"), "2026-10-25T00:30:00Z");
        assert_eq!(last(&s, "2026-10-25T01:45:00Z"), "2026-10-25T00:30:00Z");
        // From the first pass before 02:30 (00:15Z = 02:15 CEST): the day before, 02:30 CEST.
        assert_eq!(last(&s, "2026-10-25T00:15:00Z"), "2026-10-24T00:30:00Z");

        // Every 30 minutes: 02:00 and 02:30 CEST (00:00Z, 00:30Z) fire; the repeated 02:00 and
        // 02:30 CET (01:00Z, 01:30Z) do not; 03:00 CET = 02:00Z does.
        let s = sched("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            series(&s, "2026-10-24T23:45:00Z", 4),
            vec![
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T02:30:00Z",
            ]
        );
        assert_eq!(last(&s, "2026-10-25T01:59:00Z"), "2026-10-25T00:30:00Z");
    }

    #[test]
    fn new_york_gap_and_overlap() {
        // 2026-03-08 (second Sunday of March): 02:00 EST (-05) jumps to 03:00 EDT (-04) at 07:00Z.
        let s = sched("30 2 * * *", "America/New_York");
        assert_eq!(next(&s, "2026-03-07T12:00:00Z"), "2026-03-08T07:00:00Z");
        // The day after: 02:30 EDT = 06:30Z.
        assert_eq!(next(&s, "2026-03-08T07:00:00Z"), "2026-03-09T06:30:00Z");
        // 2026-11-01 (first Sunday of November): 02:00 EDT falls back to 01:00 EST at 06:00Z, so
        // 01:30 happens at 05:30Z (EDT) and 06:30Z (EST); it fires at 05:30Z only.
        let s = sched("30 1 * * *", "America/New_York");
        assert_eq!(next(&s, "2026-10-31T12:00:00Z"), "2026-11-01T05:30:00Z");
        // The next day 01:30 EST = 06:30Z.
        assert_eq!(next(&s, "2026-11-01T05:30:00Z"), "2026-11-02T06:30:00Z");
        assert_eq!(last(&s, "2026-11-01T06:45:00Z"), "2026-11-01T05:30:00Z");
    }

    /// A deterministic PRNG (SplitMix64) for the property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Whether the minute-aligned instant `u` (unix seconds) is an occurrence, decided from
    /// instants rather than by the search: either `u` is the first instant showing a matching
    /// local time, or a clock jump forward ends at `u` and a matching local time was skipped.
    /// Only valid for zones whose transitions and offsets are whole minutes.
    fn is_occurrence(s: &Schedule, u: i64) -> bool {
        let tz = &s.tz;
        let now = Timestamp::from_second(u).unwrap();
        let prev = Timestamp::from_second(u - 60).unwrap();
        let local = Local::from_civil(tz.to_datetime(now));
        let prev_local = Local::from_civil(tz.to_datetime(prev));
        let first_pass = |l: &Local, inst: Timestamp| match tz
            .to_ambiguous_timestamp(l.to_civil().unwrap())
            .offset()
        {
            AmbiguousOffset::Fold { before, .. } => {
                before.to_timestamp(l.to_civil().unwrap()).unwrap() == inst
            }
            _ => true,
        };
        if s.fields.matches(&local) && first_pass(&local, now) {
            return true;
        }
        // A forward jump between u-60 and u: the skipped local minutes are those after
        // prev_local and before local.
        if tz.to_offset(now) > tz.to_offset(prev) {
            let mut l = prev_local.plus_minute();
            while l < local {
                if s.fields.matches(&l) {
                    return true;
                }
                l = l.plus_minute();
            }
        }
        false
    }

    fn ts_of(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    #[test]
    fn property_next_and_last_agree_with_a_minute_by_minute_scan() {
        let crons = [
            "* * * * *",
            "*/7 * * * *",
            "30 2 * * *",
            "0,30 1-3 * * *",
            "15 */5 * * 0,6",
            "0 9 * * 1-5",
            "45 0-4 1,15 * 2",
            "*/20 2 * 3,10,11 SUN",
        ];
        let zones = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe", // 30-minute DST shift
            "Asia/Kathmandu",      // +05:45
            "America/Sao_Paulo",
        ];
        // Transitions (2026) that half of the samples are concentrated around, with their zone.
        let hot = [
            ("Europe/Berlin", at("2026-03-29T01:00:00Z")), // spring forward 02:00 → 03:00
            ("Europe/Berlin", at("2026-10-25T01:00:00Z")), // fall back 03:00 → 02:00
            ("America/New_York", at("2026-03-08T07:00:00Z")), // spring forward 02:00 → 03:00
            ("America/New_York", at("2026-11-01T06:00:00Z")), // fall back 02:00 → 01:00
            ("Australia/Lord_Howe", at("2026-04-04T15:00:00Z")), // fall back 02:00 → 01:30
            ("Australia/Lord_Howe", at("2026-10-03T15:30:00Z")), // spring forward 02:00 → 02:30
        ];
        let base = at("2020-01-01T00:00:00Z").unix_timestamp();
        let span = at("2035-01-01T00:00:00Z").unix_timestamp() - base;
        let mut rng = Rng(0x005E_ED0F_3A11_u64);
        let mut checked = 0;
        for i in 0..600 {
            let cron = crons[rng.below(crons.len() as u64) as usize];
            let (tz, secs) = if i % 2 == 0 {
                let tz = zones[rng.below(zones.len() as u64) as usize];
                (tz, base + rng.below(span as u64) as i64)
            } else {
                let (tz, h) = hot[rng.below(hot.len() as u64) as usize];
                (
                    tz,
                    h.unix_timestamp() - 3 * 3600 + rng.below(6 * 3600) as i64,
                )
            };
            let s = sched(cron, tz);
            let nanos = rng.below(1_000_000_000) as i64;
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + time::Duration::nanoseconds(nanos);

            let n = s.next_after(t).unwrap();
            assert!(n > t, "{cron} {tz}: next_after({t}) = {n} is not after");
            assert_eq!(n.nanosecond(), 0);
            assert_eq!(
                n.unix_timestamp() % 60,
                0,
                "{cron} {tz}: {n} not on a minute"
            );
            assert!(
                is_occurrence(&s, ts_of(n)),
                "{cron} {tz}: {n} is not an occurrence"
            );
            // No occurrence strictly between t and n: scan the minutes (up to two days).
            let first = ts_of(t).div_euclid(60) * 60 + 60;
            let mut u = first;
            while u < ts_of(n) && u < first + 2 * 86_400 {
                assert!(
                    !is_occurrence(&s, u),
                    "{cron} {tz}: {u} fires between {t} and next_after = {n}"
                );
                u += 60;
            }

            // last_at_or_before(t): an occurrence at or before t, with none in between.
            if let Some(l) = s.last_at_or_before(t) {
                assert!(l <= t, "{cron} {tz}: last_at_or_before({t}) = {l} is after");
                assert!(
                    is_occurrence(&s, ts_of(l)),
                    "{cron} {tz}: {l} is not an occurrence"
                );
                let mut u = ts_of(l) + 60;
                while u <= ts_of(t) && u < ts_of(l) + 2 * 86_400 {
                    assert!(
                        !is_occurrence(&s, u),
                        "{cron} {tz}: {u} fires between last_at_or_before = {l} and {t}"
                    );
                    u += 60;
                }
                // The two agree: the first occurrence after the last one at or before t is the
                // first one after t.
                assert_eq!(s.next_after(l).unwrap(), n, "{cron} {tz} at {t}");
            } else {
                panic!("{cron} {tz}: no occurrence in the year before {t}");
            }
            checked += 1;
        }
        assert_eq!(checked, 600);
    }

    #[test]
    fn ten_thousand_next_after_calls_print_timing() {
        // Not a timing assertion: prints how long 10,000 calls take, to watch for regressions
        // (`cargo test -p warren-api schedule -- --nocapture`).
        let schedules = [
            sched("0 9 * * 1-5", "Europe/Berlin"),
            sched("*/5 * * * *", "America/New_York"),
            sched("0 0 29 2 *", "UTC"),
            sched("30 2 * * *", "Europe/Berlin"),
            sched("0 0 13 * 5", "Asia/Kathmandu"),
        ];
        let mut rng = Rng(42);
        let base = at("2026-01-01T00:00:00Z").unix_timestamp();
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            let s = &schedules[i % schedules.len()];
            let t = OffsetDateTime::from_unix_timestamp(base + rng.below(10 * 365 * 86_400) as i64)
                .unwrap();
            assert!(s.next_after(t).unwrap() > t);
        }
        eprintln!(
            "schedule: 10,000 next_after calls took {:?}",
            started.elapsed()
        );
    }
}
