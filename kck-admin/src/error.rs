//! The one error shape of the API: `{"error": {"kind", "message", "key"?}}`
//! with the status that fits.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kck_core::storage::StoreError;
use kck_core::{Error, ErrorKind, Key};
use serde::Serialize;

/// An error answered by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// A stable, machine-readable name: `invalid_key`, `unknown_primer`…
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) key: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            key: None,
        }
    }

    pub(crate) fn with_key(mut self, key: &Key) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, kind, message)
    }

    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required: `Authorization: Bearer <token>`",
        )
    }

    pub(crate) fn forbidden() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may read, not act: an `admin` token is required",
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, kind) = match error.kind() {
            ErrorKind::InvalidKey => (StatusCode::BAD_REQUEST, "invalid_key"),
            ErrorKind::UnknownPrimer => (StatusCode::NOT_FOUND, "unknown_primer"),
            ErrorKind::Store if error.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            ErrorKind::Store => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            ErrorKind::NoCatalog => (StatusCode::NOT_IMPLEMENTED, "no_catalog"),
            ErrorKind::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "timed_out"),
            ErrorKind::Compute | ErrorKind::Panicked => (StatusCode::BAD_GATEWAY, "compute"),
            ErrorKind::NotPrimed => (StatusCode::CONFLICT, "not_primed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            kind,
            message: error.to_string(),
            key: error.key().map(ToString::to_string),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from(Error::Store(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                kind: self.kind,
                message: &self.message,
                key: self.key.as_deref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
