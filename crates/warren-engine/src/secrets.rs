//! Secrets as files: on every start the engine writes a workspace's secrets to `/run/secrets/NAME`
//! (a tmpfs the runtime mounts, 0700 and owned by the remote user), each file 0400, through an
//! exec of `warren __put-secret NAME` run as root from the read-only tools mount with the value on
//! its stdin. Nothing is written on the host's disk. Where the values come from is the server's
//! business ([`SecretSource`]): the engine never decrypts anything and holds no key.

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;

use warren_runtime::{ExecProcess, Runtime, Stdio};
use warren_store::WorkspaceRecord;

use crate::{blocking, EngineError};

/// Where a workspace's secret files come from, asked at every start of the workspace (the server
/// implements it over its encrypted store).
pub trait SecretSource: Send + Sync {
    /// The files to write into the workspace's `/run/secrets/` (name, content), and warnings to
    /// show (a requested secret that no longer exists).
    #[allow(clippy::type_complexity)]
    fn secrets_for<'a>(
        &'a self,
        rec: &'a WorkspaceRecord,
    ) -> Pin<Box<dyn Future<Output = Result<SecretFiles, String>> + Send + 'a>>;
}

/// What a [`SecretSource`] hands the engine.
#[derive(Default)]
pub struct SecretFiles {
    /// (name, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// Shown in the start's progress.
    pub warnings: Vec<String>,
}

/// The in-workspace subcommand that writes one secret file.
pub const PUT_SECRET: &str = "__put-secret";

/// Whether `name` may name a file in `/run/secrets`: 1 to 64 of `[A-Za-z0-9._-]`, not starting
/// with a dot.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Writes one file through `warren __put-secret` run as root in the running workspace.
pub(crate) async fn put(
    rt: Arc<dyn Runtime>,
    id: &str,
    argv: Vec<String>,
    value: Vec<u8>,
) -> Result<(), EngineError> {
    let id = id.to_string();
    blocking(move || {
        let err = |e: std::io::Error| EngineError::Internal(format!("put secret: {e}"));
        let (in_r, in_w) = nix::unistd::pipe().map_err(|e| err(e.into()))?;
        let (err_r, err_w) = nix::unistd::pipe().map_err(|e| err(e.into()))?;
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(err)?;
        let p = ExecProcess {
            argv,
            cwd: Some("/".into()),
            user: Some("root".into()),
            ..Default::default()
        };
        let session = rt.exec(
            &id,
            &p,
            Some(Stdio {
                stdin: in_r,
                stdout: null.into(),
                stderr: err_w,
            }),
        )?;
        let mut w = std::fs::File::from(in_w);
        let wrote = w.write_all(&value);
        drop(w);
        let mut msg = Vec::new();
        let _ = std::fs::File::from(err_r).take(4096).read_to_end(&mut msg);
        let code = session.wait()?;
        if code != 0 || wrote.is_err() {
            return Err(EngineError::Internal(format!(
                "writing a secret file in the workspace failed (exit {code}): {}",
                String::from_utf8_lossy(&msg).trim()
            )));
        }
        Ok(())
    })
    .await
}
