//! The toolbox's file API against a real server and real busybox workspaces: a 50 MiB round trip,
//! the file operations, searches, directories as tar both ways (symlinks kept), a watch; and
//! attacks: `..` chains (plain and `%2e%2e`), NUL bytes, symlinks to `/` and `/proc/1/root/..`
//! aimed at a path that exists only on the host, hostile tar archives, `/etc/shadow` as the
//! remote user, another user's workspace, uploads over the limit and broken-off uploads.

mod common;

use std::io::Read;
use std::time::Duration;

use common::TestServer;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;
use warren_server::config::ConfigLayer;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n";

/// A busybox image with a root-only `/etc/shadow` and dev's home owned by dev, imported as `bb`;
/// template `tb` (remote user dev).
async fn image(s: &TestServer) {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = s.dir.path().join("rootfs-tb");
    common::busybox_rootfs(&rootfs);
    let shadow = rootfs.join("etc/shadow");
    std::fs::write(&shadow, "root:SECRET-HASH:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(rootfs.join("home/dev"), Some(1000), Some(1000)).unwrap();
    let o = std::process::Command::new(common::warren_exe())
        .args(["image", "import"])
        .arg(&rootfs)
        .arg("bb")
        .env("WARREN_STATE_DIR", s.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.push_template(
        "tb",
        json!({"image": "bb", "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
}

fn files_url(s: &TestServer, ws: &str, rest: &str) -> String {
    format!("{}/api/v1/workspaces/{ws}/toolbox/files{rest}", s.url)
}

fn q(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let st = r.status();
    let t = r.text().await.unwrap();
    (st, serde_json::from_str(&t).unwrap_or(Value::Null))
}

/// PUT a file.
async fn put(
    s: &TestServer,
    token: &str,
    ws: &str,
    query: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let r = s
        .http
        .put(files_url(s, ws, &format!("?{query}")))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

/// GET a file's bytes.
async fn get_bytes(s: &TestServer, token: &str, ws: &str, query: &str) -> (StatusCode, Vec<u8>) {
    let r = s
        .http
        .get(files_url(s, ws, &format!("?{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.bytes().await.unwrap().to_vec())
}

/// GET a JSON answer of `.../toolbox/files{rest}`.
async fn get_json(s: &TestServer, token: &str, ws: &str, rest: &str) -> (StatusCode, Value) {
    let r = s
        .http
        .get(files_url(s, ws, rest))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

async fn post_json(
    s: &TestServer,
    token: &str,
    ws: &str,
    rest: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = s
        .http
        .post(files_url(s, ws, rest))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

/// Runs `cmd` with `sh -c` in the workspace (as `user`, default the remote user); stdout.
async fn sh(s: &TestServer, token: &str, ws: &str, cmd: &str, user: Option<&str>) -> String {
    let r = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&json!({"command": ["sh", "-c", cmd], "user": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let mut out = String::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        if v["type"] == "stdout" {
            out.push_str(v["text"].as_str().unwrap_or(""));
        }
    }
    out
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_operations_search_and_tar() {
    let s = TestServer::start().await;
    image(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    s.create_workspace(&alice, "tb", "tb").await;

    // 50 MiB up and down, byte for byte.
    let big: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = sha(&big);
    let (st, v) = put(&s, &alice, "tb", "path=/home/dev/big.bin", big.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["size"], 50u64 << 20);
    assert_eq!(v["sha256"], want.as_str());
    assert!(sh(&s, &alice, "tb", "sha256sum /home/dev/big.bin", None)
        .await
        .starts_with(&want));
    let r = s
        .http
        .get(files_url(&s, "tb", "?path=/home/dev/big.bin"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(50 << 20));
    assert_eq!(sha(&r.bytes().await.unwrap()), want);
    drop(big);
    // What it made belongs to the remote user, with the default mode; no temporary file remains.
    let out = sh(
        &s,
        &alice,
        "tb",
        "stat -c '%u %a' /home/dev/big.bin; ls -a /home/dev",
        None,
    )
    .await;
    assert!(out.starts_with("1000 644\n"), "{out}");
    assert!(!out.contains(".warren-"), "{out}");

    // A relative path is in the workspace folder; a rewrite is atomic and audited with a diff.
    let (st, v) = put(&s, &alice, "tb", "path=notes.txt&mode=0640", "hello\n").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let notes = v["path"].as_str().unwrap().to_string();
    assert!(
        notes.starts_with('/') && notes.ends_with("/notes.txt"),
        "{notes}"
    );
    let (st, v) = put(&s, &alice, "tb", "path=notes.txt", "hello\nworld\n").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = get_json(&s, &alice, "tb", "/stat?path=notes.txt").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "0640", "the old mode is kept: {v}");
    assert_eq!(v["size"], 12);
    let (st, b) = get_bytes(&s, &alice, "tb", "path=notes.txt").await;
    assert_eq!((st, b.as_slice()), (StatusCode::OK, &b"hello\nworld\n"[..]));
    let audit = s
        .http
        .get(format!(
            "{}/api/v1/audit?action=session.file_write&format=jsonl",
            s.url
        ))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let recs: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let details: Vec<Value> = recs
        .iter()
        .map(|r| {
            serde_json::from_str(r["details_json"].as_str().unwrap_or("null"))
                .unwrap_or(r["details"].clone())
        })
        .collect();
    let last = details
        .iter()
        .rev()
        .find(|d| d["path"] == notes.as_str())
        .unwrap_or_else(|| panic!("no file_write of {notes}: {audit}"));
    assert_eq!(last["size"], 12);
    assert_eq!(last["sha256"], sha(b"hello\nworld\n").as_str());
    let diff = last["diff"].as_str().unwrap();
    assert!(diff.contains(" hello\n+world\n"), "{diff}");
    assert!(
        details.iter().any(|d| d["path"] == "/home/dev/big.bin"
            && d["diff"].is_null()
            && d["sha256"] == want.as_str()),
        "the big file is recorded without a diff: {audit}"
    );

    // An empty upload is an empty file; reading it gives nothing.
    let (st, v) = put(&s, &alice, "tb", "path=/home/dev/empty", Vec::new()).await;
    assert_eq!((st, v["size"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
    assert_eq!(v["sha256"], sha(b"").as_str());
    let (st, b) = get_bytes(&s, &alice, "tb", "path=/home/dev/empty").await;
    assert_eq!((st, b.len()), (StatusCode::OK, 0));

    // mkdir, then files to search.
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/mkdir",
        json!({"path": "/home/dev/proj/src/a"}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "missing parents: {v}");
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/mkdir",
        json!({"path": "/home/dev/proj/src/a", "parents": true}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "dir");
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/mkdir",
        json!({"path": "/home/dev/proj/src/a"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    for (p, body) in [
        (
            "proj/src/main.rs",
            &b"fn main() {\n    // TODO: more\n}\n"[..],
        ),
        ("proj/src/a/lib.rs", b"pub fn x() {}\n// TODO lib\n"),
        ("proj/README.md", b"# proj\nnothing to do\n"),
        ("proj/blob.bin", b"TODO\0binary\n"),
    ] {
        let (st, v) = put(
            &s,
            &alice,
            "tb",
            &format!("path=/home/dev/{p}"),
            body.to_vec(),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{p}: {v}");
    }
    // mkdir=true makes the parents of an upload.
    let (st, v) = put(&s, &alice, "tb", "path=/home/dev/proj/docs/deep/x.txt", "x").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = put(
        &s,
        &alice,
        "tb",
        "path=/home/dev/proj/docs/deep/x.txt&mkdir=true",
        "x",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    sh(
        &s,
        &alice,
        "tb",
        "ln -s src/main.rs /home/dev/proj/link && ln -s / /home/dev/proj/root",
        None,
    )
    .await;

    // list and stat.
    let (st, v) = get_json(&s, &alice, "tb", "/list?path=/home/dev/proj").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let n = names(&v);
    assert_eq!(
        n,
        ["README.md", "blob.bin", "docs", "link", "root", "src"]
            .map(|x| format!("/home/dev/proj/{x}"))
    );
    let link = &v.as_array().unwrap()[3];
    assert_eq!(
        (link["kind"].as_str(), link["target"].as_str()),
        (Some("symlink"), Some("src/main.rs"))
    );
    let (st, v) = get_json(
        &s,
        &alice,
        "tb",
        "/list?path=/home/dev/proj&recursive=true&limit=3",
    )
    .await;
    assert_eq!((st, v.as_array().map(Vec::len)), (StatusCode::OK, Some(3)));
    let (_, v) = get_json(&s, &alice, "tb", "/list?path=/home/dev/proj&recursive=true").await;
    let n = names(&v);
    assert!(
        n.contains(&"/home/dev/proj/src/a/lib.rs".to_string()),
        "{n:?}"
    );
    assert!(
        !n.iter().any(|p| p.starts_with("/home/dev/proj/root/")),
        "symlinks are not followed: {n:?}"
    );
    let (st, v) = get_json(&s, &alice, "tb", "/stat?path=/home/dev/proj/src/main.rs").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (v["kind"].as_str(), v["size"].as_u64(), v["uid"].as_u64()),
        (Some("file"), Some(32), Some(1000))
    );
    let (st, v) = get_json(&s, &alice, "tb", "/stat?path=/home/dev/proj/nope").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );

    // chmod, move, remove.
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/chmod",
        json!({"path": "/home/dev/proj/src/main.rs", "mode": "600"}),
    )
    .await;
    assert_eq!(
        (st, v["mode"].as_str()),
        (StatusCode::OK, Some("0600")),
        "{v}"
    );
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/move",
        json!({"from": "/home/dev/proj/README.md", "to": "/home/dev/proj/docs.md"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = post_json(
        &s,
        &alice,
        "tb",
        "/move",
        json!({"from": "/home/dev/proj/docs.md", "to": "/home/dev/proj/blob.bin"}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = post_json(&s, &alice, "tb", "/move", json!({"from": "/home/dev/proj/docs.md", "to": "/home/dev/proj/blob.bin", "overwrite": true})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, b) = get_bytes(&s, &alice, "tb", "path=/home/dev/proj/blob.bin").await;
    assert_eq!(b, b"# proj\nnothing to do\n");
    let del = |rest: String| {
        let s = &s;
        let alice = &alice;
        async move {
            json_of(
                s.http
                    .delete(files_url(s, "tb", &rest))
                    .bearer_auth(alice)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (st, v) = del("?path=/home/dev/proj/docs".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "not empty: {v}");
    assert!(v["message"].as_str().unwrap().contains("recursive"), "{v}");
    let (st, _) = del("?path=/home/dev/proj/docs&recursive=true".into()).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = get_json(&s, &alice, "tb", "/stat?path=/home/dev/proj/docs").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Removing a symlink to `/` removes the link only.
    let (st, _) = del("?path=/home/dev/proj/root&recursive=true".into()).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(sh(&s, &alice, "tb", "ls /bin/busybox", None)
        .await
        .contains("busybox"));
    put(
        &s,
        &alice,
        "tb",
        "path=/home/dev/proj/blob.bin",
        b"TODO\0binary\n".to_vec(),
    )
    .await;

    // Search by glob and by content (the binary file is skipped).
    let (st, v) = get_json(&s, &alice, "tb", "/search?path=/home/dev/proj&glob=*.rs").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        names(&v),
        ["/home/dev/proj/src/a/lib.rs", "/home/dev/proj/src/main.rs"]
    );
    let (_, v) = get_json(
        &s,
        &alice,
        "tb",
        &format!("/search?path=/home/dev/proj&glob={}", q("src/*.rs")),
    )
    .await;
    assert_eq!(names(&v), ["/home/dev/proj/src/main.rs"]);
    let (st, v) = get_json(&s, &alice, "tb", "/search?path=/home/dev/proj&content=TODO").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let m = v.as_array().unwrap();
    assert_eq!(m.len(), 2, "{v}");
    assert_eq!(
        (m[0]["path"].as_str(), m[0]["line"].as_u64()),
        (Some("/home/dev/proj/src/a/lib.rs"), Some(2))
    );
    assert_eq!(m[1]["text"], "    // TODO: more");
    let (st, v) = get_json(&s, &alice, "tb", "/search?path=/home/dev/proj").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // A directory is not a file: the error says how to get it.
    let (st, v) = get_json(&s, &alice, "tb", "?path=/home/dev/proj").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("format=tar"), "{v}");

    // Download as tar: the symlink is a symlink.
    let (st, tarball) = get_bytes(&s, &alice, "tb", "path=/home/dev/proj&format=tar").await;
    assert_eq!(st, StatusCode::OK);
    let mut ar = tar::Archive::new(&tarball[..]);
    let mut seen = vec![];
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "link" {
            assert!(e.header().entry_type().is_symlink());
            assert_eq!(
                e.link_name().unwrap().unwrap().display().to_string(),
                "src/main.rs"
            );
        }
        if p == "src/main.rs" {
            let mut t = String::new();
            e.read_to_string(&mut t).unwrap();
            assert!(t.contains("TODO: more"));
            assert_eq!(e.header().mode().unwrap() & 0o777, 0o600);
        }
        seen.push(p);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "blob.bin",
            "link",
            "src",
            "src/a",
            "src/a/lib.rs",
            "src/main.rs"
        ]
    );

    // Upload it elsewhere: the same tree, symlink included.
    let r = s
        .http
        .put(files_url(&s, "tb", "/tar?path=/home/dev/copy"))
        .bearer_auth(&alice)
        .body(tarball.clone())
        .send()
        .await
        .unwrap();
    let (st, v) = json_of(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["files"].as_u64(),
            v["dirs"].as_u64(),
            v["symlinks"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "{v}"
    );
    let out = sh(&s, &alice, "tb", "cd /home/dev/copy && readlink link && cat link && find . | sort && stat -c %a src/main.rs && ls -a", None).await;
    assert!(out.starts_with("src/main.rs\nfn main() {\n"), "{out}");
    assert!(out.contains("./src/a/lib.rs\n"), "{out}");
    assert!(out.contains("\n600\n"), "{out}");
    assert!(
        !out.contains(".warren-"),
        "the staging directory is gone: {out}"
    );
    // Each file it made is in the session audit.
    let audit = s
        .http
        .get(format!(
            "{}/api/v1/audit?action=session.file_write&format=jsonl",
            s.url
        ))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains("/home/dev/copy/src/a/lib.rs"), "{audit}");
    assert!(
        audit.contains(&sha(b"pub fn x() {}\n// TODO lib\n")),
        "{audit}"
    );
}

/// Reads SSE events from `resp` until `done` says so (or 60 s pass).
async fn sse_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    events: &mut Vec<Value>,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(events) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no such events: {events:?}"))
            .expect("the stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            for l in block.lines() {
                if let Some(d) = l.strip_prefix("data: ") {
                    events.push(serde_json::from_str(d).unwrap());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_changes_and_ends_with_its_client() {
    let s = TestServer::start().await;
    image(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    s.create_workspace(&alice, "tw", "tb").await;
    let (st, v) = post_json(&s, &alice, "tw", "/mkdir", json!({"path": "/home/dev/w"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let resp = s
        .http
        .get(files_url(
            &s,
            "tw",
            "/watch?path=/home/dev/w&recursive=true",
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = vec![];
    sh(&s, &alice, "tw", "cd /home/dev/w && echo a > f && echo b >> f && mkdir sub && echo c > sub/g && mv f h && rm h", None).await;
    let has = |ev: &[Value], kind: &str, path: &str| {
        ev.iter().any(|e| e["kind"] == kind && e["path"] == path)
    };
    sse_until(&mut stream, &mut buf, &mut events, |ev| {
        has(ev, "removed", "/home/dev/w/h")
    })
    .await;
    assert!(has(&events, "created", "/home/dev/w/f"), "{events:?}");
    assert!(has(&events, "modified", "/home/dev/w/f"), "{events:?}");
    assert!(has(&events, "created", "/home/dev/w/sub"), "{events:?}");
    assert!(has(&events, "created", "/home/dev/w/sub/g"), "{events:?}");
    assert!(
        events.iter().any(|e| e["kind"] == "renamed"
            && e["path"] == "/home/dev/w/h"
            && e["from"] == "/home/dev/w/f"),
        "{events:?}"
    );
    // A directory made later is watched too.
    sh(&s, &alice, "tw", "echo d > /home/dev/w/sub/late", None).await;
    sse_until(&mut stream, &mut buf, &mut events, |ev| {
        has(ev, "modified", "/home/dev/w/sub/late")
    })
    .await;

    // A missing directory is a 404 before any stream.
    let (st, v) = get_json(&s, &alice, "tw", "/watch?path=/home/dev/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // The client goes: the watcher inside the workspace goes too.
    let ps = "ps -o args | grep -c '[_]_toolbox watch' || true";
    assert_eq!(sh(&s, &alice, "tw", ps, Some("root")).await.trim(), "1");
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if sh(&s, &alice, "tw", ps, Some("root")).await.trim() == "0" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Likewise a download whose client leaves midway.
    let (st, v) = put(&s, &alice, "tw", "path=/home/dev/big", vec![5u8; 64 << 20]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let resp = s
        .http
        .get(files_url(&s, "tw", "?path=/home/dev/big"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    assert!(!body.next().await.unwrap().unwrap().is_empty());
    let ps = "ps -o args | grep -c '[_]_toolbox read' || true";
    assert_eq!(
        sh(&s, &alice, "tw", ps, Some("root")).await.trim(),
        "1",
        "the reader waits for its client"
    );
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sh(&s, &alice, "tw", ps, Some("root")).await.trim() != "0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tar entry with a raw name (the tar crate refuses to write `..` or absolute names itself).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let o = h.as_old_mut();
        o.name = [0; 100];
        o.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            o.linkname = [0; 100];
            o.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tarball(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(vec![]);
    for (n, k, l, d) in entries {
        raw_entry(&mut b, n, *k, *l, d);
    }
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_stay_inside_the_workspace() {
    let s = TestServer::start_with(ConfigLayer {
        toolbox_max_upload: Some(1 << 20),
        ..Default::default()
    })
    .await;
    image(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    s.create_workspace(&alice, "ta", "tb").await;
    // A path that exists only on the host: the server's own state directory, with a file in it.
    let host_only = s.state().join("host-only-secret");
    std::fs::write(&host_only, "HOST SECRET").unwrap();
    let host = host_only.display().to_string();

    // `..` chains, plain and percent-encoded, end at the container's root.
    for query in [
        format!("path={}", q(&format!("../../../../../../../..{host}"))),
        format!("path={}", q(&format!("/../../..{host}"))),
        format!("path=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{}", q(&host)),
        format!("path={}", q(&host)),
    ] {
        let (st, b) = get_bytes(&s, &alice, "ta", &query).await;
        assert_eq!(
            st,
            StatusCode::NOT_FOUND,
            "{query}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let (st, b) = get_bytes(
        &s,
        &alice,
        "ta",
        "path=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        String::from_utf8_lossy(&b),
        PASSWD,
        "the workspace's passwd, not the host's"
    );
    // NUL bytes and empty paths.
    for query in ["path=a%00b", "path=", "path=%00"] {
        let (st, b) = get_bytes(&s, &alice, "ta", query).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["code"], "invalid_request");
    }
    let (st, v) = post_json(
        &s,
        &alice,
        "ta",
        "/mkdir",
        json!({"path": "/home/dev/x\u{0}y"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{v}"
    );

    // Bad queries and values: 400 naming the problem, before anything runs.
    for rest in [
        "?path=/tmp&frobnicate=1",
        "/list?path=/tmp&limit=abc",
        "/list?path=/tmp&limit=0",
        "/search?path=/tmp&glob=",
        "?path=/tmp&format=zip",
        "?path=/tmp&user=a:b",
    ] {
        let (st, v) = get_json(&s, &alice, "ta", rest).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{rest}: {v}"
        );
    }
    let (st, v) = post_json(
        &s,
        &alice,
        "ta",
        "/chmod",
        json!({"path": "/tmp", "mode": "rwx"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("mode"), "{v}");
    let (st, v) = put(&s, &alice, "ta", "path=/home/dev/m&mode=999", "x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Symlinks to `/` and to `/proc/1/root/..` lead to the container's root, never the host's.
    sh(
        &s,
        &alice,
        "ta",
        "ln -s / /home/dev/root && ln -s /proc/1/root/.. /home/dev/esc",
        None,
    )
    .await;
    for link in ["/home/dev/root", "/home/dev/esc"] {
        let (st, b) = get_bytes(
            &s,
            &alice,
            "ta",
            &format!("path={}", q(&format!("{link}{host}"))),
        )
        .await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN,
            "{link}: {st} {}",
            String::from_utf8_lossy(&b)
        );
        assert!(!String::from_utf8_lossy(&b).contains("HOST SECRET"));
        let (st, v) = get_json(
            &s,
            &alice,
            "ta",
            &format!(
                "/list?path={}",
                q(&format!("{link}{}", s.state().display()))
            ),
        )
        .await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN,
            "{link}: {st} {v}"
        );
        let (st, v) = put(
            &s,
            &alice,
            "ta",
            &format!("path={}", q(&format!("{link}{host}.pwned"))),
            "x",
        )
        .await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN,
            "{link}: {st} {v}"
        );
        // Made with its parents, it lands in the container's /tmp: a path like the host's, but
        // inside the workspace.
        let (st, v) = put(
            &s,
            &alice,
            "ta",
            &format!("path={}&mkdir=true", q(&format!("{link}{host}.pwned"))),
            "x",
        )
        .await;
        assert!(
            st == StatusCode::OK || st == StatusCode::FORBIDDEN,
            "{link}: {st} {v}"
        );
        assert!(
            !std::path::Path::new(&format!("{host}.pwned")).exists(),
            "{link}"
        );
        if st == StatusCode::OK {
            let out = sh(&s, &alice, "ta", &format!("cat {host}.pwned"), None).await;
            assert_eq!(out, "x", "{link}");
        }
    }
    assert!(!std::path::Path::new(&format!("{host}.pwned")).exists());
    // Through the symlink to `/` is the container's /etc/passwd.
    let (st, b) = get_bytes(&s, &alice, "ta", "path=/home/dev/root/etc/passwd").await;
    assert_eq!(
        (st, String::from_utf8_lossy(&b).into_owned()),
        (StatusCode::OK, PASSWD.to_string())
    );
    // A tar of the symlink to `/` holds the symlink, not the container (let alone the host).
    sh(
        &s,
        &alice,
        "ta",
        "mkdir /home/dev/t && ln -s / /home/dev/t/root",
        None,
    )
    .await;
    let (st, t) = get_bytes(&s, &alice, "ta", "path=/home/dev/t&format=tar").await;
    assert_eq!(st, StatusCode::OK);
    let n = tar::Archive::new(&t[..]).entries().unwrap().count();
    assert_eq!(n, 1);

    // /etc/shadow as the remote user: refused both ways, unchanged, nothing left in /etc.
    let (st, b) = get_bytes(&s, &alice, "ta", "path=/etc/shadow").await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied")),
        "{v}"
    );
    assert!(!String::from_utf8_lossy(&b).contains("SECRET-HASH"));
    let (st, v) = put(
        &s,
        &alice,
        "ta",
        "path=/etc/shadow",
        "root::0:0:99999:7:::\n",
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied")),
        "{v}"
    );
    let (st, v) = post_json(
        &s,
        &alice,
        "ta",
        "/chmod",
        json!({"path": "/etc/shadow", "mode": "0666"}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = post_json(
        &s,
        &alice,
        "ta",
        "/move",
        json!({"from": "/etc/shadow", "to": "/etc/shadow.moved"}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let out = sh(
        &s,
        &alice,
        "ta",
        "cat /etc/shadow; stat -c %a /etc/shadow; ls -a /etc",
        Some("root"),
    )
    .await;
    assert!(
        out.starts_with("root:SECRET-HASH:19000:0:99999:7:::\n600\n"),
        "{out}"
    );
    assert!(!out.contains(".warren-"), "{out}");
    // The workspace's owner may ask for root, as exec allows.
    let (st, b) = get_bytes(&s, &alice, "ta", "path=/etc/shadow&user=root").await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8_lossy(&b).contains("SECRET-HASH"));

    // Another user's workspace does not exist for bob, whatever the operation.
    for ws in ["ta", "ta.alice"] {
        let (st, v) = get_json(&s, &bob, ws, "?path=/etc/passwd").await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{v}"
        );
        let (st, _) = put(&s, &bob, ws, "path=/home/dev/bob", "x").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = post_json(&s, &bob, ws, "/mkdir", json!({"path": "/home/dev/bob"})).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }

    // Hostile tar archives: refused whole, nothing extracted anywhere.
    use tar::EntryType as E;
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tarball(&[
                ("ok.txt", E::Regular, None, b"ok"),
                ("../evil", E::Regular, None, b"evil"),
            ]),
        ),
        (
            "absolute",
            tarball(&[
                ("ok.txt", E::Regular, None, b"ok"),
                ("/tmp/abs-evil", E::Regular, None, b"evil"),
            ]),
        ),
        (
            "symlink out, then through it",
            tarball(&[
                ("l", E::Symlink, Some("/tmp"), b""),
                ("l/through-evil", E::Regular, None, b"evil"),
            ]),
        ),
        (
            "relative symlink out",
            tarball(&[("d/l", E::Symlink, Some("../../.."), b"")]),
        ),
        (
            "symlink in, then through it",
            tarball(&[
                ("sub/x", E::Regular, None, b"x"),
                ("l", E::Symlink, Some("sub"), b""),
                ("l/through-evil", E::Regular, None, b"evil"),
            ]),
        ),
        (
            "hard link out",
            tarball(&[("h", E::Link, Some("../../../etc/passwd"), b"")]),
        ),
        (
            "device",
            tarball(&[
                ("ok.txt", E::Regular, None, b"ok"),
                ("null", E::Char, None, b""),
            ]),
        ),
        ("fifo", tarball(&[("p", E::Fifo, None, b"")])),
        (
            // Each link looks inside on its own; followed through each other they leave.
            "chained symlinks out",
            tarball(&[
                ("ok.txt", E::Regular, None, b"ok"),
                ("l1", E::Symlink, Some("."), b""),
                ("x/l2", E::Symlink, Some("../l1/.."), b""),
                ("x/l3", E::Symlink, Some("l2/evil"), b""),
            ]),
        ),
    ];
    for (what, body) in attacks {
        let r = s
            .http
            .put(files_url(&s, "ta", "/tar?path=/home/dev/x"))
            .bearer_auth(&alice)
            .body(body)
            .send()
            .await
            .unwrap();
        let (st, v) = json_of(r).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{what}: {v}"
        );
        let out = sh(
            &s,
            &alice,
            "ta",
            "ls -A /home/dev/x; ls /home/dev /tmp; find / -xdev -name '*evil*' 2>/dev/null",
            Some("root"),
        )
        .await;
        assert!(
            !out.contains("evil") && !out.contains("ok.txt") && !out.contains(".warren-"),
            "{what}: {out}"
        );
    }
    assert!(!std::path::Path::new("/tmp/abs-evil").exists());

    // A conflict (a file where a directory is) found late in the archive leaves nothing new,
    // and directories the archive only passes through keep their mode (setgid included).
    sh(
        &s,
        &alice,
        "ta",
        "mkdir -p /home/dev/m/conf /home/dev/m/keep && chmod 2770 /home/dev/m/keep",
        None,
    )
    .await;
    let conflicting = tarball(&[
        ("a-new.txt", E::Regular, None, b"new"),
        ("keep/new.txt", E::Regular, None, b"new"),
        ("zz/deep.txt", E::Regular, None, b"new"),
        ("conf", E::Regular, None, b"a file where a directory is"),
    ]);
    let r = s
        .http
        .put(files_url(&s, "ta", "/tar?path=/home/dev/m"))
        .bearer_auth(&alice)
        .body(conflicting)
        .send()
        .await
        .unwrap();
    let (st, v) = json_of(r).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let out = sh(&s, &alice, "ta", "cd /home/dev/m && find . | sort", None).await;
    assert_eq!(out.trim(), ".\n./conf\n./keep", "{out}");
    let ok = tarball(&[("keep/new.txt", E::Regular, None, b"new")]);
    let r = s
        .http
        .put(files_url(&s, "ta", "/tar?path=/home/dev/m"))
        .bearer_auth(&alice)
        .body(ok)
        .send()
        .await
        .unwrap();
    let (st, v) = json_of(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = sh(&s, &alice, "ta", "stat -c %a /home/dev/m/keep", None).await;
    assert_eq!(
        out.trim(),
        "2770",
        "a passed-through directory keeps its mode"
    );

    // Over the limit: refused up front with a Content-Length, counted when chunked; nothing left.
    let two_mib = vec![7u8; 2 << 20];
    let (st, v) = put(&s, &alice, "ta", "path=/home/dev/huge", two_mib.clone()).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{v}"
    );
    assert!(
        v["hint"].as_str().unwrap().contains("toolbox_max_upload"),
        "{v}"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![7u8; 64 << 10])).collect();
    let (st, v) = put(
        &s,
        &alice,
        "ta",
        "path=/home/dev/huge",
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{v}"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![7u8; 64 << 10])).collect();
    let r = s
        .http
        .put(files_url(&s, "ta", "/tar?path=/home/dev/hugetar"))
        .bearer_auth(&alice)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (st, v) = json_of(r).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // A client that breaks off midway leaves nothing either.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(vec![1u8; 300 << 10]),
        Err(std::io::Error::other("client gave up")),
    ];
    let r = s
        .http
        .put(files_url(&s, "ta", "?path=/home/dev/broken"))
        .bearer_auth(&alice)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = sh(
            &s,
            &alice,
            "ta",
            "ls -A /home/dev; ls -A /home/dev/hugetar 2>/dev/null",
            None,
        )
        .await;
        if !out.contains(".warren-") {
            assert!(!out.contains("huge\n") && !out.contains("broken"), "{out}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "left behind: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The workspace is still fine: a write at the limit works.
    let (st, v) = put(&s, &alice, "ta", "path=/home/dev/fits", vec![9u8; 1 << 20]).await;
    assert_eq!(
        (st, v["size"].as_u64()),
        (StatusCode::OK, Some(1 << 20)),
        "{v}"
    );
}
