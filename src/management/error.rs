//! The management API's errors, in RabbitMQ's JSON shape
//! `{"error": …, "reason": …}` with RabbitMQ's status codes and words.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// RabbitMQ's `error` word.
    pub error: &'static str,
    /// RabbitMQ's `reason` text.
    pub reason: String,
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 404, as RabbitMQ says it for any missing object or path.
    pub fn not_found() -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, error: "Object Not Found", reason: "Not Found".into() }
    }

    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad_request", reason: reason.into() }
    }

    /// 401: the credentials are wrong (answered with a Basic challenge).
    pub fn login_failed() -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "not_authorized", reason: "Login failed".into() }
    }

    /// 401 to a request without credentials: an empty body and the Basic
    /// challenge, as RabbitMQ.
    pub fn no_credentials() -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "", reason: String::new() }
    }

    /// 401: the user lacks the tag or the vhost access the call needs
    /// (RabbitMQ answers these with 401 too, e.g. "Not administrator user").
    pub fn not_authorised(reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "not_authorised", reason: reason.into() }
    }

    /// 405.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "Method Not Allowed",
            reason: "Method Not Allowed".into(),
        }
    }

    /// 503 with a reason (a health check that fails, a shard request that
    /// cannot be queued).
    pub fn unavailable(error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, error, reason: reason.into() }
    }

    /// 500 for our own failures (a storage error while recording a change).
    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_server_error",
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.error.is_empty() {
            let challenge = HeaderValue::from_static("Basic realm=\"RabbitMQ Management\"");
            return (self.status, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
        }
        let body = serde_json::json!({ "error": self.error, "reason": self.reason });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.error == "not_authorized" {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        response
    }
}
