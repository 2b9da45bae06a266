//! The audit log: an append-only, hash-chained record of who did what, to what, with what outcome.
//!
//! Every record carries the hash of the record before it (`prev_hash`) and its own `hash`, so
//! editing, deleting or reordering stored records breaks the chain and [`Store::verify_audit`]
//! finds the first broken record. Records are only ever inserted; nothing in Warren updates or
//! deletes them.
//!
//! # Hashing scheme
//!
//! An external tool can verify an exported JSON-lines file (one [`AuditRecord`] per line, as
//! serialized by serde) with nothing but SHA-256 and a JSON encoder:
//!
//! 1. The **payload** of a record is the compact JSON object (no whitespace at all) of these
//!    16 members, in exactly this order:
//!
//!    `id`, `at`, `request_id`, `actor_user_id`, `actor_username`, `actor_token_id`,
//!    `source_ip`, `user_agent`, `action`, `target_type`, `target_id`, `target_name`,
//!    `outcome`, `status`, `diff_json`, `details_json`
//!
//!    that is, the exported record without `prev_hash` and `hash`. `id` and `status` are
//!    decimal integers; an absent optional value is `null` (the member is never omitted);
//!    every other value is a JSON string. `outcome` is `"success"`, `"failure"` or `"denied"`.
//!    `diff_json` and `details_json` are JSON *text* stored as strings and hashed as those
//!    strings, byte for byte, never re-encoded. Strings are encoded as UTF-8 with the minimal
//!    escaping of RFC 8259: `"` as `\"`, `\` as `\\`, U+0008, U+0009, U+000A, U+000C and U+000D
//!    as `\b`, `\t`, `\n`, `\f` and `\r`, the other characters below U+0020 as `\u00xx` (lowercase
//!    hex), and every other character (including `/`, U+007F and all non-ASCII) as itself.
//!    This is what `serde_json` produces, and what Python's
//!    `json.dumps(payload, ensure_ascii=False, separators=(",", ":"))` produces for a `dict`
//!    built in that member order.
//! 2. `hash = lowercase_hex(SHA-256(prev_hash ‖ "\n" ‖ payload))`, with `prev_hash` as its 64
//!    ASCII hex characters and `"\n"` the single byte 0x0A.
//! 3. The first record's `prev_hash` is [`AUDIT_GENESIS_HASH`] (64 zeros); every other record's
//!    `prev_hash` is the `hash` of the record before it.
//! 4. Ids start at 1 and increase by exactly 1: ids are never reused, and records are never
//!    deleted, so a gap means that records were removed.
//!
//! A verifier in Python:
//!
//! ```text
//! import hashlib, json
//! FIELDS = ["id", "at", "request_id", "actor_user_id", "actor_username", "actor_token_id",
//!           "source_ip", "user_agent", "action", "target_type", "target_id", "target_name",
//!           "outcome", "status", "diff_json", "details_json"]
//! prev, expected_id = "0" * 64, 1
//! for line in open("audit.jsonl", encoding="utf-8"):
//!     r = json.loads(line)
//!     payload = json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False, separators=(",", ":"))
//!     digest = hashlib.sha256((prev + "\n" + payload).encode("utf-8")).hexdigest()
//!     assert r["id"] == expected_id and r["prev_hash"] == prev and r["hash"] == digest, r["id"]
//!     prev, expected_id = r["hash"], expected_id + 1
//! print("ok, head", prev)
//! ```
//!
//! [`verify_chain`] does the same in Rust.
//!
//! # What the chain can and cannot show
//!
//! Changing any field of a stored record, deleting or reordering records, or inserting records
//! anywhere but at the end is detected. Removing records **at the end** is not detectable from
//! the table alone until the next append (whose id then leaves a gap), and someone able to
//! rewrite the whole table can rebuild a consistent chain. Operators who need that guarantee
//! record [`AuditVerification::head_hash`] (and the record count) somewhere the database's
//! writers cannot change, and compare it later.
//!
//! # Concurrency
//!
//! Appends are serialized: within a process by a mutex shared by all clones of the [`Store`],
//! and between processes sharing the SQLite file by `BEGIN IMMEDIATE`, which takes the write
//! lock before the last hash is read (a deferred transaction that reads, then writes, could fail
//! with `SQLITE_BUSY` on the lock upgrade). A multi-replica PostgreSQL deployment needs a
//! database-level lock instead (`pg_advisory_xact_lock` taken at the start of the append
//! transaction), and should take the id as `max(id) + 1` under that lock rather than from a
//! sequence, because a sequence value consumed by a rolled-back append would leave a gap that
//! looks like a deletion. That is part of the PostgreSQL backend issue.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row};

use crate::{Store, StoreError};

/// The `prev_hash` of the first record: 64 zeros.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The most records one [`Store::query_audit`] call returns.
pub const AUDIT_QUERY_MAX_LIMIT: u32 = 1000;

/// How many records [`Store::verify_audit`] reads per query.
const VERIFY_PAGE: i64 = 1000;

const AUDIT_COLUMNS: &str = "id, at, request_id, actor_user_id, actor_username, actor_token_id, \
    source_ip, user_agent, action, target_type, target_id, target_name, outcome, status, \
    diff_json, details_json, prev_hash, hash";

/// How an audited request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// The request was carried out.
    Success,
    /// The request was allowed but failed.
    Failure,
    /// The request was refused: not authenticated or not authorized.
    Denied,
}

impl AuditOutcome {
    /// The stored (and hashed) name: `success`, `failure` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }
}

impl std::fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller supplies to [`Store::append_audit`]; the store adds the id, the time and
/// the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    /// The id of the request that caused the record (ties together the records of one request
    /// and the server's logs).
    pub request_id: String,
    /// The authenticated user, if any.
    pub actor_user_id: Option<String>,
    /// The authenticated user's name at the time, if any.
    pub actor_username: Option<String>,
    /// The API token used, if any.
    pub actor_token_id: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// What was attempted, as `noun.verb`: `workspace.create`, `workspace.exec`, `token.revoke`.
    pub action: String,
    /// The kind of object acted on: `workspace`, `token`, `user`.
    pub target_type: String,
    /// The id of the object acted on, if it has one.
    pub target_id: Option<String>,
    /// The name of the object acted on, if it has one.
    pub target_name: Option<String>,
    /// How the request ended.
    pub outcome: AuditOutcome,
    /// The HTTP status of the response.
    pub status: u16,
    /// For updates, a JSON object of the changed fields: `{"field": {"old": .., "new": ..}}`
    /// (see [`field_diff`]). Stored and hashed as this exact text.
    pub diff_json: Option<String>,
    /// Any other JSON details. Stored and hashed as this exact text.
    pub details_json: Option<String>,
}

/// A stored audit record. Serializes (with serde) to the JSON-lines export format that
/// [`verify_chain`] and the module documentation's hashing scheme verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log: 1, 2, 3, … without gaps.
    pub id: i64,
    /// When the record was appended (RFC 3339 UTC, milliseconds: `2024-05-01T12:00:00.000Z`).
    pub at: String,
    /// See [`NewAuditRecord::request_id`].
    pub request_id: String,
    /// See [`NewAuditRecord::actor_user_id`].
    pub actor_user_id: Option<String>,
    /// See [`NewAuditRecord::actor_username`].
    pub actor_username: Option<String>,
    /// See [`NewAuditRecord::actor_token_id`].
    pub actor_token_id: Option<String>,
    /// See [`NewAuditRecord::source_ip`].
    pub source_ip: Option<String>,
    /// See [`NewAuditRecord::user_agent`].
    pub user_agent: Option<String>,
    /// See [`NewAuditRecord::action`].
    pub action: String,
    /// See [`NewAuditRecord::target_type`].
    pub target_type: String,
    /// See [`NewAuditRecord::target_id`].
    pub target_id: Option<String>,
    /// See [`NewAuditRecord::target_name`].
    pub target_name: Option<String>,
    /// See [`NewAuditRecord::outcome`].
    pub outcome: AuditOutcome,
    /// See [`NewAuditRecord::status`].
    pub status: u16,
    /// See [`NewAuditRecord::diff_json`].
    pub diff_json: Option<String>,
    /// See [`NewAuditRecord::details_json`].
    pub details_json: Option<String>,
    /// The previous record's `hash`, or [`AUDIT_GENESIS_HASH`] for the first record.
    pub prev_hash: String,
    /// `sha256_hex(prev_hash ‖ "\n" ‖ payload)`; see the module documentation.
    pub hash: String,
}

/// The hashed payload: every field but the hashes, in a fixed order. serde_json serializes a
/// struct's fields in declaration order, so this order is part of the hashing scheme.
#[derive(Serialize)]
struct Payload<'a> {
    id: i64,
    at: &'a str,
    request_id: &'a str,
    actor_user_id: Option<&'a str>,
    actor_username: Option<&'a str>,
    actor_token_id: Option<&'a str>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    action: &'a str,
    target_type: &'a str,
    target_id: Option<&'a str>,
    target_name: Option<&'a str>,
    outcome: &'a str,
    status: u16,
    diff_json: Option<&'a str>,
    details_json: Option<&'a str>,
}

impl AuditRecord {
    /// The hash this record should carry given its fields and `prev_hash` (it ignores the
    /// stored `hash`).
    pub fn compute_hash(&self) -> String {
        let payload = Payload {
            id: self.id,
            at: &self.at,
            request_id: &self.request_id,
            actor_user_id: self.actor_user_id.as_deref(),
            actor_username: self.actor_username.as_deref(),
            actor_token_id: self.actor_token_id.as_deref(),
            source_ip: self.source_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            action: &self.action,
            target_type: &self.target_type,
            target_id: self.target_id.as_deref(),
            target_name: self.target_name.as_deref(),
            outcome: self.outcome.as_str(),
            status: self.status,
            diff_json: self.diff_json.as_deref(),
            details_json: self.details_json.as_deref(),
        };
        // Strings, integers and nulls always serialize.
        let payload = serde_json::to_vec(&payload).expect("audit payload serializes");
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(&payload);
        hex::encode(hasher.finalize())
    }
}

/// Filters for [`Store::query_audit`]. Every filter that is set must match; results are in
/// id order. Deserializes from a query string with every member optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// Matches `actor_user_id`, `actor_username` or `actor_token_id` exactly.
    pub actor: Option<String>,
    /// Matches `action` exactly, or, when it ends with `.*`, every action under that prefix:
    /// `workspace.*` matches `workspace.create` but not `workspace` or `workspaces.list`.
    pub action: Option<String>,
    /// Matches `target_id` or `target_name` exactly.
    pub target: Option<String>,
    /// Records at or after this time. An RFC 3339 time with any offset and precision is
    /// converted to the stored format first (`2024-05-01T14:00:00+02:00` becomes
    /// `2024-05-01T12:00:00.000Z`); anything else is compared with the stored text as is.
    pub since: Option<String>,
    /// Records strictly before this time; converted like `since`.
    pub until: Option<String>,
    /// Records with an id greater than this: pass the last id of the previous page.
    pub after_id: Option<i64>,
    /// The most records to return; 0 or anything above [`AUDIT_QUERY_MAX_LIMIT`] means
    /// [`AUDIT_QUERY_MAX_LIMIT`].
    pub limit: u32,
}

/// The result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// How many records were examined (all of them, also past a break).
    pub records: u64,
    /// Whether the whole chain is intact.
    pub ok: bool,
    /// The stored `hash` of the last record examined, or [`AUDIT_GENESIS_HASH`] when there are
    /// none. When `ok`, this hash commits to the whole log: keep it elsewhere to detect a later
    /// rewrite or truncation.
    pub head_hash: String,
    /// The first record at which the chain is broken.
    pub first_bad: Option<AuditBreak>,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBreak {
    /// The id of the first record that does not fit the chain. When records are missing, this
    /// is the record after the gap.
    pub id: i64,
    /// What is wrong, for humans.
    pub reason: String,
}

/// Checks records one at a time, in order, from the genesis.
struct ChainVerifier {
    records: u64,
    last_id: i64,
    head_hash: String,
    first_bad: Option<AuditBreak>,
}

impl ChainVerifier {
    fn new() -> Self {
        ChainVerifier {
            records: 0,
            last_id: 0,
            head_hash: AUDIT_GENESIS_HASH.to_owned(),
            first_bad: None,
        }
    }

    /// The problem with the next record's id, if any.
    fn id_problem(&self, id: i64) -> Option<String> {
        let expected = self.last_id + 1;
        if id < expected {
            Some(if self.records == 0 {
                format!("the first record has id {id}; ids start at 1")
            } else {
                format!(
                    "id {id} does not follow id {}: ids must increase by 1",
                    self.last_id
                )
            })
        } else if id == expected + 1 {
            Some(format!("record {expected} is missing"))
        } else if id > expected {
            Some(format!("records {expected} to {} are missing", id - 1))
        } else {
            None
        }
    }

    fn push(&mut self, record: &AuditRecord) {
        let problem = self.id_problem(record.id).or_else(|| {
            if record.prev_hash != self.head_hash {
                Some(if self.records == 0 {
                    "prev_hash of the first record is not the genesis hash".to_owned()
                } else {
                    format!(
                        "prev_hash does not match the hash of record {}",
                        self.last_id
                    )
                })
            } else if record.compute_hash() != record.hash {
                Some("hash does not match the record's contents".to_owned())
            } else {
                None
            }
        });
        self.advance(record.id, record.hash.clone(), problem);
    }

    /// A stored row that cannot even be decoded into a record.
    fn push_undecodable(&mut self, id: i64, hash: String, error: &sqlx::Error) {
        let problem = self
            .id_problem(id)
            .unwrap_or_else(|| format!("the record cannot be decoded: {error}"));
        self.advance(id, hash, Some(problem));
    }

    fn advance(&mut self, id: i64, hash: String, problem: Option<String>) {
        if let (None, Some(reason)) = (&self.first_bad, problem) {
            self.first_bad = Some(AuditBreak { id, reason });
        }
        self.records += 1;
        self.last_id = id;
        self.head_hash = hash;
    }

    fn finish(self) -> AuditVerification {
        AuditVerification {
            records: self.records,
            ok: self.first_bad.is_none(),
            head_hash: self.head_hash,
            first_bad: self.first_bad,
        }
    }
}

/// Verifies a complete chain (from id 1, in order), for example an exported JSON-lines file,
/// without a database: the same checks as [`Store::verify_audit`].
pub fn verify_chain(records: impl IntoIterator<Item = AuditRecord>) -> AuditVerification {
    let mut verifier = ChainVerifier::new();
    for record in records {
        verifier.push(&record);
    }
    verifier.finish()
}

/// The field-level difference between two JSON objects in the [`NewAuditRecord::diff_json`]
/// format, `{"field": {"old": .., "new": ..}}`, with fields sorted by name; `None` when nothing
/// changed. A field missing on one side is `null` there. Values that are not both objects are
/// compared as a whole and reported as the field `value`.
pub fn field_diff(old: &serde_json::Value, new: &serde_json::Value) -> Option<String> {
    #[derive(Serialize)]
    struct Change<'a> {
        old: &'a serde_json::Value,
        new: &'a serde_json::Value,
    }
    const NULL: serde_json::Value = serde_json::Value::Null;
    let mut changes = BTreeMap::new();
    match (old.as_object(), new.as_object()) {
        (Some(old), Some(new)) => {
            for field in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
                let (old, new) = (old.get(field), new.get(field));
                if old != new {
                    let change = Change {
                        old: old.unwrap_or(&NULL),
                        new: new.unwrap_or(&NULL),
                    };
                    changes.insert(field.as_str(), change);
                }
            }
        }
        _ if old != new => {
            changes.insert("value", Change { old, new });
        }
        _ => {}
    }
    if changes.is_empty() {
        return None;
    }
    // A map with string keys of plain JSON values always serializes.
    Some(serde_json::to_string(&changes).expect("audit diff serializes"))
}

impl Store {
    /// Appends a record to the audit log and returns it with its id, time and hashes.
    ///
    /// Appends are serialized (see the module documentation), so concurrent callers, in this
    /// process or others sharing the database file, always extend one valid chain.
    pub async fn append_audit(&self, rec: NewAuditRecord) -> Result<AuditRecord, StoreError> {
        let _serialized = self.audit_lock.lock().await;
        // BEGIN IMMEDIATE takes SQLite's write lock now, so no other process can append
        // between our read of the last hash and our insert.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let prev_hash: String =
            sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or_else(|| AUDIT_GENESIS_HASH.to_owned());
        let at = crate::now();
        // The hash covers the id, which the database assigns: insert, then fill in the hash
        // within the same transaction, so nobody ever sees the row without it. Letting the
        // database assign the id (rather than max + 1) means an append after a deletion at the
        // end of the log leaves a visible gap.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, request_id, actor_user_id, actor_username, \
             actor_token_id, source_ip, user_agent, action, target_type, target_id, target_name, \
             outcome, status, diff_json, details_json, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '') RETURNING id",
        )
        .bind(&at)
        .bind(&rec.request_id)
        .bind(&rec.actor_user_id)
        .bind(&rec.actor_username)
        .bind(&rec.actor_token_id)
        .bind(&rec.source_ip)
        .bind(&rec.user_agent)
        .bind(&rec.action)
        .bind(&rec.target_type)
        .bind(&rec.target_id)
        .bind(&rec.target_name)
        .bind(rec.outcome.as_str())
        .bind(i64::from(rec.status))
        .bind(&rec.diff_json)
        .bind(&rec.details_json)
        .bind(&prev_hash)
        .fetch_one(&mut *tx)
        .await?;
        let mut record = AuditRecord {
            id,
            at,
            request_id: rec.request_id,
            actor_user_id: rec.actor_user_id,
            actor_username: rec.actor_username,
            actor_token_id: rec.actor_token_id,
            source_ip: rec.source_ip,
            user_agent: rec.user_agent,
            action: rec.action,
            target_type: rec.target_type,
            target_id: rec.target_id,
            target_name: rec.target_name,
            outcome: rec.outcome,
            status: rec.status,
            diff_json: rec.diff_json,
            details_json: rec.details_json,
            prev_hash,
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        sqlx::query("UPDATE audit_log SET hash = ? WHERE id = ?")
            .bind(&record.hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The records matching `q`, in id order, at most `q.limit` (capped at
    /// [`AUDIT_QUERY_MAX_LIMIT`]). Page with `after_id` set to the last id returned.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"
        ));
        if let Some(actor) = &q.actor {
            sql.push(" AND (actor_user_id = ")
                .push_bind(actor)
                .push(" OR actor_username = ")
                .push_bind(actor)
                .push(" OR actor_token_id = ")
                .push_bind(actor)
                .push(")");
        }
        if let Some(action) = &q.action {
            match action.strip_suffix(".*") {
                Some(prefix) => {
                    // substr rather than LIKE: LIKE's case sensitivity and wildcards differ
                    // between SQLite and PostgreSQL, and its wildcards would need escaping.
                    let prefix = format!("{prefix}.");
                    let chars = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
                    sql.push(" AND substr(action, 1, ")
                        .push_bind(chars)
                        .push(") = ")
                        .push_bind(prefix);
                }
                None => {
                    sql.push(" AND action = ").push_bind(action);
                }
            }
        }
        if let Some(target) = &q.target {
            sql.push(" AND (target_id = ")
                .push_bind(target)
                .push(" OR target_name = ")
                .push_bind(target)
                .push(")");
        }
        if let Some(since) = &q.since {
            sql.push(" AND at >= ").push_bind(normalize_time(since));
        }
        if let Some(until) = &q.until {
            sql.push(" AND at < ").push_bind(normalize_time(until));
        }
        if let Some(after_id) = q.after_id {
            sql.push(" AND id > ").push_bind(after_id);
        }
        let limit = match q.limit {
            0 => AUDIT_QUERY_MAX_LIMIT,
            n => n.min(AUDIT_QUERY_MAX_LIMIT),
        };
        sql.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
    }

    /// Reads the whole audit log in id order, page by page, and checks the chain: ids 1, 2, 3, …
    /// without gaps, each `prev_hash` equal to the previous record's `hash` (the genesis hash
    /// for the first), and each `hash` recomputed from the record's contents. A stored row
    /// that cannot be decoded is reported as a break, not as an error.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > ? ORDER BY id LIMIT ?");
        let mut verifier = ChainVerifier::new();
        let mut after = 0_i64;
        loop {
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                match audit_from_row(row) {
                    Ok(record) => verifier.push(&record),
                    Err(error) => {
                        let hash = row.try_get("hash").unwrap_or_default();
                        verifier.push_undecodable(id, hash, &error);
                    }
                }
                after = id;
            }
            if rows.len() < VERIFY_PAGE as usize {
                return Ok(verifier.finish());
            }
        }
    }

    /// How many records the audit log holds.
    pub async fn audit_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// Converts an RFC 3339 time to the stored format, rounding up to the millisecond (stored times
/// have millisecond precision, so `at >= t` and `at < t` keep their meaning). Anything else is
/// returned unchanged.
fn normalize_time(s: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) else {
        return s.to_owned();
    };
    // Checked: a time near the end of the representable range must not panic here.
    let Some(t) = t.checked_to_offset(time::UtcOffset::UTC) else {
        return s.to_owned();
    };
    let sub_ms = t.nanosecond() % 1_000_000;
    let t = if sub_ms == 0 {
        t
    } else {
        match t.checked_add(time::Duration::nanoseconds(i64::from(1_000_000 - sub_ms))) {
            Some(t) => t,
            None => return s.to_owned(),
        }
    };
    if !(0..=9999).contains(&t.year()) {
        return s.to_owned();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn decode_error(id: i64, detail: String) -> sqlx::Error {
    sqlx::Error::Decode(format!("audit record {id}: {detail}").into())
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    let outcome: String = row.try_get("outcome")?;
    let outcome = AuditOutcome::parse(&outcome)
        .ok_or_else(|| decode_error(id, format!("unknown outcome {outcome:?}")))?;
    let status: i64 = row.try_get("status")?;
    let status = u16::try_from(status)
        .map_err(|_| decode_error(id, format!("status {status} is out of range")))?;
    Ok(AuditRecord {
        id,
        at: row.try_get("at")?,
        request_id: row.try_get("request_id")?,
        actor_user_id: row.try_get("actor_user_id")?,
        actor_username: row.try_get("actor_username")?,
        actor_token_id: row.try_get("actor_token_id")?,
        source_ip: row.try_get("source_ip")?,
        user_agent: row.try_get("user_agent")?,
        action: row.try_get("action")?,
        target_type: row.try_get("target_type")?,
        target_id: row.try_get("target_id")?,
        target_name: row.try_get("target_name")?,
        outcome,
        status,
        diff_json: row.try_get("diff_json")?,
        details_json: row.try_get("details_json")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_record(action: &str, actor: &str, target: &str) -> NewAuditRecord {
        NewAuditRecord {
            request_id: format!("req-{action}-{actor}-{target}"),
            actor_user_id: Some(format!("u-{actor}")),
            actor_username: Some(actor.to_owned()),
            actor_token_id: Some(format!("t-{actor}")),
            source_ip: Some("192.0.2.1".to_owned()),
            user_agent: Some("warren-test/1".to_owned()),
            action: action.to_owned(),
            target_type: "workspace".to_owned(),
            target_id: Some(format!("id-{target}")),
            target_name: Some(target.to_owned()),
            outcome: AuditOutcome::Success,
            status: 200,
            diff_json: None,
            details_json: Some(r#"{"note":"ünïcode \"quoted\"\n"}"#.to_owned()),
        }
    }

    async fn store_with(n: usize) -> Store {
        let store = Store::open_in_memory().await.unwrap();
        for i in 0..n {
            store
                .append_audit(new_record("workspace.create", "alice", &format!("ws{i}")))
                .await
                .unwrap();
        }
        store
    }

    async fn exec(store: &Store, sql: &str) {
        sqlx::query(sql).execute(&store.pool).await.unwrap();
    }

    async fn all(store: &Store) -> Vec<AuditRecord> {
        store.query_audit(&AuditQuery::default()).await.unwrap()
    }

    fn ids(records: &[AuditRecord]) -> Vec<i64> {
        records.iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn empty_log_verifies() {
        let store = store_with(0).await;
        let v = store.verify_audit().await.unwrap();
        assert_eq!(
            v,
            AuditVerification {
                records: 0,
                ok: true,
                head_hash: AUDIT_GENESIS_HASH.to_owned(),
                first_bad: None
            }
        );
        assert_eq!(store.audit_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn chain_verifies_and_links() {
        let store = store_with(5).await;
        let records = all(&store).await;
        assert_eq!(ids(&records), [1, 2, 3, 4, 5]);
        assert_eq!(records[0].prev_hash, AUDIT_GENESIS_HASH);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        for r in &records {
            assert_eq!(r.hash.len(), 64);
            assert_eq!(r.compute_hash(), r.hash);
        }
        let v = store.verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 5);
        assert_eq!(v.head_hash, records[4].hash);
        assert_eq!(store.audit_count().await.unwrap(), 5);
        // The offline verifier agrees, also after a JSON-lines round trip.
        let lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let parsed = lines.iter().map(|l| serde_json::from_str(l).unwrap());
        assert_eq!(verify_chain(parsed), v);
    }

    #[tokio::test]
    async fn append_returns_what_is_stored() {
        let store = store_with(0).await;
        let mut new = new_record("token.revoke", "bob", "t1");
        new.outcome = AuditOutcome::Denied;
        new.status = 403;
        new.actor_token_id = None;
        new.diff_json = field_diff(
            &serde_json::json!({"a": 1, "b": "x"}),
            &serde_json::json!({"a": 2, "b": "x"}),
        );
        let appended = store.append_audit(new.clone()).await.unwrap();
        assert_eq!(appended.id, 1);
        assert_eq!(appended.action, new.action);
        assert_eq!(appended.outcome, AuditOutcome::Denied);
        assert_eq!(appended.at.len(), "2024-05-01T12:00:00.000Z".len());
        assert_eq!(all(&store).await, [appended]);
    }

    /// A fixed record and its hash: a test vector for external verifiers.
    #[test]
    fn hash_is_the_documented_scheme() {
        let record = AuditRecord {
            id: 1,
            at: "2024-05-01T12:00:00.000Z".to_owned(),
            request_id: "r1".to_owned(),
            actor_user_id: Some("u1".to_owned()),
            actor_username: Some("alice".to_owned()),
            actor_token_id: None,
            source_ip: Some("192.0.2.1".to_owned()),
            user_agent: None,
            action: "workspace.create".to_owned(),
            target_type: "workspace".to_owned(),
            target_id: Some("w1".to_owned()),
            target_name: Some("dev".to_owned()),
            outcome: AuditOutcome::Success,
            status: 201,
            diff_json: None,
            details_json: Some("{\"a\":\"é\\n\"}".to_owned()),
            prev_hash: AUDIT_GENESIS_HASH.to_owned(),
            hash: String::new(),
        };
        let payload = concat!(
            r#"{"id":1,"at":"2024-05-01T12:00:00.000Z","request_id":"r1","#,
            r#""actor_user_id":"u1","actor_username":"alice","actor_token_id":null,"#,
            r#""source_ip":"192.0.2.1","user_agent":null,"action":"workspace.create","#,
            r#""target_type":"workspace","target_id":"w1","target_name":"dev","#,
            r#""outcome":"success","status":201,"diff_json":null,"#,
            r#""details_json":"{\"a\":\"é\\n\"}"}"#
        );
        let expected = hex::encode(Sha256::digest(
            format!("{AUDIT_GENESIS_HASH}\n{payload}").as_bytes(),
        ));
        assert_eq!(record.compute_hash(), expected);
        // The exported line lists the same members in the same order, then the hashes.
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.starts_with(&payload[..payload.len() - 1]), "{line}");
    }

    #[tokio::test]
    async fn edited_field_is_detected() {
        let store = store_with(5).await;
        exec(&store, "UPDATE audit_log SET status = 500 WHERE id = 3").await;
        let v = store.verify_audit().await.unwrap();
        assert!(!v.ok);
        assert_eq!(v.records, 5);
        let bad = v.first_bad.unwrap();
        assert_eq!(bad.id, 3);
        assert!(bad.reason.contains("hash does not match"), "{}", bad.reason);
    }

    #[tokio::test]
    async fn undecodable_row_is_a_break_not_an_error() {
        let store = store_with(3).await;
        exec(
            &store,
            "UPDATE audit_log SET outcome = 'bogus' WHERE id = 2",
        )
        .await;
        let v = store.verify_audit().await.unwrap();
        assert_eq!(v.records, 3);
        let bad = v.first_bad.unwrap();
        assert_eq!(bad.id, 2);
        assert!(bad.reason.contains("bogus"), "{}", bad.reason);
        assert!(store.query_audit(&AuditQuery::default()).await.is_err());
    }

    #[tokio::test]
    async fn deleted_middle_record_is_detected() {
        let store = store_with(5).await;
        exec(&store, "DELETE FROM audit_log WHERE id = 3").await;
        let v = store.verify_audit().await.unwrap();
        assert!(!v.ok);
        assert_eq!(v.records, 4);
        let bad = v.first_bad.unwrap();
        assert_eq!(bad.id, 4);
        assert_eq!(bad.reason, "record 3 is missing");
    }

    #[tokio::test]
    async fn deleted_first_record_is_detected() {
        let store = store_with(3).await;
        exec(&store, "DELETE FROM audit_log WHERE id = 1").await;
        let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
        assert_eq!(bad.id, 2);
        assert_eq!(bad.reason, "record 1 is missing");
    }

    #[tokio::test]
    async fn deleted_first_records_with_rewritten_ids_are_detected() {
        // Even renumbering the survivors to hide the gap breaks the chain.
        let store = store_with(3).await;
        exec(&store, "DELETE FROM audit_log WHERE id = 1").await;
        exec(&store, "UPDATE audit_log SET id = id - 1").await;
        let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
        assert_eq!(bad.id, 1);
        assert!(bad.reason.contains("genesis"), "{}", bad.reason);
    }

    #[tokio::test]
    async fn deleted_last_record_shows_as_a_gap_after_the_next_append() {
        let store = store_with(3).await;
        exec(&store, "DELETE FROM audit_log WHERE id = 3").await;
        store
            .append_audit(new_record("workspace.delete", "alice", "ws0"))
            .await
            .unwrap();
        let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
        assert_eq!(bad.id, 4);
        assert_eq!(bad.reason, "record 3 is missing");
    }

    #[tokio::test]
    async fn edit_with_recomputed_hash_is_detected_by_the_next_record() {
        let store = store_with(5).await;
        let mut forged = all(&store).await.remove(2);
        assert_eq!(forged.id, 3);
        forged.actor_username = Some("mallory".to_owned());
        forged.hash = forged.compute_hash();
        sqlx::query("UPDATE audit_log SET actor_username = ?, hash = ? WHERE id = 3")
            .bind(&forged.actor_username)
            .bind(&forged.hash)
            .execute(&store.pool)
            .await
            .unwrap();
        let v = store.verify_audit().await.unwrap();
        assert!(!v.ok);
        let bad = v.first_bad.unwrap();
        assert_eq!(bad.id, 4);
        assert_eq!(bad.reason, "prev_hash does not match the hash of record 3");
    }

    #[test]
    fn verify_chain_reports_reordering_and_duplicates() {
        let mut chain: Vec<AuditRecord> = Vec::new();
        let mut prev = AUDIT_GENESIS_HASH.to_owned();
        for id in 1..=4 {
            let mut r = AuditRecord {
                id,
                at: "2024-05-01T12:00:00.000Z".to_owned(),
                request_id: format!("r{id}"),
                actor_user_id: None,
                actor_username: None,
                actor_token_id: None,
                source_ip: None,
                user_agent: None,
                action: "workspace.exec".to_owned(),
                target_type: "workspace".to_owned(),
                target_id: None,
                target_name: None,
                outcome: AuditOutcome::Failure,
                status: 500,
                diff_json: None,
                details_json: None,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            r.hash = r.compute_hash();
            prev = r.hash.clone();
            chain.push(r);
        }
        assert!(verify_chain(chain.clone()).ok);

        let mut swapped = chain.clone();
        swapped.swap(1, 2);
        let bad = verify_chain(swapped).first_bad.unwrap();
        assert_eq!((bad.id, bad.reason.as_str()), (3, "record 2 is missing"));

        let mut duplicated = chain.clone();
        duplicated.insert(2, chain[1].clone());
        let v = verify_chain(duplicated);
        assert_eq!(v.records, 5);
        assert_eq!(v.first_bad.unwrap().id, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("warren.db")).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append_audit(new_record("workspace.exec", "alice", &format!("ws{i}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let v = store.verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 50);
        assert_eq!(store.audit_count().await.unwrap(), 50);
        assert_eq!(ids(&all(&store).await), (1..=50).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_from_separate_stores_form_one_chain() {
        // Two Stores on one file share no mutex, like two processes: BEGIN IMMEDIATE alone
        // serializes them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warren.db");
        let stores = [
            Store::open(&path).await.unwrap(),
            Store::open(&path).await.unwrap(),
        ];
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = stores[i % 2].clone();
                tokio::spawn(async move {
                    store
                        .append_audit(new_record("workspace.exec", "bob", &format!("ws{i}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let v = stores[0].verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 40);
    }

    #[tokio::test]
    async fn verify_pages_through_long_logs() {
        let store = store_with(0).await;
        for i in 0..(VERIFY_PAGE + 5) {
            store
                .append_audit(new_record("workspace.exec", "alice", &format!("ws{i}")))
                .await
                .unwrap();
        }
        let v = store.verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, VERIFY_PAGE as u64 + 5);
        let id = VERIFY_PAGE + 2;
        exec(&store, &format!("DELETE FROM audit_log WHERE id = {id}")).await;
        let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
        assert_eq!(bad.id, id + 1);
    }

    #[tokio::test]
    async fn query_filters() {
        let store = store_with(0).await;
        let entries = [
            ("workspace.create", "alice", "dev"),   // 1
            ("workspace.exec", "bob", "dev"),       // 2
            ("token.revoke", "alice", "tok1"),      // 3
            ("workspace.delete", "carol", "other"), // 4
            ("workspaces.list", "alice", "none"),   // 5
            ("workspace", "bob", "dev"),            // 6
        ];
        for (action, actor, target) in entries {
            store
                .append_audit(new_record(action, actor, target))
                .await
                .unwrap();
        }
        // A record with no actor at all.
        let mut anonymous = new_record("workspace.create", "x", "dev");
        anonymous.actor_user_id = None;
        anonymous.actor_username = None;
        anonymous.actor_token_id = None;
        anonymous.outcome = AuditOutcome::Denied;
        anonymous.status = 401;
        store.append_audit(anonymous).await.unwrap(); // 7

        let query = |q: AuditQuery| {
            let store = store.clone();
            async move { ids(&store.query_audit(&q).await.unwrap()) }
        };
        let actor = |a: &str| AuditQuery {
            actor: Some(a.to_owned()),
            ..AuditQuery::default()
        };
        assert_eq!(query(AuditQuery::default()).await, [1, 2, 3, 4, 5, 6, 7]);
        // The actor matches the user id, the username or the token id.
        assert_eq!(query(actor("alice")).await, [1, 3, 5]);
        assert_eq!(query(actor("u-bob")).await, [2, 6]);
        assert_eq!(query(actor("t-carol")).await, [4]);
        assert_eq!(query(actor("nobody")).await, Vec::<i64>::new());

        let action = |a: &str| AuditQuery {
            action: Some(a.to_owned()),
            ..AuditQuery::default()
        };
        assert_eq!(query(action("workspace.create")).await, [1, 7]);
        assert_eq!(query(action("workspace.*")).await, [1, 2, 4, 7]);
        assert_eq!(query(action("token.*")).await, [3]);
        assert_eq!(query(action("workspace")).await, [6]);
        assert_eq!(query(action("workspace.%")).await, Vec::<i64>::new());
        assert_eq!(query(action("workspace_*")).await, Vec::<i64>::new());

        let target = |t: &str| AuditQuery {
            target: Some(t.to_owned()),
            ..AuditQuery::default()
        };
        assert_eq!(query(target("dev")).await, [1, 2, 6, 7]);
        assert_eq!(query(target("id-tok1")).await, [3]);

        // Filters combine.
        let q = AuditQuery {
            actor: Some("alice".to_owned()),
            action: Some("workspace.*".to_owned()),
            target: Some("dev".to_owned()),
            ..AuditQuery::default()
        };
        assert_eq!(query(q).await, [1]);

        // Pagination.
        let page = |after_id: Option<i64>, limit: u32| AuditQuery {
            after_id,
            limit,
            ..AuditQuery::default()
        };
        assert_eq!(query(page(None, 3)).await, [1, 2, 3]);
        assert_eq!(query(page(Some(3), 3)).await, [4, 5, 6]);
        assert_eq!(query(page(Some(6), 3)).await, [7]);
        assert_eq!(query(page(Some(7), 3)).await, Vec::<i64>::new());
        assert_eq!(query(page(Some(2), 0)).await, [3, 4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn query_time_range() {
        let store = store_with(0).await;
        // Give each record its own time, in the past so the offsets below are easy to read.
        for (i, at) in [
            "2024-05-01T11:59:59.999Z",
            "2024-05-01T12:00:00.000Z",
            "2024-05-01T12:00:00.500Z",
            "2024-05-01T12:00:01.000Z",
            "2024-05-01T13:00:00.000Z",
        ]
        .into_iter()
        .enumerate()
        {
            store
                .append_audit(new_record("workspace.exec", "alice", &format!("ws{i}")))
                .await
                .unwrap();
            sqlx::query("UPDATE audit_log SET at = ? WHERE id = ?")
                .bind(at)
                .bind(i64::try_from(i).unwrap() + 1)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let range = |since: Option<&str>, until: Option<&str>| {
            let q = AuditQuery {
                since: since.map(str::to_owned),
                until: until.map(str::to_owned),
                ..AuditQuery::default()
            };
            let store = store.clone();
            async move { ids(&store.query_audit(&q).await.unwrap()) }
        };
        // since is inclusive, until exclusive.
        assert_eq!(
            range(
                Some("2024-05-01T12:00:00.000Z"),
                Some("2024-05-01T12:00:01.000Z")
            )
            .await,
            [2, 3]
        );
        assert_eq!(
            range(Some("2024-05-01T12:00:00.500Z"), None).await,
            [3, 4, 5]
        );
        assert_eq!(range(None, Some("2024-05-01T12:00:00.500Z")).await, [1, 2]);
        // Other RFC 3339 spellings of the same instants mean the same thing.
        assert_eq!(
            range(
                Some("2024-05-01T12:00:00Z"),
                Some("2024-05-01T14:00:01+02:00")
            )
            .await,
            [2, 3]
        );
        // Sub-millisecond bounds round up: nothing is stored between .000 and .001.
        assert_eq!(
            range(
                Some("2024-05-01T11:59:59.9985Z"),
                Some("2024-05-01T12:00:00.0001Z")
            )
            .await,
            [1, 2]
        );
        assert_eq!(normalize_time("2024-05-01"), "2024-05-01");
    }

    #[test]
    fn field_diff_format() {
        use serde_json::json;
        assert_eq!(field_diff(&json!({"a": 1}), &json!({"a": 1})), None);
        assert_eq!(
            field_diff(
                &json!({"image": "debian:12", "cpus": 2, "gone": true, "same": [1]}),
                &json!({"image": "debian:13", "cpus": 2, "added": "x", "same": [1]}),
            )
            .unwrap(),
            r#"{"added":{"old":null,"new":"x"},"gone":{"old":true,"new":null},"image":{"old":"debian:12","new":"debian:13"}}"#
        );
        assert_eq!(
            field_diff(&json!(1), &json!("1")).unwrap(),
            r#"{"value":{"old":1,"new":"1"}}"#
        );
    }
}
