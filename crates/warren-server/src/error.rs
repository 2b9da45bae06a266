//! API errors: a stable machine code, a one-line message, a hint, and the right HTTP status.
//! Server-side failures (5xx) are logged with their detail and answered with a generic message
//! and the request id, never the internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use warren_api::ErrorCode;
use warren_engine::EngineError;
use warren_store::StoreError;

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`not_found`, `invalid_request`...).
    pub code: ErrorCode,
    /// What went wrong, in one line.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// An error on its way to becoming an HTTP response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a code, status and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                hint: None,
            },
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body.hint = Some(hint.into());
        self
    }

    /// 400 invalid_request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    /// 404 not_found.
    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no {what} `{name}`"),
        )
    }

    /// 401 unauthenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message).hint(
            "send `Authorization: Bearer <token>`; `warren login URL` stores one, `warren token create` makes one",
        )
    }

    /// 403 permission_denied.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::PermissionDenied, message)
    }

    /// 500 with a generic message; `detail` goes to the server log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing_log(&format!("internal error: {detail}"));
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
        .hint("the server log has the details; quote the X-Request-Id response header")
    }
}

/// The server's log: one line on stderr.
pub fn tracing_log(line: &str) {
    eprintln!("warren-server: {line}");
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// The HTTP status for a stable code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound | ErrorCode::ImageNotFound => StatusCode::NOT_FOUND,
        ErrorCode::NameTaken
        | ErrorCode::Conflict
        | ErrorCode::TransitionInProgress
        | ErrorCode::SshKeyTaken => StatusCode::CONFLICT,
        ErrorCode::InvalidState => StatusCode::CONFLICT,
        ErrorCode::InvalidName
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidRequest
        | ErrorCode::InvalidParameter
        | ErrorCode::LimitExceeded
        | ErrorCode::AuthorizationPending
        | ErrorCode::ExpiredToken
        | ErrorCode::InvalidSshKey => StatusCode::BAD_REQUEST,
        ErrorCode::PermissionDenied
        | ErrorCode::SharingNotAllowed
        | ErrorCode::QuotaExceeded
        | ErrorCode::BudgetExhausted => StatusCode::FORBIDDEN,
        ErrorCode::WorkspaceNotRunning => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PortNotListening => StatusCode::BAD_GATEWAY,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RuntimeError | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = e.code();
        let status = status_of(code);
        if status.is_server_error() {
            return ApiError::internal(&e);
        }
        let mut err = ApiError::new(status, code, e.to_string());
        if let Some(h) = e.hint() {
            err = err.hint(h);
        }
        err
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = e.code();
        let status = status_of(code);
        if status.is_server_error() {
            return ApiError::internal(&e);
        }
        ApiError::new(status, code, e.to_string())
    }
}

impl From<warren_api::template::ParamError> for ApiError {
    fn from(e: warren_api::template::ParamError) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
            e.to_string(),
        )
    }
}
