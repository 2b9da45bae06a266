//! Workspace activity as the server sees it: SSH sessions, execs, terminals and port traffic.
//!
//! Activity is noted in memory on every use (cheap: a map insert) and written to the store in the
//! background at most once per workspace and kind per flush interval, so heavy traffic never turns
//! into heavy writes. Open sessions are counted too: an idle-shutdown policy can tell "nobody is
//! connected" from "someone is connected but quiet".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use warren_api::activity::ActivityKind;
use warren_store::Store;

/// Activity noted but not yet written, and sessions open now.
pub struct Activity {
    pending: Mutex<HashMap<(String, ActivityKind), String>>,
    open: Mutex<HashMap<(String, ActivityKind), u32>>,
    /// The latest activity of any kind per workspace id (noted here, or read from the store
    /// once by [`seed_latest`](Self::seed_latest)): what idle policies read, without a query.
    latest: Mutex<HashMap<String, String>>,
    /// The store, whose clock times activity (so tests with a fake clock see it in their time).
    store: Store,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Activity {
    /// Activity timed by `store`'s clock.
    pub fn new(store: Store) -> Activity {
        Activity {
            pending: Default::default(),
            open: Default::default(),
            latest: Default::default(),
            store,
        }
    }

    /// Notes activity of `kind` on workspace `ws` (an id) now.
    pub fn touch(&self, ws: &str, kind: ActivityKind) {
        let now = self.store.now();
        raise(&mut lock(&self.latest), ws, &now);
        lock(&self.pending).insert((ws.to_string(), kind), now);
    }

    /// Adds what the store recorded before this process started (kept where it is later than
    /// what is noted already).
    pub fn seed_latest(&self, stored: Vec<(String, String)>) {
        let mut latest = lock(&self.latest);
        for (ws, at) in stored {
            raise(&mut latest, &ws, &at);
        }
    }

    /// Reads the latest activity per workspace under one lock.
    pub fn with_latest<R>(&self, f: impl FnOnce(&HashMap<String, String>) -> R) -> R {
        f(&lock(&self.latest))
    }

    /// Forgets a removed workspace.
    pub fn forget(&self, ws: &str) {
        lock(&self.latest).remove(ws);
    }

    /// Workspaces with a session open now.
    pub fn with_open_sessions(&self) -> std::collections::HashSet<String> {
        lock(&self.open)
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|((w, _), _)| w.clone())
            .collect()
    }

    /// Notes the start of a session; the session counts as open, and its end is activity too,
    /// until the returned guard is dropped. `touch` it while data flows.
    pub fn session(self: &Arc<Self>, ws: &str, kind: ActivityKind) -> Session {
        self.touch(ws, kind);
        *lock(&self.open).entry((ws.to_string(), kind)).or_insert(0) += 1;
        Session {
            activity: self.clone(),
            ws: ws.to_string(),
            kind,
        }
    }

    /// Sessions of each kind open on `ws` now.
    pub fn open_sessions(&self, ws: &str) -> BTreeMap<ActivityKind, u32> {
        lock(&self.open)
            .iter()
            .filter(|((w, _), n)| w == ws && **n > 0)
            .map(|((_, k), n)| (*k, *n))
            .collect()
    }

    /// The last time of each kind of activity on `ws`: the store's, or a later one not written yet.
    pub async fn last(
        &self,
        store: &Store,
        ws: &str,
    ) -> Result<BTreeMap<ActivityKind, String>, warren_store::StoreError> {
        let mut last: BTreeMap<ActivityKind, String> = store
            .activity(ws)
            .await?
            .into_iter()
            .filter_map(|(k, at)| Some((ActivityKind::parse(&k)?, at)))
            .collect();
        for ((w, k), at) in lock(&self.pending).iter() {
            if w == ws && last.get(k).is_none_or(|stored| at > stored) {
                last.insert(*k, at.clone());
            }
        }
        Ok(last)
    }

    /// Writes what was noted since the last flush. On failure it is kept for the next one.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, String, String)> = lock(&self.pending)
            .drain()
            .map(|((ws, k), at)| (ws, k.as_str().to_string(), at))
            .collect();
        if batch.is_empty() {
            return;
        }
        if store.record_activity(&batch).await.is_err() {
            let mut pending = lock(&self.pending);
            for (ws, k, at) in batch {
                if let Some(kind) = ActivityKind::parse(&k) {
                    pending.entry((ws, kind)).or_insert(at);
                }
            }
        }
    }
}

/// Keeps the later of `at` and what `map` has for `ws`.
fn raise(map: &mut HashMap<String, String>, ws: &str, at: &str) {
    match map.get_mut(ws) {
        Some(seen) if seen.as_str() >= at => {}
        Some(seen) => *seen = at.to_owned(),
        None => {
            map.insert(ws.to_owned(), at.to_owned());
        }
    }
}

/// An open session (SSH channel, terminal, port forward); its end is noted when it is dropped.
pub struct Session {
    activity: Arc<Activity>,
    ws: String,
    kind: ActivityKind,
}

impl Session {
    /// Notes activity in this session (data flowed).
    pub fn touch(&self) {
        self.activity.touch(&self.ws, self.kind);
    }

    /// A handle that notes activity in this session from elsewhere (a stdin writer thread).
    pub fn toucher(&self) -> Toucher {
        Toucher {
            activity: self.activity.clone(),
            ws: self.ws.clone(),
            kind: self.kind,
        }
    }
}

/// Notes activity of one kind on one workspace.
#[derive(Clone)]
pub struct Toucher {
    activity: Arc<Activity>,
    ws: String,
    kind: ActivityKind,
}

impl Toucher {
    /// Notes activity now.
    pub fn touch(&self) {
        self.activity.touch(&self.ws, self.kind);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.activity.touch(&self.ws, self.kind);
        let mut open = lock(&self.activity.open);
        let key = (std::mem::take(&mut self.ws), self.kind);
        if let Some(n) = open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_count_while_open_and_flushes_merge_with_the_store() {
        let store = Store::open_in_memory().await.unwrap();
        let a = Arc::new(Activity::new(store.clone()));
        let s1 = a.session("w1", ActivityKind::Ssh);
        let s2 = a.session("w1", ActivityKind::Ssh);
        let _p = a.session("w2", ActivityKind::Pty);
        assert_eq!(
            a.open_sessions("w1"),
            BTreeMap::from([(ActivityKind::Ssh, 2)])
        );
        drop(s1);
        assert_eq!(
            a.open_sessions("w1"),
            BTreeMap::from([(ActivityKind::Ssh, 1)])
        );
        drop(s2);
        assert!(a.open_sessions("w1").is_empty());
        // Not yet written: the unknown workspace "w1" is still reported from memory.
        let last = a.last(&store, "w1").await.unwrap();
        assert_eq!(
            last.keys().copied().collect::<Vec<_>>(),
            [ActivityKind::Ssh]
        );
        // A flush writes (and drops rows of workspaces the store does not know).
        a.flush(&store).await;
        assert!(lock(&a.pending).is_empty());
        assert!(a.last(&store, "w1").await.unwrap().is_empty());
    }
}
