//! A git smart-HTTP server for tests: `git http-backend` run as CGI behind a small axum server in
//! the test process, serving bare repositories of a temporary directory. Basic auth is checked
//! on every request against the user and password the test gave the repository; pushing needs
//! them unless the repository allows anonymous pushes, cloning needs them unless it allows
//! anonymous reads. Every request is logged (method, path, query, authenticated user, status).
//!
//! Workspaces cannot reach the host's loopback, so the server listens in a network namespace of
//! its own, one per test process (`wgit-<pid>`; those of test processes that are gone are removed
//! when the next one starts), at an address of 198.19.0.0/16 (the benchmarking range, which
//! workspaces reach under the default `allow-all` policy) derived from the pid. The host routes
//! only that /32 to the namespace, never a wider range.
//!
//! Use: `#[path = "common/gitserve.rs"] mod gitserve;`, then
//! `let repo = gitserve::server().create_repo("demo", Access::public(), &[("README", "hi\n")]);`
//! and `repo.url()` (no credentials), `repo.file("main", "README")`, `repo.pushes()`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The host's Debian git (the server side and the test's own repository work).
const GIT: &str = "/usr/bin/git";

/// Who may do what on a repository.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The user and password basic auth accepts (none: nobody authenticates).
    pub credentials: Option<(String, String)>,
    /// Clone and fetch without credentials.
    pub anonymous_read: bool,
    /// Push without credentials.
    pub anonymous_push: bool,
    /// Answer every request this late (for time-limit tests).
    pub delay: Option<std::time::Duration>,
}

impl Access {
    /// The same, answering every request `d` late.
    pub fn slow(self, d: std::time::Duration) -> Access {
        Access {
            delay: Some(d),
            ..self
        }
    }

    /// Anyone reads, nobody pushes.
    pub fn public() -> Access {
        Access {
            credentials: None,
            anonymous_read: true,
            anonymous_push: false,
            delay: None,
        }
    }

    /// Anyone reads and pushes (for tests without credentials).
    pub fn open() -> Access {
        Access {
            credentials: None,
            anonymous_read: true,
            anonymous_push: true,
            delay: None,
        }
    }

    /// `user`/`password` for everything (reads too).
    pub fn private(user: &str, password: &str) -> Access {
        Access {
            credentials: Some((user.to_string(), password.to_string())),
            anonymous_read: false,
            anonymous_push: false,
            delay: None,
        }
    }

    /// Anyone reads; pushing needs `user`/`password`.
    pub fn push_with(user: &str, password: &str) -> Access {
        Access {
            credentials: Some((user.to_string(), password.to_string())),
            anonymous_read: true,
            anonymous_push: false,
            delay: None,
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// The URL path (`/3/demo.git/info/refs`).
    pub path: String,
    pub query: String,
    /// The user whose credentials were checked, if any were given and right.
    pub user: Option<String>,
    /// Whether the request was part of a push (receive-pack).
    pub push: bool,
    pub status: u16,
}

struct Inner {
    root: PathBuf,
    repos: Mutex<HashMap<String, Access>>,
    log: Mutex<Vec<Logged>>,
}

/// The running server of this test process.
pub struct GitServer {
    /// The address it listens on (port 80).
    pub addr: Ipv4Addr,
    inner: Arc<Inner>,
    next: AtomicU32,
}

/// A bare repository on the server.
pub struct Repo {
    /// `http://ADDR/N/NAME.git`, without credentials.
    url: String,
    /// The URL path prefix (`/N/NAME.git`).
    prefix: String,
    /// The bare repository on the host.
    pub path: PathBuf,
    inner: Arc<Inner>,
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn must(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A git command on the host with no system or global configuration.
fn git(args: &[&str]) -> Command {
    let mut c = Command::new(GIT);
    c.args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Server")
        .env("GIT_AUTHOR_EMAIL", "server@test.invalid")
        .env("GIT_COMMITTER_NAME", "Test Server")
        .env("GIT_COMMITTER_EMAIL", "server@test.invalid");
    c
}

fn git_must(args: &[&str]) -> String {
    let o = git(args).output().unwrap();
    assert!(
        o.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The server of this test process (started on first use).
pub fn server() -> &'static GitServer {
    static SERVER: OnceLock<GitServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// Removes the namespaces (and so their veths and the host's routes through them) of test
/// processes that are gone.
fn remove_stale() {
    let o = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("wgit-") else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .map(|p| Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(false);
        if !alive {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// An address of 198.19.0.0/16 from the pid, skipping any another namespace's route holds.
fn pick_address(pid: u32) -> Ipv4Addr {
    let mut n = pid % (256 * 254);
    for _ in 0..(256 * 254) {
        let addr = Ipv4Addr::new(198, 19, (n / 254) as u8, (n % 254 + 1) as u8);
        let o = run(&["ip", "-o", "route", "show", "exact", &format!("{addr}/32")]);
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return addr;
        }
        n = (n + 1) % (256 * 254);
    }
    panic!("no free address in 198.19.0.0/16");
}

fn start() -> GitServer {
    assert!(
        Path::new(GIT).exists(),
        "Debian's git is installed (scripts/deps)"
    );
    remove_stale();
    let pid = std::process::id();
    let netns = format!("wgit-{pid}");
    let host_if = format!("wg{}", pid % 100_000_000);
    let addr = pick_address(pid);
    must(&["ip", "netns", "add", &netns]);
    must(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ]);
    must(&["ip", "link", "set", &host_if, "up"]);
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{host_if}/address"))
        .unwrap()
        .trim()
        .to_string();
    let inside = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", &netns];
        v.extend_from_slice(args);
        must(&v);
    };
    inside(&["ip", "link", "set", "lo", "up"]);
    inside(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
    inside(&["ip", "link", "set", "eth0", "up"]);
    // The way back: everything to the host's end of the veth (a gateway address of the
    // namespace's own, resolved statically, so the host side needs no address at all).
    inside(&[
        "ip",
        "route",
        "add",
        "169.254.1.1/32",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    inside(&[
        "ip",
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    inside(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    // The host routes this one address to the namespace: never a wider range (this machine's
    // package mirror lives in a documentation range). Through a gateway (the address itself,
    // on-link), not as a connected route: Warren protects the host's connected networks from
    // workspaces, and a server started after this route exists would refuse it.
    must(&[
        "ip",
        "route",
        "replace",
        &format!("{addr}/32"),
        "via",
        &addr.to_string(),
        "dev",
        &host_if,
        "onlink",
    ]);
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    let listener: TcpListener = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind((addr, 80)).unwrap()
        })
        .join()
        .unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    // The repositories: `TMP/warren-gitserve-<pid>` (statics are never dropped, so those of
    // test processes that are gone are removed here).
    let tmp = PathBuf::from(std::env::var("WARREN_TEST_TMP").unwrap_or_else(|_| "/tmp".into()));
    for e in std::fs::read_dir(&tmp).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(p) = name.strip_prefix("warren-gitserve-") {
            let gone = p
                .parse::<u32>()
                .map(|p| !Path::new(&format!("/proc/{p}")).exists())
                .unwrap_or(false);
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let root = tmp.join(format!("warren-gitserve-{pid}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let inner = Arc::new(Inner {
        root: root.clone(),
        repos: Mutex::new(HashMap::new()),
        log: Mutex::new(Vec::new()),
    });
    let shared = inner.clone();
    // A runtime of its own: tests' runtimes come and go, the server stays for the process.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(handle).with_state(shared);
            axum::serve(l, app).await.unwrap();
        });
    });
    GitServer {
        addr,
        inner,
        next: AtomicU32::new(1),
    }
}

impl GitServer {
    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new bare repository `NAME.git` whose branch `main` has one commit with `files`
    /// (path, content; directories are made). Each call makes a new repository (the URL has a
    /// number of its own), so tests may reuse names.
    pub fn create_repo(&self, name: &str, access: Access, files: &[(&str, &str)]) -> Repo {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("/{n}/{name}.git");
        let path = self.inner.root.join(format!("{n}/{name}.git"));
        std::fs::create_dir_all(&path).unwrap();
        let p = path.to_str().unwrap();
        git_must(&["init", "-q", "--bare", "-b", "main", p]);
        if access.anonymous_push {
            // http-backend refuses pushes without REMOTE_USER unless told otherwise.
            git_must(&["--git-dir", p, "config", "http.receivepack", "true"]);
        }
        if !files.is_empty() {
            let work = tempfile::tempdir().unwrap();
            for (f, content) in files {
                let fp = work.path().join(f);
                std::fs::create_dir_all(fp.parent().unwrap()).unwrap();
                std::fs::write(fp, content).unwrap();
            }
            let wt = work.path().to_str().unwrap();
            git_must(&["--git-dir", p, "--work-tree", wt, "add", "-A"]);
            git_must(&[
                "--git-dir",
                p,
                "--work-tree",
                wt,
                "commit",
                "-q",
                "-m",
                "initial commit",
            ]);
        }
        self.inner
            .repos
            .lock()
            .unwrap()
            .insert(prefix.clone(), access);
        Repo {
            url: format!("{}{prefix}", self.base_url()),
            prefix,
            path,
            inner: self.inner.clone(),
        }
    }

    /// Every request so far (all repositories).
    pub fn requests(&self) -> Vec<Logged> {
        self.inner.log.lock().unwrap().clone()
    }
}

impl Repo {
    /// The clone URL, without credentials.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The clone URL with `user:password@` in it.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("http://", &format!("http://{user}:{password}@"), 1)
    }

    /// The host name (and port) part of the URL: what git credential helpers see as `host`.
    pub fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }

    /// Runs git on the bare repository; stdout, or None when git fails.
    pub fn git(&self, args: &[&str]) -> Option<String> {
        let mut all = vec!["--git-dir", self.path.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = git(&all).output().unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The content of `file` at the tip of `branch`, if both exist.
    pub fn file(&self, branch: &str, file: &str) -> Option<String> {
        self.git(&["show", &format!("refs/heads/{branch}:{file}")])
    }

    /// The commit `branch` points at.
    pub fn commit(&self, branch: &str) -> Option<String> {
        self.git(&[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .map(|s| s.trim().to_string())
    }

    /// `branch`'s tip commit message (subject and body).
    pub fn message(&self, branch: &str) -> Option<String> {
        self.git(&["log", "-1", "--format=%B", &format!("refs/heads/{branch}")])
            .map(|s| s.trim().to_string())
    }

    /// `branch`'s tip commit author as `Name <email>`.
    pub fn author(&self, branch: &str) -> Option<String> {
        self.git(&[
            "log",
            "-1",
            "--format=%an <%ae>",
            &format!("refs/heads/{branch}"),
        ])
        .map(|s| s.trim().to_string())
    }

    /// The branches, sorted.
    pub fn branches(&self) -> Vec<String> {
        let out = self
            .git(&["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
            .unwrap_or_default();
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Adds a commit to `branch` on the server side (as another developer pushing would):
    /// `files` written over the branch's tree (a new branch starts from HEAD). Returns the new
    /// commit.
    pub fn commit_files(&self, branch: &str, message: &str, files: &[(&str, &str)]) -> String {
        let work = tempfile::tempdir().unwrap();
        let wt = work.path().to_str().unwrap();
        let p = self.path.to_str().unwrap();
        let index = work.path().join("index");
        let with_index = |args: &[&str]| {
            let mut all = vec!["--git-dir", p, "--work-tree", wt];
            all.extend_from_slice(args);
            let o = git(&all).env("GIT_INDEX_FILE", &index).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        // A new branch starts from HEAD's commit.
        let parent = self.commit(branch).or_else(|| {
            self.git(&["rev-parse", "--verify", "-q", "HEAD"])
                .map(|s| s.trim().to_string())
        });
        if let Some(c) = &parent {
            with_index(&["read-tree", c]);
            with_index(&["checkout-index", "-a"]);
        }
        for (f, content) in files {
            let fp = work.path().join(f);
            std::fs::create_dir_all(fp.parent().unwrap()).unwrap();
            std::fs::write(fp, content).unwrap();
            with_index(&["add", f]);
        }
        let tree = with_index(&["write-tree"]);
        let mut args = vec!["commit-tree", tree.trim(), "-m", message];
        if let Some(c) = &parent {
            args.push("-p");
            args.push(c);
        }
        let commit = with_index(&args).trim().to_string();
        with_index(&["update-ref", &format!("refs/heads/{branch}"), &commit]);
        commit
    }

    /// Requests to this repository so far.
    pub fn requests(&self) -> Vec<Logged> {
        let slash = format!("{}/", self.prefix);
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(&slash))
            .cloned()
            .collect()
    }

    /// The push requests (receive-pack) to this repository that were accepted, with the user
    /// they authenticated as.
    pub fn pushes(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.push && r.method == "POST" && r.status == 200)
            .collect()
    }
}

/// The user of a right `Authorization: Basic` header; `Err` when one is given and wrong.
fn authenticate(headers: &HeaderMap, access: &Access) -> Result<Option<String>, ()> {
    let Some(v) = headers.get("authorization") else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ())?;
    let b64 = v.strip_prefix("Basic ").ok_or(())?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ())?;
    let raw = String::from_utf8(raw).map_err(|_| ())?;
    let (user, password) = raw.split_once(':').ok_or(())?;
    match &access.credentials {
        Some((u, p)) if u == user && p == password => Ok(Some(user.to_string())),
        _ => Err(()),
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let push = query.contains("service=git-receive-pack") || path.ends_with("/git-receive-pack");
    let access = {
        let repos = inner.repos.lock().unwrap();
        repos
            .iter()
            .find(|(prefix, _)| path.starts_with(&format!("{prefix}/")))
            .map(|(_, a)| a.clone())
    };
    let log = |user: Option<String>, status: StatusCode| {
        inner.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            user,
            push,
            status: status.as_u16(),
        });
    };
    let Some(access) = access else {
        log(None, StatusCode::NOT_FOUND);
        return (StatusCode::NOT_FOUND, "no such repository\n").into_response();
    };
    let user = authenticate(req.headers(), &access);
    let anonymous_ok = if push {
        access.anonymous_push
    } else {
        access.anonymous_read
    };
    let user = match user {
        Ok(Some(u)) => Some(u),
        Ok(None) if anonymous_ok => None,
        _ => {
            log(None, StatusCode::UNAUTHORIZED);
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"warren-test-git\"")],
                "authentication required\n",
            )
                .into_response();
        }
    };
    if let Some(d) = access.delay {
        tokio::time::sleep(d).await;
    }
    let (content_type, encoding, protocol) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (
            header("content-type"),
            header("content-encoding"),
            header("git-protocol"),
        )
    };
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(_) => {
            log(user, StatusCode::PAYLOAD_TOO_LARGE);
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
    };
    let root = inner.root.clone();
    let cgi_user = user
        .clone()
        .or_else(|| push.then(|| "anonymous".to_string()));
    let (m, p, q) = (method.clone(), path.clone(), query.clone());
    let out = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(GIT);
        c.arg("http-backend")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", &m)
            .env("PATH_INFO", &p)
            .env("QUERY_STRING", &q)
            .env("CONTENT_TYPE", &content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_ADDR", "127.0.0.1");
        if !encoding.is_empty() {
            c.env("HTTP_CONTENT_ENCODING", &encoding);
        }
        if !protocol.is_empty() {
            c.env("HTTP_GIT_PROTOCOL", &protocol);
        }
        if let Some(u) = &cgi_user {
            c.env("REMOTE_USER", u);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let _ = writer.join();
        (stdout, o.stderr)
    })
    .await
    .unwrap();
    let (stdout, stderr) = out;
    // CGI output: headers, a blank line, the body.
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        log(user, StatusCode::BAD_GATEWAY);
        return (
            StatusCode::BAD_GATEWAY,
            format!("http-backend: {}", String::from_utf8_lossy(&stderr)),
        )
            .into_response();
    };
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(&stdout[..head_end]).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v.split(' ').next().and_then(|c| c.parse::<u16>().ok()) {
                status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            }
        } else if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    log(user, status);
    let mut resp = Response::new(Body::from(stdout[body_start..].to_vec()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
