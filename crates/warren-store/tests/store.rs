//! Integration tests of the store against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

use warren_api::{Action, ErrorCode, Event, Workspace, WorkspaceName, WorkspaceState};
use warren_store::{NewWorkspace, Store, StoreError, WorkspaceRecord};

fn new_ws(name: &str, dir: &str) -> NewWorkspace {
    NewWorkspace {
        name: WorkspaceName::new(name).unwrap(),
        project_dir: dir.to_owned(),
        config_path: format!("{dir}/.devcontainer/devcontainer.json"),
        image: "debian:12".to_owned(),
        spec_json: r#"{"image":"debian:12"}"#.to_owned(),
        ownership: Default::default(),
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("nested").join("warren.db")
}

async fn open_fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_path(&dir)).await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn opens_fresh_file_and_reopens_with_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = Store::open(&path).await.unwrap();
    assert!(path.exists(), "database file and parent dirs are created");
    assert!(
        Path::new(&format!("{}-wal", path.display())).exists(),
        "database runs in WAL mode"
    );
    let created = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    assert_eq!(created.state, WorkspaceState::Pending);
    assert_eq!(created.generation, 1);
    assert_eq!(created.lifecycle_json, "{}");
    assert_eq!(created.runtime_json, "{}");
    assert_eq!(created.last_error, None);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.created_at.len(), "2024-05-01T12:00:00.000Z".len());
    assert!(created.created_at.ends_with('Z'));
    store.close().await;

    let reopened = Store::open(&path).await.unwrap();
    assert_eq!(reopened.get(&created.id).await.unwrap(), Some(created));
}

#[tokio::test]
async fn several_handles_can_open_a_fresh_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let opens = (0..4).map(|_| {
        let path = path.clone();
        tokio::spawn(async move { Store::open(&path).await })
    });
    let stores: Vec<Store> = futures_join(opens)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = stores[0].create_workspace(new_ws("a", "/a")).await.unwrap();
    assert_eq!(stores[3].get(&created.id).await.unwrap(), Some(created));
}

#[tokio::test]
async fn names_are_unique() {
    let (_dir, store) = open_fresh().await;
    store
        .create_workspace(new_ws("demo", "/src/one"))
        .await
        .unwrap();
    let err = store
        .create_workspace(new_ws("demo", "/src/two"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NameTaken { name } if name == "demo"),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::NameTaken);
    assert_eq!(err.to_string(), "a workspace named \"demo\" already exists");
    store
        .create_workspace(new_ws("demo2", "/src/two"))
        .await
        .unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn lookups_by_id_name_and_project_dir() {
    let (_dir, store) = open_fresh().await;
    let b = store
        .create_workspace(new_ws("beta", "/src/b"))
        .await
        .unwrap();
    let a = store
        .create_workspace(new_ws("alpha", "/src/a"))
        .await
        .unwrap();
    assert_eq!(store.get(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        store.get_by_name("", "beta").await.unwrap().as_ref(),
        Some(&b)
    );
    assert_eq!(
        store
            .find_by_project_dir("", "/src/a")
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
    assert_eq!(store.get("nope").await.unwrap(), None);
    assert_eq!(store.get_by_name("", "gamma").await.unwrap(), None);
    assert_eq!(store.find_by_project_dir("", "/src/c").await.unwrap(), None);
    let names: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name.into_string())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
}

#[tokio::test]
async fn full_lifecycle_records_states_actions_and_history() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let steps = [
        (
            Event::Start,
            WorkspaceState::Starting,
            vec![Action::Provision],
        ),
        (
            Event::Started,
            WorkspaceState::Running,
            vec![Action::RunLifecycle],
        ),
        (Event::Start, WorkspaceState::Running, vec![]),
        (
            Event::Stop,
            WorkspaceState::Stopping,
            vec![Action::StopContainer],
        ),
        (Event::Stopped, WorkspaceState::Stopped, vec![]),
        (
            Event::Delete,
            WorkspaceState::Deleting,
            vec![Action::Teardown],
        ),
        (Event::Deleted, WorkspaceState::Deleted, vec![]),
    ];
    let mut generation = ws.generation;
    for (i, (event, state, actions)) in steps.iter().enumerate() {
        let message = format!("step {i}");
        let (record, got) = store
            .apply(&ws.id, generation, *event, Some(&message))
            .await
            .unwrap();
        assert_eq!((record.state, &got), (*state, actions), "{event}");
        assert_eq!(record.generation, generation + 1);
        assert_eq!(store.get(&ws.id).await.unwrap(), Some(record.clone()));
        generation = record.generation;
    }

    let events = store.events(&ws.id).await.unwrap();
    assert_eq!(events.len(), steps.len());
    let mut from = WorkspaceState::Pending;
    for (i, (e, (event, to, _))) in events.iter().zip(&steps).enumerate() {
        assert_eq!((e.from_state, e.to_state, e.event), (from, *to, *event));
        assert_eq!(e.message.as_deref(), Some(format!("step {i}").as_str()));
        assert_eq!(e.workspace_id, ws.id);
        from = *to;
    }
    assert!(events
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));

    store.delete_record(&ws.id).await.unwrap();
    assert_eq!(store.get(&ws.id).await.unwrap(), None);
    assert_eq!(store.get_by_name("", "demo").await.unwrap(), None);
    assert_eq!(
        store.events(&ws.id).await.unwrap(),
        events,
        "history outlives the record"
    );
    // The name is free again.
    store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_transition_changes_nothing() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let err = store
        .apply(&ws.id, 1, Event::Started, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert_eq!(
        err.to_string(),
        "cannot finish starting a workspace that is pending"
    );
    assert_eq!(store.get(&ws.id).await.unwrap(), Some(ws.clone()));
    assert!(store.events(&ws.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn stale_generation_and_unknown_id_are_rejected() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let (started, _) = store.apply(&ws.id, 1, Event::Start, None).await.unwrap();
    let err = store.apply(&ws.id, 1, Event::Stop, None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { id, expected: 1, actual: 2 } if *id == ws.id),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(store.get(&ws.id).await.unwrap(), Some(started));
    assert_eq!(store.events(&ws.id).await.unwrap().len(), 1);

    let err = store
        .apply("missing", 1, Event::Start, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { id } if id == "missing"),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn stale_writer_on_another_handle_loses() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = Store::open(&path).await.unwrap();
    let b = Store::open(&path).await.unwrap();
    let ws = a
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let seen_by_b = b.get(&ws.id).await.unwrap().unwrap();

    let (after_a, _) = a
        .apply(&ws.id, ws.generation, Event::Start, None)
        .await
        .unwrap();
    let err = b
        .apply(&ws.id, seen_by_b.generation, Event::Delete, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = b
        .set_runtime_json(&ws.id, seen_by_b.generation, r#"{"pid":1}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(b.get(&ws.id).await.unwrap(), Some(after_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_with_same_generation_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(Store::open(&path).await.unwrap());
    }
    for round in 0..5 {
        let ws = stores[0]
            .create_workspace(new_ws(&format!("race{round}"), "/src/race"))
            .await
            .unwrap();
        let tasks = stores.iter().cloned().map(|store| {
            let id = ws.id.clone();
            tokio::spawn(async move { store.apply(&id, 1, Event::Start, None).await })
        });
        let results = futures_join(tasks).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Conflict { .. }),
                    "round {round}: {e}"
                );
            }
        }
        let stored = stores[1].get(&ws.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.state, stored.generation),
            (WorkspaceState::Starting, 2)
        );
        assert_eq!(stores[2].events(&ws.id).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn setters_persist_bump_generation_and_check_it() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();

    let r = store
        .set_last_error(&ws.id, 1, Some("pull failed"))
        .await
        .unwrap();
    assert_eq!(
        (r.generation, r.last_error.as_deref()),
        (2, Some("pull failed"))
    );
    let r = store
        .set_lifecycle_json(&ws.id, 2, r#"{"onCreate":true}"#)
        .await
        .unwrap();
    assert_eq!(
        (r.generation, r.lifecycle_json.as_str()),
        (3, r#"{"onCreate":true}"#)
    );
    let r = store
        .set_runtime_json(&ws.id, 3, r#"{"pid":42}"#)
        .await
        .unwrap();
    assert_eq!(
        (r.generation, r.runtime_json.as_str()),
        (4, r#"{"pid":42}"#)
    );
    let r = store
        .set_spec(&ws.id, 4, "alpine:3", r#"{"image":"alpine:3"}"#)
        .await
        .unwrap();
    assert_eq!((r.generation, r.image.as_str()), (5, "alpine:3"));
    assert_eq!(r.spec_json, r#"{"image":"alpine:3"}"#);
    let r = store.set_last_error(&ws.id, 5, None).await.unwrap();
    assert_eq!((r.generation, r.last_error.as_deref()), (6, None));

    assert_eq!(
        r.state,
        WorkspaceState::Pending,
        "setters do not change the state"
    );
    assert_eq!(store.get(&ws.id).await.unwrap(), Some(r.clone()));
    assert!(store.events(&ws.id).await.unwrap().is_empty());

    let err = store.set_runtime_json(&ws.id, 5, "{}").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 5,
                actual: 6,
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .set_last_error("missing", 1, Some("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.get(&ws.id).await.unwrap(), Some(r));
}

#[tokio::test]
async fn only_deleted_records_can_be_removed() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let (deleting, _) = store.apply(&ws.id, 1, Event::Delete, None).await.unwrap();
    let err = store.delete_record(&ws.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotDeleted {
                state: WorkspaceState::Deleting,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::InvalidState);
    assert_eq!(store.get(&ws.id).await.unwrap(), Some(deleting));
    let err = store.delete_record("missing").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn in_memory_store_works_and_records_convert_to_api() {
    let store = Store::open_in_memory().await.unwrap();
    let ws = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let (ws, _) = store.apply(&ws.id, 1, Event::Start, None).await.unwrap();
    let ws = store.set_last_error(&ws.id, 2, Some("boom")).await.unwrap();
    let api: Workspace = ws.to_api();
    assert_eq!(api.id, ws.id);
    assert_eq!(api.name.as_str(), "demo");
    assert_eq!(api.state, WorkspaceState::Starting);
    assert_eq!(api.image, "debian:12");
    assert_eq!(api.project_dir, "/src/demo");
    assert_eq!(api.generation, 3);
    assert_eq!(api.last_error.as_deref(), Some("boom"));
    assert_eq!(
        (api.created_at, api.updated_at),
        (ws.created_at, ws.updated_at)
    );
    assert_eq!(store.list().await.unwrap().len(), 1);
}

const CHILD_DB: &str = "WARREN_STORE_TEST_CHILD_DB";
const CHILD_ID: &str = "WARREN_STORE_TEST_CHILD_ID";

/// Not a test: the child half of the cross-process test, run only when spawned by it.
#[tokio::test]
#[ignore = "run by cross_process_applies_with_same_generation_have_one_winner"]
async fn child_process_apply() {
    // Without the parent's environment (e.g. `--include-ignored`) there is nothing to do.
    let (Ok(db), Ok(id)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ID)) else {
        return;
    };
    let store = Store::open(Path::new(&db)).await.unwrap();
    match store.apply(&id, 1, Event::Start, Some("child")).await {
        Ok(_) => println!("OUTCOME=won"),
        Err(StoreError::Conflict { .. }) => println!("OUTCOME=conflict"),
        Err(e) => println!("OUTCOME=error {e}"),
    }
}

#[tokio::test]
async fn cross_process_applies_with_same_generation_have_one_winner() {
    let (dir, store) = open_fresh().await;
    let ws: WorkspaceRecord = store
        .create_workspace(new_ws("demo", "/src/demo"))
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "child_process_apply", "--nocapture"])
                .env(CHILD_DB, db_path(&dir))
                .env(CHILD_ID, &ws.id)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let outcome = stdout
            .lines()
            .find_map(|l| l.strip_prefix("OUTCOME="))
            .unwrap_or_else(|| panic!("no outcome in {stdout}"))
            .to_owned();
        outcomes.push(outcome);
    }
    outcomes.sort();
    assert_eq!(outcomes, ["conflict", "conflict", "won"]);
    let stored = store.get(&ws.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.generation),
        (WorkspaceState::Starting, 2)
    );
    assert_eq!(store.events(&ws.id).await.unwrap().len(), 1);
}

/// Awaits spawned tasks in order, propagating panics.
async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let handles: Vec<_> = tasks.collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A database written by the walking skeleton (schema version 1 only) upgrades in place: its
/// workspaces and their history survive as host-local workspaces.
#[tokio::test]
async fn a_version_1_database_upgrades_keeping_its_workspaces() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1-migrations");
    std::fs::create_dir_all(&v1).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_workspaces.sql");
    std::fs::copy(&src, v1.join("0001_workspaces.sql")).unwrap();
    let db = dir.path().join("warren.db");
    {
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(v1.as_path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO workspaces (id, name, project_dir, config_path, image, spec_json, state, \
             generation, last_error, lifecycle_json, runtime_json, created_at, updated_at) \
             VALUES ('0123456789abcdef0123456789abcdef', 'old', '/src/old', '/src/old/.devcontainer.json', \
             'debian:12', '{}', 'stopped', 4, NULL, '{\"created\":true}', '{}', \
             '2026-01-01T00:00:00.000Z', '2026-01-02T00:00:00.000Z')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO workspace_events (workspace_id, at, from_state, to_state, event, message) \
             VALUES ('0123456789abcdef0123456789abcdef', '2026-01-02T00:00:00.000Z', 'running', 'stopping', 'stop', NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = Store::open(&db).await.unwrap();
    let old = store.get_by_name("", "old").await.unwrap().expect("kept");
    assert_eq!(old.id, "0123456789abcdef0123456789abcdef");
    assert_eq!(old.state, WorkspaceState::Stopped);
    assert_eq!(old.generation, 4);
    assert_eq!(old.lifecycle_json, r#"{"created":true}"#);
    assert_eq!(old.ownership.owner_id, "", "a host-local workspace");
    assert_eq!(old.ownership.limits_json, "{}");
    assert_eq!(store.events(&old.id).await.unwrap().len(), 1);
    // The upgraded schema works: names are per owner now.
    let mut other = new_ws("old", "/src/other");
    other.ownership.owner_id = "someone".into();
    store.create_workspace(other).await.unwrap();
    assert!(matches!(
        store.create_workspace(new_ws("old", "/src/third")).await,
        Err(StoreError::NameTaken { .. })
    ));
}

#[tokio::test]
async fn activity_keeps_the_latest_time_per_kind_and_goes_with_the_workspace() {
    let (_dir, store) = open_fresh().await;
    let ws = store
        .create_workspace(new_ws("act", "/src/act"))
        .await
        .unwrap();
    let row = |k: &str, at: &str| (ws.id.clone(), k.to_string(), at.to_string());
    store
        .record_activity(&[
            row("ssh", "2026-11-23T10:00:00.000Z"),
            row("exec", "2026-11-23T09:00:00.000Z"),
        ])
        .await
        .unwrap();
    // An older time (a late flush) never moves the clock back; unknown workspaces are skipped.
    store
        .record_activity(&[
            row("ssh", "2026-11-23T09:30:00.000Z"),
            row("exec", "2026-11-23T11:00:00.000Z"),
            (
                "gone".into(),
                "ssh".into(),
                "2026-11-23T11:00:00.000Z".into(),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.activity(&ws.id).await.unwrap(),
        vec![
            ("exec".to_string(), "2026-11-23T11:00:00.000Z".to_string()),
            ("ssh".to_string(), "2026-11-23T10:00:00.000Z".to_string()),
        ]
    );
    assert!(store.activity("gone").await.unwrap().is_empty());
    let (deleting, _) = store.apply(&ws.id, 1, Event::Delete, None).await.unwrap();
    let (_, _) = store
        .apply(&ws.id, deleting.generation, Event::Deleted, None)
        .await
        .unwrap();
    store.delete_record(&ws.id).await.unwrap();
    assert!(store.activity(&ws.id).await.unwrap().is_empty());
}
