//! The retriever service: labelled clause embeddings behind
//! `RetrieverService`, in the embedded store (one machine, no database
//! server) or in PostgreSQL with pgvector (searched through the in-memory
//! search mirror or pgvector's HNSW index).

mod config;
mod embedded;
/// Entry points for the cargo-fuzz targets in `fuzz/`.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::embedded::fuzz_replay;
}
mod error;
mod grpc;
mod migrations;
mod mirror;
mod pg;
mod pgurl;
mod quantized;
pub mod search;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use health::spawn_health_loop;
use lextral_common::server::GrpcRoutes;
use lextral_proto::v1::retriever_service_server::RetrieverServiceServer;
use tokio::net::TcpListener;

pub use config::{
    PgSearch, RetrieverConfig, StoreKind, DEFAULT_EF_SEARCH, DEFAULT_EXACT_MAX_ROWS,
    DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_M,
};
pub use error::StoreError;
pub use grpc::RetrieverGrpc;
pub use pg::PgStore;
pub use store::{content_hash, Hit, NewClause, SearchParams, Stats, Store, UpsertOutcome};

mod health {
    use super::*;
    use tonic_health::server::HealthReporter;

    /// Keeps the schema migrated and health in step with the database: the
    /// service reports NOT_SERVING while PostgreSQL is unreachable and comes
    /// back by itself when it returns.
    pub fn spawn_health_loop(store: Arc<Store>, health: HealthReporter, every: Duration) {
        tokio::spawn(async move {
            let mut serving: Option<bool> = None;
            loop {
                let ok = match store.ensure_ready().await {
                    Ok(()) => true,
                    Err(err) => {
                        if serving != Some(false) {
                            tracing::warn!(error = %err, "store not ready");
                        }
                        false
                    }
                };
                if serving != Some(ok) {
                    if ok {
                        tracing::info!("store ready");
                        health
                            .set_serving::<RetrieverServiceServer<RetrieverGrpc>>()
                            .await;
                    } else {
                        health
                            .set_not_serving::<RetrieverServiceServer<RetrieverGrpc>>()
                            .await;
                    }
                    serving = Some(ok);
                }
                metrics::gauge!("lextral_retriever_database_up").set(if ok { 1.0 } else { 0.0 });
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// Adds the retriever to `routes`. The database may still be down: health
/// stays NOT_SERVING and calls answer UNAVAILABLE until it is reachable.
pub async fn add_to(
    config: &RetrieverConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<Store>> {
    let health = routes.health();
    health
        .set_not_serving::<RetrieverServiceServer<RetrieverGrpc>>()
        .await;
    let store = Arc::new(Store::connect(config)?);
    if let Err(err) = store.ensure_ready().await {
        // A dimension clash will not heal by waiting: fail the start.
        if matches!(err, StoreError::DimensionMismatchInIndex { .. }) {
            return Err(err.into());
        }
        tracing::warn!(error = %err, "database not ready yet; will keep trying");
    }
    spawn_health_loop(
        store.clone(),
        health,
        Duration::from_secs(config.health_interval_s.max(1)),
    );
    routes.add_service(
        RetrieverServiceServer::new(RetrieverGrpc::new(store.clone()))
            .max_decoding_message_size(lextral_common::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
    );
    Ok(store)
}

/// Runs the retriever alone on `listener` until `shutdown` resolves.
pub async fn run(
    config: RetrieverConfig,
    access: lextral_common::Access,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tracing::info!(?config, "starting retriever");
    let mut routes = GrpcRoutes::with_access(access);
    add_to(&config, &mut routes).await?;
    routes
        .serve(listener, Duration::from_secs(config.timeout_s), shutdown)
        .await
}
