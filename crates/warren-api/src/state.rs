//! The workspace lifecycle state machine: states, events, engine actions and the pure
//! [`transition`] function that relates them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The lifecycle state of a workspace, as stored and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceState {
    /// Recorded but never started.
    Pending,
    /// Being provisioned (rootfs, bundle, supervisor) and started.
    Starting,
    /// The container is up and lifecycle commands have been scheduled.
    Running,
    /// The container is being stopped.
    Stopping,
    /// The container is not running; the workspace can be started again.
    Stopped,
    /// The workspace is being torn down; teardown is retried until it succeeds.
    Deleting,
    /// Everything is gone except the record.
    Deleted,
    /// Something went wrong; see the record's last error.
    Failed,
}

impl WorkspaceState {
    /// Every state, in declaration order.
    pub const ALL: [WorkspaceState; 8] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Deleting,
        Self::Deleted,
        Self::Failed,
    ];

    /// The stable lowercase name, identical to the serde representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for WorkspaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`WorkspaceState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workspace state {0:?} (expected one of pending, starting, running, stopping, stopped, deleting, deleted, failed)")]
pub struct UnknownState(pub String);

impl FromStr for WorkspaceState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Something that happened to a workspace: a user request or an observation by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The user asked to start the workspace.
    Start,
    /// Provisioning finished and the container is running.
    Started,
    /// The user asked to stop the workspace.
    Stop,
    /// The container has stopped.
    Stopped,
    /// The user asked to delete the workspace.
    Delete,
    /// Teardown finished.
    Deleted,
    /// An engine step failed.
    Fail,
    /// The workspace init died unexpectedly, as observed by the reconciler.
    Exited,
}

impl Event {
    /// Every event, in declaration order.
    pub const ALL: [Event; 8] = [
        Self::Start,
        Self::Started,
        Self::Stop,
        Self::Stopped,
        Self::Delete,
        Self::Deleted,
        Self::Fail,
        Self::Exited,
    ];

    /// The stable lowercase name, identical to the serde representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Started => "started",
            Self::Stop => "stop",
            Self::Stopped => "stopped",
            Self::Delete => "delete",
            Self::Deleted => "deleted",
            Self::Fail => "fail",
            Self::Exited => "exited",
        }
    }

    /// A verb phrase for messages: "cannot {verb} a workspace that is {state}".
    fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Started => "finish starting",
            Self::Stop => "stop",
            Self::Stopped => "finish stopping",
            Self::Delete => "delete",
            Self::Deleted => "finish deleting",
            Self::Fail => "mark as failed",
            Self::Exited => "record the exit of",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workspace event {0:?} (expected one of start, started, stop, stopped, delete, deleted, fail, exited)")]
pub struct UnknownEvent(pub String);

impl FromStr for Event {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

/// Work the engine must carry out after a transition has been recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create the rootfs and bundle, spawn the supervisor and start the container.
    Provision,
    /// Run the devcontainer lifecycle commands that are due.
    RunLifecycle,
    /// Stop the container (and its supervisor).
    StopContainer,
    /// Remove the container, mounts, cgroups and volumes, then the record.
    Teardown,
}

/// An event that is not allowed in the workspace's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a workspace that is {from}", event.verb())]
pub struct InvalidTransition {
    /// The state the workspace was in.
    pub from: WorkspaceState,
    /// The rejected event.
    pub event: Event,
}

impl InvalidTransition {
    /// The machine-readable code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidState
    }
}

/// Computes the state a workspace moves to when `event` happens in `state`, and the actions the
/// engine must then perform. Pure: it only decides, the caller records and acts.
pub fn transition(
    state: WorkspaceState,
    event: Event,
) -> Result<(WorkspaceState, Vec<Action>), InvalidTransition> {
    use Action::*;
    use Event as E;
    use WorkspaceState as S;

    let to = |next: WorkspaceState, actions: &[Action]| Ok((next, actions.to_vec()));
    let invalid = Err(InvalidTransition { from: state, event });

    // Every (state, event) pair is listed explicitly: adding a state or an event must not
    // silently fall into an existing arm.
    match (state, event) {
        (S::Pending | S::Stopped | S::Failed, E::Start) => to(S::Starting, &[Provision]),
        (S::Starting | S::Running, E::Start) => to(state, &[]),
        (S::Stopping | S::Deleting | S::Deleted, E::Start) => invalid,

        (S::Starting, E::Started) => to(S::Running, &[RunLifecycle]),
        (
            S::Pending
            | S::Running
            | S::Stopping
            | S::Stopped
            | S::Deleting
            | S::Deleted
            | S::Failed,
            E::Started,
        ) => invalid,

        (S::Running | S::Starting | S::Failed, E::Stop) => to(S::Stopping, &[StopContainer]),
        (S::Stopping | S::Stopped, E::Stop) => to(state, &[]),
        (S::Pending, E::Stop) => to(S::Stopped, &[]),
        (S::Deleting | S::Deleted, E::Stop) => invalid,

        (S::Stopping, E::Stopped) => to(S::Stopped, &[]),
        (
            S::Pending
            | S::Starting
            | S::Running
            | S::Stopped
            | S::Deleting
            | S::Deleted
            | S::Failed,
            E::Stopped,
        ) => invalid,

        (
            S::Pending
            | S::Starting
            | S::Running
            | S::Stopping
            | S::Stopped
            | S::Deleting
            | S::Failed,
            E::Delete,
        ) => to(S::Deleting, &[Teardown]),
        (S::Deleted, E::Delete) => invalid,

        (S::Deleting, E::Deleted) => to(S::Deleted, &[]),
        (
            S::Pending
            | S::Starting
            | S::Running
            | S::Stopping
            | S::Stopped
            | S::Deleted
            | S::Failed,
            E::Deleted,
        ) => invalid,

        (S::Pending | S::Starting | S::Running | S::Stopping, E::Fail) => {
            to(S::Failed, &[StopContainer])
        }
        (S::Failed | S::Deleting, E::Fail) => to(state, &[]),
        (S::Stopped | S::Deleted, E::Fail) => invalid,

        (S::Running | S::Starting, E::Exited) => to(S::Failed, &[]),
        (S::Stopping, E::Exited) => to(S::Stopped, &[]),
        (S::Pending | S::Stopped | S::Deleting | S::Deleted | S::Failed, E::Exited) => {
            to(state, &[])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Event as E;
    use WorkspaceState as S;

    /// `None` marks an invalid transition.
    type Expected = Option<(WorkspaceState, &'static [Action])>;

    const fn ok(to: WorkspaceState, actions: &'static [Action]) -> Expected {
        Some((to, actions))
    }
    const ERR: Expected = None;

    /// The full table: one row per state, one column per event, in `Event::ALL` order:
    /// Start, Started, Stop, Stopped, Delete, Deleted, Fail, Exited.
    const TABLE: [(WorkspaceState, [Expected; 8]); 8] = [
        (
            S::Pending,
            [
                ok(S::Starting, &[Provision]),
                ERR,
                ok(S::Stopped, &[]),
                ERR,
                ok(S::Deleting, &[Teardown]),
                ERR,
                ok(S::Failed, &[StopContainer]),
                ok(S::Pending, &[]),
            ],
        ),
        (
            S::Starting,
            [
                ok(S::Starting, &[]),
                ok(S::Running, &[RunLifecycle]),
                ok(S::Stopping, &[StopContainer]),
                ERR,
                ok(S::Deleting, &[Teardown]),
                ERR,
                ok(S::Failed, &[StopContainer]),
                ok(S::Failed, &[]),
            ],
        ),
        (
            S::Running,
            [
                ok(S::Running, &[]),
                ERR,
                ok(S::Stopping, &[StopContainer]),
                ERR,
                ok(S::Deleting, &[Teardown]),
                ERR,
                ok(S::Failed, &[StopContainer]),
                ok(S::Failed, &[]),
            ],
        ),
        (
            S::Stopping,
            [
                ERR,
                ERR,
                ok(S::Stopping, &[]),
                ok(S::Stopped, &[]),
                ok(S::Deleting, &[Teardown]),
                ERR,
                ok(S::Failed, &[StopContainer]),
                ok(S::Stopped, &[]),
            ],
        ),
        (
            S::Stopped,
            [
                ok(S::Starting, &[Provision]),
                ERR,
                ok(S::Stopped, &[]),
                ERR,
                ok(S::Deleting, &[Teardown]),
                ERR,
                ERR,
                ok(S::Stopped, &[]),
            ],
        ),
        (
            S::Deleting,
            [
                ERR,
                ERR,
                ERR,
                ERR,
                ok(S::Deleting, &[Teardown]),
                ok(S::Deleted, &[]),
                ok(S::Deleting, &[]),
                ok(S::Deleting, &[]),
            ],
        ),
        (
            S::Deleted,
            [ERR, ERR, ERR, ERR, ERR, ERR, ERR, ok(S::Deleted, &[])],
        ),
        (
            S::Failed,
            [
                ok(S::Starting, &[Provision]),
                ERR,
                ok(S::Stopping, &[StopContainer]),
                ERR,
                ok(S::Deleting, &[Teardown]),
                ERR,
                ok(S::Failed, &[]),
                ok(S::Failed, &[]),
            ],
        ),
    ];

    #[test]
    fn every_state_event_pair_matches_the_table() {
        let rows: Vec<_> = TABLE.iter().map(|(state, _)| *state).collect();
        assert_eq!(rows, S::ALL, "the table must have one row per state");
        let mut checked = 0;
        for (state, row) in TABLE {
            for (event, expected) in E::ALL.into_iter().zip(row) {
                let got = transition(state, event);
                match expected {
                    Some((to, actions)) => {
                        assert_eq!(got, Ok((to, actions.to_vec())), "{state} + {event}")
                    }
                    None => assert_eq!(
                        got,
                        Err(InvalidTransition { from: state, event }),
                        "{state} + {event}"
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 64);
    }

    #[test]
    fn invalid_transition_message_names_the_request_and_state() {
        let err = transition(S::Deleting, E::Stop).unwrap_err();
        assert_eq!(err.to_string(), "cannot stop a workspace that is deleting");
        assert_eq!(err.code(), ErrorCode::InvalidState);
        let err = transition(S::Deleted, E::Delete).unwrap_err();
        assert_eq!(err.to_string(), "cannot delete a workspace that is deleted");
    }

    #[test]
    fn states_and_events_round_trip_through_strings_and_serde() {
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<WorkspaceState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(
                serde_json::from_str::<WorkspaceState>(&json).unwrap(),
                state
            );
        }
        for event in E::ALL {
            assert_eq!(event.as_str().parse::<Event>(), Ok(event));
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
        }
        assert!("Running".parse::<WorkspaceState>().is_err());
        assert!("bogus".parse::<Event>().is_err());
        assert_eq!(
            serde_json::to_string(&Action::RunLifecycle).unwrap(),
            "\"run_lifecycle\""
        );
    }
}
