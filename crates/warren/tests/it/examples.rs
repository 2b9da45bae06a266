//! The README's main job, end to end: `examples/hello` on a Debian image Warren builds itself from
//! Debian's packages (mmdebstrap), in a private state dir.

use std::path::Path;

use crate::util::{stderr, stdout, warren};

#[test]
fn examples_hello_comes_up_on_a_bootstrapped_debian_image() {
    if which("mmdebstrap").is_none() {
        panic!("mmdebstrap is missing: run scripts/deps (scripts/test does)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let o = warren(&state, &["up", hello.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "up failed: {err}");
    assert!(
        err.contains("building it from Debian packages"),
        "first use bootstraps the image: {err}"
    );
    assert!(
        err.contains("post-create ran in /workspaces/hello"),
        "{err}"
    );
    let o = warren(&state, &["exec", "hello", "--", "sh", "hello.sh"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("Hello from a Warren workspace"), "{out}");
    assert!(out.contains("Debian GNU/Linux 12 (bookworm)"), "{out}");
    assert!(out.contains("hostname:  hello"), "{out}");
    assert!(out.contains("folder:    /workspaces/hello"), "{out}");
    assert!(warren(&state, &["delete", "--force", "hello"])
        .status
        .success());
    let images = stdout(&warren(&state, &["image", "ls"]));
    assert!(images.contains("debian:bookworm"), "{images}");

    // examples/dockerfile on the same Debian image: built by Warren, then from the cache.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dockerfile");
    let o = warren(&state, &["up", example.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "up failed: {err}");
    assert!(
        err.contains("Hello from an image Warren built, dev!"),
        "postCreate: {err}"
    );
    let o = warren(
        &state,
        &[
            "exec",
            "dockerfile",
            "--",
            "sh",
            "-c",
            "pwd; cat /etc/motd; echo $EDITOR",
        ],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.starts_with("/workspaces/dockerfile\n"), "{out}");
    assert!(out.contains("built from examples/dockerfile"), "{out}");
    assert!(out.ends_with("vi\n"), "{out}");
    let o = warren(&state, &["--json", "build", example.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sandboxes_started"], 0, "{v}");
    assert!(warren(&state, &["delete", "--force", "dockerfile"])
        .status
        .success());
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}
