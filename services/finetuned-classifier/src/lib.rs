//! The `FinetunedClassifierService` and the model directory it serves:
//! format, manifest, load and predict. Training (`lextral train`) is
//! `lextral-training`'s, which this crate does not link.

mod config;
mod dense;
mod error;
mod grpc;
mod linear;
pub mod mistral;
mod model;
mod scoring;
mod service;
mod tfidf;

use std::future::Future;
use std::sync::Arc;

use lextral_common::server::GrpcRoutes;
use lextral_proto::v1::finetuned_classifier_service_server::FinetunedClassifierServiceServer;
use tokio::net::TcpListener;

pub use config::FinetunedConfig;
pub use dense::{matrix, DenseHead};
pub use error::FinetunedError;
pub use grpc::FinetunedGrpc;
pub use linear::LinearModel;
pub use model::{
    copy_dir, labels_missing_from, lexical_tensors, write_model_dir, Classifier, Combination,
    CrossValidation, CvCandidate, EmbeddingSpec, LexicalModel, Manifest, Method, ModelError,
    PairedGain, TrainingInfo, ValidationReport, ENCODER_DIR, FORMAT, MANIFEST_FILE,
    VOCABULARY_FILE, WEIGHTS_FILE,
};
pub use scoring::{argmax, log_softmax_in_place, F1Scores};
pub use service::{retriever_labels, FinetunedService, IndexLabels};
pub use tfidf::{Analyzer, Block, BlockConfig, SparseRow, Vectorizer};

/// Adds the service to `routes`. A configured model that fails to load is a
/// start-up error; with no model configured the service runs NOT_SERVING
/// (other strategies keep working). SIGHUP reloads the model directory.
pub async fn add_to(
    config: &FinetunedConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<FinetunedService>> {
    add_to_checked(config, routes, None).await
}

/// [`add_to`], checking every model loaded against `index_labels` (the
/// store of the same process) instead of the configured retriever.
pub async fn add_to_checked(
    config: &FinetunedConfig,
    routes: &mut GrpcRoutes,
    index_labels: Option<IndexLabels>,
) -> anyhow::Result<Arc<FinetunedService>> {
    let health = routes.health();
    health
        .set_not_serving::<FinetunedClassifierServiceServer<FinetunedGrpc>>()
        .await;
    let mut service = FinetunedService::new(config.clone(), routes.access())?;
    if let Some(labels) = index_labels {
        service.check_labels_against(labels);
    }
    let service = Arc::new(service);
    if let Some(remote) = service.remote_model() {
        tracing::info!(model = remote, url = %config.mistral_url, "serving a Mistral fine-tuned classifier");
        health
            .set_serving::<FinetunedClassifierServiceServer<FinetunedGrpc>>()
            .await;
    } else if config.model.is_some() {
        grpc::reload(&service, &health)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    } else {
        tracing::warn!("no --finetuned-model / LEXTRAL_FINETUNED_MODEL: the finetuned and cascade strategies are unavailable");
    }
    watch_sighup(service.clone(), health.clone());
    routes.add_service(
        FinetunedClassifierServiceServer::new(FinetunedGrpc::new(service.clone(), health))
            .max_decoding_message_size(lextral_common::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
    );
    Ok(service)
}

#[cfg(unix)]
fn watch_sighup(service: Arc<FinetunedService>, health: tonic_health::server::HealthReporter) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use the Reload RPC");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the fine-tuned model");
            let _ = grpc::reload(&service, &health).await;
        }
    });
}

#[cfg(not(unix))]
fn watch_sighup(_service: Arc<FinetunedService>, _health: tonic_health::server::HealthReporter) {}

/// Runs the service alone on `listener` until `shutdown` resolves.
pub async fn run(
    config: FinetunedConfig,
    access: lextral_common::Access,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tracing::info!(?config, "starting finetuned-classifier");
    let mut routes = GrpcRoutes::with_access(access);
    add_to(&config, &mut routes).await?;
    routes
        .serve(listener, config.request_timeout(), shutdown)
        .await
}
