//! End-to-end tests of `prepare` and `build_plan` against real components: a `docker-registry`
//! on 127.0.0.1, an HTTPS server with a test CA, and feature folders written by the tests.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};
use warren_features::{prepare, BuildUsers, FeatureError, FeatureSource, FetchOptions, Resolved};

fn feats(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn manifest(id: &str, version: &str, extra: Value) -> String {
    let mut m = json!({"id": id, "version": version, "name": format!("Feature {id}")});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    m.to_string()
}

async fn push(
    reg: &Registry,
    id: &str,
    tags: &[&str],
    version: &str,
    extra: Value,
) -> (String, String) {
    let m = manifest(id, version, extra);
    reg.push_feature(
        &format!("acme/features/{id}"),
        tags,
        &feature_tar(&m, &[]),
        &m,
    )
    .await
}

fn ids(r: &Resolved) -> Vec<&str> {
    r.features.iter().map(|f| f.user_id.as_str()).collect()
}

fn one_line_with_hint(e: &FeatureError, feature: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(feature),
        "error does not name `{feature}`: {msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(e.hint().is_some(), "no hint for {msg}");
}

#[tokio::test]
async fn oci_tags_resolve_and_the_cache_avoids_the_network() {
    let Some(mut reg) = Registry::start() else {
        return;
    };
    let (d1, _) = push(&reg, "hello", &["1", "1.0.0", "latest"], "1.0.0", json!({})).await;
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let by_tag = format!("{}/acme/features/hello:1", reg.addr);
    let by_default = format!("{}/acme/features/hello", reg.addr);
    let list = feats(&[(&by_tag, json!({}))]);

    let r = prepare(
        &list,
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), [by_tag.as_str()]);
    let f = &r.features[0];
    match &f.source {
        FeatureSource::Oci {
            manifest_digest,
            reference,
        } => {
            assert_eq!(manifest_digest, &d1);
            assert_eq!(reference.tag.as_deref(), Some("1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(f.dir.join("install.sh").is_file());
    assert_eq!(f.manifest.version.as_deref(), Some("1.0.0"));

    // No tag means `latest`.
    let r = prepare(
        &feats(&[(&by_default, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&r.features[0].source, FeatureSource::Oci { manifest_digest, .. } if *manifest_digest == d1)
    );

    // A new 1.0.1 moves tag `1`. The cache still answers `1` without asking the registry...
    let (d2, _) = push(&reg, "hello", &["1", "1.0.1", "latest"], "1.0.1", json!({})).await;
    assert_ne!(d1, d2);
    let before = reg.api_requests();
    let r = prepare(
        &list,
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&r.features[0].source, FeatureSource::Oci { manifest_digest, .. } if *manifest_digest == d1)
    );
    assert_eq!(
        reg.api_requests(),
        before,
        "a cached feature made requests:\n{}",
        reg.log_text()
    );

    // ...and `refresh` asks again.
    let refresh = FetchOptions {
        refresh: true,
        ..Default::default()
    };
    let r = prepare(&list, &[], cfg.path(), cache.path(), &refresh)
        .await
        .unwrap();
    assert!(
        matches!(&r.features[0].source, FeatureSource::Oci { manifest_digest, .. } if *manifest_digest == d2)
    );
    assert_eq!(r.features[0].manifest.version.as_deref(), Some("1.0.1"));
    assert!(reg.api_requests() > before);

    // With the registry gone, cached features still prepare.
    reg.stop();
    let r = prepare(
        &list,
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.features.len(), 1);
    // An uncached one fails, naming the feature and the reason.
    let other = format!("{}/acme/features/other:1", reg.addr);
    let e = prepare(
        &feats(&[(&other, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &other);
    assert!(e.to_string().contains("cannot reach"), "{e}");
}

#[tokio::test]
async fn digests_pin_and_corrupted_blobs_are_refused() {
    let Some(reg) = Registry::start() else { return };
    let (d, layer) = push(&reg, "pinned", &["2"], "2.0.0", json!({})).await;
    let cfg = tempfile::tempdir().unwrap();
    let pinned = format!("{}/acme/features/pinned@{d}", reg.addr);
    let cache = tempfile::tempdir().unwrap();
    let r = prepare(
        &feats(&[(&pinned, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(&r.features[0].source, FeatureSource::Oci { manifest_digest, .. } if *manifest_digest == d)
    );

    // A digest the registry does not have.
    let missing = format!(
        "{}/acme/features/pinned@sha256:{}",
        reg.addr,
        "0".repeat(64)
    );
    let e = prepare(
        &feats(&[(&missing, json!({}))]),
        &[],
        cfg.path(),
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &missing);

    // The layer is damaged on the registry's disk: a fresh cache refuses it.
    let file = reg.blob_file(&layer);
    let mut data = std::fs::read(&file).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&file, data).unwrap();
    let by_tag = format!("{}/acme/features/pinned:2", reg.addr);
    let fresh = tempfile::tempdir().unwrap();
    let e = prepare(
        &feats(&[(&by_tag, json!({}))]),
        &[],
        cfg.path(),
        fresh.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &by_tag);
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    // Nothing half-verified is left in the cache.
    let hex = layer.strip_prefix("sha256:").unwrap();
    assert!(!fresh.path().join("blobs/sha256").join(hex).exists());
}

#[tokio::test]
async fn depends_on_pulls_in_unlisted_features_with_their_options() {
    let Some(reg) = Registry::start() else { return };
    let base = format!("{}/acme/features/base:1", reg.addr);
    push(
        &reg,
        "base",
        &["1"],
        "1.0.0",
        json!({"options": {"flavor": {"type": "string", "default": "plain"}}}),
    )
    .await;
    push(
        &reg,
        "app",
        &["1"],
        "1.0.0",
        json!({"dependsOn": {base.clone(): {"flavor": "spicy"}}}),
    )
    .await;
    push(&reg, "zzz", &["1"], "1.0.0", json!({})).await;
    let app = format!("{}/acme/features/app:1", reg.addr);
    let zzz = format!("{}/acme/features/zzz:1", reg.addr);
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let r = prepare(
        &feats(&[(&zzz, json!({})), (&app, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    // Round 1: base and zzz (sorted by resource), round 2: app.
    assert_eq!(ids(&r), [base.as_str(), zzz.as_str(), app.as_str()]);
    assert_eq!(r.features[0].required_by.as_deref(), Some(app.as_str()));
    assert_eq!(
        r.features[0].values,
        vec![("flavor".to_string(), json!("spicy"))]
    );
    assert_eq!(r.features[2].required_by, None);

    // A dependency that cannot be fetched names itself.
    push(
        &reg,
        "broken",
        &["1"],
        "1.0.0",
        json!({"dependsOn": {format!("{}/acme/features/nowhere:1", reg.addr): {}}}),
    )
    .await;
    let broken = format!("{}/acme/features/broken:1", reg.addr);
    let e = prepare(
        &feats(&[(&broken, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, "acme/features/nowhere:1");
    assert!(e.to_string().contains("not found"), "{e}");
}

#[tokio::test]
async fn renamed_features_are_found_by_their_legacy_id() {
    let Some(reg) = Registry::start() else { return };
    // Publishing a renamed feature also publishes it under its legacy ids.
    let m = manifest(
        "new-color",
        "1.0.1",
        json!({"legacyIds": ["color"], "options": {"favorite": {"type": "string", "enum": ["red", "gold"], "default": "red"}}}),
    );
    let tar = feature_tar(&m, &[]);
    reg.push_feature("acme/features/new-color", &["1"], &tar, &m)
        .await;
    reg.push_feature("acme/features/color", &["1"], &tar, &m)
        .await;
    // `artist` installs after the feature under its new name; the config uses the old one.
    push(
        &reg,
        "artist",
        &["1"],
        "1.0.0",
        json!({"installsAfter": [format!("{}/acme/features/new-color", reg.addr)]}),
    )
    .await;
    let color = format!("{}/acme/features/color:1", reg.addr);
    let artist = format!("{}/acme/features/artist:1", reg.addr);
    let cfg = tempfile::tempdir().unwrap();
    let r = prepare(
        &feats(&[(&artist, json!({})), (&color, json!({"favorite": "gold"}))]),
        &[],
        cfg.path(),
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), [color.as_str(), artist.as_str()]);
    assert_eq!(r.features[0].renamed_from.as_deref(), Some("color"));
    assert!(
        r.warnings.iter().any(|w| w.contains("renamed")),
        "{:?}",
        r.warnings
    );

    // An option value outside the enum is refused, naming the feature.
    let e = prepare(
        &feats(&[(&color, json!({"favorite": "blue"}))]),
        &[],
        cfg.path(),
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &color);
    assert!(e.to_string().contains("\"red\", \"gold\""), "{e}");
}

#[tokio::test]
async fn unreachable_registries_and_missing_features_name_the_feature() {
    let port = free_port();
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let id = format!("127.0.0.1:{port}/acme/features/x:1");
    let e = prepare(
        &feats(&[(&id, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &id);
    assert!(e.to_string().contains("cannot reach"), "{e}");

    let Some(reg) = Registry::start() else { return };
    let id = format!("{}/acme/features/missing:1", reg.addr);
    let e = prepare(
        &feats(&[(&id, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &id);
    assert!(e.to_string().contains("not found"), "{e}");

    // Unsupported and malformed references.
    for bad in [
        "fish",
        "owner/repo/feature@v1",
        "http://example.com/devcontainer-feature-x.tgz",
        "/abs/path",
    ] {
        let e = prepare(
            &feats(&[(bad, json!({}))]),
            &[],
            cfg.path(),
            cache.path(),
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
        one_line_with_hint(&e, bad);
    }
}

#[tokio::test]
async fn https_tarballs_are_fetched_with_the_test_ca_and_cached() {
    let ca = test_ca();
    let server = HttpsServer::start(&ca).await;
    let m = manifest(
        "tarred",
        "1.2.3",
        json!({"containerEnv": {"TARRED": "yes"}}),
    );
    server.serve(
        "/rel/devcontainer-feature-tarred.tgz",
        gzip(&feature_tar(&m, &[("./lib/helper.sh", "echo help")])),
    );
    let url = format!(
        "https://{}/rel/devcontainer-feature-tarred.tgz",
        server.addr
    );
    let list = feats(&[(&url, json!({}))]);
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        extra_root_certs_pem: vec![ca.ca_pem.clone()],
        ..Default::default()
    };

    // Without the test CA the server is not trusted.
    let e = prepare(
        &list,
        &[],
        cfg.path(),
        cache.path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &url);

    let before = server.count();
    let r = prepare(&list, &[], cfg.path(), cache.path(), &opts)
        .await
        .unwrap();
    assert_eq!(server.count(), before + 1);
    let f = &r.features[0];
    assert!(matches!(&f.source, FeatureSource::Tarball { .. }));
    assert_eq!(f.manifest.id, "tarred");
    assert!(f.dir.join("lib/helper.sh").is_file());

    // The second prepare is served from the cache.
    let r2 = prepare(&list, &[], cfg.path(), cache.path(), &opts)
        .await
        .unwrap();
    assert_eq!(
        server.count(),
        before + 1,
        "the cached tarball was fetched again"
    );
    assert_eq!(r2.features[0].dir, f.dir);

    // 404 names the feature.
    let missing = format!("https://{}/rel/devcontainer-feature-gone.tgz", server.addr);
    let e = prepare(
        &feats(&[(&missing, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &opts,
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, &missing);
    assert!(e.to_string().contains("404"), "{e}");

    // An archive that climbs out of its folder is refused.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let name = b"../escape.sh";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(2);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &b"hi"[..]).unwrap();
    server.serve(
        "/rel/devcontainer-feature-evil.tgz",
        gzip(&b.into_inner().unwrap()),
    );
    let evil = format!("https://{}/rel/devcontainer-feature-evil.tgz", server.addr);
    let e = prepare(
        &feats(&[(&evil, json!({}))]),
        &[],
        cfg.path(),
        cache.path(),
        &opts,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FeatureError::UnsafeArchive { .. }), "{e}");
    one_line_with_hint(&e, &evil);
    assert!(!cache.path().join("trees/escape.sh").exists());
}

/// The corpus's `dependsOn/local-with-options` config: `./a` depends on `./b` with other
/// options and on `./c`.
#[tokio::test]
async fn local_depends_on_with_options_like_the_reference() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    let corpus_a = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/devcontainer-corpus"),
        Path::new("/work/shared/devcontainer-corpus").to_path_buf(),
    ]
    .into_iter()
    .map(|c| c.join("features/cli-test-dependsOn-local-with-options-a/devcontainer-feature.json"))
    .find(|p| p.is_file());
    let a_manifest = corpus_a
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| {
            r#"{"name": "FeatureA", "id": "a", "version": "0.0.1",
            "dependsOn": {"./b": {"optA": "a", "optB": "a"}, "./c": {}},
            "options": {"optA": {"type": "string", "default": "0", "description": ""},
                        "optB": {"type": "string", "default": "0", "description": ""}}}"#
                .to_string()
        });
    local_feature(&dc.join("a"), &a_manifest);
    local_feature(
        &dc.join("b"),
        &manifest(
            "b",
            "0.0.1",
            json!({"options": {
        "optA": {"type": "string", "default": "0"}, "optB": {"type": "string", "default": "0"}}}),
        ),
    );
    local_feature(
        &dc.join("c"),
        &manifest(
            "c",
            "0.0.1",
            json!({"options": {"magic": {"type": "string", "default": "x"}}}),
        ),
    );
    let list = feats(&[
        ("./a", json!({"optA": "a", "optB": "b"})),
        ("./b", json!({"optA": "a", "optB": "b"})),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let r = prepare(&list, &[], &dc, cache.path(), &FetchOptions::default())
        .await
        .unwrap();
    // b with {a, a} (a's dependency) and b with {a, b} (the user's) are different features;
    // round 1 sorts by path, then options: b{a,a} < b{a,b} < c; round 2: a.
    assert_eq!(ids(&r), ["./b", "./b", "./c", "./a"]);
    let env = |i: usize| warren_features::options::env_lines(&r.features[i].values);
    assert_eq!(env(0), ["OPTA=\"a\"", "OPTB=\"a\""]);
    assert_eq!(env(1), ["OPTA=\"a\"", "OPTB=\"b\""]);
    assert_eq!(env(2), ["MAGIC=\"x\""]);
    assert_eq!(env(3), ["OPTA=\"a\"", "OPTB=\"b\""]);
    assert_eq!(r.features[0].required_by.as_deref(), Some("./a"));
    assert_eq!(r.features[1].required_by, None);
}

#[tokio::test]
async fn installs_after_override_order_and_cycles_with_local_features() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    local_feature(
        &dc.join("alpha"),
        &manifest("alpha", "1.0.0", json!({"installsAfter": ["./zulu"]})),
    );
    local_feature(&dc.join("mike"), &manifest("mike", "1.0.0", json!({})));
    local_feature(
        &dc.join("zulu"),
        &manifest(
            "zulu",
            "1.0.0",
            json!({"installsAfter": ["./not-installed"]}),
        ),
    );
    // `./not-installed` does not exist: soft dependencies are never opened.
    let list = feats(&[
        ("./alpha", json!({})),
        ("./mike", json!({})),
        ("./zulu", json!({})),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions::default();

    let r = prepare(&list, &[], &dc, cache.path(), &opts).await.unwrap();
    assert_eq!(ids(&r), ["./mike", "./zulu", "./alpha"]);

    // overrideFeatureInstallOrder pulls zulu then mike forward; alpha still waits for zulu.
    let r = prepare(
        &list,
        &["./zulu".to_string(), "./mike".to_string()],
        &dc,
        cache.path(),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), ["./zulu", "./mike", "./alpha"]);
    let r = prepare(&list, &["./alpha".to_string()], &dc, cache.path(), &opts)
        .await
        .unwrap();
    assert_eq!(ids(&r), ["./mike", "./zulu", "./alpha"]);

    // A cycle is named.
    local_feature(
        &dc.join("p"),
        &manifest("p", "1.0.0", json!({"dependsOn": {"./q": {}}})),
    );
    local_feature(
        &dc.join("q"),
        &manifest("q", "1.0.0", json!({"installsAfter": ["./p"]})),
    );
    let e = prepare(&feats(&[("./p", json!({}))]), &[], &dc, cache.path(), &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, FeatureError::Cycle { .. }), "{e}");
    assert!(
        e.to_string().contains("./p -> ./q -> ./p") || e.to_string().contains("./q -> ./p -> ./q"),
        "{e}"
    );

    // An invalid manifest names the feature.
    local_feature(
        &dc.join("bad"),
        r#"{"id": "bad", "options": {"x": {"type": "number"}}}"#,
    );
    let e = prepare(
        &feats(&[("./bad", json!({}))]),
        &[],
        &dc,
        cache.path(),
        &opts,
    )
    .await
    .unwrap_err();
    one_line_with_hint(&e, "./bad");
}

#[tokio::test]
async fn build_plan_lays_out_the_context_like_the_reference() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    local_feature(
        &dc.join("first"),
        &manifest(
            "first",
            "1.0.0",
            json!({
                "options": {"version": {"type": "string", "default": "lts"}, "with-docs": {"type": "boolean", "default": false}},
                "containerEnv": {"FIRST_HOME": "/opt/first", "PATH": "/opt/first/bin:${PATH}"},
                "privileged": true, "capAdd": ["SYS_PTRACE"], "init": true,
                "mounts": [{"source": "first-cache", "target": "/cache", "type": "volume"}],
                "postCreateCommand": "first --setup",
                "customizations": {"vscode": {"extensions": ["first.ext"]}}
            }),
        ),
    );
    std::fs::create_dir_all(dc.join("first/lib")).unwrap();
    std::fs::write(dc.join("first/lib/x.sh"), "x").unwrap();
    local_feature(
        &dc.join("second"),
        &manifest("second", "2.0.0", json!({"dependsOn": {"./first": "20"}})),
    );
    let list = feats(&[("./second", json!({}))]);
    let cache = tempfile::tempdir().unwrap();
    let r = prepare(&list, &[], &dc, cache.path(), &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(ids(&r), ["./first", "./second"]);

    let ctx = tempfile::tempdir().unwrap();
    let ctx_dir = ctx.path().join("ctx");
    let users = BuildUsers {
        container_user: "root".into(),
        remote_user: Some("dev".into()),
        container_user_home: None,
        remote_user_home: Some("/home/dev".into()),
        image_user: "root".into(),
    };
    let plan = r.build_plan("debian:bookworm", &users, &ctx_dir).unwrap();
    let df = &plan.dockerfile;
    assert!(df.starts_with("FROM debian:bookworm\nUSER root\n"), "{df}");
    for instr in df
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("&&") && !l.starts_with("echo"))
    {
        let word = instr.split_whitespace().next().unwrap();
        assert!(
            ["FROM", "USER", "COPY", "RUN", "ENV"].contains(&word),
            "unexpected line `{instr}`"
        );
    }
    assert!(df.contains("getent passwd 'root'"), "{df}");
    // `$( (` and not `$((`, which a shell reads as arithmetic.
    assert!(
        df.contains("echo \"_CONTAINER_USER_HOME=$( (command -v getent"),
        "{df}"
    );
    assert!(!df.contains("$(("), "{df}");
    assert!(!df.contains("getent passwd 'dev'"), "{df}");
    // Per feature: ENV (before, as the reference), then COPY + RUN.
    let first = df
        .find("COPY first_0 /tmp/dev-container-features/first_0")
        .unwrap();
    let second = df
        .find("COPY second_1 /tmp/dev-container-features/second_1")
        .unwrap();
    let env = df.find("ENV PATH=\"/opt/first/bin:${PATH}\"").unwrap();
    assert!(df.contains("ENV FIRST_HOME=\"/opt/first\""));
    assert!(env < first && first < second, "{df}");
    assert!(df.contains("RUN chmod -R 0755 /tmp/dev-container-features/first_0 \\\n&& cd /tmp/dev-container-features/first_0 \\\n&& chmod +x ./devcontainer-features-install.sh \\\n&& ./devcontainer-features-install.sh\n"), "{df}");
    assert!(df.trim_end().ends_with("USER root"));

    let builtin =
        std::fs::read_to_string(ctx_dir.join("devcontainer-features.builtin.env")).unwrap();
    assert_eq!(
        builtin,
        "_CONTAINER_USER=root\n_REMOTE_USER=dev\n_REMOTE_USER_HOME=\"/home/dev\"\n"
    );
    let env0 = std::fs::read_to_string(ctx_dir.join("first_0/devcontainer-features.env")).unwrap();
    assert_eq!(env0, "VERSION=\"20\"\nWITH_DOCS=\"false\"");
    assert!(ctx_dir.join("first_0/install.sh").is_file());
    assert!(ctx_dir.join("first_0/lib/x.sh").is_file());
    let wrapper =
        std::fs::read_to_string(ctx_dir.join("second_1/devcontainer-features-install.sh")).unwrap();
    assert!(wrapper.starts_with("#!/bin/sh\nset -e\n"));
    assert!(
        wrapper.contains(". ../devcontainer-features.builtin.env\n. ./devcontainer-features.env\n")
    );
    assert!(wrapper.contains("echo 'Feature       : Feature second'"));
    assert!(wrapper.ends_with("chmod +x ./install.sh\n./install.sh\n"));

    assert_eq!(plan.metadata.len(), 2);
    assert_eq!(
        plan.metadata[0],
        json!({
            "id": "./first",
            "init": true,
            "privileged": true,
            "capAdd": ["SYS_PTRACE"],
            "mounts": [{"source": "first-cache", "target": "/cache", "type": "volume"}],
            "postCreateCommand": "first --setup",
            "customizations": {"vscode": {"extensions": ["first.ext"]}},
            "containerEnv": {"FIRST_HOME": "/opt/first", "PATH": "/opt/first/bin:${PATH}"}
        })
    );
    assert_eq!(plan.metadata[1], json!({"id": "./second"}));
    let labelled = plan.dockerfile_with_label(&plan.metadata);
    assert!(
        labelled.contains("LABEL devcontainer.metadata=\"[{\\\"capAdd\\\""),
        "{labelled}"
    );
    assert!(labelled.contains("\\${PATH}"));

    // The context must be empty; bad user names are refused.
    assert!(r.build_plan("debian:bookworm", &users, &ctx_dir).is_err());
    let bad = BuildUsers::new("root'; rm -rf /");
    assert!(r
        .build_plan("debian:bookworm", &bad, &ctx.path().join("other"))
        .is_err());
}

#[tokio::test]
async fn registries_that_want_a_bearer_token_get_an_anonymous_one() {
    let signer = std::sync::Arc::new(TokenSigner::new());
    let tokens = TokenServer::start(signer.clone()).await;
    let Some(reg) = Registry::start_with_token_auth(signer, &tokens.realm) else {
        return;
    };
    push(&reg, "guarded", &["1"], "1.0.0", json!({})).await;
    // Without a token the registry answers 401 with a Bearer challenge.
    let r = reqwest::get(format!(
        "http://{}/v2/acme/features/guarded/manifests/1",
        reg.addr
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));

    let id = format!("{}/acme/features/guarded:1", reg.addr);
    let cfg = tempfile::tempdir().unwrap();
    let r = prepare(
        &feats(&[(&id, json!({}))]),
        &[],
        cfg.path(),
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.features[0].manifest.id, "guarded");
    let queries = tokens.queries.lock().unwrap().clone();
    // One token for the repository, reused for the manifest and the blob.
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert!(
        queries[0].contains("service=warren-test-registry"),
        "{queries:?}"
    );
    assert!(
        queries[0].contains("scope=repository%3Aacme%2Ffeatures%2Fguarded%3Apull"),
        "{queries:?}"
    );
}

fn option_sets(r: &Resolved) -> Vec<(String, Value)> {
    r.features
        .iter()
        .map(|f| (f.user_id.clone(), f.options.clone()))
        .collect()
}

/// The dependency shape of the reference CLI's `dependsOn/local-with-options` test: five
/// features where `./b` is requested with five different option sets (one per requester).
/// The reference's expected order: b{}, b{a,a}, b{a,b}, b{b,a}, b{b,b}, d, e, c, a.
#[tokio::test]
async fn the_reference_local_with_options_order() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    let ab = json!({"options": {"optA": {"type": "string", "default": "0"}, "optB": {"type": "string", "default": "0"}}});
    let with = |deps: Value| {
        let mut m = ab.clone();
        m["dependsOn"] = deps;
        m
    };
    local_feature(
        &dc.join("a"),
        &manifest(
            "a",
            "0.0.1",
            with(json!({"./b": {"optA": "a", "optB": "a"}, "./c": {}})),
        ),
    );
    local_feature(&dc.join("b"), &manifest("b", "0.0.1", ab.clone()));
    local_feature(
        &dc.join("c"),
        &manifest(
            "c",
            "0.0.1",
            with(json!({"./b": {"optA": "b", "optB": "a"}, "./d": {}, "./e": {}})),
        ),
    );
    local_feature(
        &dc.join("d"),
        &manifest(
            "d",
            "0.0.1",
            with(json!({"./b": {"optA": "b", "optB": "b"}})),
        ),
    );
    local_feature(
        &dc.join("e"),
        &manifest("e", "0.0.1", with(json!({"./b": {}}))),
    );
    let list = feats(&[
        ("./a", json!({"optA": "a", "optB": "b"})),
        ("./b", json!({"optA": "a", "optB": "b"})),
    ]);
    let r = prepare(
        &list,
        &[],
        &dc,
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    let b = |a: &str, bb: &str| ("./b".to_string(), json!({"optA": a, "optB": bb}));
    assert_eq!(
        option_sets(&r),
        vec![
            ("./b".to_string(), json!({})),
            b("a", "a"),
            b("a", "b"),
            b("b", "a"),
            b("b", "b"),
            ("./d".to_string(), json!({})),
            ("./e".to_string(), json!({})),
            ("./c".to_string(), json!({})),
            ("./a".to_string(), json!({"optA": "a", "optB": "b"})),
        ]
    );
}

/// The shapes of the reference's `overrideFeatureInstallOrder` tests `local-intermediate`
/// (expected c, d, b, a) and `local-roundPriority` (expected a, b, c).
#[tokio::test]
async fn the_reference_override_orders() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    local_feature(
        &dc.join("a"),
        &manifest(
            "a",
            "0.0.1",
            json!({"dependsOn": {"./b": {}, "./d": {}}, "installsAfter": ["./c"]}),
        ),
    );
    local_feature(
        &dc.join("b"),
        &manifest("b", "0.0.1", json!({"dependsOn": {"./c": {}}})),
    );
    local_feature(&dc.join("c"), &manifest("c", "0.0.1", json!({})));
    local_feature(&dc.join("d"), &manifest("d", "0.0.1", json!({})));
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions::default();
    let r = prepare(
        &feats(&[("./a", json!({}))]),
        &["./c".into(), "./d".into()],
        &dc,
        cache.path(),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), ["./c", "./d", "./b", "./a"]);

    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    local_feature(&dc.join("a"), &manifest("a", "0.0.1", json!({})));
    local_feature(
        &dc.join("b"),
        &manifest("b", "0.0.1", json!({"dependsOn": {"./a": {}}})),
    );
    local_feature(&dc.join("c"), &manifest("c", "0.0.1", json!({})));
    let r = prepare(
        &feats(&[("./b", json!({})), ("./c", json!({}))]),
        &["./a".into(), "./b".into(), "./c".into()],
        &dc,
        cache.path(),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), ["./a", "./b", "./c"]);
    // Without the override, round 1 is a and c (sorted), then b.
    let r = prepare(
        &feats(&[("./b", json!({})), ("./c", json!({}))]),
        &[],
        &dc,
        cache.path(),
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(ids(&r), ["./a", "./c", "./b"]);
}

/// Two prepares sharing one cache at the same time both succeed.
#[tokio::test]
async fn concurrent_prepares_share_the_cache() {
    let Some(reg) = Registry::start() else { return };
    push(&reg, "shared", &["1"], "1.0.0", json!({})).await;
    let id = format!("{}/acme/features/shared:1", reg.addr);
    let list = feats(&[(&id, json!({}))]);
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions::default();
    let (a, b) = tokio::join!(
        prepare(&list, &[], cfg.path(), cache.path(), &opts),
        prepare(&list, &[], cfg.path(), cache.path(), &opts)
    );
    assert_eq!(a.unwrap().features[0].dir, b.unwrap().features[0].dir);
}

/// The generated scripts really work under `/bin/sh`: the wrapper sources both env files and
/// runs install.sh with the options (odd characters included), and the home lookup finds root's.
#[tokio::test]
async fn generated_scripts_run_under_sh() {
    let project = tempfile::tempdir().unwrap();
    let dc = project.path().join(".devcontainer");
    let dir = dc.join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("devcontainer-feature.json"),
        manifest(
            "probe",
            "1.0.0",
            json!({"options": {
            "out": {"type": "string", "default": ""},
            "greeting": {"type": "string", "default": "hello"},
            "loud": {"type": "boolean", "default": true}}}),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("install.sh"),
        "#!/bin/sh\nset -e\nprintf '%s|%s|%s|%s|%s\\n' \"$GREETING\" \"$LOUD\" \"$_CONTAINER_USER\" \"$_REMOTE_USER\" \"$_REMOTE_USER_HOME\" > \"$OUT\"\n",
    )
    .unwrap();
    let out = project.path().join("out.txt");
    let greeting = "it's \"quoted\" $HOME `x` \\ done";
    let list = feats(&[(
        "./probe",
        json!({"out": out.to_str().unwrap(), "greeting": greeting}),
    )]);
    let r = prepare(
        &list,
        &[],
        &dc,
        tempfile::tempdir().unwrap().path(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let users = BuildUsers {
        remote_user: Some("dev".into()),
        remote_user_home: Some("/home/dev".into()),
        ..BuildUsers::new("root")
    };
    let plan = r.build_plan("debian:bookworm", &users, ctx.path()).unwrap();

    let status = std::process::Command::new("sh")
        .arg("./devcontainer-features-install.sh")
        .current_dir(ctx.path().join("probe_0"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("{greeting}|true|root|dev|/home/dev\n"));

    // The home lookup of the Dockerfile, pointed at a scratch file instead of the image's.
    let lookup = plan
        .dockerfile
        .split("RUN \\\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .to_string();
    let scratch = project.path().join("builtin.env");
    let script = lookup.replace(
        &format!(
            "{}/devcontainer-features.builtin.env",
            warren_features::FEATURES_DEST
        ),
        scratch.to_str().unwrap(),
    );
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    let home = std::fs::read_to_string(&scratch).unwrap();
    let root_home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("root:"))
        .and_then(|l| l.split(':').nth(5))
        .unwrap()
        .to_string();
    assert_eq!(home, format!("_CONTAINER_USER_HOME={root_home}\n"));
}

/// A server fetches its users' features only from public addresses: a registry or tarball host on
/// loopback (or any private address, by name or literal) is refused before any request is made.
#[tokio::test]
async fn public_only_fetches_never_reach_loopback_or_private_hosts() {
    let public_only = FetchOptions {
        public_only: true,
        ..Default::default()
    };
    let cfg = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    if let Some(reg) = Registry::start() {
        push(&reg, "hello", &["1"], "1.0.0", json!({})).await;
        let port = reg.addr.rsplit(':').next().unwrap().to_string();
        let before = reg.api_requests();
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let r = format!("{host}/acme/features/hello:1");
            let e = prepare(
                &feats(&[(&r, json!({}))]),
                &[],
                cfg.path(),
                cache.path(),
                &public_only,
            )
            .await
            .unwrap_err();
            one_line_with_hint(&e, &r);
            assert!(e.to_string().contains("public"), "{e}");
        }
        assert_eq!(
            reg.api_requests(),
            before,
            "no request reached the registry"
        );
        // The same registry is fine when the caller allows it (the embedded CLI's own features).
        prepare(
            &feats(&[(&format!("{}/acme/features/hello:1", reg.addr), json!({}))]),
            &[],
            cfg.path(),
            cache.path(),
            &FetchOptions::default(),
        )
        .await
        .unwrap();
    }
    let ca = test_ca();
    let server = HttpsServer::start(&ca).await;
    server.serve(
        "/devcontainer-feature-x.tgz",
        gzip(&feature_tar(&manifest("x", "1.0.0", json!({})), &[])),
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    for url in [
        format!("https://127.0.0.1:{port}/devcontainer-feature-x.tgz"),
        format!("https://2130706433:{port}/devcontainer-feature-x.tgz"),
        "https://169.254.169.254/devcontainer-feature-x.tgz".to_string(),
        "https://10.1.2.3/devcontainer-feature-x.tgz".to_string(),
    ] {
        let e = prepare(
            &feats(&[(&url, json!({}))]),
            &[],
            cfg.path(),
            cache.path(),
            &FetchOptions {
                extra_root_certs_pem: vec![ca.ca_pem.clone()],
                ..public_only.clone()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not a public address"), "{url}: {e}");
    }
    assert_eq!(server.count(), 0, "no request reached the tarball server");
}
