//! `FinetunedClassifierService` over gRPC.

use std::sync::Arc;

use lextral_common::into_status;
use lextral_proto::v1::{
    finetuned_classifier_service_server::FinetunedClassifierService,
    FinetunedClassifierServiceClassifyRequest, FinetunedClassifierServiceClassifyResponse,
    FinetunedClassifierServiceInfoRequest, FinetunedClassifierServiceInfoResponse, ReloadRequest,
    ReloadResponse,
};
use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;

use crate::error::FinetunedError;
use crate::service::FinetunedService;

/// The gRPC face of [`FinetunedService`].
pub struct FinetunedGrpc {
    service: Arc<FinetunedService>,
    health: HealthReporter,
}

impl FinetunedGrpc {
    /// Wraps the service; `health` is flipped on reloads.
    pub fn new(service: Arc<FinetunedService>, health: HealthReporter) -> Self {
        Self { service, health }
    }
}

/// Reloads and updates health: SERVING once any model is loaded.
pub async fn reload(
    service: &FinetunedService,
    health: &HealthReporter,
) -> Result<String, FinetunedError> {
    use lextral_proto::v1::finetuned_classifier_service_server::FinetunedClassifierServiceServer;
    match service.load().await {
        Ok(model) => {
            health
                .set_serving::<FinetunedClassifierServiceServer<FinetunedGrpc>>()
                .await;
            Ok(model.manifest.content_hash.clone())
        }
        Err(err) => {
            tracing::error!(error = %err, "fine-tuned model reload failed; the previous model (if any) keeps serving");
            Err(err)
        }
    }
}

#[tonic::async_trait]
impl FinetunedClassifierService for FinetunedGrpc {
    async fn classify(
        &self,
        request: Request<FinetunedClassifierServiceClassifyRequest>,
    ) -> Result<Response<FinetunedClassifierServiceClassifyResponse>, Status> {
        let request = request.into_inner();
        if request.top_k == Some(0) {
            return Err(into_status(FinetunedError::BadRequest(
                "top_k must be at least 1".into(),
            )));
        }
        let results = self
            .service
            .classify(request.texts, request.top_k.map(|k| k as usize))
            .await
            .map_err(into_status)?;
        Ok(Response::new(FinetunedClassifierServiceClassifyResponse {
            results,
        }))
    }

    async fn info(
        &self,
        _request: Request<FinetunedClassifierServiceInfoRequest>,
    ) -> Result<Response<FinetunedClassifierServiceInfoResponse>, Status> {
        if let Some(remote) = self.service.remote_model() {
            return Ok(Response::new(FinetunedClassifierServiceInfoResponse {
                method: "mistral".to_owned(),
                labels: Vec::new(),
                manifest_json: serde_json::json!({"method": "mistral", "model": remote})
                    .to_string(),
            }));
        }
        let model = self.service.current().ok_or_else(|| {
            into_status(FinetunedError::NoModel(
                "no model loaded (see the service log)".into(),
            ))
        })?;
        Ok(Response::new(FinetunedClassifierServiceInfoResponse {
            method: model.manifest.method.as_str().to_owned(),
            labels: model.labels().to_vec(),
            manifest_json: serde_json::to_string(&model.manifest)
                .map_err(|err| into_status(FinetunedError::Internal(err.to_string())))?,
        }))
    }

    async fn reload(
        &self,
        _request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let content_hash = reload(&self.service, &self.health)
            .await
            .map_err(into_status)?;
        Ok(Response::new(ReloadResponse { content_hash }))
    }
}
