//! Stable machine-readable error codes shared by the CLI, the API and the engine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable error code. Its string form never changes once published: scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The workspace (or other object) does not exist.
    NotFound,
    /// Another workspace already has this name.
    NameTaken,
    /// The workspace name breaks the naming rule.
    InvalidName,
    /// The request is not allowed in the workspace's current state.
    InvalidState,
    /// The devcontainer configuration is invalid.
    InvalidConfig,
    /// The container image could not be found.
    ImageNotFound,
    /// Someone else changed the workspace concurrently; retry.
    Conflict,
    /// The container runtime failed.
    RuntimeError,
    /// The caller lacks the needed permission.
    PermissionDenied,
    /// An unexpected internal error.
    Internal,
    /// No credentials, or credentials that are malformed, unknown, expired or revoked (401).
    Unauthenticated,
    /// The request is malformed: bad JSON, unknown field, wrong type, bad query (400).
    InvalidRequest,
    /// A template parameter value is invalid; the message names the parameter (400).
    InvalidParameter,
    /// The request body is larger than the server accepts (413).
    PayloadTooLarge,
    /// Another transition of the workspace is in progress (409).
    TransitionInProgress,
    /// A requested resource exceeds the template's ceilings (400).
    LimitExceeded,
    /// The route exists but not with this HTTP method (405).
    MethodNotAllowed,
    /// The server is not ready (database unavailable, shutting down) (503).
    Unavailable,
    /// Device login: the user has not approved the code yet (400, keep polling).
    AuthorizationPending,
    /// Device login: the code expired or was already used (400).
    ExpiredToken,
    /// An SSH public key is malformed, of a refused type or too weak; the message says which (400).
    InvalidSshKey,
    /// This SSH public key is already registered, by this user or another (409).
    SshKeyTaken,
    /// A preview URL or port forward reached a workspace that is not running (503).
    WorkspaceNotRunning,
    /// Nothing listens on the port inside the workspace (502).
    PortNotListening,
    /// The sharing level is above what the server's administrator allows (403).
    SharingNotAllowed,
    /// Starting would exceed a user's or team's quota (workspaces, CPUs, memory) (403).
    QuotaExceeded,
    /// A user's or team's budget for the period is spent (403).
    BudgetExhausted,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 27] = [
        Self::NotFound,
        Self::NameTaken,
        Self::InvalidName,
        Self::InvalidState,
        Self::InvalidConfig,
        Self::ImageNotFound,
        Self::Conflict,
        Self::RuntimeError,
        Self::PermissionDenied,
        Self::Internal,
        Self::Unauthenticated,
        Self::InvalidRequest,
        Self::InvalidParameter,
        Self::PayloadTooLarge,
        Self::TransitionInProgress,
        Self::LimitExceeded,
        Self::MethodNotAllowed,
        Self::Unavailable,
        Self::AuthorizationPending,
        Self::ExpiredToken,
        Self::InvalidSshKey,
        Self::SshKeyTaken,
        Self::WorkspaceNotRunning,
        Self::PortNotListening,
        Self::SharingNotAllowed,
        Self::QuotaExceeded,
        Self::BudgetExhausted,
    ];

    /// The stable snake_case code, identical to the serde representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NameTaken => "name_taken",
            Self::InvalidName => "invalid_name",
            Self::InvalidState => "invalid_state",
            Self::InvalidConfig => "invalid_config",
            Self::ImageNotFound => "image_not_found",
            Self::Conflict => "conflict",
            Self::RuntimeError => "runtime_error",
            Self::PermissionDenied => "permission_denied",
            Self::Internal => "internal",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidParameter => "invalid_parameter",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TransitionInProgress => "transition_in_progress",
            Self::LimitExceeded => "limit_exceeded",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable => "unavailable",
            Self::AuthorizationPending => "authorization_pending",
            Self::ExpiredToken => "expired_token",
            Self::InvalidSshKey => "invalid_ssh_key",
            Self::SshKeyTaken => "ssh_key_taken",
            Self::WorkspaceNotRunning => "workspace_not_running",
            Self::PortNotListening => "port_not_listening",
            Self::SharingNotAllowed => "sharing_not_allowed",
            Self::QuotaExceeded => "quota_exceeded",
            Self::BudgetExhausted => "budget_exhausted",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings_matching_serde() {
        let strs: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            strs,
            [
                "not_found",
                "name_taken",
                "invalid_name",
                "invalid_state",
                "invalid_config",
                "image_not_found",
                "conflict",
                "runtime_error",
                "permission_denied",
                "internal",
                "unauthenticated",
                "invalid_request",
                "invalid_parameter",
                "payload_too_large",
                "transition_in_progress",
                "limit_exceeded",
                "method_not_allowed",
                "unavailable",
                "authorization_pending",
                "expired_token",
                "invalid_ssh_key",
                "ssh_key_taken",
                "workspace_not_running",
                "port_not_listening",
                "sharing_not_allowed",
                "quota_exceeded",
                "budget_exhausted"
            ]
        );
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }
}
