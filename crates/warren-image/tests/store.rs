//! End-to-end tests of the image store on real files and real tools (busybox, tar, umoci).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use warren_image::{BootstrapOptions, ImageConfig, ImageError, ImageStore};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tiny root filesystem: busybox plus a few applet symlinks, a hardlink and odd modes.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("root")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in ["sh", "ls", "echo", "cat"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/hostname"), "warren\n").unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.bak")).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    root
}

fn sha256_file(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    )
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn rootfs_dir_import_unpacks_a_working_layer_with_default_config() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();

    let info = store.import_rootfs(&rootfs, "hello", None).unwrap();
    assert_eq!(info.name, "hello:latest");
    assert!(info.digest.starts_with("sha256:"));
    assert_eq!(info.layers, 1);
    assert!(info.size > fs::metadata("/bin/busybox").unwrap().len());
    assert!(info.created.is_some());

    let image = store.resolve("hello").unwrap();
    assert_eq!(image.digest, info.digest);
    assert_eq!(image.layer_dirs.len(), 1);
    let layer = &image.layer_dirs[0];
    assert!(layer.starts_with(tmp.path().join("store/layers")));
    assert_eq!(
        fs::read(layer.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    let root_mode = fs::metadata(layer.join("root")).unwrap().mode() & 0o7777;
    assert_eq!(root_mode, 0o700);
    let a = fs::metadata(layer.join("etc/hostname")).unwrap();
    let b = fs::metadata(layer.join("etc/hostname.bak")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink kept within the layer");
    // The unpacked binary really runs.
    let out = Command::new(layer.join("bin/busybox"))
        .args(["echo", "alive"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");

    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);

    let listed = store.list().unwrap();
    assert_eq!(listed, vec![info]);
}

#[test]
fn explicit_config_round_trips_through_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let config = ImageConfig {
        env: vec!["PATH=/bin".into(), "LANG=C.UTF-8".into()],
        cmd: vec!["-c".into(), "echo hi".into()],
        entrypoint: vec!["/bin/sh".into()],
        working_dir: Some("/root".into()),
        user: Some("1000:1000".into()),
        labels: BTreeMap::from([("org.example.team".to_string(), "dev".to_string())]),
        ..Default::default()
    };
    store
        .import_rootfs(&rootfs, "cfg:1", Some(config.clone()))
        .unwrap();
    assert_eq!(store.resolve("cfg:1").unwrap().config, config);
}

#[test]
fn rootfs_tar_gz_import_keeps_the_tarball_as_its_layer_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let tgz = tmp.path().join("rootfs.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&rootfs)
        .arg("."));
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import_rootfs(&tgz, "hello:gz", None).unwrap();
    assert_eq!(info.name, "hello:gz");

    let blob_hex = sha256_file(&tgz).trim_start_matches("sha256:").to_string();
    assert!(store_dir.join("blobs/sha256").join(&blob_hex).is_file());

    let image = store.resolve("hello:gz").unwrap();
    let layer = &image.layer_dirs[0];
    assert_eq!(
        fs::read(layer.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_to_string(layer.join("etc/hostname")).unwrap(),
        "warren\n"
    );
    // The layer directory is named after the digest of the *uncompressed* tar.
    let uncompressed = Command::new("gzip")
        .arg("-dc")
        .arg(&tgz)
        .output()
        .unwrap()
        .stdout;
    let diff_hex = hex::encode(Sha256::digest(&uncompressed));
    assert_eq!(layer, &store_dir.join("layers").join(diff_hex));
}

#[test]
fn auto_import_detects_rootfs_and_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store.import(&rootfs, "auto", None).unwrap();
    assert_eq!(info.layers, 1);
    let layout = build_layout(tmp.path(), LayoutOpts::default());
    let info = store.import(&layout, "auto:layout", None).unwrap();
    assert_eq!(info.layers, 2);
}

// ---------- hand-written OCI layouts ----------

fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn write_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let d = digest(data);
    fs::write(
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        data,
    )
    .unwrap();
    (d, data.len() as u64)
}

#[derive(Default)]
struct LayoutOpts {
    zstd_top: bool,
    /// Extra manifests: (ref name, platform arch).
    extra: Vec<(&'static str, &'static str)>,
    corrupt_layer: bool,
}

/// Bottom layer: etc/keep, etc/remove-me, var/cache/{old1,old2} (gzip). Top layer (plain or
/// zstd): whiteout of etc/remove-me, opaque var/cache with var/cache/new.
fn build_layout(dir: &Path, opts: LayoutOpts) -> PathBuf {
    let layout = dir.join(format!("layout-{}", rand_suffix()));
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let l1 = tar_bytes(&[
        ("etc/", b""),
        ("etc/keep", b"kept\n"),
        ("etc/remove-me", b"bye\n"),
        ("var/", b""),
        ("var/cache/", b""),
        ("var/cache/old1", b"1"),
        ("var/cache/old2", b"2"),
    ]);
    let l2 = tar_bytes(&[
        ("etc/.wh.remove-me", b""),
        ("var/cache/.wh..wh..opq", b""),
        ("var/cache/new", b"new\n"),
    ]);
    let l1_blob = if opts.corrupt_layer {
        let mut g = gzip(&l1);
        let n = g.len();
        g[n / 2] ^= 0xff;
        g
    } else {
        gzip(&l1)
    };
    let (l1_digest, l1_size) = write_blob(&layout, &l1_blob);
    let (l2_media, l2_blob) = if opts.zstd_top {
        let out = Command::new("zstd")
            .args(["-q", "-c", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&l2)?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        ("application/vnd.oci.image.layer.v1.tar+zstd", out.stdout)
    } else {
        ("application/vnd.oci.image.layer.v1.tar", l2.clone())
    };
    let (l2_digest, l2_size) = write_blob(&layout, &l2_blob);

    let config = serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "FOO=bar"], "Cmd": ["/bin/sh"], "WorkingDir": "/etc",
                   "Labels": {"purpose": "test"}},
        "rootfs": {"type": "layers", "diff_ids": [digest(&l1), digest(&l2)]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let (config_digest, config_size) = write_blob(&layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l1_digest, "size": l1_size},
            {"mediaType": l2_media, "digest": l2_digest, "size": l2_size},
        ],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let (manifest_digest, manifest_size) = write_blob(&layout, &manifest);

    let mut manifests = vec![serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
        "platform": {"architecture": "amd64", "os": "linux"},
    })];
    for (tag, arch) in &opts.extra {
        // A one-layer image (just the bottom layer) under another tag / platform.
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": [format!("TAG={tag}")]},
            "rootfs": {"type": "layers", "diff_ids": [digest(&l1)]},
        }))
        .unwrap();
        let (cd, cs) = write_blob(&layout, &cfg);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l1_digest, "size": l1_size}],
        }))
        .unwrap();
        let (md, ms) = write_blob(&layout, &m);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn check_layered_image(store: &ImageStore, name: &str) {
    let image = store.resolve(name).unwrap();
    assert_eq!(image.layer_dirs.len(), 2);
    assert_eq!(image.config.working_dir.as_deref(), Some("/etc"));
    assert!(image.config.env.contains(&"FOO=bar".to_string()));
    assert_eq!(
        image.config.labels.get("purpose").map(String::as_str),
        Some("test")
    );
    let (bottom, top) = (&image.layer_dirs[0], &image.layer_dirs[1]);
    assert_eq!(
        fs::read_to_string(bottom.join("etc/keep")).unwrap(),
        "kept\n"
    );
    assert!(bottom.join("var/cache/old1").is_file());
    assert!(!top.join("etc/.wh.remove-me").exists());
    assert!(!top.join("var/cache/.wh..wh..opq").exists());
    if !is_root() {
        return;
    }
    let wh = fs::symlink_metadata(top.join("etc/remove-me")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is device 0:0");
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(
        top.join("var/cache"),
        "trusted.overlay.opaque",
        &mut buf[..],
    )
    .expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");

    // Mount the layers for real (when the kernel lets us) and look at the merged view.
    let mnt = tempfile::tempdir().unwrap();
    let lower = format!("lowerdir={}:{}", top.display(), bottom.display());
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lower])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if mounted {
        let _guard = Mount(mnt.path().to_path_buf());
        assert!(mnt.path().join("etc/keep").is_file());
        assert!(
            !mnt.path().join("etc/remove-me").exists(),
            "whiteout hides the file"
        );
        let mut cache: Vec<_> = fs::read_dir(mnt.path().join("var/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        cache.sort();
        assert_eq!(cache, vec!["new"], "opaque dir hides the lower contents");
    }
}

#[test]
fn oci_layout_with_whiteout_and_opaque_dir_is_converted_for_overlayfs() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path(), LayoutOpts::default());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store.import_oci_layout(&layout, "layered:v1").unwrap();
    assert_eq!(info.layers, 2);
    assert_eq!(info.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    check_layered_image(&store, "layered:v1");
}

#[test]
fn oci_layout_tarball_with_zstd_layer_imports() {
    if !have("zstd") {
        eprintln!("zstd not installed; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(
        tmp.path(),
        LayoutOpts {
            zstd_top: true,
            ..Default::default()
        },
    );
    let tarball = tmp.path().join("layout.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&layout)
        .arg("."));
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    store.import_oci_layout(&tarball, "zst").unwrap();
    check_layered_image(&store, "zst");
}

#[test]
fn manifest_is_chosen_by_tag_then_by_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(
        tmp.path(),
        LayoutOpts {
            extra: vec![("v2", "amd64"), ("odd", "s390x")],
            ..Default::default()
        },
    );
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    store.import_oci_layout(&layout, "multi:v2").unwrap();
    let image = store.resolve("multi:v2").unwrap();
    assert_eq!(image.config.env, vec!["TAG=v2"]);
    assert_eq!(image.layer_dirs.len(), 1);

    store.import_oci_layout(&layout, "multi:v1").unwrap();
    assert_eq!(store.resolve("multi:v1").unwrap().layer_dirs.len(), 2);

    // No tag match: the first manifest for this machine's platform.
    if std::env::consts::ARCH == "x86_64" {
        store.import_oci_layout(&layout, "multi:other").unwrap();
        assert_eq!(store.resolve("multi:other").unwrap().layer_dirs.len(), 2);
    }
}

#[test]
fn no_matching_manifest_lists_the_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("l");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let d = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(1), "size": 1,
         "annotations": {"org.opencontainers.image.ref.name": "a"},
         "platform": {"architecture": "mips64le", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(2), "size": 1,
         "annotations": {"org.opencontainers.image.ref.name": "b"},
         "platform": {"architecture": "riscv64", "os": "linux"}},
    ]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import_oci_layout(&layout, "x:c").unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingManifest { .. }),
        "{err:?}"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("a, b"), "{hint}");
}

#[test]
fn corrupted_layer_blob_is_refused_and_not_named() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(
        tmp.path(),
        LayoutOpts {
            corrupt_layer: true,
            ..Default::default()
        },
    );
    // The blob file was written under the digest of its (corrupted) bytes, so the
    // manifest still names it correctly; the diff_id check must catch the damage.
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import_oci_layout(&layout, "bad").unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch { .. } | ImageError::BadArchive { .. }
        ),
        "{err:?}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.resolve("bad").unwrap_err(),
        ImageError::NotFound { .. }
    ));
    // No layer got a final name from the damaged blob (and none was unpacked after it).
    assert_eq!(count_entries(&tmp.path().join("store/layers")), 0);
    assert_eq!(count_entries(&tmp.path().join("store/tmp")), 0);
}

#[test]
fn a_layout_directory_without_oci_layout_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import_oci_layout(&rootfs, "x").unwrap_err();
    assert!(matches!(err, ImageError::InvalidLayout { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("oci-layout"));
}

// ---------- umoci-built layout ----------

#[test]
fn umoci_built_two_layer_image_with_deletion_imports() {
    if !have("umoci") || !is_root() {
        eprintln!("umoci or root missing; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    let image = format!("{}:base", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));

    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/a"), "a").unwrap();
    fs::write(rootfs.join("etc/b"), "b").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    fs::remove_dir_all(&bundle).unwrap();

    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    fs::remove_file(bundle.join("rootfs/etc/b")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.workingdir",
        "/etc",
        "--config.env",
        "HELLO=world",
    ]));

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store.import_oci_layout(&layout, "umo:base").unwrap();
    assert_eq!(info.layers, 2);
    let img = store.resolve("umo:base").unwrap();
    assert_eq!(img.config.working_dir.as_deref(), Some("/etc"));
    assert!(img.config.env.contains(&"HELLO=world".to_string()));
    let (bottom, top) = (&img.layer_dirs[0], &img.layer_dirs[1]);
    assert_eq!(
        fs::read(bottom.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(fs::read_to_string(bottom.join("etc/b")).unwrap(), "b");
    let wh = fs::symlink_metadata(top.join("etc/b")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
}

// ---------- sharing, removal, gc ----------

#[test]
fn images_sharing_a_layer_store_it_once_and_removal_keeps_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let a = store.import_rootfs(&rootfs, "a", None).unwrap();
    let b = store
        .import_rootfs(
            &rootfs,
            "b:2",
            Some(ImageConfig {
                cmd: vec!["/bin/ls".into()],
                ..Default::default()
            }),
        )
        .unwrap();
    assert_ne!(a.digest, b.digest, "different configs, different manifests");
    assert_eq!(
        count_entries(&store_dir.join("layers")),
        1,
        "layer stored once"
    );
    let layer = store.resolve("a").unwrap().layer_dirs[0].clone();
    assert_eq!(store.resolve("b:2").unwrap().layer_dirs[0], layer);

    store.remove("a").unwrap();
    assert!(matches!(
        store.resolve("a").unwrap_err(),
        ImageError::NotFound { .. }
    ));
    let b_img = store.resolve("b:2").unwrap();
    assert_eq!(b_img.config.cmd, vec!["/bin/ls"]);
    assert_eq!(
        fs::read(layer.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    // a's manifest and config are gone; b's manifest, config and the shared layer blob stay.
    assert_eq!(count_entries(&store_dir.join("blobs/sha256")), 3);
    let a_hex = a.digest.trim_start_matches("sha256:");
    assert!(!store_dir.join("blobs/sha256").join(a_hex).exists());

    store.remove("b:2").unwrap();
    assert_eq!(count_entries(&store_dir.join("layers")), 0);
    assert_eq!(count_entries(&store_dir.join("blobs/sha256")), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn remove_with_refuses_images_in_use_and_keeps_pinned_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store.import_rootfs(&rootfs, "dev", None).unwrap();

    let err = store
        .remove_with("dev:latest", &["dev".to_string()])
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err:?}");
    assert!(err.hint().is_some());
    let err = store
        .remove_with("dev", std::slice::from_ref(&info.digest))
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err:?}");
    assert!(
        store.resolve("dev").is_ok(),
        "refused removal keeps the image"
    );

    // A workspace pinned to the old digest keeps its content through later collections,
    // even after the name moved on to a re-import.
    let newer = store.import_rootfs(&rootfs, "dev", None).unwrap();
    assert_ne!(newer.digest, info.digest);
    store.import_rootfs(&rootfs, "junk", None).unwrap();
    store
        .remove_with("junk", std::slice::from_ref(&info.digest))
        .unwrap();
    assert!(store.resolve(&info.digest).is_ok(), "pinned digest kept");
    // Without the pin, the old manifest is collected.
    store.remove_with("dev", &[]).unwrap();
    assert!(matches!(
        store.resolve(&info.digest).unwrap_err(),
        ImageError::NotFound { .. }
    ));
}

#[test]
fn resolve_by_digest_and_missing_layers_are_unpacked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import_rootfs(&rootfs, "x", None).unwrap();
    let by_digest = store.resolve(&info.digest).unwrap();
    assert_eq!(by_digest.digest, info.digest);

    fs::remove_dir_all(&by_digest.layer_dirs[0]).unwrap();
    let again = store.resolve("x").unwrap();
    assert!(again.layer_dirs[0].join("bin/busybox").is_file());
}

#[test]
fn concurrent_imports_do_not_corrupt_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store_dir = tmp.path().join("store");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let rootfs = rootfs.clone();
            let store_dir = store_dir.clone();
            std::thread::spawn(move || {
                // Each thread opens its own handle, like separate processes would.
                let store = ImageStore::open(&store_dir).unwrap();
                store
                    .import_rootfs(&rootfs, &format!("img{i}"), None)
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let store = ImageStore::open(&store_dir).unwrap();
    let names: Vec<_> = store.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        vec!["img0:latest", "img1:latest", "img2:latest", "img3:latest"]
    );
    assert_eq!(count_entries(&store_dir.join("layers")), 1);
    assert_eq!(count_entries(&store_dir.join("tmp")), 0, "no leftovers");
}

// ---------- refusals ----------

#[test]
fn tar_with_parent_path_is_refused_and_writes_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = tmp.path().join("evil.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&evil).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o644);
        let name = b"../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"pwn"[..]).unwrap();
        b.finish().unwrap();
    }
    let store_dir = tmp.path().join("sub/store");
    let store = ImageStore::open(&store_dir).unwrap();
    let err = store.import_rootfs(&evil, "evil", None).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
    assert!(err.to_string().contains("../escape"), "{err}");
    // Not next to the store, not next to its temp dir, not anywhere up the tree.
    for dir in [
        tmp.path().to_path_buf(),
        tmp.path().join("sub"),
        store_dir.clone(),
        store_dir.join("tmp"),
    ] {
        assert!(
            !dir.join("escape").exists(),
            "escaped into {}",
            dir.display()
        );
    }
    assert_eq!(count_entries(&store_dir.join("layers")), 0);
    assert_eq!(count_entries(&store_dir.join("blobs/sha256")), 0);
    assert_eq!(count_entries(&store_dir.join("tmp")), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn invalid_names_are_refused_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    for bad in ["Bad", "has space", "-x", "x:", "a:b:c/d"] {
        assert!(matches!(
            store.import_rootfs(&rootfs, bad, None).unwrap_err(),
            ImageError::InvalidName { .. }
        ));
        assert!(matches!(
            store.resolve(bad).unwrap_err(),
            ImageError::InvalidName { .. }
        ));
        assert!(matches!(
            store.remove(bad).unwrap_err(),
            ImageError::InvalidName { .. }
        ));
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn unknown_names_give_not_found_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.resolve("nope").unwrap_err();
    match &err {
        ImageError::NotFound { name } => assert_eq!(name, "nope:latest"),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "image `nope:latest` not found");
    assert_eq!(
        err.hint().unwrap(),
        "import it with `warren image import PATH NAME` or build one with `warren image bootstrap NAME`"
    );
    assert!(matches!(
        store.remove("nope").unwrap_err(),
        ImageError::NotFound { .. }
    ));
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        store.resolve(&missing).unwrap_err(),
        ImageError::NotFound { .. }
    ));
}

// ---------- bootstrap ----------

#[test]
fn bootstrap_without_mmdebstrap_hints_at_apt_get() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let opts = BootstrapOptions {
        program: tmp.path().join("no-such-mmdebstrap"),
        ..Default::default()
    };
    let err = store
        .bootstrap_debian("deb", &opts, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ImageError::ToolMissing { .. }), "{err:?}");
    assert_eq!(
        err.hint().unwrap(),
        "install it with `apt-get install mmdebstrap`"
    );
}

/// Writes an executable stand-in for mmdebstrap that prints progress and tars `rootfs`
/// into its output argument (the last one that is not a mirror: here the last).
fn fake_mmdebstrap(dir: &Path, rootfs: &Path, exit: i32) -> PathBuf {
    let script = dir.join("fake-mmdebstrap");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"I: args $*\"\n\
             printf 'I: step one\\rI: step two\\n' >&2\n\
             for a in \"$@\"; do out=\"$a\"; done\n\
             [ {exit} -eq 0 ] || {{ echo 'E: mirror unreachable' >&2; exit {exit}; }}\n\
             tar -cf \"$out\" -C '{}' .\n",
            rootfs.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn bootstrap_streams_progress_and_imports_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let opts = BootstrapOptions {
        program: fake_mmdebstrap(tmp.path(), &rootfs, 0),
        include: vec!["git".into()],
        ..Default::default()
    };
    let mut lines = Vec::new();
    let info = store
        .bootstrap_debian("deb:bookworm", &opts, &mut |l| lines.push(l.to_string()))
        .unwrap();
    assert_eq!(info.name, "deb:bookworm");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("--variant=minbase --include=git bookworm")),
        "{lines:?}"
    );
    assert!(lines.contains(&"I: step one".to_string()), "{lines:?}");
    assert!(lines.contains(&"I: step two".to_string()), "{lines:?}");
    let image = store.resolve("deb:bookworm").unwrap();
    assert_eq!(image.config.cmd, vec!["/bin/bash"]);
    assert!(image.layer_dirs[0].join("bin/busybox").is_file());
    assert_eq!(
        count_entries(&store_dir.join("tmp")),
        0,
        "output tar removed"
    );
}

#[test]
fn failing_bootstrap_reports_the_last_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let opts = BootstrapOptions {
        program: fake_mmdebstrap(tmp.path(), &rootfs, 3),
        ..Default::default()
    };
    let err = store
        .bootstrap_debian("deb", &opts, &mut |_| {})
        .unwrap_err();
    match &err {
        ImageError::ToolFailed { last_line, .. } => {
            assert_eq!(last_line, "E: mirror unreachable")
        }
        other => panic!("{other:?}"),
    }
    assert!(store.list().unwrap().is_empty());
}

/// Runs the real mmdebstrap (needs root, network and ~20 s+): `cargo test -- --ignored`.
#[test]
#[ignore]
fn real_mmdebstrap_bootstrap() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store
        .bootstrap_debian("debian:bookworm", &BootstrapOptions::default(), &mut |l| {
            eprintln!("{l}")
        })
        .unwrap();
    assert_eq!(info.layers, 1);
    let image = store.resolve("debian:bookworm").unwrap();
    let layer = &image.layer_dirs[0];
    assert!(layer.join("etc/debian_version").is_file());
    assert!(layer.join("usr/bin/apt-get").is_file());
}
