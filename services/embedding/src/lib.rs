//! Sentence embeddings from a BERT-family model with candle, reproducing
//! sentence-transformers (truncation, pooling, normalisation).
//!
//! No server code lives here: the embedder service puts a batching queue and
//! gRPC in front of [`SentenceEmbedder`], and training embeds its clauses with
//! the same type, so both compute the same vectors.

mod bert;
mod cache;
mod error;
mod kernels;
mod matmul;
mod sentence;

pub use cache::embed_cached;
pub use error::EmbeddingError;
pub use sentence::{
    default_model, l2_normalize, resolve_model_dir, ModelInfo, Pooling, SentenceEmbedder,
    TextEmbedding, DEFAULT_HUB_MODEL,
};

#[cfg(test)]
mod test_support {
    use candle_core::Tensor;

    /// Largest element-wise difference between two tensors of one shape.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}
