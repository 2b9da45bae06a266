//! Coordination between server replicas, behind traits: today one process with in-process
//! implementations (SQLite allows one server); with PostgreSQL, several replicas will implement
//! them with `LISTEN/NOTIFY` and advisory locks.
//!
//! What goes through here: invalidations that every replica must apply at once (a revoked token,
//! a changed user), so that revocation stays immediate whichever replica a request reaches.

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

#[cfg(test)]
mod tests {
    use super::*;

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
