//! Accounts and administration against a server: `login` (token or device flow), `logout`,
//! `context`, `whoami`, `template`, `token`, `user`, `team`, `audit` and `webhook`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use warren_api::auth::{Role, Scope};
use warren_api::template::{parse_duration, TemplateManifest, MANIFEST_FILE};
use warren_api::v1::{
    AddSshKey, AuditVerify, CreateSshAccess, CreateTemplate, CreateToken, CreateUser,
    CreateVersion, UpdateUser,
};
use warren_engine::Progress;

use crate::cli::{
    AuditArgs, AuditCmd, AuditFilter, ContextCmd, LoginArgs, SshAccessCmd, SshKeyCmd, TeamCmd,
    TemplateCmd, TokenCmd, UserCmd, WebhookCmd,
};
use crate::client::{has_code, ApiError, Client};
use crate::context::{default_name, normalize_url, Context, Contexts, Remote, Target};
use crate::output::{table, user_error, Printer};
use crate::remote::{pack_dir, print_json, MAX_UPLOAD};

// --- login, logout, contexts ---------------------------------------------------------------

/// `warren login URL`: checks the token (or gets one through the device flow), saves the
/// context and makes it current.
pub async fn login(a: LoginArgs, json: bool) -> Result<u8> {
    let url = normalize_url(a.url.as_deref().unwrap_or_default())?;
    let ca = match &a.ca_cert {
        Some(p) => Some(std::fs::canonicalize(p).map_err(|e| {
            user_error(
                format!("cannot open the CA certificate {}: {e}", p.display()),
                "give a PEM file with the CA that signed the server's certificate",
            )
        })?),
        None => None,
    };
    let name = a.name.clone().unwrap_or_else(|| default_name(&url));
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(user_error(
            format!("`{name}` is not a usable context name"),
            "pick another with --name",
        ));
    }
    let token = if let Some(t) = a.token {
        t.trim().to_string()
    } else if a.token_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read the token from stdin")?;
        s.trim().to_string()
    } else {
        device_flow(&url, ca.as_deref()).await?
    };
    if token.is_empty() {
        return Err(user_error(
            "the token is empty",
            "pass it with --token TOKEN or on stdin with --token-stdin",
        ));
    }
    let client = Client::new(&url, Some(&token), ca.as_deref())?;
    let me = client.me().await.map_err(|e| {
        if has_code(&e, "unauthenticated") {
            let msg = e.to_string();
            user_error(
                format!("{url} refused the token: {msg}"),
                "check it, or make a new one with `warren token create` from a signed-in session",
            )
        } else {
            e
        }
    })?;
    let mut ctxs = Contexts::load()?;
    ctxs.contexts.insert(
        name.clone(),
        Context {
            url: url.clone(),
            token,
            ca_cert: ca,
        },
    );
    ctxs.current = Some(name.clone());
    ctxs.save()?;
    eprintln!(
        "Logged in to {url} as {} ({}). Context `{name}` is now current.",
        me.user.username, me.user.role
    );
    if json {
        print_json(&serde_json::json!({
            "context": name, "url": url, "user": me.user, "organization": me.organization,
            "token": me.token,
        }))?;
    }
    Ok(0)
}

/// The browser-free device flow: shows a code that a signed-in session approves, and polls.
async fn device_flow(url: &str, ca: Option<&Path>) -> Result<String> {
    let anon = Client::new(url, None, ca)?;
    let start = anon.device_start().await?;
    eprintln!(
        "To sign in, approve code {code} from a signed-in session:\n\n    warren login --approve {code}\n\nThe code expires in {} minutes. Waiting for approval...",
        start.expires_in.div_ceil(60),
        code = start.user_code,
    );
    let interval = Duration::from_secs(start.interval.clamp(1, 30));
    let deadline = Instant::now() + Duration::from_secs(start.expires_in) + interval;
    let expired = || {
        user_error(
            format!("code {} expired before it was approved", start.user_code),
            "start again with `warren login URL`",
        )
    };
    loop {
        tokio::time::sleep(interval).await;
        match anon.device_poll(&start.device_code).await {
            Ok(t) => return Ok(t.token),
            Err(e) if has_code(&e, "authorization_pending") => {}
            Err(e) if has_code(&e, "expired_token") => return Err(expired()),
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Err(expired());
        }
    }
}

/// `warren login --approve CODE` from a signed-in session.
pub async fn approve(c: &Client, code: &str, json: bool) -> Result<u8> {
    c.device_approve(code).await?;
    eprintln!("Approved {code}: the waiting `warren login` is now signed in as you.");
    if json {
        print_json(&serde_json::json!({ "approved": code }))?;
    }
    Ok(0)
}

/// `warren logout [NAME]`: revokes the context's token on its server and forgets the context.
pub async fn logout(name: Option<String>, selected: Option<&str>, json: bool) -> Result<u8> {
    let mut ctxs = Contexts::load()?;
    let name = name
        .or_else(|| selected.map(str::to_string))
        .or_else(|| ctxs.current.clone())
        .ok_or_else(|| {
            user_error(
                "no context to log out of",
                "name one: `warren logout NAME` (`warren context list` shows them)",
            )
        })?;
    let ctx = ctxs.get(&name)?.clone();
    let revoked = async {
        let c = Client::new(&ctx.url, Some(&ctx.token), ctx.ca_cert.as_deref())?;
        let me = c.me().await?;
        c.revoke_token(&me.token.id).await?;
        anyhow::Ok(me.token.id)
    }
    .await;
    let revoked = match revoked {
        Ok(id) => {
            eprintln!("Revoked token {id}.");
            true
        }
        Err(e) if has_code(&e, "unauthenticated") => {
            eprintln!("The token no longer worked.");
            false
        }
        Err(e) => {
            Printer.warn(&format!(
                "could not revoke the token of context `{name}`: {e}; it stays valid until it expires (revoke it from another session with `warren token revoke`)"
            ));
            false
        }
    };
    ctxs.contexts.remove(&name);
    if ctxs.current.as_deref() == Some(name.as_str()) {
        ctxs.current = None;
    }
    ctxs.save()?;
    eprintln!("Removed context `{name}`.");
    if json {
        print_json(&serde_json::json!({ "context": name, "revoked": revoked }))?;
    }
    Ok(0)
}

/// The public id of a token string `wrn_<id>_<secret>`.
fn token_id(token: &str) -> Option<&str> {
    token.strip_prefix("wrn_")?.split('_').next()
}

fn context_json(name: &str, c: &Context, current: bool) -> serde_json::Value {
    serde_json::json!({
        "name": name, "url": c.url, "ca_cert": c.ca_cert, "current": current,
        "token_id": token_id(&c.token),
    })
}

/// `warren context ...`: works on the contexts file only.
pub fn context(cmd: ContextCmd, selected: Option<&str>, json: bool) -> Result<u8> {
    let mut ctxs = Contexts::load()?;
    match cmd {
        ContextCmd::List => {
            let cur = ctxs.current.clone();
            if json {
                let v: Vec<_> = ctxs
                    .contexts
                    .iter()
                    .map(|(n, c)| context_json(n, c, cur.as_deref() == Some(n)))
                    .collect();
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = ctxs
                    .contexts
                    .iter()
                    .map(|(n, c)| {
                        vec![
                            if cur.as_deref() == Some(n) { "*" } else { "" }.to_string(),
                            n.clone(),
                            c.url.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["CURRENT", "NAME", "URL"], &rows));
            }
        }
        ContextCmd::Show { name } => {
            let target = match name.as_deref() {
                Some(n) => crate::context::select_with(false, Some(n), None, None, &ctxs)?,
                None => crate::context::select(false, selected, &ctxs)?,
            };
            match target {
                Target::Embedded => {
                    if json {
                        print_json(&serde_json::json!({ "name": null, "embedded": true }))?;
                    } else {
                        println!("No context is selected: commands run on this host.");
                    }
                }
                Target::Remote(Remote {
                    name,
                    url,
                    token,
                    ca_cert,
                }) => {
                    let current = name.is_some() && name == ctxs.current;
                    if json {
                        print_json(&serde_json::json!({
                            "name": name, "url": url, "ca_cert": ca_cert, "current": current,
                            "token_id": token_id(&token),
                        }))?;
                    } else {
                        println!(
                            "name:     {}",
                            name.as_deref().unwrap_or("(WARREN_URL and WARREN_TOKEN)")
                        );
                        println!("url:      {url}");
                        println!("token id: {}", token_id(&token).unwrap_or("?"));
                        if let Some(ca) = ca_cert {
                            println!("ca_cert:  {}", ca.display());
                        }
                        println!("current:  {}", if current { "yes" } else { "no" });
                    }
                }
            }
        }
        ContextCmd::Use { name } => {
            let url = ctxs.get(&name)?.url.clone();
            ctxs.current = Some(name.clone());
            ctxs.save()?;
            eprintln!("Now using context `{name}` ({url}).");
            if json {
                print_json(&serde_json::json!({ "current": name }))?;
            }
        }
        ContextCmd::Unset => {
            ctxs.current = None;
            ctxs.save()?;
            eprintln!("No context is current: commands run on this host.");
            if json {
                print_json(&serde_json::json!({ "current": null }))?;
            }
        }
        ContextCmd::Rm { name } => {
            ctxs.get(&name)?;
            ctxs.contexts.remove(&name);
            if ctxs.current.as_deref() == Some(name.as_str()) {
                ctxs.current = None;
            }
            ctxs.save()?;
            eprintln!(
                "Removed context `{name}` (its token was not revoked; `warren logout` does that)."
            );
            if json {
                print_json(&serde_json::json!({ "removed": name }))?;
            }
        }
    }
    Ok(0)
}

/// `warren whoami`.
pub async fn whoami(c: &Client, remote: &Remote, json: bool) -> Result<u8> {
    let me = c.me().await?;
    if json {
        print_json(&me)?;
    } else {
        println!(
            "{} ({}) in organization {} at {}",
            me.user.username,
            me.user.role,
            me.organization,
            remote.label()
        );
    }
    Ok(0)
}

// --- templates -----------------------------------------------------------------------------

/// `warren template ...`.
pub async fn template(c: &Client, cmd: TemplateCmd, json: bool) -> Result<u8> {
    match cmd {
        TemplateCmd::Push {
            dir,
            name,
            message,
            no_activate,
        } => push(c, &dir, name, message, no_activate, json).await,
        TemplateCmd::List => {
            let list = c.templates().await?;
            list_out(
                json,
                &list,
                &["NAME", "ACTIVE", "ARCHIVED", "UPDATED", "DESCRIPTION"],
                |t| {
                    vec![
                        t.name.clone(),
                        t.active_version.map_or("-".into(), |v| v.to_string()),
                        if t.archived { "yes" } else { "no" }.into(),
                        t.updated_at.clone(),
                        t.description.clone().unwrap_or_default(),
                    ]
                },
            )
        }
        TemplateCmd::Show { template } => {
            let t = c.template(&template).await?;
            let v = match t.active_version {
                Some(n) => Some(c.version(&template, Some(n)).await?),
                None => None,
            };
            if json {
                print_json(&serde_json::json!({ "template": t, "active_version": v }))?;
                return Ok(0);
            }
            println!("name:        {}", t.name);
            if let Some(d) = &t.display_name {
                println!("display:     {d}");
            }
            if let Some(d) = &t.description {
                println!("description: {d}");
            }
            println!(
                "active:      {}",
                t.active_version
                    .map_or("none".into(), |v| format!("version {v}"))
            );
            println!("archived:    {}", if t.archived { "yes" } else { "no" });
            if let Some(v) = v {
                let rows: Vec<Vec<String>> = v
                    .parameters
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.r#type.as_str().into(),
                            p.default.as_ref().map_or("-".into(), |d| d.to_string()),
                            if p.required { "yes" } else { "no" }.into(),
                            p.options.as_ref().map_or(String::new(), |o| {
                                o.iter()
                                    .map(|x| x.to_string())
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            }),
                            p.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    print!(
                        "{}",
                        table(
                            &[
                                "PARAMETER",
                                "TYPE",
                                "DEFAULT",
                                "REQUIRED",
                                "OPTIONS",
                                "DESCRIPTION"
                            ],
                            &rows
                        )
                    );
                }
            }
            Ok(0)
        }
        TemplateCmd::Versions { template } => {
            let list = c.versions(&template).await?;
            list_out(
                json,
                &list,
                &["VERSION", "ACTIVE", "CREATED", "BY", "MESSAGE"],
                |v| {
                    vec![
                        v.number.to_string(),
                        if v.active { "*" } else { "" }.into(),
                        v.created_at.clone(),
                        v.created_by.clone(),
                        v.message.clone().unwrap_or_default(),
                    ]
                },
            )
        }
        TemplateCmd::Archive { template } => {
            c.archive_template(&template).await?;
            let t = c.template(&template).await?;
            if json {
                print_json(&t)?;
            } else {
                eprintln!("Archived template {}: it takes no new workspaces.", t.name);
            }
            Ok(0)
        }
        TemplateCmd::Activate {
            template,
            number: version,
        } => {
            c.activate(&template, version).await?;
            let t = c.template(&template).await?;
            if json {
                print_json(&t)?;
            } else {
                eprintln!("Template {} now uses version {version}.", t.name);
            }
            Ok(0)
        }
    }
}

async fn push(
    c: &Client,
    dir: &Path,
    name: Option<String>,
    message: Option<String>,
    no_activate: bool,
    json: bool,
) -> Result<u8> {
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        user_error(
            format!("cannot open template folder {}: {e}", dir.display()),
            "give the folder that holds .devcontainer/devcontainer.json and warren-template.json",
        )
    })?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => Some(TemplateManifest::parse(&text).map_err(|e| {
            user_error(
                format!("{}: {e}", manifest_path.display()),
                "fix the manifest: name, parameters, ceilings and policy",
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("read {}", manifest_path.display())),
    };
    if !dir.join(".devcontainer/devcontainer.json").is_file()
        && !dir.join(".devcontainer.json").is_file()
    {
        return Err(user_error(
            format!(
                "{} has no .devcontainer/devcontainer.json or .devcontainer.json",
                dir.display()
            ),
            "a template folder is a project folder plus an optional warren-template.json",
        ));
    }
    let name = name
        .or_else(|| manifest.as_ref().map(|m| m.name.clone()))
        .unwrap_or_else(|| {
            warren_api::workspace_name_from_dir(
                &dir.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
            .to_string()
        });
    Printer.step(&format!("Uploading {} as template {name}", dir.display()));
    let d = dir.clone();
    let tar = tokio::task::spawn_blocking(move || pack_dir(&d, MAX_UPLOAD)).await??;
    let file = c.upload(tar).await?;
    let body = CreateVersion {
        file_id: Some(file.id),
        message,
        activate: Some(!no_activate),
        ..Default::default()
    };
    let v = match c.push_version(&name, &body).await {
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.is("not_found") && a.message.starts_with("no template")) =>
        {
            // A new template: create it, then push its first version.
            c.create_template(&CreateTemplate {
                name: name.clone(),
                display_name: manifest.as_ref().and_then(|m| m.display_name.clone()),
                description: manifest.as_ref().and_then(|m| m.description.clone()),
            })
            .await?;
            c.push_version(&name, &body).await?
        }
        r => r?,
    };
    if json {
        print_json(&v)?;
    } else {
        eprintln!(
            "Pushed template {name} version {}{}.",
            v.number,
            if v.active { " (active)" } else { "" }
        );
        println!("{}", v.number);
    }
    Ok(0)
}

// --- tokens, users, teams ------------------------------------------------------------------

/// `warren token ...`.
pub async fn token(c: &Client, cmd: TokenCmd, json: bool) -> Result<u8> {
    match cmd {
        TokenCmd::Create {
            name,
            scopes,
            workspaces,
            lifetime,
            user,
        } => {
            let mut parsed = Vec::new();
            for s in &scopes {
                parsed.push(s.parse::<Scope>().map_err(|e| {
                    user_error(e, "e.g. --scope workspace:read --scope workspace:exec")
                })?);
            }
            if let Some(l) = &lifetime {
                parse_duration(l).map_err(|e| {
                    user_error(format!("--lifetime `{l}`: {e}"), "e.g. --lifetime 8h")
                })?;
            }
            let body = CreateToken {
                name,
                scopes: (!parsed.is_empty()).then_some(parsed),
                workspaces: (!workspaces.is_empty()).then_some(workspaces),
                lifetime,
                user,
            };
            let t = c.create_token(&body).await?;
            let scopes: Vec<&str> = t.info.scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "Created token {} ({}) with scopes {}, expiring {}. It is shown only this once:",
                t.info.id,
                t.info.name,
                scopes.join(", "),
                t.info.expires_at
            );
            if json {
                print_json(&t)?;
            } else {
                println!("{}", t.token);
            }
            Ok(0)
        }
        TokenCmd::List { user } => {
            let list = c.tokens(user.as_deref()).await?;
            list_out(
                json,
                &list,
                &["ID", "NAME", "SCOPES", "EXPIRES", "LAST USED", "REVOKED"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        t.expires_at.clone(),
                        t.last_used_at.clone().unwrap_or_else(|| "-".into()),
                        t.revoked_at.clone().unwrap_or_else(|| "-".into()),
                    ]
                },
            )
        }
        TokenCmd::Revoke { id } => {
            c.revoke_token(&id).await?;
            eprintln!("Revoked token {id}.");
            if json {
                print_json(&serde_json::json!({ "revoked": id }))?;
            }
            Ok(0)
        }
    }
}

// --- SSH keys ------------------------------------------------------------------------------

/// The most of a public key file that is read (a public key line is at most 16 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The public key `warren ssh-key add` takes without a FILE: `~/.ssh/id_ed25519.pub`, else the
/// first `~/.ssh/id_*.pub` by name.
fn default_public_key() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| {
        user_error(
            "HOME is not set, so ~/.ssh cannot be searched for a public key",
            "pass the key file: warren ssh-key add ~/.ssh/id_ed25519.pub",
        )
    })?;
    let ssh = home.join(".ssh");
    let ed = ssh.join("id_ed25519.pub");
    if ed.is_file() {
        return Ok(ed);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&ssh)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("id_") && n.ends_with(".pub"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        user_error(
            format!("no public key in {} (id_*.pub)", ssh.display()),
            "make one with `ssh-keygen -t ed25519`, or pass the key file: warren ssh-key add FILE",
        )
    })
}

/// Reads a public key from `file` (`-`: stdin) and checks it before it is sent.
/// Signs the key's proof message (`warren_api::ssh_key::proof_message`) with `ssh-keygen -Y
/// sign`: with the private key beside the `.pub` file when there is one, else through the SSH
/// agent. Returns the armored signature, or why it could not.
fn sign_proof(public_key: &str, pub_file: Option<&Path>, user_id: &str) -> Result<String, String> {
    let parsed = warren_api::ssh_key::parse(public_key).map_err(|e| e.message)?;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let msg = dir.path().join("proof");
    std::fs::write(
        &msg,
        warren_api::ssh_key::proof_message(user_id, &parsed.fingerprint()),
    )
    .map_err(|e| e.to_string())?;
    let private = pub_file
        .and_then(|p| p.to_str())
        .and_then(|p| p.strip_suffix(".pub"))
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let key = match private {
        Some(p) => p,
        None => {
            // The agent signs for a public key it holds the private half of.
            let p = dir.path().join("key.pub");
            std::fs::write(&p, format!("{}\n", parsed.openssh())).map_err(|e| e.to_string())?;
            p
        }
    };
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-Y",
            "sign",
            "-n",
            warren_api::ssh_key::PROOF_NAMESPACE,
            "-f",
        ])
        .arg(&key)
        .arg(&msg)
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "ssh-keygen -Y sign: {}",
            err.lines().last().unwrap_or("failed").trim()
        ));
    }
    std::fs::read_to_string(dir.path().join("proof.sig")).map_err(|e| e.to_string())
}

fn read_public_key(file: Option<&Path>) -> Result<(String, String)> {
    let (text, from) = match file {
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .take(MAX_KEY_FILE)
                .read_to_string(&mut s)
                .map_err(|e| {
                    user_error(
                        format!("reading the key from stdin: {e}"),
                        "pipe the .pub file's contents",
                    )
                })?;
            (s, "stdin".to_string())
        }
        _ => {
            let path = match file {
                Some(p) => p.to_path_buf(),
                None => default_public_key()?,
            };
            let mut s = String::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut s))
                .map_err(|e| {
                    user_error(
                        format!("cannot read {}: {e}", path.display()),
                        "pass a public key file (.pub), or `-` to read it from stdin",
                    )
                })?;
            (s, path.display().to_string())
        }
    };
    if let Err(e) = warren_api::ssh_key::parse(&text) {
        return Err(user_error(
            format!("{from}: {}", e.message),
            e.hint
                .unwrap_or_else(|| "pass the .pub file of an OpenSSH key".to_string()),
        ));
    }
    Ok((text, from))
}

/// `warren ssh-key ...`.
pub async fn ssh_key(c: &Client, cmd: SshKeyCmd, json: bool) -> Result<u8> {
    match cmd {
        SshKeyCmd::Add { file, name } => {
            let (public_key, from) = read_public_key(file.as_deref())?;
            let me = c.me().await?;
            let key_file = match &file {
                Some(p) if p == Path::new("-") => None,
                Some(p) => Some(p.clone()),
                None => default_public_key().ok(),
            };
            let signature = match sign_proof(&public_key, key_file.as_deref(), &me.user.id) {
                Ok(s) => Some(s),
                Err(why) => {
                    eprintln!("warning: cannot prove holding this key ({why})");
                    None
                }
            };
            let k = c
                .add_ssh_key(&AddSshKey {
                    public_key,
                    name,
                    signature,
                })
                .await?;
            eprintln!(
                "Added SSH key {} ({}, {}) from {from}.",
                k.fingerprint, k.name, k.key_type
            );
            if k.verified_at.is_none() {
                eprintln!(
                    "It is not verified: the SSH gateway accepts it once you prove holding it. Run `warren ssh-key add` again where its private key (or an SSH agent holding it) is."
                );
            }
            if json {
                print_json(&k)?;
            }
            Ok(0)
        }
        SshKeyCmd::List { user } => {
            let list = c.ssh_keys(user.as_deref()).await?;
            list_out(
                json,
                &list,
                &["ID", "NAME", "TYPE", "FINGERPRINT", "CREATED", "LAST USED"],
                |k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.key_type.clone(),
                        k.fingerprint.clone(),
                        k.created_at.clone(),
                        k.last_used_at.clone().unwrap_or_else(|| "-".into()),
                    ]
                },
            )
        }
        SshKeyCmd::Rm { key, user } => {
            // A fingerprint holds `/` and `+`: it is looked up here, and the id is deleted.
            let k = if key.starts_with("SHA256:") {
                c.ssh_keys(user.as_deref())
                    .await?
                    .into_iter()
                    .find(|k| k.fingerprint == key)
                    .ok_or_else(|| {
                        user_error(
                            format!("no SSH key with fingerprint {key}"),
                            "`warren ssh-key list` shows the keys; `ssh-keygen -lf FILE` prints a key's fingerprint",
                        )
                    })?
                    .id
            } else {
                key.clone()
            };
            c.delete_ssh_key(user.as_deref(), &k).await?;
            eprintln!("Removed SSH key {key}.");
            if json {
                print_json(&serde_json::json!({ "removed": k }))?;
            }
            Ok(0)
        }
    }
}

pub async fn ssh_access(c: &Client, cmd: SshAccessCmd, json: bool) -> Result<u8> {
    match cmd {
        SshAccessCmd::Create {
            workspace,
            lifetime,
        } => {
            let made = c
                .create_ssh_access(&workspace, &CreateSshAccess { lifetime })
                .await?;
            if json {
                print_json(&made)?;
                return Ok(0);
            }
            eprintln!(
                "SSH access token for {workspace}, valid until {} (shown once; revoke it with `warren ssh-access revoke {workspace} {}`):",
                made.info.expires_at, made.info.id
            );
            println!("{}", made.token);
            match &made.ssh_command {
                Some(cmd) => eprintln!("Connect with: {cmd}"),
                None => {
                    eprintln!("The server's SSH gateway is off; the token works once it is on.")
                }
            }
            Ok(0)
        }
        SshAccessCmd::List { workspace } => {
            let list = c.ssh_access(&workspace).await?;
            list_out(
                json,
                &list,
                &["ID", "CREATED", "EXPIRES", "REVOKED", "LAST USED"],
                |t| {
                    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    vec![
                        t.id.clone(),
                        t.created_at.clone(),
                        t.expires_at.clone(),
                        or_dash(&t.revoked_at),
                        or_dash(&t.last_used_at),
                    ]
                },
            )
        }
        SshAccessCmd::Revoke { workspace, id } => {
            let t = c.revoke_ssh_access(&workspace, &id).await?;
            eprintln!("Revoked SSH access token {}.", t.id);
            if json {
                print_json(&t)?;
            }
            Ok(0)
        }
    }
}

/// Prints `list` as JSON, or as a table with `headers` and one `row` per item.
pub(crate) fn list_out<T: serde::Serialize>(
    json: bool,
    list: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<u8> {
    if json {
        print_json(&list)?;
    } else {
        let rows: Vec<Vec<String>> = list.iter().map(row).collect();
        print!("{}", table(headers, &rows));
    }
    Ok(0)
}

fn parse_role(r: &str) -> Result<Role> {
    r.parse::<Role>()
        .map_err(|e| user_error(e, "e.g. --role member"))
}

fn print_user(u: &warren_api::v1::User, json: bool, what: &str) -> Result<()> {
    if json {
        print_json(u)
    } else {
        eprintln!(
            "{what} user {} ({}{}).",
            u.username,
            u.role,
            if u.suspended { ", suspended" } else { "" }
        );
        Ok(())
    }
}

/// Suspends (or reinstates) a user and prints the result.
async fn suspend(c: &Client, name: &str, suspended: bool, json: bool) -> Result<()> {
    let change = UpdateUser {
        suspended: Some(suspended),
        ..Default::default()
    };
    let what = if suspended { "Suspended" } else { "Reinstated" };
    print_user(&c.update_user(name, &change).await?, json, what)
}

/// `warren user ...`.
pub async fn user(c: &Client, cmd: UserCmd, json: bool) -> Result<u8> {
    match cmd {
        UserCmd::Create {
            name,
            role,
            display_name,
        } => {
            let role = role.as_deref().map(parse_role).transpose()?;
            let u = c
                .create_user(&CreateUser {
                    username: name,
                    display_name,
                    role,
                })
                .await?;
            print_user(&u, json, "Created")?;
            if !json {
                println!("{}", u.username);
            }
        }
        UserCmd::List => {
            let list = c.users().await?;
            list_out(
                json,
                &list,
                &["USERNAME", "ROLE", "SUSPENDED", "NAME", "CREATED"],
                |u| {
                    vec![
                        u.username.clone(),
                        u.role.to_string(),
                        if u.suspended { "yes" } else { "no" }.into(),
                        u.display_name.clone().unwrap_or_default(),
                        u.created_at.clone(),
                    ]
                },
            )?;
        }
        UserCmd::SetRole { name, role } => {
            let change = UpdateUser {
                role: Some(parse_role(&role)?),
                ..Default::default()
            };
            print_user(&c.update_user(&name, &change).await?, json, "Updated")?;
        }
        UserCmd::Suspend { name } => suspend(c, &name, true, json).await?,
        UserCmd::Unsuspend { name } => suspend(c, &name, false, json).await?,
    }
    Ok(0)
}

/// `warren team ...`.
pub async fn team(c: &Client, cmd: TeamCmd, json: bool) -> Result<u8> {
    let done = |v: serde_json::Value, msg: String| -> Result<u8> {
        if json {
            print_json(&v)?;
        } else {
            eprintln!("{msg}");
        }
        Ok(0)
    };
    match cmd {
        TeamCmd::Create { name } => {
            let t = c.create_team(&name).await?;
            done(
                serde_json::to_value(&t)?,
                format!("Created team {}.", t.name),
            )
        }
        TeamCmd::Delete { name } => {
            c.delete_team(&name).await?;
            done(
                serde_json::json!({ "deleted": name }),
                format!("Deleted team {name}."),
            )
        }
        TeamCmd::List => {
            let list = c.teams().await?;
            list_out(json, &list, &["NAME", "MEMBERS", "CREATED"], |t| {
                vec![t.name.clone(), t.members.join(","), t.created_at.clone()]
            })
        }
        TeamCmd::Add { team, user } => {
            c.team_member(&team, &user, true).await?;
            done(
                serde_json::json!({ "team": team, "added": user }),
                format!("Added {user} to team {team}."),
            )
        }
        TeamCmd::Remove { team, user } => {
            c.team_member(&team, &user, false).await?;
            done(
                serde_json::json!({ "team": team, "removed": user }),
                format!("Removed {user} from team {team}."),
            )
        }
    }
}

// --- webhooks ------------------------------------------------------------------------------

/// `warren webhook ...`.
pub async fn webhook(c: &Client, cmd: WebhookCmd, json: bool) -> Result<u8> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    match cmd {
        WebhookCmd::Add {
            url,
            name,
            events,
            secret,
        } => {
            let events: Vec<String> = events
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
            let made = c
                .create_webhook(&warren_api::v1::CreateWebhook {
                    url,
                    name,
                    events: (!events.is_empty()).then_some(events),
                    secret,
                })
                .await?;
            let w = &made.webhook;
            eprintln!(
                "Created webhook {} ({}) for {} -> {}. Its signing secret is shown only this once:",
                w.id,
                w.name,
                w.events.join(","),
                w.url
            );
            if json {
                print_json(&made)?;
            } else {
                println!("{}", made.secret);
                eprintln!(
                    "Receivers check `Warren-Signature: t=T,v1=HEX`: HEX is HMAC-SHA256(secret, \"T.BODY\"); `warren webhook test {}` sends a test event.",
                    w.id
                );
            }
            Ok(0)
        }
        WebhookCmd::List => {
            let list = c.webhooks().await?;
            list_out(
                json,
                &list,
                &["ID", "NAME", "URL", "EVENTS", "PENDING", "STATE", "CREATED"],
                |w| {
                    vec![
                        w.id.clone(),
                        w.name.clone(),
                        w.url.clone(),
                        w.events.join(","),
                        w.pending.to_string(),
                        if w.disabled { "disabled" } else { "enabled" }.to_owned(),
                        w.created_at.clone(),
                    ]
                },
            )
        }
        WebhookCmd::Rm { id } => {
            c.delete_webhook(&id).await?;
            eprintln!("Removed webhook {id}.");
            if json {
                print_json(&serde_json::json!({ "removed": id }))?;
            }
            Ok(0)
        }
        WebhookCmd::Disable { id } => {
            let w = c
                .update_webhook(
                    &id,
                    &warren_api::v1::UpdateWebhook {
                        disabled: true,
                        skip_backlog: false,
                    },
                )
                .await?;
            eprintln!(
                "Disabled webhook {} ({}): nothing is sent to it until `warren webhook enable {}`.",
                w.id, w.name, w.id
            );
            if json {
                print_json(&w)?;
            }
            Ok(0)
        }
        WebhookCmd::Enable { id, skip_backlog } => {
            let w = c
                .update_webhook(
                    &id,
                    &warren_api::v1::UpdateWebhook {
                        disabled: false,
                        skip_backlog,
                    },
                )
                .await?;
            if skip_backlog {
                eprintln!(
                    "Enabled webhook {} ({}): its backlog was dropped; it gets events from now on.",
                    w.id, w.name
                );
            } else {
                eprintln!(
                    "Enabled webhook {} ({}): its {} pending deliveries and later events follow.",
                    w.id, w.name, w.pending
                );
            }
            if json {
                print_json(&w)?;
            }
            Ok(0)
        }
        WebhookCmd::Test { id } => {
            let t = c.test_webhook(&id).await?;
            if json {
                print_json(&t)?;
            } else {
                eprintln!(
                    "Queued test event {} for webhook {id} (delivery {}); `warren webhook deliveries {id}` shows how it went.",
                    t.event_id, t.delivery_id
                );
            }
            Ok(0)
        }
        WebhookCmd::Deliveries { id } => {
            let list = c.webhook_deliveries(&id).await?;
            list_out(
                json,
                &list,
                &[
                    "ID",
                    "EVENT",
                    "KIND",
                    "STATUS",
                    "ATTEMPTS",
                    "CODE",
                    "NEXT",
                    "LAST ERROR",
                ],
                |d| {
                    vec![
                        d.id.clone(),
                        d.event_id.to_string(),
                        d.kind.clone(),
                        d.status.clone(),
                        d.attempts.to_string(),
                        or_dash(d.last_status_code.map(|c| c.to_string())),
                        or_dash(d.next_attempt_at.clone()),
                        or_dash(d.last_error.clone()),
                    ]
                },
            )
        }
    }
}

// --- audit ---------------------------------------------------------------------------------

fn audit_params(f: &AuditFilter) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    let mut add = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            p.push((k, v.clone()));
        }
    };
    add("actor", &f.actor);
    add("action", &f.action);
    add("target", &f.target);
    add("since", &f.since);
    add("until", &f.until);
    if let Some(a) = f.after {
        p.push(("after", a.to_string()));
    }
    if let Some(l) = f.limit {
        p.push(("limit", l.to_string()));
    }
    p
}

/// `warren audit [export|verify]`.
pub async fn audit(c: &Client, a: AuditArgs, json: bool) -> Result<u8> {
    match a.cmd {
        None => {
            let page = c.audit(&audit_params(&a.filter)).await?;
            if json {
                print_json(&page)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = page
                .records
                .iter()
                .map(|r| {
                    let target = match (&r.target_name, &r.target_id) {
                        (Some(n), _) if !n.is_empty() => format!("{} {n}", r.target_type),
                        (_, Some(i)) => format!("{} {i}", r.target_type),
                        _ => r.target_type.clone(),
                    };
                    vec![
                        r.id.to_string(),
                        r.at.clone(),
                        r.actor_username.clone().unwrap_or_else(|| "-".into()),
                        r.action.clone(),
                        target,
                        r.outcome.as_str().to_string(),
                        r.status.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "STATUS"],
                    &rows
                )
            );
            if let Some(n) = page.next_after {
                eprintln!("More records: warren audit --after {n}");
            }
            Ok(0)
        }
        Some(AuditCmd::Export { filter }) => {
            let mut out = std::io::stdout().lock();
            c.audit_export(&audit_params(&filter), &mut out).await?;
            Ok(0)
        }
        Some(AuditCmd::Verify { file: Some(f) }) => verify_file(&f, json),
        Some(AuditCmd::Verify { file: None }) => {
            let v = c.audit_verify().await?;
            Ok(print_verify(&v, json, c.base()))
        }
    }
}

/// Prints a verification; returns the exit code (1 when the chain is broken).
fn print_verify(v: &AuditVerify, json: bool, what: &str) -> u8 {
    if json {
        let _ = print_json(v);
    }
    if v.ok {
        if !json {
            println!(
                "ok: {} records in {what} form an intact chain; head hash {}",
                v.records, v.head_hash
            );
        }
        0
    } else {
        crate::output::error(
            &format!(
                "the audit chain of {what} is broken at record {}: {}",
                v.first_bad_id.map_or("?".into(), |i| i.to_string()),
                v.reason.as_deref().unwrap_or("unknown reason")
            ),
            Some("records were changed, removed or reordered after they were written"),
        );
        1
    }
}

/// `warren audit verify --file F`: checks an export offline.
pub fn verify_file(path: &PathBuf, json: bool) -> Result<u8> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read the export from stdin")?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            user_error(
                format!("cannot read {}: {e}", path.display()),
                "give a file written by `warren audit export`",
            )
        })?
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: warren_store::AuditRecord = serde_json::from_str(line).map_err(|e| {
            user_error(
                format!(
                    "{} line {}: not an audit record: {e}",
                    path.display(),
                    i + 1
                ),
                "give a file written by `warren audit export` (one JSON record per line)",
            )
        })?;
        records.push(r);
    }
    let v = warren_store::verify_chain(records);
    let v = AuditVerify {
        records: v.records,
        ok: v.ok,
        head_hash: v.head_hash,
        first_bad_id: v.first_bad.as_ref().map(|b| b.id),
        reason: v.first_bad.map(|b| b.reason),
    };
    Ok(print_verify(&v, json, &path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids() {
        assert_eq!(token_id("wrn_abc123_secret"), Some("abc123"));
        assert_eq!(token_id("garbage"), None);
    }
}
