//! Service errors and their place in the shared code table.

use lextral_common::{ServiceError, ServiceErrorCode};

use crate::backend::LlmError;

/// What can go wrong classifying by prompt.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Bad request.
    #[error("{0}")]
    BadRequest(String),
    /// The backend is not loaded (yet) or not configured.
    #[error("the prompt classifier is not ready: {0}")]
    NotReady(String),
    /// The LLM call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
}

impl ServiceError for PromptError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::BadRequest(_) => ServiceErrorCode::BadRequest,
            Self::NotReady(_) => ServiceErrorCode::FailedPrecondition,
            Self::Llm(err) => match err {
                LlmError::NotConfigured(_)
                | LlmError::Unauthorized { .. }
                | LlmError::Rejected { .. } => ServiceErrorCode::FailedPrecondition,
                LlmError::RateLimited { .. } | LlmError::Busy(_) => {
                    ServiceErrorCode::ResourceExhausted
                }
                LlmError::Unavailable { .. }
                | LlmError::CircuitOpen(_)
                | LlmError::Malformed(_) => ServiceErrorCode::Unavailable,
                LlmError::Deadline(_) => ServiceErrorCode::DeadlineExceeded,
                LlmError::TooLong(_) => ServiceErrorCode::BadRequest,
                LlmError::Inference(_) => ServiceErrorCode::Internal,
            },
        }
    }
}

impl PromptError {
    /// Metric label for the error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotReady(_) => "not_ready",
            Self::Llm(err) => match err {
                LlmError::NotConfigured(_) => "not_configured",
                LlmError::Unauthorized { .. } => "unauthorized",
                LlmError::Rejected { .. } => "rejected",
                LlmError::RateLimited { .. } => "rate_limited",
                LlmError::Unavailable { .. } => "unavailable",
                LlmError::CircuitOpen(_) => "circuit_open",
                LlmError::Busy(_) => "busy",
                LlmError::Malformed(_) => "malformed",
                LlmError::Deadline(_) => "deadline",
                LlmError::TooLong(_) => "too_long",
                LlmError::Inference(_) => "inference",
            },
        }
    }
}
