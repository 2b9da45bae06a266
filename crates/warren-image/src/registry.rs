//! A small client for OCI distribution registries (the pull side of the distribution spec).
//!
//! - `GET /v2/<repository>/manifests/<reference>` with the caller's `Accept` media types; the
//!   manifest's digest is computed from the bytes received and, when the reference is a digest,
//!   checked against it.
//! - `GET /v2/<repository>/blobs/<digest>` streamed to a file, size-limited and verified
//!   (sha256) before it is renamed into place.
//! - `GET /v2/<repository>/tags/list`.
//! - Anonymous bearer tokens: a `401` with `WWW-Authenticate: Bearer realm=...,service=...`
//!   makes the client ask the realm for a `repository:<repository>:pull` token, cache it for the
//!   repository, and retry once.
//! - `localhost`, `127.0.0.1` and `::1` registries (any port) are spoken to over plain HTTP, as
//!   Docker treats them as insecure; every other registry over HTTPS (webpki roots plus the
//!   caller's extra roots).
//!
//! The client is async (reqwest on tokio). Errors are one line each, with [`RegistryError::hint`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest the client accepts, in bytes (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How the client is built.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Extra trusted root certificates, PEM (each entry may hold several certificates).
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// Timeout for connecting and for each whole request (default: 30 s connect, 10 min total).
    pub timeout: Option<Duration>,
    /// `User-Agent` header (default `warren/<version>`).
    pub user_agent: Option<String>,
    /// Connect only to public addresses: names that resolve to loopback, private, link-local
    /// (cloud metadata), shared or unique-local addresses are refused, and so are such literal
    /// addresses, in requests and in redirects. For fetches made on behalf of a server's users.
    pub public_only: bool,
}

/// Whether Warren may connect to `ip` on behalf of a server's users: not loopback, private,
/// link-local (169.254.169.254 is cloud metadata), carrier-grade NAT, unique-local, multicast,
/// broadcast, documentation or unspecified.
pub fn is_public_address(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_address(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Refuses a URL whose host is a literal non-public address (names are checked when resolved).
pub fn check_public_url(url: &reqwest::Url) -> Result<(), String> {
    let Some(host) = url.host_str() else {
        return Err(format!("{url} has no host"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return Ok(());
    };
    if is_public_address(ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is not a public address; Warren does not fetch from it for server workspaces"
        ))
    }
}

/// A resolver that keeps only public addresses (see [`ClientOptions::public_only`]): checking the
/// addresses actually connected to, not a name looked up earlier, leaves no room for a name that
/// resolves differently the second time.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public_address(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address; Warren does not fetch from private or \
                     loopback addresses for server workspaces"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A manifest as fetched: its bytes, their digest and the media type the registry announced.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The `Content-Type` the registry sent, if any.
    pub media_type: Option<String>,
    /// The manifest's bytes, exactly as served.
    pub bytes: Vec<u8>,
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client could not be built (e.g. an unreadable extra root certificate).
    #[error("invalid registry client options: {reason}")]
    InvalidOptions { reason: String },
    /// Connecting failed or timed out.
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    /// The manifest, blob or repository does not exist (404).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The registry refused anonymous access.
    #[error("registry {registry} refused access to {repository} ({status})")]
    Denied {
        registry: String,
        repository: String,
        status: u16,
    },
    /// The registry answered with an unexpected status.
    #[error("{url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The token service named by the registry's challenge failed.
    #[error("cannot get an anonymous token for {registry}: {reason}")]
    Auth { registry: String, reason: String },
    /// Content did not hash to the digest it was requested by.
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A digest is malformed or not sha256.
    #[error("unsupported or malformed digest `{digest}`")]
    BadDigest { digest: String },
    /// Content is larger than the caller allows.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// The registry's answer could not be understood.
    #[error("bad answer from {what}: {reason}")]
    BadResponse { what: String, reason: String },
    /// Writing a downloaded blob failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// A suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Unreachable { .. } => Some(
                "check the registry name and this machine's network access (DNS, proxy, firewall)"
                    .to_string(),
            ),
            RegistryError::NotFound { .. } => Some(
                "check the name and the tag or digest; the artifact may not be published"
                    .to_string(),
            ),
            RegistryError::Denied { .. } => Some(
                "Warren pulls anonymously; make the package public or mirror it to a registry \
                 that allows anonymous pulls"
                    .to_string(),
            ),
            RegistryError::DigestMismatch { .. } => Some(
                "the registry served damaged or modified content; try again, and if it persists \
                 report it to the registry's operator"
                    .to_string(),
            ),
            RegistryError::TooLarge { .. } => Some(
                "the artifact is unusually large; check that the reference is right".to_string(),
            ),
            RegistryError::InvalidOptions { .. } => {
                Some("extra root certificates must be PEM files".to_string())
            }
            RegistryError::Status { .. } | RegistryError::BadResponse { .. } => Some(
                "the registry answered unexpectedly; try again later, and check that the name \
                 points at an OCI registry"
                    .to_string(),
            ),
            RegistryError::Auth { .. } => Some(
                "the registry's token service refused an anonymous token; the package may be \
                 private"
                    .to_string(),
            ),
            RegistryError::BadDigest { .. } => {
                Some("digests are `sha256:` followed by 64 lowercase hex digits".to_string())
            }
            RegistryError::Io { .. } => Some(
                "check that the download folder is writable and the disk has space".to_string(),
            ),
        }
    }
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits and returns the hex.
pub fn sha256_hex(digest: &str) -> Result<&str, RegistryError> {
    crate::digest::sha256_hex(digest).map_err(|_| RegistryError::BadDigest {
        digest: digest.to_string(),
    })
}

/// `sha256:<hex>` of a byte slice.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// True for registries spoken to over plain HTTP: `localhost`, `127.0.0.1`, `::1`, any port.
pub fn is_insecure_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                registry
            }
        })
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// The base URL of a registry's API, e.g. `https://ghcr.io` or `http://127.0.0.1:5000`.
pub fn base_url(registry: &str) -> String {
    let scheme = if is_insecure_registry(registry) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{registry}")
}

/// An OCI distribution client. Cheap to share (`&self` methods); bearer tokens are cached per
/// repository for the client's lifetime.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    tokens: Mutex<HashMap<String, String>>,
    public_only: bool,
}

impl RegistryClient {
    /// Builds a client.
    pub fn new(options: &ClientOptions) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(
                options
                    .user_agent
                    .clone()
                    .unwrap_or_else(|| format!("warren/{}", env!("CARGO_PKG_VERSION"))),
            )
            .connect_timeout(options.timeout.unwrap_or(Duration::from_secs(30)))
            .timeout(options.timeout.unwrap_or(Duration::from_secs(600)));
        if options.public_only {
            builder = builder
                .dns_resolver(std::sync::Arc::new(PublicOnlyResolver))
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.previous().len() >= 10 {
                        attempt.error("too many redirects")
                    } else if let Err(e) = check_public_url(attempt.url()) {
                        attempt.error(e)
                    } else {
                        attempt.follow()
                    }
                }));
        }
        for pem in &options.extra_root_certs_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                RegistryError::InvalidOptions {
                    reason: format!("extra root certificate: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(RegistryError::InvalidOptions {
                    reason: "an extra root certificate file holds no certificate".to_string(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| RegistryError::InvalidOptions {
            reason: e.to_string(),
        })?;
        Ok(RegistryClient {
            http,
            tokens: Mutex::new(HashMap::new()),
            public_only: options.public_only,
        })
    }

    /// The underlying HTTP client (same roots, timeouts and address policy), for plain HTTPS
    /// downloads; check their URLs with [`RegistryClient::check_url`] first.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Refuses `url` when this client fetches only from public addresses and its host is a
    /// literal non-public address (names are checked when they are resolved).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if !self.public_only {
            return Ok(());
        }
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        check_public_url(&url)
    }

    /// Fetches a manifest by tag or digest. `accept` lists the media types the caller takes.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest, RegistryError> {
        let by_digest = reference.contains(':');
        if by_digest {
            sha256_hex(reference)?;
        }
        let url = format!(
            "{}/v2/{repository}/manifests/{reference}",
            base_url(registry)
        );
        let what = format!(
            "manifest {registry}/{repository}{}{reference}",
            if by_digest { "@" } else { ":" }
        );
        let response = self
            .send(registry, repository, &url, &accept.join(", "), &what)
            .await?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(RegistryError::TooLarge {
                what,
                limit: MAX_MANIFEST_BYTES as u64,
            });
        }
        let bytes = read_limited(response, MAX_MANIFEST_BYTES, &what, registry).await?;
        let digest = digest_of(&bytes);
        if by_digest && digest != reference {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: reference.to_string(),
                actual: digest,
            });
        }
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Downloads a blob to `dest`, verifying its digest (and `max_bytes` if given). The file
    /// appears at `dest` only once verified; returns its size.
    pub async fn get_blob_to_file(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        dest: &Path,
        max_bytes: Option<u64>,
    ) -> Result<u64, RegistryError> {
        sha256_hex(digest)?;
        let url = format!("{}/v2/{repository}/blobs/{digest}", base_url(registry));
        let what = format!("blob {registry}/{repository}@{digest}");
        let mut response = self.send(registry, repository, &url, "*/*", &what).await?;
        if let (Some(limit), Some(len)) = (max_bytes, response.content_length()) {
            if len > limit {
                return Err(RegistryError::TooLarge { what, limit });
            }
        }
        let tmp = partial_path(dest);
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("create", &tmp))?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let result: Result<(), RegistryError> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(registry, &what, e))?
            {
                total += chunk.len() as u64;
                if let Some(limit) = max_bytes {
                    if total > limit {
                        return Err(RegistryError::TooLarge {
                            what: what.clone(),
                            limit,
                        });
                    }
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io("write", &tmp))?;
            }
            file.flush().await.map_err(io("write", &tmp))?;
            file.sync_all().await.map_err(io("sync", &tmp))?;
            Ok(())
        }
        .await;
        drop(file);
        let verified = result.and_then(|()| {
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual == digest {
                Ok(())
            } else {
                Err(RegistryError::DigestMismatch {
                    what: what.clone(),
                    expected: digest.to_string(),
                    actual,
                })
            }
        });
        if let Err(e) = verified {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(io("rename", dest))?;
        Ok(total)
    }

    /// Lists a repository's tags (`GET /v2/<repository>/tags/list`, first page).
    pub async fn list_tags(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let url = format!("{}/v2/{repository}/tags/list", base_url(registry));
        let what = format!("tags of {registry}/{repository}");
        let response = self
            .send(registry, repository, &url, "application/json", &what)
            .await?;
        let bytes = read_limited(response, MAX_MANIFEST_BYTES, &what, registry).await?;
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let list: TagList =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                what,
                reason: e.to_string(),
            })?;
        Ok(list.tags.unwrap_or_default())
    }

    /// GETs `url`, answering one bearer challenge with an anonymous token. Returns a response
    /// with a 2xx status, or the matching error.
    async fn send(
        &self,
        registry: &str,
        repository: &str,
        url: &str,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = format!("{registry}/{repository}");
        let mut answered_challenge = false;
        loop {
            let token = self
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            self.check_url(url)
                .map_err(|reason| RegistryError::Unreachable {
                    registry: registry.to_string(),
                    reason,
                })?;
            let mut request = self.http.get(url).header(reqwest::header::ACCEPT, accept);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(registry, what, e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    what: what.to_string(),
                });
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && !answered_challenge {
                let challenge = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(params) = challenge.as_deref().and_then(parse_bearer_challenge) {
                    let token = self.fetch_token(registry, repository, &params).await?;
                    self.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), token);
                    answered_challenge = true;
                    continue;
                }
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                return Err(RegistryError::Denied {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                    status: status.as_u16(),
                });
            }
            let body = response.text().await.unwrap_or_default();
            return Err(RegistryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: one_line(&body, 200),
            });
        }
    }

    async fn fetch_token(
        &self,
        registry: &str,
        repository: &str,
        params: &HashMap<String, String>,
    ) -> Result<String, RegistryError> {
        let auth_err = |reason: String| RegistryError::Auth {
            registry: registry.to_string(),
            reason,
        };
        let realm = params
            .get("realm")
            .ok_or_else(|| auth_err("the challenge names no realm".to_string()))?;
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|e| auth_err(format!("bad realm `{realm}`: {e}")))?;
        if realm_url.scheme() != "https" && realm_url.scheme() != "http" {
            return Err(auth_err(format!("bad realm `{realm}`")));
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        query.push(("scope", format!("repository:{repository}:pull")));
        self.check_url(realm_url.as_str()).map_err(auth_err)?;
        let response = self
            .http
            .get(realm_url)
            .query(&query)
            .send()
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        if !response.status().is_success() {
            return Err(auth_err(format!(
                "the token service answered {}",
                response.status().as_u16()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&bytes)
            .map_err(|e| auth_err(format!("unreadable token answer: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_err("the token answer holds no token".to_string()))
    }
}

/// Parses `Bearer realm="...",service="...",scope="..."` into its parameters.
pub fn parse_bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(params)
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    name.push(format!(".partial-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
    registry: &str,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(registry, what, e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_string(),
                limit: limit as u64,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn transport_error(registry: &str, what: &str, e: reqwest::Error) -> RegistryError {
    if e.is_connect() || e.is_timeout() {
        RegistryError::Unreachable {
            registry: registry.to_string(),
            reason: error_chain(&e),
        }
    } else {
        RegistryError::BadResponse {
            what: what.to_string(),
            reason: error_chain(&e),
        }
    }
}

/// The error and its sources on one line (reqwest's own message is often just "error sending
/// request").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    one_line(&out, 400)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_address(private.parse().unwrap()), "{private}");
        }
        for public in ["140.82.112.3", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public_address(public.parse().unwrap()), "{public}");
        }
        for (url, ok) in [
            ("https://ghcr.io/v2/", true),
            ("https://127.0.0.1/x", false),
            ("http://2130706433/x", false),
            ("http://[::1]:5000/x", false),
            ("http://169.254.169.254/latest/meta-data", false),
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(check_public_url(&parsed).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn local_registries_are_plain_http() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:41234",
            "[::1]:5000",
            "127.0.0.1",
        ] {
            assert!(is_insecure_registry(r), "{r}");
            assert!(base_url(r).starts_with("http://"), "{r}");
        }
        for r in [
            "ghcr.io",
            "registry.example:5000",
            "localhost.example.com",
            "10.0.0.1:5000",
        ] {
            assert!(!is_insecure_registry(r), "{r}");
            assert!(base_url(r).starts_with("https://"), "{r}");
        }
    }

    #[test]
    fn bearer_challenges_are_parsed() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://ghcr.io/token");
        assert_eq!(p["service"], "ghcr.io");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
        let p = parse_bearer_challenge("bearer realm=https://a/t").unwrap();
        assert_eq!(p["realm"], "https://a/t");
    }

    #[test]
    fn digests_are_validated() {
        assert!(sha256_hex(&format!("sha256:{}", "0".repeat(64))).is_ok());
        assert!(sha256_hex("sha256:../../x").is_err());
        assert!(sha256_hex(&format!("sha512:{}", "0".repeat(64))).is_err());
    }
}
