//! Templates and uploaded files against a real server: pushing versions inline and from
//! uploaded folders, activation, archiving, permissions, and archives that try to escape.

mod common;

use std::io::Write;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DC: &str = r#"{
  // A comment: devcontainer.json is JSONC.
  "image": "debian:bookworm",
  "containerEnv": {"REGION": "${param:region}"},
}"#;

/// A raw entry: path, type, link target, data.
type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// A tar with raw GNU headers, so entries `tar::Builder` refuses (`..`, absolute) can be written.
fn raw_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, ty, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend([0u8; 1024]);
    out
}

/// A well-formed folder: devcontainer.json, a manifest, a source file.
fn folder_tar() -> Vec<u8> {
    let manifest = json!({
        "name": "rust-dev",
        "display_name": "Rust development",
        "parameters": [
            {"name": "region", "type": "string", "options": ["eu", "us"], "default": "eu"}
        ],
        "ceilings": {"cpus": 4, "memory_mb": 8192},
        "policy": {"ttl": "8h"}
    })
    .to_string();
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        (".devcontainer/devcontainer.json", DC.as_bytes()),
        ("warren-template.json", manifest.as_bytes()),
        ("src/main.rs", b"fn main() {}\n".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

async fn upload(s: &TestServer, token: &str, body: Vec<u8>, ct: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/files", s.url))
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn stored_files(s: &TestServer) -> Vec<String> {
    match std::fs::read_dir(s.dir.path().join("state/files")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn region_param() -> Value {
    json!([{"name": "region", "type": "string", "default": "eu"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_versions_number_up_activate_and_archive() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param(), "message": "first"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["number"], 1);
    assert_eq!(v["active"], true);
    assert_eq!(v["devcontainer"], DC);
    assert_eq!(v["parameters"][0]["name"], "region");

    let (st, list) = s.get(&a, "/api/v1/templates").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "rust");
    assert_eq!(list[0]["active_version"], 1);

    // A second version, not activated.
    let (st, v2) = s
        .post(
            &a,
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param(), "activate": false,
                   "ceilings": {"cpus": 2}, "policy": {"ttl": "1h"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v2}");
    assert_eq!(
        (v2["number"].as_i64(), v2["active"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(v2["ceilings"]["cpus"], 2.0);
    let (_, t) = s.get(&a, "/api/v1/templates/rust").await;
    assert_eq!(t["active_version"], 1);

    let (st, versions) = s.get(&a, "/api/v1/templates/rust/versions").await;
    assert_eq!(st, StatusCode::OK);
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "newest first");
    let (st, one) = s.get(&a, "/api/v1/templates/rust/versions/1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(one["message"], "first");
    assert_eq!(one["active"], true);
    let (st, active) = s.get(&a, "/api/v1/templates/rust/versions/active").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(active["number"], 1);

    // Activate 2.
    let (st, t) = s
        .post(&a, "/api/v1/templates/rust/active", json!({"version": 2}))
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["active_version"], 2);
    let (st, e) = s
        .post(&a, "/api/v1/templates/rust/active", json!({"version": 7}))
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Versions are immutable: no route changes or deletes one.
    for m in [Method::PUT, Method::PATCH, Method::DELETE] {
        let (st, _) = s
            .call(
                Some(&a),
                m.clone(),
                "/api/v1/templates/rust/versions/1",
                Some(json!({"message": "x"})),
            )
            .await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
    let (_, again) = s.get(&a, "/api/v1/templates/rust/versions/1").await;
    assert_eq!(again, {
        let mut o = one.clone();
        o["active"] = json!(false);
        o
    });

    // Archive: hidden from the list, no new versions, still readable; unarchive restores.
    let (st, t) = s
        .post(&a, "/api/v1/templates/rust/archive", json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["archived"], true);
    let (_, list) = s.get(&a, "/api/v1/templates").await;
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    let (_, list) = s.get(&a, "/api/v1/templates?archived=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (st, e) = s
        .post(
            &a,
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param()}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{e}"
    );
    let (st, e) = s
        .post(&a, "/api/v1/templates", json!({"name": "rust"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "creating does not unarchive: {e}");
    assert_eq!(s.get(&a, "/api/v1/templates/rust").await.0, StatusCode::OK);
    let (st, t) = s
        .post(&a, "/api/v1/templates/rust/unarchive", json!({}))
        .await;
    assert_eq!((st, t["archived"].as_bool()), (StatusCode::OK, Some(false)));

    // The audit log names the template and records the activation diff.
    let (st, audit) = s.get(&a, "/api/v1/audit?limit=500").await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let records = audit["records"].as_array().unwrap();
    let activation = records
        .iter()
        .find(|r| {
            r["diff_json"]
                .as_str()
                .is_some_and(|d| d.contains("active_version"))
        })
        .unwrap_or_else(|| panic!("no activation record: {audit}"));
    assert_eq!(activation["target_type"], "template");
    assert_eq!(activation["target_name"], "rust");
    assert_eq!(activation["target_id"], t["id"]);
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "template.version.create"
                && r["target_name"] == "rust"
                && r["status"] == 201),
        "{audit}"
    );
    let diff: Value = serde_json::from_str(activation["diff_json"].as_str().unwrap()).unwrap();
    assert_eq!(diff, json!({"active_version": {"old": 1, "new": 2}}));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_template_upserts_and_validates_the_name() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let (st, t) = s
        .post(
            &a,
            "/api/v1/templates",
            json!({"name": "web", "display_name": "Web"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["active_version"], Value::Null);
    let (st, t2) = s
        .post(
            &a,
            "/api/v1/templates",
            json!({"name": "web", "description": "d"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        (&t2["id"], &t2["display_name"], &t2["description"]),
        (&t["id"], &json!("Web"), &json!("d"))
    );
    let (st, e) = s
        .post(&a, "/api/v1/templates", json!({"name": "Bad Name"}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "invalid_name");
    assert!(
        e["message"].as_str().unwrap().contains("template name"),
        "{e}"
    );
    // Unknown fields are named.
    let (st, e) = s
        .post(
            &a,
            "/api/v1/templates",
            json!({"name": "web", "colour": "red"}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert!(e["message"].as_str().unwrap().contains("colour"), "{e}");
    let (st, e) = s
        .post(
            &a,
            "/api/v1/templates/web/versions",
            json!({"devcontainer": DC, "activte": true}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("activte"), "{e}");
    // Unknown templates.
    for path in [
        "/api/v1/templates/nope",
        "/api/v1/templates/nope/versions",
        "/api/v1/templates/nope/versions/1",
    ] {
        let (st, e) = s.get(&a, path).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    let (st, _) = s
        .post(&a, "/api/v1/templates/nope/archive", json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, e) = s.get(&a, "/api/v1/templates/web/versions/one").await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_versions_are_refused_with_the_right_code() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let push = |body: Value| {
        let s = &s;
        let a = a.clone();
        async move { s.post(&a, "/api/v1/templates/t/versions", body).await }
    };
    // No image.
    let (st, e) = push(json!({"devcontainer": "{\n  \"name\": \"x\"\n}"})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("image") && m.contains(":1:1:"), "{m}");
    // JSON syntax error: the position is reported.
    let (st, e) = push(json!({"devcontainer": "{\n  \"image\": \"x\"\n  \"name\": 1\n}"})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("devcontainer.json:3:"), "{m}");
    // A property of the wrong type.
    let (st, e) = push(json!({"devcontainer": "{\"image\": 5}"})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{e}"
    );
    // The server's environment is off limits.
    let (st, e) = push(json!({"devcontainer": "{\"image\": \"x\", \"containerEnv\": {\"K\": \"${localEnv:HOME}\"}}"})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{e}"
    );
    // Bad parameter specs name the parameter.
    let (st, e) = push(json!({"devcontainer": DC, "parameters": [
        {"name": "region", "type": "string", "default": "eu"},
        {"name": "cpus", "type": "number", "default": 9, "validation": {"max": 8}}
    ]}))
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("`cpus`"), "{e}");
    // A reference to an undeclared parameter.
    let (st, e) = push(json!({"devcontainer": DC})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("`region`"), "{e}");
    // Ceilings and policy.
    let (st, e) =
        push(json!({"devcontainer": DC, "parameters": region_param(), "ceilings": {"cpus": 0}}))
            .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("cpus"), "{e}");
    let (st, e) = push(json!({"devcontainer": DC, "parameters": region_param(), "policy": {"autostop": "9d", "max_lifetime": "1d"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("`policy`"), "{e}");
    // Exactly one source.
    let (st, _) = push(json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = push(json!({"devcontainer": DC, "file_id": "0".repeat(64)})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A file that was never uploaded; an id that is not a hash.
    let (st, e) = push(json!({"file_id": "a".repeat(64)})).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{e}"
    );
    let (st, _) = push(json!({"file_id": "../../etc/passwd"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // None of this created the template.
    assert_eq!(
        s.get(&a, "/api/v1/templates/t").await.0,
        StatusCode::NOT_FOUND
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_upload_as_tar_or_gzip_and_the_manifest_supplies_parameters() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let tar = folder_tar();
    let (st, f) = upload(&s, &a, tar.clone(), "application/x-tar").await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let id = f["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(f["size"].as_u64(), Some(tar.len() as u64));
    // The same folder gzip-compressed is the same file (stored uncompressed), whether the
    // Content-Type says gzip or the magic bytes do.
    for ct in [
        "application/gzip",
        "application/x-tar",
        "application/octet-stream",
    ] {
        let (st, g) = upload(&s, &a, gzip(&tar), ct).await;
        assert_eq!(st, StatusCode::CREATED, "{ct}: {g}");
        assert_eq!(g["id"].as_str(), Some(id.as_str()), "{ct}");
    }
    assert_eq!(stored_files(&s), [format!("{id}.tar")]);
    let stored = std::fs::read(s.dir.path().join(format!("state/files/{id}.tar"))).unwrap();
    assert_eq!(stored, tar);

    // One call pushes a version and creates the template.
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/rust-dev/versions",
            json!({"file_id": id}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["file_id"].as_str(), Some(id.as_str()));
    assert_eq!(v["devcontainer"], DC);
    assert_eq!(v["parameters"][0]["name"], "region");
    assert_eq!(v["parameters"][0]["options"], json!(["eu", "us"]));
    assert_eq!(v["ceilings"]["memory_mb"], 8192);
    assert_eq!(v["policy"]["ttl"], "8h");
    let (_, t) = s.get(&a, "/api/v1/templates/rust-dev").await;
    assert_eq!(t["display_name"], "Rust development");
    assert_eq!(t["active_version"], 1);

    // Request fields win over the manifest.
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/rust-dev/versions",
            json!({"file_id": id, "ceilings": {"cpus": 1}, "parameters": [
                {"name": "region", "type": "string", "default": "us"}
            ]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["ceilings"], json!({"cpus": 1.0}));
    assert_eq!(v["parameters"][0]["default"], "us");
    assert_eq!(v["policy"]["ttl"], "8h");

    // A folder without a devcontainer.json.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "README", &b"hi"[..]).unwrap();
    let (st, f) = upload(&s, &a, b.into_inner().unwrap(), "application/x-tar").await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let (st, e) = s
        .post(
            &a,
            "/api/v1/templates/rust-dev/versions",
            json!({"file_id": f["id"]}),
        )
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_are_refused_and_nothing_is_stored() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    use tar::EntryType as T;
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![("../x", T::Regular, "", b"x")], "`..`"),
        (vec![("ok/../../x", T::Regular, "", b"x")], "`..`"),
        (vec![("/etc/cron.d/x", T::Regular, "", b"x")], "absolute"),
        (vec![("passwd", T::Symlink, "/etc/passwd", b"")], "absolute"),
        (vec![("up", T::Symlink, "../../etc", b"")], "outside"),
        (
            vec![("d", T::Symlink, "sub", b""), ("d/x", T::Regular, "", b"x")],
            "symlink",
        ),
        (vec![("h", T::Link, "/etc/shadow", b"")], "absolute"),
        (vec![("null", T::Char, "", b"")], "device"),
        (vec![("sda", T::Block, "", b"")], "device"),
        (vec![("p", T::Fifo, "", b"")], "FIFO"),
    ];
    for (entries, want) in &cases {
        for gz in [false, true] {
            let tar = raw_tar(entries);
            let body = if gz { gzip(&tar) } else { tar };
            let ct = if gz {
                "application/gzip"
            } else {
                "application/x-tar"
            };
            let (st, e) = upload(&s, &a, body, ct).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{entries:?}: {e}");
            assert_eq!(e["code"], "invalid_request");
            let m = e["message"].as_str().unwrap();
            assert!(
                m.starts_with("invalid archive") && m.contains(want),
                "{entries:?}: {m}"
            );
        }
    }
    // Not an archive at all; gzip claimed but absent; an unsupported content type; empty.
    let (st, _) = upload(&s, &a, vec![7u8; 2000], "application/x-tar").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = upload(&s, &a, folder_tar(), "application/gzip").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = upload(&s, &a, folder_tar(), "text/plain").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = upload(&s, &a, Vec::new(), "application/x-tar").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(stored_files(&s).is_empty(), "{:?}", stored_files(&s));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_body_limit_are_413() {
    let s = TestServer::start_with(warren_server::config::ConfigLayer {
        max_body_bytes: Some(64 << 10),
        ..Default::default()
    })
    .await;
    let big = raw_tar(&[("big", tar::EntryType::Regular, "", &vec![1u8; 100 << 10])]);
    let (st, e) = upload(&s, &s.admin, big, "application/x-tar").await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // Without a Content-Length (chunked), the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![0u8; 16 << 10])).collect();
    let resp = s
        .http
        .post(format!("{}/api/v1/files", s.url))
        .bearer_auth(&s.admin)
        .header("content-type", "application/x-tar")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(stored_files(&s).is_empty(), "{:?}", stored_files(&s));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_read_templates_and_upload_folders_but_do_not_push() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let (st, _) = s
        .post(
            &a,
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param()}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let member = s.user_token("mia", "member", None).await;
    let (st, list) = s.get(&member, "/api/v1/templates").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&member, "/api/v1/templates/rust/versions/1").await.0,
        StatusCode::OK
    );
    for (path, body) in [
        (
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param()}),
        ),
        ("/api/v1/templates", json!({"name": "mine"})),
        ("/api/v1/templates/rust/active", json!({"version": 1})),
        ("/api/v1/templates/rust/archive", json!({})),
    ] {
        let (st, e) = s.post(&member, path, body).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("permission_denied")),
            "{path}"
        );
    }
    // Members may upload a folder (to make a workspace from it).
    let (st, f) = upload(&s, &member, folder_tar(), "application/x-tar").await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    // A token with only template:read may neither push nor upload.
    let reader = s.token_for("mia", Some(&["template:read"])).await;
    assert_eq!(s.get(&reader, "/api/v1/templates").await.0, StatusCode::OK);
    let (st, _) = upload(&s, &reader, folder_tar(), "application/x-tar").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A template admin may push.
    let tadmin = s.user_token("tom", "template-admin", None).await;
    let (st, v) = s
        .post(
            &tadmin,
            "/api/v1/templates/rust/versions",
            json!({"devcontainer": DC, "parameters": region_param()}),
        )
        .await;
    assert_eq!(
        (st, v["number"].as_i64()),
        (StatusCode::CREATED, Some(2)),
        "{v}"
    );
    // No token at all.
    let (st, _) = s.call(None, Method::GET, "/api/v1/templates", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.stop().await;
}
