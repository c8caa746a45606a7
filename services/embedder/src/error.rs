//! Embedder errors and their place in the shared code table.

use lextral_common::{ServiceError, ServiceErrorCode, TextLimitError};
use lextral_embedding::EmbeddingError;

/// What can go wrong in the embedder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedderError {
    /// The texts break the request limits.
    #[error(transparent)]
    Limits(#[from] TextLimitError),
    /// The batching queue is full.
    #[error("embedder overloaded: {capacity} requests already queued")]
    QueueFull { capacity: usize },
    /// Too many tokens are waiting.
    #[error("embedder overloaded: about {tokens} tokens already queued (limit {limit})")]
    TooMuchQueued { tokens: usize, limit: usize },
    /// The work ahead would keep this request waiting too long.
    #[error("embedder overloaded: the work queued ahead would take about {wait_ms} ms (limit {limit_ms} ms)")]
    WaitTooLong { wait_ms: u64, limit_ms: u64 },
    /// The model thread has stopped.
    #[error("embedder is shutting down")]
    Stopped,
    /// The model directory is missing files or holds bad ones.
    #[error("cannot load model from {path}: {reason}")]
    ModelLoad { path: String, reason: String },
    /// Tokenisation or the forward pass failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl ServiceError for EmbedderError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::Limits(_) => ServiceErrorCode::BadRequest,
            Self::QueueFull { .. } | Self::TooMuchQueued { .. } | Self::WaitTooLong { .. } => {
                ServiceErrorCode::ResourceExhausted
            }
            Self::Stopped => ServiceErrorCode::Unavailable,
            Self::ModelLoad { .. } => ServiceErrorCode::FailedPrecondition,
            Self::Inference(_) => ServiceErrorCode::Internal,
        }
    }
}

impl From<EmbeddingError> for EmbedderError {
    fn from(err: EmbeddingError) -> Self {
        match err {
            EmbeddingError::ModelLoad { path, reason } => Self::ModelLoad { path, reason },
            EmbeddingError::Inference(reason) => Self::Inference(reason),
        }
    }
}
