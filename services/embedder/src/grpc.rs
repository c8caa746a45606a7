//! The gRPC adapter: validate, call the queue, convert.

use std::sync::Arc;

use lextral_common::{into_status, TextLimits};
use lextral_proto::v1::{
    embedder_service_server::EmbedderService, EmbedRequest, EmbedResponse,
    EmbedderServiceInfoRequest, EmbedderServiceInfoResponse, Embedding,
};
use tonic::{Request, Response, Status};

use crate::batcher::EmbedQueue;

use crate::error::EmbedderError;

/// Implements `lextral.v1.EmbedderService`.
pub struct EmbedderGrpc {
    queue: Arc<EmbedQueue>,
    limits: TextLimits,
}

impl EmbedderGrpc {
    /// Serves `queue` with `limits`.
    pub fn new(queue: Arc<EmbedQueue>, limits: TextLimits) -> Self {
        Self { queue, limits }
    }
}

#[tonic::async_trait]
impl EmbedderService for EmbedderGrpc {
    #[tracing::instrument(skip_all, fields(texts = request.get_ref().texts.len()))]
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let EmbedRequest { texts, normalize } = request.into_inner();
        self.limits
            .check(&texts)
            .map_err(|err| into_status(EmbedderError::from(err)))?;
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
    use lextral_common::{ServiceError, ServiceErrorCode};

    use super::*;
    use crate::EmbedderConfig;

    #[test]
    fn validation_names_the_problem() {
        let limits = TextLimits {
            max_texts: 2,
            ..EmbedderConfig::with_model("m").limits()
        };
        let three = vec!["a".to_owned(); 3];
        let err = EmbedderError::from(limits.check(&three).unwrap_err());
        assert_eq!(err.to_string(), "3 texts in one request; the limit is 2");
        assert_eq!(err.error_code(), ServiceErrorCode::BadRequest);
        // The embedder embeds whatever it is sent, blank texts too.
        assert!(limits.check(&["".to_owned()]).is_ok());
    }
}
