//! What can go wrong loading a model or embedding text.

/// A model that cannot be loaded, or a forward pass that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbeddingError {
    /// The model directory is missing files or holds bad ones.
    #[error("cannot load model from {path}: {reason}")]
    ModelLoad { path: String, reason: String },
    /// Tokenisation or the forward pass failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for EmbeddingError {
    fn from(err: candle_core::Error) -> Self {
        Self::Inference(err.to_string())
    }
}
