//! The embedder service: `lextral-embedding`'s sentence embedder behind a
//! batching queue, served over gRPC.

mod batcher;
mod config;
mod error;
mod grpc;

use std::future::Future;
use std::sync::Arc;

use lextral_common::server::GrpcRoutes;
use lextral_proto::v1::embedder_service_server::EmbedderServiceServer;
use tokio::net::TcpListener;

pub use batcher::{EmbedQueue, QueueLimits};
pub use config::EmbedderConfig;
pub use error::EmbedderError;
pub use grpc::EmbedderGrpc;
use lextral_embedding::{resolve_model_dir, SentenceEmbedder};

/// Loads the model and starts the batching queue.
pub async fn load_queue(config: &EmbedderConfig) -> anyhow::Result<Arc<EmbedQueue>> {
    let dir = resolve_model_dir(&config.model).await?;
    let model_id = config.model.clone();
    let embedder =
        tokio::task::spawn_blocking(move || SentenceEmbedder::load(&dir, &model_id)).await??;
    tracing::info!(
        model = %embedder.info().model_id,
        dimension = embedder.info().dimension,
        max_seq_len = embedder.info().max_seq_len,
        pooling = embedder.info().pooling.as_str(),
        "embedding model loaded"
    );
    Ok(Arc::new(EmbedQueue::start(embedder, config.queue_limits())))
}

/// Adds the embedder to `routes`, loading the model first; health flips to
/// SERVING once it is loaded.
pub async fn add_to(
    config: &EmbedderConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<EmbedQueue>> {
    let health = routes.health();
    health
        .set_not_serving::<EmbedderServiceServer<EmbedderGrpc>>()
        .await;
    let queue = load_queue(config).await?;
    let service = EmbedderGrpc::new(queue.clone(), config.limits());
    routes.add_service(
        EmbedderServiceServer::new(service)
            .max_decoding_message_size(lextral_common::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
    );
    health
        .set_serving::<EmbedderServiceServer<EmbedderGrpc>>()
        .await;
    // Health follows the model thread: once it has stopped (a model that
    // keeps panicking), the service is NOT_SERVING and leaves rotation.
    let watched = queue.clone();
    tokio::spawn(async move {
        while watched.is_running() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        tracing::error!("embedder model thread stopped; reporting NOT_SERVING");
        health
            .set_not_serving::<EmbedderServiceServer<EmbedderGrpc>>()
            .await;
    });
    Ok(queue)
}

/// Runs the embedder alone on `listener`, admitting calls by `access`, until `shutdown` resolves.
pub async fn run(
    config: EmbedderConfig,
    access: lextral_common::Access,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tracing::info!(?config, "starting embedder");
    let mut routes = GrpcRoutes::with_access(access);
    add_to(&config, &mut routes).await?;
    routes
        .serve(listener, config.request_timeout(), shutdown)
        .await
}
