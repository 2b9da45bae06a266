//! The `sftp` subsystem: Warren's own SFTP server (`warren __sftp-server`, crate `warren-sftp`)
//! started inside the workspace from its read-only `/.warren` tools mount, through the same
//! `exec::start` as any session (the remote user, the workspace's namespaces, cgroup, seccomp and
//! capabilities; per-user caps; audited as `workspace.exec` with `"subsystem": "sftp"`). So `sftp`,
//! `scp` and IDEs work on any image, with or without an SFTP server or a C library of its own, and
//! what they may touch is exactly what the remote user may inside the workspace.

use crate::app::AppState;

/// The one subsystem served.
pub(super) const SUBSYSTEM: &str = "sftp";

/// The argv of the SFTP server inside a workspace.
pub(super) fn argv(state: &AppState) -> Vec<String> {
    state.engine.tool_command(&[warren_sftp::SUBCOMMAND])
}

/// The message for a server that would not start: a workspace started before its tools mount
/// existed lacks `/.warren` until it is restarted.
pub(super) fn explain(message: &str) -> String {
    if message.contains(warren_runtime::tools::MOUNT_POINT) {
        format!(
            "{message} (the SFTP server comes from the workspace's {} mount, which a workspace \
             started by an older Warren lacks: restart the workspace)",
            warren_runtime::tools::MOUNT_POINT
        )
    } else {
        message.to_string()
    }
}
