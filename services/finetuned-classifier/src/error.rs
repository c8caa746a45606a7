//! Service errors and their place in the shared code table.

use lextral_common::{ServiceError, ServiceErrorCode};

use crate::model::ModelError;

/// What can go wrong serving a classifier.
#[derive(Debug, thiserror::Error)]
pub enum FinetunedError {
    /// Bad request.
    #[error("{0}")]
    BadRequest(String),
    /// No model is loaded.
    #[error("no fine-tuned model is loaded: {0}")]
    NoModel(String),
    /// The model directory cannot be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The embedder could not be reached or failed.
    #[error("embedder: {0}")]
    Embedder(String),
    /// The remote (Mistral) classifier failed.
    #[error(transparent)]
    Remote(#[from] crate::mistral::MistralError),
    /// The model cannot produce labels the index holds (another label set).
    #[error("the fine-tuned model's labels do not cover the index: {count} indexed label(s) unknown to it (first: {first:?}); train it on the same label set or point LEXTRAL_FINETUNED_MODEL elsewhere")]
    LabelsUncovered { count: usize, first: String },
    /// Internal failure.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError for FinetunedError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::BadRequest(_) => ServiceErrorCode::BadRequest,
            Self::NoModel(_) | Self::LabelsUncovered { .. } => ServiceErrorCode::FailedPrecondition,
            Self::Model(ModelError::BadInput(_)) => ServiceErrorCode::BadRequest,
            Self::Model(ModelError::Inference(_)) => ServiceErrorCode::Internal,
            Self::Model(ModelError::Missing { .. } | ModelError::Corrupt { .. }) => {
                ServiceErrorCode::FailedPrecondition
            }
            Self::Embedder(_) => ServiceErrorCode::Unavailable,
            Self::Remote(err) => {
                use crate::mistral::MistralError;
                match err {
                    MistralError::NoKey | MistralError::KeyFile(_) => {
                        ServiceErrorCode::FailedPrecondition
                    }
                    MistralError::Api {
                        status: 401 | 403, ..
                    } => ServiceErrorCode::FailedPrecondition,
                    MistralError::Api { status: 429, .. } => ServiceErrorCode::ResourceExhausted,
                    MistralError::Api {
                        status: 400..=499, ..
                    } => ServiceErrorCode::BadRequest,
                    MistralError::Api { .. }
                    | MistralError::Transport(_)
                    | MistralError::CircuitOpen(_)
                    | MistralError::Protocol(_) => ServiceErrorCode::Unavailable,
                }
            }
            Self::Internal(_) => ServiceErrorCode::Internal,
        }
    }
}
