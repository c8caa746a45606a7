//! The gRPC adapter for `lextral.v1.OrchestratorService`.

use std::sync::Arc;

use lextral_common::into_status;
use lextral_proto::v1::{
    orchestrator_service_server::OrchestratorService, ClassifyRequest, ClassifyResponse,
    IngestRequest, IngestResponse, LabelsRequest, LabelsResponse, OrchestratorServiceInfoRequest,
    OrchestratorServiceInfoResponse,
};
use tonic::{Request, Response, Status};

use crate::service::Orchestrator;

/// Implements `lextral.v1.OrchestratorService`.
pub struct OrchestratorGrpc {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorGrpc {
    /// Serves `orchestrator`.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    #[tracing::instrument(skip_all, fields(texts = request.get_ref().texts.len(), strategy = request.get_ref().strategy))]
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let response = self
            .orchestrator
            .classify(request.into_inner())
            .await
            .map_err(into_status)?;
        Ok(Response::new(response))
    }

    async fn labels(
        &self,
        _request: Request<LabelsRequest>,
    ) -> Result<Response<LabelsResponse>, Status> {
        let response = self.orchestrator.labels().await.map_err(into_status)?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(items = request.get_ref().items.len()))]
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let response = self
            .orchestrator
            .ingest(request.into_inner())
            .await
            .map_err(into_status)?;
        Ok(Response::new(response))
    }

    async fn info(
        &self,
        _request: Request<OrchestratorServiceInfoRequest>,
    ) -> Result<Response<OrchestratorServiceInfoResponse>, Status> {
        Ok(Response::new(self.orchestrator.info().await))
    }
}
