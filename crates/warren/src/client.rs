//! A typed client for the REST API (`/api/v1`): one method per route the CLI uses, API errors as
//! [`ApiError`] (code, message, hint), and a Server-Sent Events reader for following logs.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_api::v1::{
    Accepted, AddSshKey, AuditVerify, CreateSshAccess, CreateTeam, CreateTemplate, CreateToken,
    CreateUser, CreateVersion, CreateWorkspace, CreatedSshAccess, CreatedToken, DeviceApprove,
    DevicePoll, DeviceStart, Extend, FileUploaded, Job, Me, SshAccess, SshKey, Team, Template,
    TemplateVersion, Token, UpdateUser, User, WorkspaceList,
};
use warren_api::v1::{
    CreateWebhook, CreatedWebhook, UpdateWebhook, Webhook, WebhookDelivery, WebhookTest,
};
use warren_api::Workspace;

use crate::context::Remote;
use crate::output::user_error;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("warren-cli/", env!("CARGO_PKG_VERSION"));

/// An error answer from the server: its stable code, message and hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Stable machine code (`not_found`, `invalid_parameter`...).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Whether the code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// Builds the error from a non-success answer's status and body.
    pub fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            code: String,
            message: String,
            #[serde(default)]
            hint: Option<String>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => ApiError {
                status: status.as_u16(),
                code: b.code,
                message: b.message,
                hint: b.hint,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let text: String = text.chars().take(300).collect();
                ApiError {
                    status: status.as_u16(),
                    code: match status {
                        StatusCode::NOT_FOUND => "not_found",
                        StatusCode::UNAUTHORIZED => "unauthenticated",
                        StatusCode::FORBIDDEN => "permission_denied",
                        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                        _ => "internal",
                    }
                    .into(),
                    message: if text.is_empty() {
                        format!("the server answered {status}")
                    } else {
                        format!("the server answered {status}: {text}")
                    },
                    hint: None,
                }
            }
        }
    }
}

/// Whether `e` is an [`ApiError`] with `code`.
pub fn has_code(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<ApiError>().is_some_and(|a| a.is(code))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental Server-Sent Events parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data || self.event.is_some() {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    self.data.push(value.to_string());
                    self.has_data = true;
                }
                "event" => self.event = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    /// Records in id order.
    pub records: Vec<warren_store::AuditRecord>,
    /// `after` for the next page.
    pub next_after: Option<i64>,
}

/// Filters of `GET /workspaces`.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceQuery {
    /// `me`, `all` or a username.
    pub owner: Option<String>,
    /// A state.
    pub status: Option<String>,
    /// A template name.
    pub template: Option<String>,
}

/// The API client of one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a PEM file of CA certificates.
pub fn read_ca(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|e| {
        user_error(
            format!("cannot read the CA certificate {}: {e}", path.display()),
            "give a PEM file with --ca-cert, or fix the context's ca_cert (`warren context show`)",
        )
    })?;
    Ok(pem)
}

impl Client {
    /// A client for `url` with `token` (none for the unauthenticated device-login routes) and an
    /// optional extra CA.
    pub fn new(url: &str, token: Option<&str>, ca_cert: Option<&Path>) -> Result<Client> {
        let mut b = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15));
        if let Some(ca) = ca_cert {
            let pem = read_ca(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                user_error(
                    format!("{} is not a PEM certificate: {e}", ca.display()),
                    "give the CA certificate that signed the server's certificate, in PEM form",
                )
            })?;
            if certs.is_empty() {
                return Err(user_error(
                    format!("{} holds no PEM certificate", ca.display()),
                    "give the CA certificate that signed the server's certificate, in PEM form",
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Client {
            http: b.build().context("build the HTTP client")?,
            base: url.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
        })
    }

    /// A client for a selected server.
    pub fn for_remote(r: &Remote) -> Result<Client> {
        Client::new(&r.url, Some(&r.token), r.ca_cert.as_deref())
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `/api/v1{path}` with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Sends a request; non-success answers become [`ApiError`]s.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError::from_body(status, &body).into())
    }

    /// Turns a failure to talk to the server into an error with a hint.
    pub fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let mut chain = vec![e.to_string()];
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let t = s.to_string();
            if !chain.iter().any(|c| c.contains(&t)) {
                chain.push(t);
            }
            src = s.source();
        }
        let detail = chain.join(": ");
        let hint = if detail.contains("certificate") || detail.contains("UnknownIssuer") {
            "if the server uses a private CA, sign in again with `warren login URL --ca-cert CA.pem`"
        } else {
            "check that the server runs and the URL is right (`warren context show`)"
        };
        user_error(
            format!("cannot reach the server at {}: {detail}", self.base),
            hint,
        )
    }

    async fn parse<T: DeserializeOwned>(&self, resp: Response) -> Result<T> {
        let url = resp.url().path().to_string();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            user_error(
                format!("unexpected answer from the server to {url}: {e}"),
                "the server may run a different version of Warren than this CLI",
            )
        })
    }

    /// `method path` with an optional JSON body; the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        self.parse(resp).await
    }

    /// Like [`Client::call`] for routes that may answer without a body (204).
    pub async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        let _ = resp.bytes().await;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    // --- network policies -------------------------------------------------------------------

    /// `GET /workspaces/{ws}/network`.
    pub async fn network(&self, ws: &str) -> Result<warren_api::v1::NetworkStatus> {
        self.get(&format!("/workspaces/{}/network", seg(ws))).await
    }

    /// `PUT /workspaces/{ws}/network`.
    pub async fn set_network(
        &self,
        ws: &str,
        p: &warren_api::net::NetworkPolicy,
    ) -> Result<warren_api::v1::NetworkStatus> {
        self.put(&format!("/workspaces/{}/network", seg(ws)), p)
            .await
    }

    /// `DELETE /workspaces/{ws}/network`.
    pub async fn reset_network(&self, ws: &str) -> Result<warren_api::v1::NetworkStatus> {
        self.call(
            Method::DELETE,
            &format!("/workspaces/{}/network", seg(ws)),
            None::<&()>,
        )
        .await
    }

    // --- policies and events ---------------------------------------------------------------

    /// `GET /workspaces/{ws}/policy`.
    pub async fn policy(&self, ws: &str) -> Result<warren_api::v1::PolicyStatus> {
        self.get(&format!("/workspaces/{}/policy", seg(ws))).await
    }

    /// `PUT /workspaces/{ws}/policy`.
    pub async fn set_policy(
        &self,
        ws: &str,
        p: &warren_api::policy::WorkspacePolicy,
    ) -> Result<warren_api::v1::PolicyStatus> {
        self.put(&format!("/workspaces/{}/policy", seg(ws)), p)
            .await
    }

    /// `POST /workspaces/{ws}/keepalive`.
    pub async fn keepalive(&self, ws: &str) -> Result<warren_api::v1::PolicyStatus> {
        self.post(
            &format!("/workspaces/{}/keepalive", seg(ws)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /events` (or a workspace's) with `query`.
    pub async fn events(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<warren_api::v1::EventList> {
        let resp = self
            .send(self.request(Method::GET, path).query(query))
            .await?;
        self.parse(resp).await
    }

    /// Follows events as Server-Sent Events, calling `on_event` for each until the stream ends.
    pub async fn follow_events(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut on_event: impl FnMut(warren_api::v1::EventView),
    ) -> Result<()> {
        let resp = self
            .send(
                self.request(Method::GET, path)
                    .query(query)
                    .query(&[("follow", "true")])
                    .header(reqwest::header::ACCEPT, "text/event-stream"),
            )
            .await?;
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(Ok(chunk)) = stream.next().await {
            for ev in parser.push(&chunk) {
                if let Ok(e) = serde_json::from_str(&ev.data) {
                    on_event(e);
                }
            }
        }
        Ok(())
    }

    // --- identity --------------------------------------------------------------------------

    /// `GET /me`.
    pub async fn me(&self) -> Result<Me> {
        self.get("/me").await
    }

    /// `POST /auth/device`.
    pub async fn device_start(&self) -> Result<DeviceStart> {
        self.post("/auth/device", &serde_json::json!({})).await
    }

    /// `POST /auth/device/token`.
    pub async fn device_poll(&self, device_code: &str) -> Result<CreatedToken> {
        self.post(
            "/auth/device/token",
            &DevicePoll {
                device_code: device_code.to_string(),
            },
        )
        .await
    }

    /// `POST /auth/device/approve`.
    pub async fn device_approve(&self, user_code: &str) -> Result<()> {
        self.call_empty(
            Method::POST,
            "/auth/device/approve",
            Some(&DeviceApprove {
                user_code: user_code.to_string(),
            }),
        )
        .await
    }

    /// `GET /users`.
    pub async fn users(&self) -> Result<Vec<User>> {
        self.get("/users").await
    }

    /// `POST /users`.
    pub async fn create_user(&self, body: &CreateUser) -> Result<User> {
        self.post("/users", body).await
    }

    /// `PATCH /users/{user}`.
    pub async fn update_user(&self, user: &str, body: &UpdateUser) -> Result<User> {
        self.call(Method::PATCH, &format!("/users/{}", seg(user)), Some(body))
            .await
    }

    /// `GET /tokens[?user=]`.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<Token>> {
        let mut rb = self.request(Method::GET, "/tokens");
        if let Some(u) = user {
            rb = rb.query(&[("user", u)]);
        }
        let resp = self.send(rb).await?;
        self.parse(resp).await
    }

    /// `POST /tokens`.
    pub async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken> {
        self.post("/tokens", body).await
    }

    /// `DELETE /tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &format!("/tokens/{}", seg(id)), None::<&()>)
            .await
    }

    /// `GET /me/ssh-keys`, or `GET /users/{user}/ssh-keys`.
    pub async fn ssh_keys(&self, user: Option<&str>) -> Result<Vec<SshKey>> {
        match user {
            Some(u) => self.get(&format!("/users/{}/ssh-keys", seg(u))).await,
            None => self.get("/me/ssh-keys").await,
        }
    }

    /// `POST /me/ssh-keys`.
    pub async fn add_ssh_key(&self, body: &AddSshKey) -> Result<SshKey> {
        self.post("/me/ssh-keys", body).await
    }

    /// `DELETE /me/ssh-keys/{id}`, or `DELETE /users/{user}/ssh-keys/{id}`.
    pub async fn delete_ssh_key(&self, user: Option<&str>, id: &str) -> Result<()> {
        let path = match user {
            Some(u) => format!("/users/{}/ssh-keys/{}", seg(u), seg(id)),
            None => format!("/me/ssh-keys/{}", seg(id)),
        };
        self.call_empty(Method::DELETE, &path, None::<&()>).await
    }

    /// `GET /secrets`.
    pub async fn secrets(&self) -> Result<warren_api::v1::SecretList> {
        self.get("/secrets").await
    }

    /// `PUT /secrets/{scope}/{name}`.
    pub async fn put_secret(
        &self,
        scope: &str,
        name: &str,
        body: &warren_api::v1::PutSecret,
    ) -> Result<warren_api::v1::SecretInfo> {
        self.call(
            Method::PUT,
            &format!("/secrets/{}/{}", seg(scope), seg(name)),
            Some(body),
        )
        .await
    }

    /// `DELETE /secrets/{scope}/{name}`.
    pub async fn delete_secret(&self, scope: &str, name: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/secrets/{}/{}", seg(scope), seg(name)),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{ws}/ssh-access`.
    pub async fn create_ssh_access(
        &self,
        ws: &str,
        body: &CreateSshAccess,
    ) -> Result<CreatedSshAccess> {
        self.post(&format!("/workspaces/{}/ssh-access", seg(ws)), body)
            .await
    }

    /// `GET /workspaces/{ws}/ssh-access`.
    pub async fn ssh_access(&self, ws: &str) -> Result<Vec<SshAccess>> {
        self.get(&format!("/workspaces/{}/ssh-access", seg(ws)))
            .await
    }

    /// `DELETE /workspaces/{ws}/ssh-access/{id}`.
    pub async fn revoke_ssh_access(&self, ws: &str, id: &str) -> Result<SshAccess> {
        self.call(
            Method::DELETE,
            &format!("/workspaces/{}/ssh-access/{}", seg(ws), seg(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /teams`.
    pub async fn teams(&self) -> Result<Vec<Team>> {
        self.get("/teams").await
    }

    /// `POST /teams`.
    pub async fn create_team(&self, name: &str) -> Result<Team> {
        self.post(
            "/teams",
            &CreateTeam {
                name: name.to_string(),
            },
        )
        .await
    }

    /// `DELETE /teams/{team}`.
    pub async fn delete_team(&self, name: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/teams/{}", seg(name)),
            None::<&()>,
        )
        .await
    }

    /// `PUT` or `DELETE /teams/{team}/members/{user}`.
    pub async fn team_member(&self, team: &str, user: &str, add: bool) -> Result<()> {
        let m = if add { Method::PUT } else { Method::DELETE };
        self.call_empty(
            m,
            &format!("/teams/{}/members/{}", seg(team), seg(user)),
            None::<&()>,
        )
        .await
    }

    // --- webhooks --------------------------------------------------------------------------

    /// `GET /webhooks`.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.get("/webhooks").await
    }

    /// `POST /webhooks`.
    pub async fn create_webhook(&self, body: &CreateWebhook) -> Result<CreatedWebhook> {
        self.post("/webhooks", body).await
    }

    /// `DELETE /webhooks/{id}`.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/webhooks/{}", seg(id)),
            None::<&()>,
        )
        .await
    }

    /// `PATCH /webhooks/{id}`.
    pub async fn update_webhook(&self, id: &str, body: &UpdateWebhook) -> Result<Webhook> {
        self.call(Method::PATCH, &format!("/webhooks/{}", seg(id)), Some(body))
            .await
    }

    /// `POST /webhooks/{id}/test`.
    pub async fn test_webhook(&self, id: &str) -> Result<WebhookTest> {
        self.post(
            &format!("/webhooks/{}/test", seg(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /webhooks/{id}/deliveries`.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<Vec<WebhookDelivery>> {
        self.get(&format!("/webhooks/{}/deliveries", seg(id))).await
    }

    // --- workspaces ------------------------------------------------------------------------

    /// Every page of `GET /workspaces`.
    pub async fn workspaces(&self, q: &WorkspaceQuery) -> Result<Vec<Workspace>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params: Vec<(&str, String)> = vec![("limit", "500".into())];
            if let Some(o) = &q.owner {
                params.push(("owner", o.clone()));
            }
            if let Some(s) = &q.status {
                params.push(("status", s.clone()));
            }
            if let Some(t) = &q.template {
                params.push(("template", t.clone()));
            }
            if let Some(c) = &cursor {
                params.push(("cursor", c.clone()));
            }
            let resp = self
                .send(self.request(Method::GET, "/workspaces").query(&params))
                .await?;
            let page: WorkspaceList = self.parse(resp).await?;
            out.extend(page.workspaces);
            match page.next_cursor {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        Ok(out)
    }

    /// `GET /workspaces/{ws}`.
    pub async fn workspace(&self, ws: &str) -> Result<Workspace> {
        self.get(&format!("/workspaces/{}", seg(ws))).await
    }

    /// `POST /workspaces`.
    pub async fn create_workspace(&self, body: &CreateWorkspace) -> Result<Accepted> {
        self.post("/workspaces", body).await
    }

    /// `POST /workspaces/{ws}/{start|stop|restart}`.
    pub async fn transition(&self, ws: &str, action: &str) -> Result<Accepted> {
        self.post(
            &format!("/workspaces/{}/{action}", seg(ws)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `DELETE /workspaces/{ws}`.
    pub async fn delete_workspace(&self, ws: &str) -> Result<Accepted> {
        self.call(
            Method::DELETE,
            &format!("/workspaces/{}", seg(ws)),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{ws}/extend`.
    pub async fn extend(&self, ws: &str, by: &str) -> Result<Workspace> {
        self.post(
            &format!("/workspaces/{}/extend", seg(ws)),
            &Extend { by: by.to_string() },
        )
        .await
    }

    /// `GET /workspaces/{ws}/jobs`.
    pub async fn workspace_jobs(&self, ws: &str) -> Result<Vec<Job>> {
        self.get(&format!("/workspaces/{}/jobs", seg(ws))).await
    }

    /// `GET /jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job> {
        self.get(&format!("/jobs/{}", seg(id))).await
    }

    /// `POST /jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        self.post(&format!("/jobs/{}/cancel", seg(id)), &serde_json::json!({}))
            .await
    }

    /// The text of a log route (`/jobs/{id}/logs` or `/workspaces/{ws}/logs`).
    pub async fn log_text(&self, path: &str) -> Result<String> {
        let resp = self
            .send(
                self.request(Method::GET, path)
                    .query(&[("follow", "false")]),
            )
            .await?;
        resp.text().await.map_err(|e| self.transport_error(e))
    }

    /// Follows a log route as Server-Sent Events, calling `on_line` for each line; returns the
    /// data of the final `end` event, or `None` if the stream ended without one.
    pub async fn follow_log(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<Option<String>> {
        let resp = self
            .send(
                self.request(Method::GET, path)
                    .query(&[("follow", "true")])
                    .header(reqwest::header::ACCEPT, "text/event-stream"),
            )
            .await?;
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                // The connection dropped: the caller checks the job itself.
                return Ok(None);
            };
            for ev in parser.push(&chunk) {
                match ev.event.as_str() {
                    "end" => return Ok(Some(ev.data)),
                    "message" => on_line(&ev.data),
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// `POST /files` with a tar body.
    pub async fn upload(&self, tar: Vec<u8>) -> Result<FileUploaded> {
        let resp = self
            .send(
                self.request(Method::POST, "/files")
                    .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                    .body(tar),
            )
            .await?;
        self.parse(resp).await
    }

    // --- templates -------------------------------------------------------------------------

    /// `GET /templates`.
    pub async fn templates(&self) -> Result<Vec<Template>> {
        self.get("/templates").await
    }

    /// `GET /templates/{t}`.
    pub async fn template(&self, t: &str) -> Result<Template> {
        self.get(&format!("/templates/{}", seg(t))).await
    }

    /// `POST /templates`.
    pub async fn create_template(&self, body: &CreateTemplate) -> Result<()> {
        self.call_empty(Method::POST, "/templates", Some(body))
            .await
    }

    /// `GET /templates/{t}/versions`.
    pub async fn versions(&self, t: &str) -> Result<Vec<TemplateVersion>> {
        self.get(&format!("/templates/{}/versions", seg(t))).await
    }

    /// `GET /templates/{t}/versions/{n}`; without `n`, the active version.
    pub async fn version(&self, t: &str, n: Option<i64>) -> Result<TemplateVersion> {
        let n = match n {
            Some(n) => n,
            None => self.template(t).await?.active_version.ok_or_else(|| {
                user_error(
                    format!("template `{t}` has no active version"),
                    format!("pick one with --version N (`warren template versions {t}`), or activate one with `warren template activate {t} N`"),
                )
            })?,
        };
        self.get(&format!("/templates/{}/versions/{n}", seg(t)))
            .await
    }

    /// `POST /templates/{t}/versions`.
    pub async fn push_version(&self, t: &str, body: &CreateVersion) -> Result<TemplateVersion> {
        self.post(&format!("/templates/{}/versions", seg(t)), body)
            .await
    }

    /// `POST /templates/{t}/archive`.
    pub async fn archive_template(&self, t: &str) -> Result<()> {
        self.call_empty(
            Method::POST,
            &format!("/templates/{}/archive", seg(t)),
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `POST /templates/{t}/active`.
    pub async fn activate(&self, t: &str, version: i64) -> Result<()> {
        self.call_empty(
            Method::POST,
            &format!("/templates/{}/active", seg(t)),
            Some(&warren_api::v1::Activate { version }),
        )
        .await
    }

    // --- audit -----------------------------------------------------------------------------

    /// `GET /audit?format=json`.
    pub async fn audit(&self, params: &[(&str, String)]) -> Result<AuditPage> {
        let mut p = params.to_vec();
        p.push(("format", "json".into()));
        let resp = self
            .send(self.request(Method::GET, "/audit").query(&p))
            .await?;
        self.parse(resp).await
    }

    /// `GET /audit?format=jsonl`, copied to `out` as it arrives.
    pub async fn audit_export(
        &self,
        params: &[(&str, String)],
        out: &mut impl std::io::Write,
    ) -> Result<()> {
        let mut p = params.to_vec();
        p.push(("format", "jsonl".into()));
        let resp = self
            .send(self.request(Method::GET, "/audit").query(&p))
            .await?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(e))?;
            out.write_all(&chunk).context("write the export")?;
        }
        out.flush().context("write the export")?;
        Ok(())
    }

    /// `GET /audit/verify`.
    pub async fn audit_verify(&self) -> Result<AuditVerify> {
        self.get("/audit/verify").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: one\n").is_empty());
        let ev = p.push(
            b"\ndata: two\r\n\r\n: comment\ndata:three\ndata:  four\n\nevent: end\ndata: succ",
        );
        assert_eq!(
            ev,
            vec![
                SseEvent {
                    event: "message".into(),
                    data: "one".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "two".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "three\n four".into()
                },
            ]
        );
        let ev = p.push(b"eeded\n\n");
        assert_eq!(
            ev,
            vec![SseEvent {
                event: "end".into(),
                data: "succeeded".into()
            }]
        );
        // An empty data line is an event with empty data.
        assert_eq!(p.push(b"data:\n\n")[0].data, "");
    }

    #[test]
    fn api_errors_parse() {
        let e = ApiError::from_body(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"no workspace `x`","hint":"`warren list`"}"#,
        );
        assert_eq!(e.code, "not_found");
        assert_eq!(e.message, "no workspace `x`");
        assert_eq!(e.hint.as_deref(), Some("`warren list`"));
        let e = ApiError::from_body(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.code, "internal");
        assert!(e.message.contains("502") && e.message.contains("upstream down"));
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("dev.alice"), "dev.alice");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
