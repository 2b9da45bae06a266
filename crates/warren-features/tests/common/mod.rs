//! Test helpers: a real `docker-registry` on 127.0.0.1, a pusher for feature artifacts (the
//! registry's HTTP API), a small HTTPS server with a test CA, and feature folders.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` process serving from a temporary folder, stopped on drop.
pub struct Registry {
    pub addr: String,
    /// Signs push tokens when the registry wants bearer tokens.
    pub signer: Option<Arc<TokenSigner>>,
    pub storage: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry, or returns None (with a note) when `docker-registry` is missing.
    pub fn start() -> Option<Registry> {
        Self::start_with(None)
    }

    /// Starts a registry that accepts only bearer tokens from `signer`, issued at `realm`.
    pub fn start_with_token_auth(signer: Arc<TokenSigner>, realm: &str) -> Option<Registry> {
        Self::start_with(Some((signer, realm.to_string())))
    }

    fn start_with(auth: Option<(Arc<TokenSigner>, String)>) -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            // scripts/deps installs it: in CI (`.ci/run` sets CI=1) its absence is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "docker-registry is not installed: run scripts/deps"
            );
            eprintln!("docker-registry is not installed (scripts/deps installs it); skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((signer, realm)) = &auth {
            let bundle = dir.path().join("token-ca.pem");
            std::fs::write(&bundle, &signer.cert_pem).unwrap();
            text.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                signer.service,
                signer.issuer,
                bundle.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            addr,
            signer: auth.map(|(s, _)| s),
            storage,
            log,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&reg.addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                reg.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests the registry logged for `/v2/<something>` other than the ping.
    pub fn api_requests(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
            .count()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The on-disk file of a blob (for corrupting it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn push_auth(&self, repo: &str) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(s) = &self.signer {
            let token = s.token(repo, &["pull", "push"]);
            h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        h
    }

    async fn push_blob(&self, http: &reqwest::Client, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let start = http
            .post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr))
            .headers(self.push_auth(repo))
            .send()
            .await
            .unwrap();
        assert_eq!(
            start.status().as_u16(),
            202,
            "{}",
            start.text().await.unwrap()
        );
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = http
            .put(format!("{url}{sep}digest={d}"))
            .headers(self.push_auth(repo))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 201, "{}", put.text().await.unwrap());
        d
    }

    /// Pushes a feature artifact (config `application/vnd.devcontainers`, one tar layer) under
    /// each of `tags`. Returns (manifest digest, layer digest).
    pub async fn push_feature(
        &self,
        repo: &str,
        tags: &[&str],
        layer: &[u8],
        metadata: &str,
    ) -> (String, String) {
        let http = reqwest::Client::new();
        let config = b"{}";
        let config_digest = self.push_blob(&http, repo, config).await;
        let layer_digest = self.push_blob(&http, repo, layer).await;
        let id = repo.rsplit('/').next().unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.devcontainers", "digest": config_digest, "size": config.len()},
            "layers": [{
                "mediaType": "application/vnd.devcontainers.layer.v1+tar",
                "digest": layer_digest,
                "size": layer.len(),
                "annotations": {"org.opencontainers.image.title": format!("devcontainer-feature-{id}.tgz")}
            }],
            "annotations": {"dev.containers.metadata": metadata}
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        for tag in tags {
            let r = http
                .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
                .headers(self.push_auth(repo))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        }
        (digest(&body), layer_digest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tar of a feature: `./devcontainer-feature.json`, `./install.sh` and `extra` files.
pub fn feature_tar(manifest: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("./devcontainer-feature.json", manifest.as_bytes(), 0o644);
    add("./install.sh", b"#!/bin/sh\necho installing\n", 0o755);
    for (n, d) in extra {
        add(n, d.as_bytes(), 0o644);
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes a local feature folder.
pub fn local_feature(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("devcontainer-feature.json"), manifest).unwrap();
    std::fs::write(dir.join("install.sh"), "#!/bin/sh\necho hi\n").unwrap();
}

/// A test CA and a certificate for 127.0.0.1/localhost signed by it (made with `openssl`).
pub struct TestCa {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

pub fn test_ca() -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=warren test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.path().join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    TestCa {
        ca_pem: std::fs::read(dir.path().join("ca.pem")).unwrap(),
        cert_pem: std::fs::read(dir.path().join("srv.pem")).unwrap(),
        key_pem: std::fs::read(dir.path().join("srv.key")).unwrap(),
    }
}

/// A minimal HTTPS file server: path → body; counts requests.
pub struct HttpsServer {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    pub files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    pub async fn start(ca: &TestCa) -> HttpsServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let certs: Vec<_> = rustls_pemfile::certs(&mut &ca.cert_pem[..])
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut &ca.key_pem[..])
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let (req2, files2) = (requests.clone(), files.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (requests, files) = (req2.clone(), files2.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let body = files.lock().unwrap().get(&path).cloned();
                    let resp = match body {
                        Some(b) => {
                            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len()).into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                        None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                    };
                    let _ = tls.write_all(&resp).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HttpsServer {
            addr,
            requests,
            files,
            task,
        }
    }

    pub fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Issues ES256 JWTs the way a registry token service does (signed with `openssl`, the
/// certificate in the `x5c` header, trusted by the registry's `rootcertbundle`).
pub struct TokenSigner {
    pub cert_pem: Vec<u8>,
    cert_der: Vec<u8>,
    key: tempfile::NamedTempFile,
    pub issuer: String,
    pub service: String,
}

impl TokenSigner {
    pub fn new() -> TokenSigner {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
                "-days",
                "2",
                "-subj",
                "/CN=warren test token issuer",
            ])
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-in", "c.pem", "-outform", "DER"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(der.status.success());
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::copy(dir.path().join("k.pem"), key.path()).unwrap();
        TokenSigner {
            cert_pem: std::fs::read(dir.path().join("c.pem")).unwrap(),
            cert_der: der.stdout,
            key,
            issuer: "warren-test-issuer".to_string(),
            service: "warren-test-registry".to_string(),
        }
    }

    /// A token for `actions` on repository `repo`.
    pub fn token(&self, repo: &str, actions: &[&str]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let std64 = base64::engine::general_purpose::STANDARD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [std64.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": "", "aud": self.service,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": format!("{now}-{repo}"),
            "access": [{"type": "repository", "name": repo, "actions": actions}]
        });
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.key.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let sig = der_ecdsa_to_raw(&out.stdout);
        format!("{input}.{}", b64.encode(sig))
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` to JOSE's 64-byte `r || s`.
fn der_ecdsa_to_raw(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut i = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// A plain-HTTP token service: answers `GET /token?service=..&scope=repository:R:pull` with
/// `{"token": ...}` and records the queries it saw.
pub struct TokenServer {
    pub realm: String,
    pub queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(signer: Arc<TokenSigner>) -> TokenServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let q2 = queries.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (signer, queries) = (signer.clone(), q2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let query = target
                        .split_once('?')
                        .map(|(_, q)| q.to_string())
                        .unwrap_or_default();
                    queries.lock().unwrap().push(query.clone());
                    let scope = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("scope="))
                        .map(|s| s.replace("%3A", ":").replace("%2F", "/"))
                        .unwrap_or_default();
                    let repo = scope
                        .strip_prefix("repository:")
                        .and_then(|s| s.rsplit_once(':'))
                        .map(|(r, _)| r.to_string())
                        .unwrap_or_default();
                    let token = tokio::task::spawn_blocking(move || signer.token(&repo, &["pull"]))
                        .await
                        .unwrap();
                    let body = serde_json::json!({"token": token}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(resp.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        TokenServer {
            realm,
            queries,
            task,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
