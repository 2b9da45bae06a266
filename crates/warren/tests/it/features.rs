//! Dev Container features from a real OCI registry (`docker-registry` on 127.0.0.1), installed by
//! `warren up` as the reference CLI would: the path a `ghcr.io/...` feature takes, end to end.

use serde_json::json;

use crate::util::{stderr, World};

// The features crate's registry helpers: a real docker-registry and a pusher for feature artifacts.
#[path = "../../../warren-features/tests/common/mod.rs"]
mod registry;

/// A feature tar whose install.sh writes its option into the image.
fn feature_tar(manifest: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("./devcontainer-feature.json", manifest, 0o644),
        (
            "./install.sh",
            "#!/bin/sh\nset -e\nmkdir -p /usr/local/share\necho \"hello $WHO\" > /usr/local/share/hello\n",
            0o755,
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn oci_features_from_a_registry_install_through_up_and_come_from_the_cache_next_time() {
    let Some(reg) = registry::Registry::start() else {
        return;
    };
    let manifest = json!({
        "id": "hello", "version": "1.2.0",
        "options": {"who": {"type": "string", "default": "world"}},
        "containerEnv": {"HELLO_FEATURE": "installed"},
        "postCreateCommand": "echo from-the-feature > marker",
    })
    .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(reg.push_feature(
        "acme/features/hello",
        &["1", "1.2", "1.2.0", "latest"],
        &feature_tar(&manifest),
        &manifest,
    ));
    let w = World::new();
    let config = |name: &str| {
        json!({
            "image": "busybox",
            "waitFor": "postCreateCommand",
            "features": {format!("{}/acme/features/hello:1", reg.addr): {"who": name}},
        })
        .to_string()
    };
    let dir = w.project("ociapp", &config("warren"));
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, out, err) = w.sh(
        "ociapp",
        "cat /usr/local/share/hello; echo $HELLO_FEATURE; cat marker",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello warren\ninstalled\nfrom-the-feature\n");

    // Another project with the same feature: fetched from Warren's cache, not the registry.
    let before = reg.api_requests();
    let again = w.project("ociagain", &config("again"));
    let o = w.warren(&["up", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        reg.api_requests(),
        before,
        "no registry request the second time"
    );
    assert_eq!(
        w.sh("ociagain", "cat /usr/local/share/hello").1,
        "hello again\n"
    );

    // A feature the registry does not have is named, with the reason and a hint.
    let missing = w.project(
        "ocimissing",
        &json!({"image": "busybox",
                "features": {format!("{}/acme/features/nope:1", reg.addr): {}}})
        .to_string(),
    );
    let o = w.warren(&["up", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("acme/features/nope") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(w.state_of("ocimissing"), None);
}
