//! One code table for gRPC and HTTP, so a failure means the same thing on both.

#[cfg(feature = "service")]
use http::StatusCode;
#[cfg(feature = "service")]
use tonic::{Code, Status};

/// The small set of outcomes a client needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceErrorCode {
    /// The request is wrong; retrying it unchanged will fail again.
    BadRequest,
    /// The named thing does not exist.
    NotFound,
    /// The system is not in a state to do this (e.g. an index of another dimension).
    FailedPrecondition,
    /// Too much load; retry later.
    ResourceExhausted,
    /// A dependency (database, downstream service) is down; retry later.
    Unavailable,
    /// The request ran out of time.
    DeadlineExceeded,
    /// The capability is not built or not configured.
    Unimplemented,
    /// A bug or an unexpected failure; details are in the server log only.
    Internal,
}

impl ServiceErrorCode {
    /// A stable machine-readable name, used in JSON error bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
        }
    }

    /// Whether details may be shown to the caller; server faults stay generic.
    pub fn is_client_visible(self) -> bool {
        !matches!(self, Self::Internal)
    }
}

#[cfg(feature = "service")]
impl ServiceErrorCode {
    /// The gRPC status code.
    pub fn grpc_code(self) -> Code {
        match self {
            Self::BadRequest => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// The HTTP status code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::FailedPrecondition => StatusCode::CONFLICT,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a downstream service's gRPC code back onto the table.
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::BadRequest,
            Code::NotFound => Self::NotFound,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                Self::FailedPrecondition
            }
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unavailable | Code::Cancelled => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Unimplemented => Self::Unimplemented,
            Code::Ok
            | Code::Unknown
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Internal
            | Code::DataLoss => Self::Internal,
        }
    }
}

/// An error that knows its place in the code table.
pub trait ServiceError: std::error::Error {
    /// The code clients see.
    fn error_code(&self) -> ServiceErrorCode;
}

/// The code and the message a caller may see: the error itself, or for a
/// server fault a generic message, the details going to the log only. gRPC
/// and HTTP answers both go through here.
pub fn client_message<E: ServiceError + ?Sized>(err: &E) -> (ServiceErrorCode, String) {
    let code = err.error_code();
    if code.is_client_visible() {
        (code, err.to_string())
    } else {
        tracing::error!(error = %err, "internal error");
        (code, "internal error".to_owned())
    }
}

/// Converts a service error into a gRPC status (see [`client_message`]).
#[cfg(feature = "service")]
pub fn into_status<E: ServiceError>(err: E) -> Status {
    let (code, message) = client_message(&err);
    Status::new(code.grpc_code(), message)
}

impl ServiceError for crate::limits::TextLimitError {
    fn error_code(&self) -> ServiceErrorCode {
        ServiceErrorCode::BadRequest
    }
}

#[cfg(all(test, feature = "service"))]
mod tests {
    use super::*;

    const ALL: [ServiceErrorCode; 8] = [
        ServiceErrorCode::BadRequest,
        ServiceErrorCode::NotFound,
        ServiceErrorCode::FailedPrecondition,
        ServiceErrorCode::ResourceExhausted,
        ServiceErrorCode::Unavailable,
        ServiceErrorCode::DeadlineExceeded,
        ServiceErrorCode::Unimplemented,
        ServiceErrorCode::Internal,
    ];

    #[test]
    fn grpc_codes_round_trip() {
        for code in ALL {
            assert_eq!(ServiceErrorCode::from_grpc(code.grpc_code()), code);
        }
    }

    #[test]
    fn http_statuses_are_errors_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            let status = code.http_status();
            assert!(status.is_client_error() || status.is_server_error());
            assert!(seen.insert(status), "{status} used twice");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("secret detail")]
    struct Boom;
    impl ServiceError for Boom {
        fn error_code(&self) -> ServiceErrorCode {
            ServiceErrorCode::Internal
        }
    }

    #[test]
    fn internal_errors_hide_details() {
        let status = into_status(Boom);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
