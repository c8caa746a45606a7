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

/// Adds the orchestrator's gRPC service to `routes`. Its health follows its
/// dependencies (checked every [`HEALTH_EVERY`]): the service is SERVING
/// while kNN can answer, and each strategy has its own health entry
/// (`lextral.v1.OrchestratorService.<strategy>`); `/readyz` says the same
/// with the missing dependencies named.
pub async fn add_to(
    config: &OrchestratorConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<Orchestrator>> {
    let orchestrator = Arc::new(Orchestrator::with_access(
        config.clone(),
        routes.access().clone(),
    )?);
    // The same request size over gRPC as over REST; answers may be larger.
    routes.add_service(
        OrchestratorServiceServer::new(OrchestratorGrpc::new(orchestrator.clone()))
            .max_decoding_message_size(config.http_body_limit)
            .max_encoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
    );
    let health = routes.health();
    health
        .set_not_serving::<OrchestratorServiceServer<OrchestratorGrpc>>()
        .await;
    let watched = Arc::downgrade(&orchestrator);
    tokio::spawn(async move {
        let mut said: std::collections::HashMap<String, bool> = Default::default();
        while let Some(orchestrator) = watched.upgrade() {
            let statuses = orchestrator.readiness().await;
            drop(orchestrator);
            for (strategy, answer) in strategy::strategy_readiness(&statuses) {
                let ok = answer.is_ok();
                let mut names = vec![format!("{ORCHESTRATOR}.{strategy}")];
                if strategy == "knn" {
                    names.push(ORCHESTRATOR.to_owned());
                }
                for name in names {
                    if said.get(&name) != Some(&ok) {
                        if let Err(missing) = &answer {
                            tracing::warn!(%name, %missing, "not serving");
                        }
                        let status = if ok {
                            tonic_health::ServingStatus::Serving
                        } else {
                            tonic_health::ServingStatus::NotServing
                        };
                        health.set_service_status(&name, status).await;
                        said.insert(name, ok);
                    }
                }
            }
            tokio::time::sleep(HEALTH_EVERY).await;
        }
    });
    Ok(orchestrator)
}

/// How often the orchestrator's health re-checks its dependencies.
pub const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

const ORCHESTRATOR: &str = lextral_proto::v1::orchestrator_service_server::SERVICE_NAME;

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
