//! A git smart-HTTP server for task tests and the task benchmark: `git http-backend` (Debian's
//! `git`) as a CGI behind a small HTTP/1.1 server with basic auth checked on every request (no
//! credentials, or wrong ones: 401; pushes need them too).
//!
//! Workspaces cannot reach the host's loopback (by design), so the server listens in a network
//! namespace of its own, one per process (`wgit-<pid>`), at an address of the benchmarking range
//! 198.19.0.0/16 derived from the pid, reached through a veth with a /32 route on the host (never
//! a wider one). Namespaces of processes that are gone are removed when the next one starts.
//! Std and nix only, so the test crate can include this file as it is.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// The host side's address on every such veth (a /32: only a local route).
const HOST_SIDE: &str = "198.19.255.254";

/// The namespace of this process.
struct Netns {
    name: String,
    host_if: String,
    addr: Ipv4Addr,
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

fn must(args: &[&str]) -> Result<(), String> {
    let o = run(args);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

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
            if let Some(addr) = address_of(pid.parse().unwrap_or(0)) {
                let _ = run(&["ip", "route", "del", &format!("{addr}/32")]);
            }
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// 198.19.H.L from the pid (never .0, .255, nor the host side's address).
fn address_of(pid: u32) -> Option<Ipv4Addr> {
    if pid == 0 {
        return None;
    }
    let h = ((pid >> 8) & 0xff).min(254) as u8;
    let l = (pid & 0xff).clamp(1, 254) as u8;
    Some(Ipv4Addr::new(198, 19, h, l))
}

fn netns() -> Result<&'static Netns, String> {
    static NS: OnceLock<Result<Netns, String>> = OnceLock::new();
    NS.get_or_init(make_netns).as_ref().map_err(|e| e.clone())
}

fn make_netns() -> Result<Netns, String> {
    remove_stale();
    let pid = std::process::id();
    let name = format!("wgit-{pid}");
    let host_if = format!("wg{}", pid % 100_000_000);
    let addr = address_of(pid).ok_or("no pid")?;
    let _ = run(&["ip", "netns", "del", &name]);
    must(&["ip", "netns", "add", &name])?;
    must(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
    ])?;
    must(&[
        "ip",
        "addr",
        "add",
        &format!("{HOST_SIDE}/32"),
        "dev",
        &host_if,
    ])?;
    must(&["ip", "link", "set", &host_if, "up"])?;
    let inside = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", &name];
        v.extend_from_slice(args);
        must(&v)
    };
    inside(&["ip", "link", "set", "lo", "up"])?;
    inside(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
    inside(&["ip", "link", "set", "eth0", "up"])?;
    inside(&["ip", "route", "add", HOST_SIDE, "dev", "eth0"])?;
    inside(&["ip", "route", "add", "default", "via", HOST_SIDE])?;
    // The one route on the host: this server's address, nothing wider; through a gateway (the
    // address itself, on-link), as a route to a real upstream server would be: networks the
    // host reaches without a gateway are its own, which workspaces may not reach.
    let a = addr.to_string();
    must(&[
        "ip",
        "route",
        "replace",
        &format!("{a}/32"),
        "via",
        &a,
        "dev",
        &host_if,
        "onlink",
    ])?;
    Ok(Netns {
        name,
        host_if,
        addr,
    })
}

/// Removes this process's namespace and route (benchmarks; tests leave it to the next run).
pub fn teardown() {
    if let Ok(ns) = netns() {
        let _ = run(&["ip", "route", "del", &format!("{}/32", ns.addr)]);
        let _ = run(&["ip", "netns", "del", &ns.name]);
    }
}

/// A running git server.
pub struct GitServer {
    /// Its address (in its namespace).
    pub addr: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// The directory of bare repositories it serves (`NAME.git`).
    pub root: PathBuf,
    user: String,
    password: Arc<Mutex<String>>,
    /// Requests answered, and pushes (receive-pack POSTs) among them.
    pub counts: Arc<Mutex<(u64, u64)>>,
}

/// Standard base64 of `b` (for the `Authorization` header).
pub fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl GitServer {
    /// Serves the bare repositories under `root` with basic auth `user`/`password`.
    pub fn start(root: &Path, user: &str, password: &str) -> Result<GitServer, String> {
        let ns = netns()?;
        let nsfile = std::fs::File::open(format!("/run/netns/{}", ns.name))
            .map_err(|e| format!("netns {}: {e}", ns.name))?;
        let addr = ns.addr;
        let listener = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(nsfile.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                TcpListener::bind((addr, 0)).map_err(|e| format!("bind: {e}"))
            })
            .join()
            .map_err(|_| "bind thread panicked".to_string())?
        })?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let server = GitServer {
            addr,
            port,
            root: root.to_path_buf(),
            user: user.into(),
            password: Arc::new(Mutex::new(password.into())),
            counts: Default::default(),
        };
        let (root, user, password, counts) = (
            server.root.clone(),
            server.user.clone(),
            server.password.clone(),
            server.counts.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, user, password, counts) =
                    (root.clone(), user.clone(), password.clone(), counts.clone());
                std::thread::spawn(move || {
                    let pw = password.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let _ = handle(conn, &root, &user, &pw, &counts);
                });
            }
        });
        Ok(server)
    }

    /// `http://ADDR:PORT/NAME.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}:{}/{name}.git", self.addr, self.port)
    }

    /// `ADDR:PORT`: the host git names to a credential helper (a git secret's `git_host`).
    pub fn host(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// The same with `user:password@` in it.
    pub fn url_with_auth(&self, name: &str) -> String {
        let pw = self
            .password
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        format!(
            "http://{}:{pw}@{}:{}/{name}.git",
            self.user, self.addr, self.port
        )
    }

    /// Changes the password (the old one is refused from now on).
    pub fn set_password(&self, pw: &str) {
        *self.password.lock().unwrap_or_else(|p| p.into_inner()) = pw.into();
    }

    /// Makes bare repository `NAME.git` holding `files` (path, contents, executable) in one
    /// commit on `main`.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str, bool)]) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let work = self.root.join(format!(".work-{name}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        for (path, text, exec) in files {
            let p = work.join(path);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            }
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        }
        let git = |dir: &Path, args: &[&str]| -> Result<(), String> {
            let o = Command::new("/usr/bin/git")
                .args([
                    "-c",
                    "user.name=test",
                    "-c",
                    "user.email=test@example.invalid",
                ])
                .args(args)
                .current_dir(dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", dir)
                .output()
                .map_err(|e| e.to_string())?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        };
        git(&work, &["init", "-q", "-b", "main"])?;
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", "initial"])?;
        let bare = self.root.join(format!("{name}.git"));
        let _ = std::fs::remove_dir_all(&bare);
        git(
            &self.root,
            &[
                "clone",
                "-q",
                "--bare",
                &work.display().to_string(),
                &bare.display().to_string(),
            ],
        )?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// `git ARGS` on bare repository `NAME.git` (host side): its stdout.
    pub fn git(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let o = Command::new("/usr/bin/git")
            .arg("--git-dir")
            .arg(self.root.join(format!("{name}.git")))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

fn respond(mut conn: &TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn handle(
    conn: TcpStream,
    root: &Path,
    user: &str,
    password: &str,
    counts: &Mutex<(u64, u64)>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers: Vec<(String, String)> = vec![];
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if headers.len() > 100 {
            return Ok(());
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    if header("authorization").as_deref() != Some(expected.as_str()) {
        respond(
            &conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"git\"")],
            b"authentication required\n",
        );
        return Ok(());
    }
    // The body: Content-Length or chunked.
    let mut body = vec![];
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                let _ = r.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let is_push = path.ends_with("/git-receive-pack");
    {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        c.0 += 1;
        if is_push && method == "POST" {
            c.1 += 1;
        }
    }
    let mut cmd = Command::new("/usr/bin/git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "0.0.0.0")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(w) = stdin.as_mut() {
            let _ = w.write_all(&body);
        }
    });
    let mut out = vec![];
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out)?;
    }
    let _ = writer.join();
    let _ = child.wait();
    // CGI: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        respond(&conn, "500 Internal Server Error", &[], b"bad CGI output\n");
        return Ok(());
    };
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let mut status = "200 OK".to_string();
    let mut hs: Vec<(String, String)> = vec![];
    for l in head.lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_string();
            } else {
                hs.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    respond(&conn, &status, &hs, &out[at + sep..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
