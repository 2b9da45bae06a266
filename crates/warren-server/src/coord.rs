//! Coordination between server replicas, behind traits: today one process with in-process
//! implementations (SQLite allows one server); with PostgreSQL, several replicas will implement
//! them with `LISTEN/NOTIFY` and advisory locks.
//!
//! What goes through here: invalidations that every replica must apply at once (a revoked token,
//! a changed user), so that revocation stays immediate whichever replica a request reaches; and
//! locks that make a check-then-act race-free across requests (quota admission: the check of a
//! user's running workspaces and the job that starts one more happen under the user's lock).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// A message every replica must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A token was revoked: forget it.
    TokenRevoked(String),
    /// A user changed (role, suspension): forget their tokens.
    UserChanged(String),
}

/// Publishes notices to every replica, this one included.
pub trait Pubsub: Send + Sync {
    /// Sends `n` to every subscriber of every replica.
    fn publish(&self, n: Notice);
    /// A receiver of every notice published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
}

/// The single-process implementation.
pub struct LocalPubsub {
    tx: broadcast::Sender<Notice>,
}

impl Default for LocalPubsub {
    fn default() -> Self {
        LocalPubsub {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Pubsub for LocalPubsub {
    fn publish(&self, n: Notice) {
        let _ = self.tx.send(n);
    }
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
}

/// A held lock: released when dropped.
pub type LockGuard = Box<dyn Send + Sync>;

/// Per-key mutual exclusion across every replica (in-process today; PostgreSQL advisory locks
/// later). A holder must not wait for another key's lock it could be waiting for in the other
/// order: take several keys in one order (see [`lock_all`]).
pub trait Locks: Send + Sync {
    /// Waits for the lock of `key` and holds it until the guard is dropped.
    fn lock<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = LockGuard> + Send + 'a>>;
}

/// Takes the locks of `keys` in sorted order (so two holders of overlapping sets never wait for
/// each other), each once.
pub async fn lock_all(locks: &dyn Locks, keys: &[String]) -> Vec<LockGuard> {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(locks.lock(k).await);
    }
    out
}

/// The single-process implementation: one async mutex per key, forgotten once nobody holds or
/// waits for it.
#[derive(Default)]
pub struct LocalLocks {
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

struct LocalGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    key: String,
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Ours (in the map) and this guard's (dropped after this): nobody else waits.
        if keys
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            keys.remove(&self.key);
        }
    }
}

impl Locks for LocalLocks {
    fn lock<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = LockGuard> + Send + 'a>> {
        Box::pin(async move {
            let m = self
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.to_owned())
                .or_default()
                .clone();
            let guard = m.lock_owned().await;
            Box::new(LocalGuard {
                _guard: guard,
                key: key.to_owned(),
                keys: self.keys.clone(),
            }) as LockGuard
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_at_a_time_and_forgotten_after() {
        let locks = Arc::new(LocalLocks::default());
        let g = locks.lock("user:a").await;
        // Another key is free.
        drop(locks.lock("user:b").await);
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("user:a").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder waits");
        drop(g);
        waiter.await.unwrap();
        assert!(locks.keys.lock().unwrap().is_empty());
        let both = lock_all(&*locks, &["b".into(), "a".into(), "a".into()]).await;
        assert_eq!(both.len(), 2);
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_notice() {
        let p = LocalPubsub::default();
        let mut a = p.subscribe();
        let mut b = p.subscribe();
        p.publish(Notice::TokenRevoked("t1".into()));
        assert_eq!(a.recv().await.unwrap(), Notice::TokenRevoked("t1".into()));
        assert_eq!(b.recv().await.unwrap(), Notice::TokenRevoked("t1".into()));
    }
}
