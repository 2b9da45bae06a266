//! `warren secret set|list|rm`: secrets on the server. Values come from stdin or a file, never
//! from the command line (where `ps` and shell history would show them), and are never shown.

use anyhow::Result;

use crate::admin::list_out;
use crate::client::Client;
use crate::output::user_error;
use crate::remote::print_json;

fn secret_scope(s: &crate::cli::SecretScopeArgs) -> String {
    match (&s.team, &s.template) {
        (Some(t), _) => format!("team:{t}"),
        (None, Some(t)) => format!("template:{t}"),
        (None, None) => "user".into(),
    }
}

/// `warren secret ...`.
pub async fn secret(c: &Client, cmd: crate::cli::SecretCmd, json: bool) -> Result<u8> {
    use crate::cli::SecretCmd;
    match cmd {
        SecretCmd::Set {
            name,
            scope,
            from_file,
            git_host,
            username,
        } => {
            let bytes = match &from_file {
                Some(p) => std::fs::read(p).map_err(|e| {
                    user_error(
                        format!("cannot read {}: {e}", p.display()),
                        "give a readable file, or pipe the value on stdin",
                    )
                })?,
                None => {
                    use std::io::{IsTerminal, Read};
                    if std::io::stdin().is_terminal() {
                        eprintln!("Reading the value from stdin (end with Ctrl-D)...");
                    }
                    let mut b = Vec::new();
                    std::io::stdin()
                        .take(1 << 20)
                        .read_to_end(&mut b)
                        .map_err(|e| {
                            user_error(format!("cannot read stdin: {e}"), "pipe the value in")
                        })?;
                    b
                }
            };
            let mut value = String::from_utf8(bytes).map_err(|_| {
                user_error(
                    "the value is not UTF-8 text",
                    "encode binary values (e.g. base64) before storing them",
                )
            })?;
            // One trailing newline (from `echo` or an editor) is not part of the value.
            if (from_file.is_none() || git_host.is_some()) && value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            let scope = secret_scope(&scope);
            let info = c
                .put_secret(
                    &scope,
                    &name,
                    &warren_api::v1::PutSecret {
                        value,
                        git_host,
                        username,
                    },
                )
                .await?;
            eprintln!("Set secret {name} ({}, {} bytes).", info.scope, info.size);
            if json {
                print_json(&info)?;
            }
            Ok(0)
        }
        SecretCmd::List => {
            let list = c.secrets().await?.secrets;
            list_out(
                json,
                &list,
                &["SCOPE", "NAME", "KIND", "GIT HOST", "SIZE", "UPDATED"],
                |s| {
                    vec![
                        s.scope.clone(),
                        s.name.clone(),
                        s.kind.clone(),
                        s.git_host.clone().unwrap_or_else(|| "-".into()),
                        s.size.to_string(),
                        s.updated_at.clone(),
                    ]
                },
            )
        }
        SecretCmd::Rm { name, scope } => {
            let scope = secret_scope(&scope);
            c.delete_secret(&scope, &name).await?;
            eprintln!("Removed secret {name} ({scope}).");
            if json {
                print_json(&serde_json::json!({ "removed": name, "scope": scope }))?;
            }
            Ok(0)
        }
    }
}
