//! The gRPC adapter: validate, call the queue, convert.

use std::sync::Arc;

use lextral_common::into_status;
use lextral_proto::v1::{
    embedder_service_server::EmbedderService, EmbedRequest, EmbedResponse,
    EmbedderServiceInfoRequest, EmbedderServiceInfoResponse, Embedding,
};
use tonic::{Request, Response, Status};

use crate::batcher::EmbedQueue;
use crate::config::EmbedLimits;
use crate::error::EmbedderError;

/// Implements `lextral.v1.EmbedderService`.
pub struct EmbedderGrpc {
    queue: Arc<EmbedQueue>,
    limits: EmbedLimits,
}

impl EmbedderGrpc {
    /// Serves `queue` with `limits`.
    pub fn new(queue: Arc<EmbedQueue>, limits: EmbedLimits) -> Self {
        Self { queue, limits }
    }
}

/// Checks a batch of texts against the limits.
pub fn validate_texts(texts: &[String], limits: EmbedLimits) -> Result<(), EmbedderError> {
    if texts.is_empty() {
        return Err(EmbedderError::NoTexts);
    }
    if texts.len() > limits.max_texts {
        return Err(EmbedderError::TooManyTexts {
            count: texts.len(),
            max: limits.max_texts,
        });
    }
    if let Some((index, text)) = texts
        .iter()
        .enumerate()
        .find(|(_, text)| text.len() > limits.max_text_bytes)
    {
        return Err(EmbedderError::TextTooLong {
            index,
            bytes: text.len(),
            max: limits.max_text_bytes,
        });
    }
    Ok(())
}

#[tonic::async_trait]
impl EmbedderService for EmbedderGrpc {
    #[tracing::instrument(skip_all, fields(texts = request.get_ref().texts.len()))]
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let EmbedRequest { texts, normalize } = request.into_inner();
        validate_texts(&texts, self.limits).map_err(into_status)?;
        let embeddings = self
            .queue
            .embed(texts, normalize)
            .await
            .map_err(into_status)?;
        Ok(Response::new(EmbedResponse {
            embeddings: embeddings
                .into_iter()
                .map(|e| Embedding {
                    values: e.values,
                    token_count: e.token_count as u32,
                    truncated: e.truncated,
                })
                .collect(),
        }))
    }

    async fn info(
        &self,
        _request: Request<EmbedderServiceInfoRequest>,
    ) -> Result<Response<EmbedderServiceInfoResponse>, Status> {
        let info = self.queue.info();
        Ok(Response::new(EmbedderServiceInfoResponse {
            model_id: info.model_id.clone(),
            dimension: info.dimension as u32,
            max_sequence_length: info.max_seq_len as u32,
            pooling: info.pooling.as_str().to_owned(),
            normalize: info.normalize,
            max_batch_tokens: self.queue.max_batch_tokens() as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EmbedLimits = EmbedLimits {
        max_texts: 2,
        max_text_bytes: 5,
    };

    #[test]
    fn validation_names_the_problem() {
        assert!(matches!(
            validate_texts(&[], LIMITS),
            Err(EmbedderError::NoTexts)
        ));
        let three = vec!["a".to_owned(); 3];
        assert!(matches!(
            validate_texts(&three, LIMITS),
            Err(EmbedderError::TooManyTexts { count: 3, max: 2 })
        ));
        let long = vec!["ok".to_owned(), "toolong".to_owned()];
        assert!(matches!(
            validate_texts(&long, LIMITS),
            Err(EmbedderError::TextTooLong {
                index: 1,
                bytes: 7,
                max: 5
            })
        ));
        assert!(validate_texts(&["".to_owned()], LIMITS).is_ok());
    }
}
