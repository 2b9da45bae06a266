//! Warren's Dockerfile builder against the real runtime: busybox base images made by the test,
//! RUN steps in build sandboxes, layers with whiteouts, the cache, failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use warren_build::view::LayerView;
use warren_build::{BuildError, BuildRequest, BuiltImage, Network};
use warren_image::ImageStore;
use warren_runtime::{LinuxRuntime, OciRuntime, Runtime};

use crate::util::{busybox_rootfs, warren_exe};

struct Fx {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    images: ImageStore,
    rt: LinuxRuntime,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    busybox_rootfs(&dir.join("rootfs"));
    let images = ImageStore::open(&dir.join("images")).unwrap();
    images
        .import_rootfs(&dir.join("rootfs"), "busybox:test", None)
        .unwrap();
    let rt = LinuxRuntime::new(
        &dir.join("builds/sandboxes"),
        OciRuntime::Libcontainer,
        &warren_exe(),
    )
    .without_tools();
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    Fx {
        dir,
        _tmp: tmp,
        images,
        rt,
    }
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl Fx {
    fn ctx(&self) -> PathBuf {
        self.dir.join("ctx")
    }

    fn file(&self, rel: &str, content: &str) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn req(&self, dockerfile: &str, tag: &str) -> BuildRequest {
        BuildRequest {
            dockerfile: dockerfile.to_string(),
            dockerfile_path: self.ctx().join("Dockerfile"),
            context_dir: self.ctx(),
            build_args: BTreeMap::new(),
            target: None,
            tag: tag.to_string(),
            network: Network::Isolated,
            no_cache: false,
            labels: BTreeMap::new(),
            public_fetches_only: false,
        }
    }

    fn build_req(&self, req: &BuildRequest) -> (Result<BuiltImage, BuildError>, String) {
        let log = Log::default();
        let mut w = log.clone();
        let r = warren_build::build(
            &self.images,
            &self.rt,
            &self.dir.join("builds"),
            req,
            &mut w,
        );
        (r, log.text())
    }

    fn build(&self, dockerfile: &str, tag: &str) -> BuiltImage {
        let (r, log) = self.build_req(&self.req(dockerfile, tag));
        match r {
            Ok(b) => b,
            Err(e) => panic!("build failed: {e}\nhint: {:?}\nlog:\n{log}", e.hint()),
        }
    }

    fn view(&self, tag: &str) -> LayerView {
        LayerView::new(self.images.resolve(tag).unwrap().layer_dirs)
    }

    fn no_sandboxes_left(&self) {
        assert_eq!(self.rt.list().unwrap(), Vec::<String>::new());
    }
}

fn names(v: &LayerView, dir: &str) -> Vec<String> {
    let comps = v.resolve(dir, true).unwrap();
    v.read_dir(&comps).into_keys().collect()
}

#[test]
fn config_instructions_end_up_in_the_image_config() {
    let f = fx();
    let b = f.build(
        r#"ARG BASE=busybox:test
FROM --platform=$BUILDPLATFORM ${BASE}
ARG WHO=world
ARG TARGETARCH
ENV GREETING="hello ${WHO}" OTHER=${NOPE:-fallback}
WORKDIR /srv/app
USER dev:dev
LABEL org.example.team=dev "with space"=yes arch=$TARGETARCH
EXPOSE 8080 53/udp
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/sh"]
CMD echo $GREETING
"#,
        "cfg:1",
    );
    assert_eq!(b.sandboxes_started, 0, "no RUN, no sandbox");
    let img = f.images.resolve("cfg:1").unwrap();
    let c = &img.config;
    assert!(c.env.contains(&"GREETING=hello world".to_string()), "{c:?}");
    assert!(c.env.contains(&"OTHER=fallback".to_string()), "{c:?}");
    assert!(
        c.labels["arch"] == "amd64" || c.labels["arch"] == "arm64",
        "{c:?}"
    );
    assert_eq!(c.working_dir.as_deref(), Some("/srv/app"));
    assert_eq!(c.user.as_deref(), Some("dev:dev"));
    assert_eq!(
        c.labels.get("org.example.team").map(String::as_str),
        Some("dev")
    );
    assert_eq!(c.labels.get("with space").map(String::as_str), Some("yes"));
    assert!(c.exposed_ports.contains("8080/tcp") && c.exposed_ports.contains("53/udp"));
    assert_eq!(c.shell, ["/bin/sh", "-ec"]);
    assert_eq!(c.entrypoint, ["/bin/sh"]);
    assert_eq!(c.cmd, ["/bin/sh", "-ec", "echo $GREETING"]);
    // WORKDIR made its directory.
    let v = f.view("cfg:1");
    assert!(v.lookup(&["srv".into(), "app".into()]).is_some());
}

#[test]
fn run_steps_become_layers_with_whiteouts_and_opaque_dirs() {
    let f = fx();
    let b = f.build(
        r#"FROM busybox:test
ARG STAMP=v1
RUN echo "built $STAMP" > /root/built && echo to-the-log
RUN rm /etc/group && rm -rf /home && mkdir /home && echo new > /home/new
RUN id -u > /tmp/uid-root
USER dev
WORKDIR /home/new-dev
"#,
        "layers:1",
    );
    assert_eq!(b.sandboxes_started, 3);
    let v = f.view("layers:1");
    assert_eq!(v.read_file("/root/built").as_deref(), Some("built v1\n"));
    assert_eq!(v.read_file("/tmp/uid-root").as_deref(), Some("0\n"));
    assert_eq!(
        v.read_file("/etc/group"),
        None,
        "deleted file is whited out"
    );
    assert!(v.read_file("/etc/passwd").is_some());
    assert_eq!(
        names(&v, "/home"),
        ["new", "new-dev"],
        "replaced dir is opaque"
    );
    // The mount points the runtime made in the sandbox (busybox has no /etc/hostname or
    // /etc/hosts) are not part of any layer.
    let img = f.images.resolve("layers:1").unwrap();
    for dir in &img.layer_dirs[1..] {
        for stub in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
            assert!(!dir.join(stub).exists(), "{stub} in {}", dir.display());
        }
    }
    f.no_sandboxes_left();
}

#[test]
fn multi_stage_copy_from_and_target() {
    let f = fx();
    f.file("src/hello.txt", "hello from the context\n");
    f.file("src/sub/deep.txt", "deep\n");
    let dockerfile = r#"FROM busybox:test AS build
COPY src/ /work/
RUN cat /work/hello.txt /work/sub/deep.txt > /work/combined && chmod 640 /work/combined

FROM busybox:test AS unused
RUN exit 9

FROM busybox:test
COPY --from=build --chown=dev --chmod=0750 /work/combined /bin/combined
COPY --from=busybox:test /etc/passwd /copied/
"#;
    let b = f.build(dockerfile, "multi:1");
    assert_eq!(b.sandboxes_started, 1, "the unused stage is skipped");
    let v = f.view("multi:1");
    // /bin is a real directory in busybox; the file lands in it with the asked owner and mode.
    let comps = v.resolve("/bin/combined", true).unwrap();
    let (_, meta) = v.lookup(&comps).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1000, 0o750)
    );
    assert_eq!(
        v.read_file("/bin/combined").as_deref(),
        Some("hello from the context\ndeep\n")
    );
    assert!(v
        .read_file("/copied/passwd")
        .unwrap()
        .contains("dev:x:1000"));
    assert!(
        v.read_file("/work/combined").is_none(),
        "only the last stage is the image"
    );

    let mut req = f.req(dockerfile, "multi:build");
    req.target = Some("build".into());
    let (r, log) = f.build_req(&req);
    let b = r.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(b.sandboxes_started, 0, "the build stage is cached: {log}");
    let v = f.view("multi:build");
    assert!(v.read_file("/work/combined").is_some());
}

#[test]
fn unchanged_rebuild_hits_the_cache_and_starts_no_sandbox() {
    let f = fx();
    f.file("app.sh", "echo app v1\n");
    f.file(".dockerignore", "*.log\ngen/\n!gen/keep.txt\n");
    f.file("noise.log", "ignored\n");
    f.file("gen/keep.txt", "kept\n");
    f.file("gen/drop.txt", "dropped\n");
    let dockerfile = "FROM busybox:test\nCOPY . /app/\nRUN sh /app/app.sh > /app/out\nENV X=1\n";
    let first = f.build(dockerfile, "cache:1");
    assert_eq!(
        (
            first.layer_steps,
            first.cached_steps,
            first.sandboxes_started
        ),
        (2, 0, 1)
    );
    let v = f.view("cache:1");
    assert!(
        v.read_file("/app/noise.log").is_none(),
        ".dockerignore applies"
    );
    assert_eq!(
        v.read_file("/app/gen/keep.txt").as_deref(),
        Some("kept\n"),
        "exception"
    );
    assert!(v.read_file("/app/gen/drop.txt").is_none());

    let t = std::time::Instant::now();
    let again = f.build(dockerfile, "cache:1");
    eprintln!("unchanged rebuild took {:?}", t.elapsed());
    assert_eq!(
        (
            again.layer_steps,
            again.cached_steps,
            again.sandboxes_started
        ),
        (2, 2, 0)
    );
    assert_eq!(again.digest, first.digest, "same steps, same image");

    // An ignored file changing does not matter; a source changing does.
    f.file("noise.log", "changed\n");
    assert_eq!(f.build(dockerfile, "cache:1").sandboxes_started, 0);
    f.file("app.sh", "echo app v2\n");
    let changed = f.build(dockerfile, "cache:1");
    assert_eq!((changed.cached_steps, changed.sandboxes_started), (0, 1));
    assert_eq!(
        f.view("cache:1").read_file("/app/out").as_deref(),
        Some("app v2\n")
    );

    // A build argument the RUN sees is part of its key.
    let df = "FROM busybox:test\nARG V=a\nRUN echo $V > /v\n";
    let mut req = f.req(df, "cache:args");
    assert_eq!(f.build_req(&req).0.unwrap().sandboxes_started, 1);
    assert_eq!(f.build_req(&req).0.unwrap().sandboxes_started, 0);
    req.build_args.insert("V".into(), "b".into());
    assert_eq!(f.build_req(&req).0.unwrap().sandboxes_started, 1);
    assert_eq!(f.view("cache:args").read_file("/v").as_deref(), Some("b\n"));
    req.no_cache = true;
    assert_eq!(
        f.build_req(&req).0.unwrap().sandboxes_started,
        1,
        "--no-cache"
    );
}

#[test]
fn a_failed_run_keeps_its_output_and_the_old_tag_and_cleans_up() {
    let f = fx();
    let good = f.build("FROM busybox:test\nRUN echo good > /state\n", "fail:1");
    let (r, log) = f.build_req(&f.req(
        "FROM busybox:test\n\nRUN echo good > /state\nRUN echo doomed-output; echo on-stderr >&2; exit 3\n",
        "fail:1",
    ));
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::RunFailed {
                line: 4,
                code: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("Dockerfile:4: "), "{e}");
    assert!(e.to_string().contains("exit code 3"), "{e}");
    assert!(
        log.contains("doomed-output") && log.contains("on-stderr"),
        "{log}"
    );
    assert_eq!(f.images.resolve("fail:1").unwrap().digest, good.digest);
    f.no_sandboxes_left();
    assert!(!Path::new(&f.dir.join("builds/locks"))
        .read_dir()
        .unwrap()
        .any(|_| true));
}

#[test]
fn bad_dockerfiles_fail_with_the_line_and_a_hint() {
    let f = fx();
    let cases = [
        (
            "FROM busybox:test\nONBUILD RUN true\n",
            "Dockerfile:2: ONBUILD is not supported",
        ),
        (
            "FROM nosuch:image\n",
            "Dockerfile:1: image `nosuch:image` is not in Warren's image store",
        ),
        (
            "FROM busybox:test\nCOPY missing.txt /x\n",
            "Dockerfile:2: COPY: `missing.txt` not found",
        ),
        (
            "FROM busybox:test\nCOPY --from=nosuch /a /b\n",
            "Dockerfile:2: image `nosuch` is not",
        ),
        (
            "FROM --platform=linux/s390x busybox:test\n",
            "Dockerfile:1: platform `linux/s390x`",
        ),
        (
            "FROM busybox:test\nEXPOSE http\n",
            "Dockerfile:2: EXPOSE: `http` is not a port",
        ),
        (
            "FROM busybox:test\nCOPY --chown=ghost a b\n",
            "Dockerfile:2: COPY --chown: user `ghost`",
        ),
    ];
    for (df, want) in cases {
        let (r, _) = f.build_req(&f.req(df, "bad:1"));
        let e = r.unwrap_err();
        assert!(e.to_string().starts_with(want), "{df:?}: {e}");
        assert!(e.hint().is_some(), "{df:?}: {e} has no hint");
    }
    let mut req = f.req("FROM busybox:test AS a\n", "bad:1");
    req.target = Some("b".into());
    assert!(f
        .build_req(&req)
        .0
        .unwrap_err()
        .to_string()
        .contains("target stage `b`"));
    assert!(f.images.resolve("bad:1").is_err(), "nothing was tagged");
}

#[test]
fn add_extracts_local_tarballs() {
    let f = fx();
    let tarball = f.ctx().join("files.tar.gz");
    {
        let gz = flate2_writer(&tarball);
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "inner/file.txt", &b"inside"[..])
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    f.file("plain.txt", "plain");
    f.build(
        "FROM busybox:test\nADD files.tar.gz plain.txt /opt/\n",
        "add:1",
    );
    let v = f.view("add:1");
    assert_eq!(
        v.read_file("/opt/inner/file.txt").as_deref(),
        Some("inside")
    );
    assert_eq!(v.read_file("/opt/plain.txt").as_deref(), Some("plain"));
}

fn flate2_writer(path: &Path) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    )
}

/// `warren up` of a `build.dockerfile` configuration end to end, then `warren build` from the
/// cache, then a broken Dockerfile through the CLI.
#[test]
fn cli_up_builds_the_dockerfile_and_build_reuses_the_cache() {
    let w = crate::util::World::new();
    let dir = w.project(
        "dockerfile-app",
        r#"{
  // Warren builds this with its own builder.
  "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"GREETING": "hi"}},
  "postCreateCommand": "cat /etc/built > /tmp/post-create"
}"#,
    );
    std::fs::write(
        dir.join(".devcontainer/Dockerfile"),
        "FROM busybox\nARG GREETING=hello\nRUN echo \"$GREETING from the build\" > /etc/built\nCOPY hello.txt /opt/hello.txt\nENV FROM_DOCKERFILE=yes\n\
         RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /etc/netdevs\n",
    )
    .unwrap();
    std::fs::write(dir.join("hello.txt"), "hello file\n").unwrap();
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    let err = crate::util::stderr(&o);
    assert!(o.status.success(), "up: {err}");
    assert!(
        err.contains("Building image warren-build/dockerfile-app-"),
        "{err}"
    );
    assert!(!err.contains("only `image` is supported"), "{err}");
    let ws = crate::util::stdout(&o).trim().to_string();
    let (code, out, e) = w.sh(
        &ws,
        "cat /etc/built /opt/hello.txt /tmp/post-create; echo $FROM_DOCKERFILE",
    );
    assert_eq!(code, 0, "{e}");
    assert_eq!(
        out,
        "hi from the build\nhello file\nhi from the build\nyes\n"
    );
    // A host-local build's RUN steps have the host's network: they see the interface of the
    // host's default route (interfaces of workspaces come and go meanwhile, so not the whole list).
    let uplink = std::fs::read_to_string("/proc/net/route")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000")).then(|| f[0].to_string())
        })
        .expect("the host has a default route");
    let (_, devs, _) = w.sh(&ws, "cat /etc/netdevs");
    assert!(devs.lines().any(|d| d == uplink), "{uplink} not in {devs}");

    let o = w.warren(&["--json", "build", dir.to_str().unwrap()]);
    assert!(o.status.success(), "build: {}", crate::util::stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sandboxes_started"], 0, "{v}");
    assert_eq!(v["cached_steps"], v["layer_steps"], "{v}");
    let o = w.warren(&["--json", "build", "--no-cache", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sandboxes_started"], 2, "{v}");

    std::fs::write(
        dir.join(".devcontainer/Dockerfile"),
        "FROM busybox\nHEALTHCHECK CMD true\n",
    )
    .unwrap();
    // The existing workspace starts without a build (a broken Dockerfile does not stop it).
    assert_eq!(w.warren(&["stop", &ws]).status.code(), Some(0));
    let o = w.warren(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    let o = w.warren(&["build", dir.to_str().unwrap()]);
    let err = crate::util::stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("Dockerfile:2: HEALTHCHECK is not supported"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let o = w.warren(&["delete", "--force", &ws]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));

    let plain = w.project("image-only", r#"{"image": "busybox"}"#);
    let o = w.warren(&["build", plain.to_str().unwrap()]);
    let err = crate::util::stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("no `build.dockerfile` to build"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// The shape the features engineer generates: each feature's folder copied under
/// /tmp/dev-container-features and its install.sh run from there, each its own cached layer.
#[test]
fn feature_style_dockerfiles_install_from_tmp_and_cache_per_feature() {
    let f = fx();
    for (n, id, line) in [
        (0, "one", "echo one > /etc/feature-one"),
        (
            1,
            "two",
            "echo two > /etc/feature-two; id -un > /etc/feature-two-user",
        ),
    ] {
        let dir = f.ctx().join(format!("{n}_{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("install.sh"),
            format!("#!/bin/sh\nset -e\n{line}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("install.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let df = "FROM busybox:test\nUSER root\n\
        COPY 0_one /tmp/dev-container-features/0_one\n\
        RUN cd /tmp/dev-container-features/0_one && ./install.sh\n\
        COPY 1_two /tmp/dev-container-features/1_two\n\
        RUN cd /tmp/dev-container-features/1_two && ./install.sh\n\
        ENV FEATURES=2\n";
    let b = f.build(df, "features:1");
    assert_eq!((b.layer_steps, b.sandboxes_started), (4, 2));
    let v = f.view("features:1");
    assert_eq!(v.read_file("/etc/feature-one").as_deref(), Some("one\n"));
    assert_eq!(
        v.read_file("/etc/feature-two-user").as_deref(),
        Some("root\n")
    );
    // Changing the second feature rebuilds only from its COPY on.
    std::fs::write(
        f.ctx().join("1_two/install.sh"),
        "#!/bin/sh\necho two-v2 > /etc/feature-two\n",
    )
    .unwrap();
    let b = f.build(df, "features:1");
    assert_eq!((b.cached_steps, b.sandboxes_started), (2, 1));
    assert_eq!(
        f.view("features:1")
            .read_file("/etc/feature-two")
            .as_deref(),
        Some("two-v2\n")
    );
}

#[test]
fn add_fetches_urls() {
    use std::io::{Read, Write};
    let f = fx();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let body = "fetched body\n";
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    f.build(
        &format!("FROM busybox:test\nADD http://127.0.0.1:{port}/files/data.txt /opt/\n"),
        "url:1",
    );
    server.join().unwrap();
    let v = f.view("url:1");
    assert_eq!(
        v.read_file("/opt/data.txt").as_deref(),
        Some("fetched body\n")
    );
    let comps = v.resolve("/opt/data.txt", true).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(v.lookup(&comps).unwrap().1.mode() & 0o777, 0o600);
}

#[test]
fn untrusted_builds_add_urls_only_from_public_addresses() {
    let f = fx();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for url in [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://localhost:{port}/x"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let mut req = f.req(
            &format!("FROM busybox:test\nADD {url} /opt/\n"),
            "url:untrusted",
        );
        req.public_fetches_only = true;
        let (r, log) = f.build_req(&req);
        let e = r.expect_err("a non-public URL must be refused");
        assert!(e.to_string().contains("public"), "{url}: {e}\n{log}");
        assert!(e.to_string().contains("Dockerfile:2"), "{e}");
    }
    assert!(
        listener.accept().is_err(),
        "nothing connected to the loopback server"
    );
    assert!(f.images.resolve("url:untrusted").is_err());
    f.no_sandboxes_left();
}

/// A file outside the context that no build may read, with content that cannot be guessed.
fn plant_outside_secret(f: &Fx) -> (PathBuf, String) {
    let secret = f.dir.join("outside/secret.txt");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    let text = format!("host secret {}\n", std::process::id());
    std::fs::write(&secret, &text).unwrap();
    (secret, text)
}

/// Every file in the image's layers: none may hold the host's secret.
fn assert_secret_not_in_layers(f: &Fx, tag: &str, secret: &str) {
    fn walk(p: &Path, secret: &str) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&e.path(), secret);
            } else if ft.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret.trim()),
                    "{} holds the host's file",
                    e.path().display()
                );
            }
        }
    }
    for layer in f.images.resolve(tag).unwrap().layer_dirs {
        walk(&layer, secret);
    }
}

#[test]
fn copy_symlinks_resolve_inside_the_context_never_on_the_host() {
    use std::os::unix::fs::symlink;
    let f = fx();
    let (secret, secret_text) = plant_outside_secret(&f);
    let ctx = f.ctx();
    // As Docker: a symlink in the context is followed, but inside the context. `/` is the
    // context root, `/etc` is `<context>/etc`, and `..` stops at the root.
    f.file("etc/hostname", "context hostname\n");
    symlink("/", ctx.join("link")).unwrap();
    symlink("/etc", ctx.join("abs")).unwrap();
    std::fs::create_dir_all(ctx.join("sub/deep")).unwrap();
    symlink("../../../../../../../..", ctx.join("sub/deep/up")).unwrap();
    symlink("deep/up", ctx.join("sub/chain")).unwrap();
    symlink("sub/chain/etc", ctx.join("chained")).unwrap();
    let host_hostname = std::fs::read_to_string("/etc/hostname").ok();
    let b = f.build(
        "FROM busybox:test\n\
         COPY link/etc/hostname /x\n\
         COPY abs/hostname /y\n\
         COPY chained/hostname /z\n\
         COPY sub/chain/etc/host* /g/\n\
         COPY abs /etcdir/\n",
        "escape:resolved",
    );
    assert_eq!(b.layer_steps, 5);
    let v = f.view("escape:resolved");
    for p in ["/x", "/y", "/z", "/g/hostname", "/etcdir/hostname"] {
        assert_eq!(
            v.read_file(p).as_deref(),
            Some("context hostname\n"),
            "{p} comes from <context>/etc/hostname"
        );
    }
    if let Some(h) = host_hostname.filter(|h| !h.trim().is_empty()) {
        assert_ne!(v.read_file("/x"), Some(h), "the host's /etc/hostname");
    }

    // Without `<context>/etc` the same paths find nothing: an error, never the host's file.
    std::fs::remove_dir_all(ctx.join("etc")).unwrap();
    let rel_secret = secret
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    symlink(&secret, ctx.join("abs-secret")).unwrap();
    symlink("../outside/secret.txt", ctx.join("rel-secret")).unwrap();
    symlink("sub/deep/up/outside", ctx.join("up-outside")).unwrap();
    for src in [
        "link/etc/hostname".to_string(),
        "abs/hostname".to_string(),
        "chained/hostname".to_string(),
        format!("link/{rel_secret}"),
        format!("sub/chain/{rel_secret}"),
        "abs-secret".to_string(),
        "rel-secret".to_string(),
        "up-outside/secret.txt".to_string(),
        "../outside/secret.txt".to_string(),
        "link/etc/host*".to_string(),
    ] {
        let (r, log) = f.build_req(&f.req(
            &format!("FROM busybox:test\nCOPY {src} /stolen\n"),
            "escape:refused",
        ));
        let e = r.expect_err(&format!("COPY {src} must not find anything: {log}"));
        let msg = e.to_string();
        assert!(
            msg.contains("not found in the build context") && msg.contains("Dockerfile:2"),
            "COPY {src}: {msg}"
        );
        assert!(f.images.resolve("escape:refused").is_err());
    }

    // A whole context with those links copies them as links; nothing is followed.
    let b = f.build("FROM busybox:test\nCOPY . /ctx/\n", "escape:tree");
    assert_eq!(b.layer_steps, 1);
    assert_secret_not_in_layers(&f, "escape:tree", &secret_text);
    assert_secret_not_in_layers(&f, "escape:resolved", &secret_text);
    let layer = f.images.resolve("escape:tree").unwrap().layer_dirs;
    let top = layer.last().unwrap();
    assert_eq!(
        std::fs::read_link(top.join("ctx/link")).unwrap(),
        Path::new("/")
    );
    assert_eq!(
        std::fs::read_link(top.join("ctx/abs-secret")).unwrap(),
        secret
    );
    assert_eq!(
        std::fs::read_link(top.join("ctx/sub/deep/up")).unwrap(),
        Path::new("../../../../../../../..")
    );
    f.no_sandboxes_left();
}

#[test]
fn copy_follows_symlinks_inside_the_context_as_docker() {
    use std::os::unix::fs::symlink;
    let f = fx();
    let ctx = f.ctx();
    f.file("real/file.txt", "real file\n");
    f.file("real/nested/n.txt", "nested\n");
    symlink("real/file.txt", ctx.join("alias.txt")).unwrap();
    symlink("/real/file.txt", ctx.join("abs-alias.txt")).unwrap();
    symlink("real", ctx.join("dirlink")).unwrap();
    symlink("file.txt", ctx.join("real/sibling")).unwrap();
    f.build(
        "FROM busybox:test\n\
         COPY alias.txt /a.txt\n\
         COPY abs-alias.txt /b.txt\n\
         COPY dirlink /d/\n\
         COPY dirlink/file.txt dirlink/nested/n.txt /f/\n\
         COPY dirlink/*.txt /glob/\n",
        "links:ok",
    );
    let v = f.view("links:ok");
    assert_eq!(v.read_file("/a.txt").as_deref(), Some("real file\n"));
    assert_eq!(v.read_file("/b.txt").as_deref(), Some("real file\n"));
    assert_eq!(v.read_file("/d/file.txt").as_deref(), Some("real file\n"));
    assert_eq!(v.read_file("/d/nested/n.txt").as_deref(), Some("nested\n"));
    assert_eq!(v.read_file("/f/file.txt").as_deref(), Some("real file\n"));
    assert_eq!(v.read_file("/f/n.txt").as_deref(), Some("nested\n"));
    assert_eq!(
        v.read_file("/glob/file.txt").as_deref(),
        Some("real file\n")
    );
    // A symlink inside a copied directory stays a symlink (and still works in the image).
    let (host, meta) = v.lookup(&v.resolve("/d/sibling", false).unwrap()).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(std::fs::read_link(host).unwrap(), Path::new("file.txt"));
    assert_eq!(v.read_file("/d/sibling").as_deref(), Some("real file\n"));

    // A symlink loop is an error, not a hang.
    symlink("loop-b", ctx.join("loop-a")).unwrap();
    symlink("loop-a", ctx.join("loop-b")).unwrap();
    let (r, _) = f.build_req(&f.req("FROM busybox:test\nCOPY loop-a /l\n", "links:loop"));
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("too many levels of symbolic links"),);

    // What a symlink leads to is still subject to .dockerignore.
    f.file("private.key", "key\n");
    f.file(".dockerignore", "private.key\n");
    symlink("private.key", ctx.join("public.key")).unwrap();
    let (r, _) = f.build_req(&f.req("FROM busybox:test\nCOPY public.key /k\n", "links:ignored"));
    assert!(r.unwrap_err().to_string().contains("not found"));
}

#[test]
fn a_dockerignore_symlink_or_special_file_is_refused() {
    use std::os::unix::fs::symlink;
    let f = fx();
    let (secret, _) = plant_outside_secret(&f);
    f.file("a.txt", "a\n");
    let df = "FROM busybox:test\nCOPY a.txt /a\n";
    for target in [secret.as_path(), Path::new("/dev/zero"), Path::new("a.txt")] {
        let link = f.ctx().join(".dockerignore");
        let _ = std::fs::remove_file(&link);
        symlink(target, &link).unwrap();
        let (r, log) = f.build_req(&f.req(df, "ignore:link"));
        let msg = r.expect_err(&log).to_string();
        assert!(
            msg.contains(".dockerignore is a symlink"),
            "{}: {msg}",
            target.display()
        );
    }
    std::fs::remove_file(f.ctx().join(".dockerignore")).unwrap();
    std::fs::create_dir(f.ctx().join(".dockerignore")).unwrap();
    let (r, _) = f.build_req(&f.req(df, "ignore:dir"));
    assert!(r.unwrap_err().to_string().contains("not a regular file"));
    std::fs::remove_dir(f.ctx().join(".dockerignore")).unwrap();
    f.file(".dockerignore", &"#".repeat(2 << 20));
    let (r, _) = f.build_req(&f.req(df, "ignore:big"));
    assert!(r.unwrap_err().to_string().contains("larger than"));
    f.file(".dockerignore", "# fine\n");
    f.build(df, "ignore:ok");
    assert!(f.images.resolve("ignore:link").is_err());
}

#[test]
fn special_files_in_the_context_never_block_the_build() {
    let f = fx();
    f.file("dir/a.txt", "a\n");
    let fifo = f.ctx().join("dir/fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipping: mkfifo unavailable");
        return;
    }
    let t = std::time::Instant::now();
    f.build(
        "FROM busybox:test\nCOPY dir /dir/\nCOPY dir/fifo /f\n",
        "fifo:1",
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    let v = f.view("fifo:1");
    assert_eq!(v.read_file("/dir/a.txt").as_deref(), Some("a\n"));
    assert!(
        v.lookup(&["dir".into(), "fifo".into()]).is_none(),
        "FIFOs are not copied"
    );
}

#[test]
fn copy_from_a_stage_resolves_symlinks_inside_that_image() {
    let f = fx();
    let (secret, secret_text) = plant_outside_secret(&f);
    let rel_secret = secret
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let df = format!(
        "FROM busybox:test AS build\n\
         RUN echo stage marker > /marker && ln -s / /rootlink && \
         ln -s ../../../../../../../../.. /up && mkdir -p /d && ln -s /{rel_secret} /d/abs\n\
         FROM busybox:test\n\
         COPY --from=build /rootlink/marker /up/marker /m/\n\
         COPY --from=build /d /d/\n"
    );
    f.build(&df, "from:links");
    let v = f.view("from:links");
    assert_eq!(v.read_file("/m/marker").as_deref(), Some("stage marker\n"));
    let (_, meta) = v.lookup(&["d".into(), "abs".into()]).unwrap();
    assert!(meta.file_type().is_symlink(), "copied as a link");
    assert_secret_not_in_layers(&f, "from:links", &secret_text);
    for src in [
        format!("/up/{rel_secret}"),
        format!("/rootlink/{rel_secret}"),
        "/d/abs".to_string(),
    ] {
        let (r, log) = f.build_req(&f.req(
            &df.replace(
                "COPY --from=build /d /d/",
                &format!("COPY --from=build {src} /s"),
            ),
            "from:escape",
        ));
        let msg = r.expect_err(&format!("{src}: {log}")).to_string();
        assert!(msg.contains("not found"), "{src}: {msg}");
    }
    assert!(f.images.resolve("from:escape").is_err());
}
