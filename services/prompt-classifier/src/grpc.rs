//! `PromptClassifierService` over gRPC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lextral_common::into_status;
use lextral_proto::v1::{
    prompt_classifier_service_server::PromptClassifierService,
    PromptClassifierServiceClassifyRequest, PromptClassifierServiceClassifyResponse,
    PromptClassifierServiceInfoRequest, PromptClassifierServiceInfoResponse, PromptMode,
};
use tonic::{Request, Response, Status};

use crate::error::PromptError;
use crate::service::{ClassifyInput, PromptService};

/// The gRPC face of [`PromptService`].
pub struct PromptGrpc {
    service: Arc<PromptService>,
}

impl PromptGrpc {
    /// Wraps the service.
    pub fn new(service: Arc<PromptService>) -> Self {
        Self { service }
    }
}

/// The caller's `grpc-timeout` header (e.g. `500m`, `30S`), if any.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl PromptClassifierService for PromptGrpc {
    async fn classify(
        &self,
        request: Request<PromptClassifierServiceClassifyRequest>,
    ) -> Result<Response<PromptClassifierServiceClassifyResponse>, Status> {
        // The tighter of the caller's deadline and our own timeout.
        let mut budget = self.service.config().timeout();
        if let Some(caller) = grpc_timeout(request.metadata()) {
            budget = budget.min(caller);
        }
        let deadline = Instant::now() + budget;
        let request = request.into_inner();
        let mode = PromptMode::try_from(request.mode).map_err(|_| {
            into_status(PromptError::BadRequest(format!(
                "unknown prompt mode {}",
                request.mode
            )))
        })?;
        let mode = match mode {
            PromptMode::Unspecified => PromptMode::ZeroShot,
            m => m,
        };
        let results = self
            .service
            .classify(ClassifyInput {
                texts: request.texts,
                labels: request.labels,
                mode,
                examples: request.examples,
                max_output_tokens: request.max_output_tokens,
                deadline,
            })
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "prompt classify failed");
                into_status(err)
            })?;
        Ok(Response::new(PromptClassifierServiceClassifyResponse {
            results,
        }))
    }

    async fn info(
        &self,
        _request: Request<PromptClassifierServiceInfoRequest>,
    ) -> Result<Response<PromptClassifierServiceInfoResponse>, Status> {
        let config = self.service.config();
        Ok(Response::new(match self.service.backend() {
            Ok(backend) => {
                let price = self.service.prices().get(backend.model());
                PromptClassifierServiceInfoResponse {
                    backend: backend.kind().to_owned(),
                    model: backend.model().to_owned(),
                    ready: true,
                    detail: String::new(),
                    constrained: backend.kind() == "local-gguf" && config.constrained,
                    input_price_per_million: price.map_or(0.0, |p| p.input),
                    output_price_per_million: price.map_or(0.0, |p| p.output),
                }
            }
            Err(detail) => PromptClassifierServiceInfoResponse {
                backend: config.backend.clone(),
                model: config.model.clone().unwrap_or_default(),
                ready: false,
                detail,
                ..Default::default()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        m.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(1500)));
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(2)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }
}
