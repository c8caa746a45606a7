//! The orchestrator: composes embedder, retriever and classifiers per
//! strategy, and serves both the gRPC API and the REST/JSON gateway.
//!
//! Layout: `plan` (a request checked once for both protocols), `strategy/*`
//! (one module per strategy), `downstream` (the clients, readiness, Info
//! fan-out), `domain` (answers in our own types); `grpc` and `http` convert
//! between their protocol and those types and do nothing else.

mod config;
mod domain;
mod downstream;
mod error;
mod grpc;
pub mod http;
pub mod info;
mod orchestrator;
mod plan;
mod strategy;
mod vote;

use std::future::Future;
use std::sync::Arc;

use lextral_common::server::{serve_grpc, GrpcRoutes};
use lextral_proto::v1::orchestrator_service_server::OrchestratorServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::OrchestratorConfig;
pub use domain::{
    Classification, Classified, DependencyStatus, IngestOutcome, LabelCount, LabelScore, LabelSet,
    LabelledClause, LlmUsage, Neighbour, StageLatency,
};
pub use error::OrchestratorError;
pub use grpc::OrchestratorGrpc;
pub use orchestrator::Orchestrator;
pub use plan::{ClassifyInput, ClassifyPlan, KnnInput, KnnParams, StrategyPlan, VoteKind, MAX_K};
pub use vote::Vote;

/// Adds the orchestrator's gRPC service to `routes`. It is stateless, so it
/// is SERVING at once; `/readyz` reports its dependencies.
pub async fn add_to(
    config: &OrchestratorConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<Orchestrator>> {
    let orchestrator = Arc::new(Orchestrator::with_access(
        config.clone(),
        routes.access().clone(),
    )?);
    routes.add_service(OrchestratorServiceServer::new(OrchestratorGrpc::new(
        orchestrator.clone(),
    )));
    routes
        .health()
        .set_serving::<OrchestratorServiceServer<OrchestratorGrpc>>()
        .await;
    Ok(orchestrator)
}

/// Runs the orchestrator alone: gRPC on `grpc_listener`, REST on
/// `http_listener`, both stopped by `shutdown`.
pub async fn run(
    config: OrchestratorConfig,
    access: lextral_common::Access,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(?config, "starting orchestrator");
    let token = CancellationToken::new();
    let mut routes = GrpcRoutes::with_access(access);
    let orchestrator = add_to(&config, &mut routes).await?;
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let http_token = token.clone();
    let http = tokio::spawn(http::serve(http_listener, orchestrator, async move {
        http_token.cancelled().await
    }));
    let grpc_token = token.clone();
    serve_grpc(
        grpc_listener,
        routes,
        config.request_timeout(),
        async move { grpc_token.cancelled().await },
    )
    .await?;
    token.cancel();
    http.await??;
    Ok(())
}
