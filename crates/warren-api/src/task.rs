//! Tasks: a request to run work in a fresh workspace (issue 8). The lifecycle is a pure state
//! machine like the workspace's: `queued → provisioning → running → collecting → succeeded |
//! failed | timed-out | canceled`. Every (state, event) pair is tested below.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Waiting for a slot under the concurrency limits (FIFO).
    Queued,
    /// Its workspace is being created, the repository cloned.
    Provisioning,
    /// The command (or the interactive agent) runs.
    Running,
    /// Results are being collected, the workspace destroyed.
    Collecting,
    /// Finished with exit code 0 (or completed with 0).
    Succeeded,
    /// Finished with another exit code, or could not run.
    Failed,
    /// Killed at its time limit or idle limit.
    TimedOut,
    /// Canceled by a user.
    Canceled,
}

/// Every state, in lifecycle order.
pub const TASK_STATES: [TaskState; 8] = [
    TaskState::Queued,
    TaskState::Provisioning,
    TaskState::Running,
    TaskState::Collecting,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::TimedOut,
    TaskState::Canceled,
];

impl TaskState {
    /// The stable text (`timed-out`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Provisioning => "provisioning",
            TaskState::Running => "running",
            TaskState::Collecting => "collecting",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed-out",
            TaskState::Canceled => "canceled",
        }
    }

    /// Finished: nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::TimedOut | TaskState::Canceled
        )
    }

    /// Holds a slot under the concurrency limits (a runner works on it).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::Provisioning | TaskState::Running | TaskState::Collecting
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<TaskState, String> {
        TASK_STATES
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = TASK_STATES.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown task state `{s}` (expected one of {})",
                    all.join(", ")
                )
            })
    }
}

/// How a task ended (the state `Collected` leads to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Succeeded,
    /// Another exit code, or an error.
    Failed,
    /// Time or idle limit.
    TimedOut,
    /// Canceled.
    Canceled,
}

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// The scheduler gave it a slot.
    Admit,
    /// Its workspace runs and the repository is cloned: the command starts.
    Started,
    /// The command ended, was killed (time limit, idle, cancel), or the agent completed; or a
    /// cancel or limit hit it while provisioning.
    Collect,
    /// Results collected and the workspace gone (or kept).
    Collected(Outcome),
    /// A user cancels it: a queued task is canceled at once; a provisioning or running one goes
    /// to collecting (its process is killed first); a collecting one stays there.
    Cancel,
    /// It cannot go on (its runner died with a server, its owner is gone): failed at once.
    Abort,
}

/// An event that does not apply to a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTaskTransition {
    /// The state.
    pub state: TaskState,
    /// The event.
    pub event: TaskEvent,
}

impl fmt::Display for InvalidTaskTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.state.is_terminal() {
            write!(f, "the task has finished ({})", self.state)
        } else {
            write!(
                f,
                "{:?} does not apply to a {} task",
                self.event, self.state
            )
        }
    }
}

impl std::error::Error for InvalidTaskTransition {}

/// The state `event` leads `state` to.
pub fn transition(state: TaskState, event: TaskEvent) -> Result<TaskState, InvalidTaskTransition> {
    use TaskEvent as E;
    use TaskState as S;
    let next = match (state, event) {
        (S::Queued, E::Admit) => S::Provisioning,
        (S::Provisioning, E::Started) => S::Running,
        (S::Provisioning | S::Running, E::Collect | E::Cancel) => S::Collecting,
        (S::Collecting, E::Cancel) => S::Collecting,
        (S::Queued, E::Cancel) => S::Canceled,
        (S::Collecting, E::Collected(o)) => match o {
            Outcome::Succeeded => S::Succeeded,
            Outcome::Failed => S::Failed,
            Outcome::TimedOut => S::TimedOut,
            Outcome::Canceled => S::Canceled,
        },
        (s, E::Abort) if !s.is_terminal() => S::Failed,
        _ => return Err(InvalidTaskTransition { state, event }),
    };
    Ok(next)
}

/// Checks a label `key=value`: key 1-63 of `[a-z0-9._-]` starting with a letter or digit, value
/// at most 253 printable characters without `=` or `,`.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && key.as_bytes()[0].is_ascii_alphanumeric();
    if !key_ok {
        return Err(format!(
            "label key `{key}`: 1 to 63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        ));
    }
    if value.len() > 253
        || value
            .chars()
            .any(|c| c.is_control() || c == ',' || c == '=')
    {
        return Err(format!(
            "label `{key}`: the value must be at most 253 characters, without control characters, `,` or `=`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome as O;
    use TaskEvent as E;
    use TaskState as S;

    fn events() -> Vec<TaskEvent> {
        vec![
            E::Admit,
            E::Started,
            E::Collect,
            E::Collected(O::Succeeded),
            E::Collected(O::Failed),
            E::Collected(O::TimedOut),
            E::Collected(O::Canceled),
            E::Cancel,
            E::Abort,
        ]
    }

    /// The whole table: every (state, event) pair, `None` where the event does not apply.
    fn expected(s: S, e: E) -> Option<S> {
        Some(match (s, e) {
            (S::Queued, E::Admit) => S::Provisioning,
            (S::Queued, E::Cancel) => S::Canceled,
            (S::Queued, E::Abort) => S::Failed,
            (S::Provisioning, E::Started) => S::Running,
            (S::Provisioning, E::Collect) => S::Collecting,
            (S::Provisioning, E::Cancel) => S::Collecting,
            (S::Provisioning, E::Abort) => S::Failed,
            (S::Running, E::Collect) => S::Collecting,
            (S::Running, E::Cancel) => S::Collecting,
            (S::Running, E::Abort) => S::Failed,
            (S::Collecting, E::Cancel) => S::Collecting,
            (S::Collecting, E::Abort) => S::Failed,
            (S::Collecting, E::Collected(O::Succeeded)) => S::Succeeded,
            (S::Collecting, E::Collected(O::Failed)) => S::Failed,
            (S::Collecting, E::Collected(O::TimedOut)) => S::TimedOut,
            (S::Collecting, E::Collected(O::Canceled)) => S::Canceled,
            _ => return None,
        })
    }

    #[test]
    fn every_pair() {
        let mut allowed = 0;
        for s in TASK_STATES {
            for e in events() {
                let got = transition(s, e);
                assert_eq!(got.clone().ok(), expected(s, e), "{s} + {e:?}");
                if let Err(err) = got {
                    assert_eq!(err.state, s);
                    assert!(!err.to_string().is_empty());
                } else {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, 16);
    }

    #[test]
    fn terminal_states_take_nothing() {
        for s in TASK_STATES.into_iter().filter(|s| s.is_terminal()) {
            for e in events() {
                let err = transition(s, e).unwrap_err();
                assert!(err.to_string().contains("finished"), "{err}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in TASK_STATES {
            assert_eq!(s.as_str().parse::<S>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(
                s.is_active() as u8 + s.is_terminal() as u8 + (s == S::Queued) as u8,
                1
            );
        }
        let e = "done".parse::<S>().unwrap_err();
        assert!(e.contains("timed-out"), "{e}");
    }

    #[test]
    fn labels() {
        assert!(check_label("team", "core").is_ok());
        assert!(check_label("a.b-c_d", "").is_ok());
        for (k, v) in [
            ("", "x"),
            ("Team", "x"),
            ("-a", "x"),
            ("a b", "x"),
            ("k", "a,b"),
            ("k", "a=b"),
        ] {
            assert!(check_label(k, v).is_err(), "{k}={v}");
        }
        assert!(check_label(&"k".repeat(64), "").is_err());
    }
}

/// `POST /api/v1/tasks`: run work in a fresh workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Template of the workspace.
    pub template: String,
    /// Template version (default: the active one).
    #[serde(default)]
    pub template_version: Option<i64>,
    /// Template parameters.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
    /// Team charged (as for workspaces).
    #[serde(default)]
    pub team: Option<String>,
    /// Repository cloned into the workspace (`http(s)://`, `git://` or `ssh://`); required
    /// unless the task is interactive.
    #[serde(default)]
    pub repo: Option<String>,
    /// Branch of `repo` to start from (default: the remote's default branch).
    #[serde(default)]
    pub base_branch: Option<String>,
    /// Branch created for the work (default `warren/task-<short id>`).
    #[serde(default)]
    pub branch: Option<String>,
    /// The agent command, as argv (exactly one of `command`, `shell`, `interactive`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The agent command as a `/bin/sh -c` string.
    #[serde(default)]
    pub shell: Option<String>,
    /// No command: an agent drives the workspace through the API with the credential the
    /// answer carries and calls `POST /tasks/{id}/complete` when done.
    #[serde(default)]
    pub interactive: bool,
    /// Time limit from the start of the run (`30m`; default `1h`, at most `24h`).
    #[serde(default)]
    pub time_limit: Option<String>,
    /// Idle limit: no output and no activity on the workspace for this long (`10m`; default
    /// `15m`).
    #[serde(default)]
    pub idle_limit: Option<String>,
    /// Labels `key` → value (filters of `GET /tasks?label=k=v`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Names of secrets the workspace gets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Globs (relative to the repository) of files collected as artifacts.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Keep the workspace when the task ends.
    #[serde(default)]
    pub keep: bool,
}

/// A collected artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifact {
    /// Path relative to the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// Id (`t_...`).
    pub id: String,
    /// Owner's username.
    pub owner: String,
    /// State.
    pub state: TaskState,
    /// Why it is in that state (`exit code 1`, `time limit`, `idle`, `server restarted`...).
    pub reason: Option<String>,
    /// Template.
    pub template: String,
    /// Template parameters.
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
    /// Repository.
    pub repo: Option<String>,
    /// Base branch, when given.
    pub base_branch: Option<String>,
    /// The task's branch.
    pub branch: String,
    /// The command (argv), if any.
    pub command: Option<Vec<String>>,
    /// The shell command, if any.
    pub shell: Option<String>,
    /// Interactive.
    pub interactive: bool,
    /// Time limit in seconds.
    pub time_limit_s: u64,
    /// Idle limit in seconds.
    pub idle_limit_s: u64,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Requested secrets.
    pub secrets: Vec<String>,
    /// Artifact globs.
    pub artifacts: Vec<String>,
    /// Whether the workspace is kept.
    pub keep: bool,
    /// Its workspace (id), once made.
    pub workspace_id: Option<String>,
    /// Where the repository is inside the workspace.
    pub repo_dir: Option<String>,
    /// The command's exit code (or the one the agent reported).
    pub exit_code: Option<i32>,
    /// The branch found pushed to the remote at the local HEAD, if any.
    pub pushed_branch: Option<String>,
    /// `git diff BASE...HEAD` (bounded: at most 1 MiB, then a marker line).
    pub diff: Option<String>,
    /// Collected artifacts.
    pub collected: Vec<Artifact>,
    /// Created.
    pub created_at: String,
    /// Admitted (left the queue).
    pub started_at: Option<String>,
    /// Finished.
    pub finished_at: Option<String>,
}

/// `GET /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<TaskView>,
}

/// The answer of `POST /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCreated {
    /// The task.
    pub task: TaskView,
    /// Interactive tasks: a Warren token restricted to the task's workspace (scopes
    /// `workspace:read`, `workspace:exec`), valid until the task ends. Shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `POST /api/v1/tasks/{id}/complete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// The outcome (default 0: succeeded).
    #[serde(default)]
    pub exit_code: Option<i32>,
}
