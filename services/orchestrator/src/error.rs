//! Orchestrator errors, including downstream failures mapped back onto the
//! shared code table.

use lextral_common::{ServiceError, ServiceErrorCode};

/// What can go wrong in the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The strategy exists in the API but is not available in this deployment.
    #[error("{0}")]
    Unimplemented(String),
    /// The system is not in a state to answer (e.g. no label set yet).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A downstream service failed.
    #[error("{service}: {message}")]
    Downstream {
        service: &'static str,
        code: ServiceErrorCode,
        message: String,
    },
    /// A downstream answer broke the contract (e.g. wrong result count).
    #[error("{0}")]
    Internal(String),
    /// The caller used up a quota (the LLM strategies' own).
    #[error(transparent)]
    OverQuota(#[from] lextral_common::quota::OverQuota),
}

impl OrchestratorError {
    /// Seconds the caller should wait before retrying, when that is known.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::OverQuota(over) => Some(over.retry_after_s),
            // A downstream service shedding load: try again shortly.
            Self::Downstream {
                code: ServiceErrorCode::ResourceExhausted,
                ..
            } => Some(lextral_common::access::RETRY_AFTER_S),
            _ => None,
        }
    }
}

impl OrchestratorError {
    /// The dependency that shed this call for overload, if one did: the
    /// door then lets fewer calls in (`lextral_common::admission`).
    pub fn overloaded_dependency(&self) -> Option<&'static str> {
        match self {
            Self::Downstream {
                service,
                code: ServiceErrorCode::ResourceExhausted,
                ..
            } => Some(service),
            _ => None,
        }
    }

    /// Wraps a downstream status, keeping its meaning.
    pub fn downstream(service: &'static str) -> impl Fn(tonic::Status) -> Self {
        move |status| Self::Downstream {
            service,
            code: ServiceErrorCode::from_grpc(status.code()),
            message: status.message().to_owned(),
        }
    }
}

impl From<lextral_common::TextLimitError> for OrchestratorError {
    fn from(err: lextral_common::TextLimitError) -> Self {
        Self::InvalidArgument(err.to_string())
    }
}

impl ServiceError for OrchestratorError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::InvalidArgument(_) => ServiceErrorCode::BadRequest,
            Self::Unimplemented(_) => ServiceErrorCode::Unimplemented,
            Self::FailedPrecondition(_) => ServiceErrorCode::FailedPrecondition,
            Self::Downstream { code, .. } => *code,
            Self::Internal(_) => ServiceErrorCode::Internal,
            Self::OverQuota(_) => ServiceErrorCode::ResourceExhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_codes_keep_their_meaning() {
        let err = OrchestratorError::downstream("retriever")(tonic::Status::unavailable("db down"));
        assert_eq!(err.error_code(), ServiceErrorCode::Unavailable);
        assert_eq!(err.to_string(), "retriever: db down");
        let err = OrchestratorError::downstream("embedder")(tonic::Status::invalid_argument("bad"));
        assert_eq!(err.error_code(), ServiceErrorCode::BadRequest);
    }
}
