//! Classifies clauses by prompting an LLM: zero-shot (label list and
//! clause) or few-shot (similar labelled clauses as examples), through
//! Mistral's API, any OpenAI-compatible server, or a quantized Gemma 3 run
//! in-process (the offline default).

mod backend;
mod chat;
mod config;
mod error;
mod gemma;
mod grpc;
mod local;
mod parse;
mod prices;
mod prompt;
mod service;
mod spm;

use std::future::Future;
use std::sync::Arc;

use lextral_common::server::GrpcRoutes;
use lextral_proto::v1::prompt_classifier_service_server::PromptClassifierServiceServer;
use tokio::net::TcpListener;

pub use backend::{Completion, CompletionRequest, LlmBackend, LlmError};
pub use chat::{ChatBackend, ChatSettings, RetryPolicy};
pub use config::PromptConfig;
pub use error::PromptError;
pub use grpc::PromptGrpc;
pub use local::LocalBackend;
pub use parse::{LabelMatcher, ParseMethod};
pub use prices::PriceTable;
pub use service::{BackendChoice, PromptService};

/// Adds the service to `routes`. A chat backend is ready at once; a local
/// model loads in the background (NOT_SERVING until it has). A local model
/// the user named that cannot be loaded is a start-up error; the default
/// one missing only leaves the prompt strategies unavailable, with a hint.
pub async fn add_to(
    config: &PromptConfig,
    routes: &mut GrpcRoutes,
) -> anyhow::Result<Arc<PromptService>> {
    let health = routes.health();
    health
        .set_not_serving::<PromptClassifierServiceServer<PromptGrpc>>()
        .await;
    let (service, choice) = PromptService::new(config.clone(), routes.access())?;
    let service = Arc::new(service);
    match choice {
        BackendChoice::Chat(settings) => {
            tracing::info!(backend = settings.kind, model = %settings.model, url = %lextral_common::telemetry::redact_url(&settings.base_url), key = settings.api_key.is_some(), "prompt classifier uses a chat API");
            let backend = chat::ChatBackend::new(settings).map_err(|e| anyhow::anyhow!("{e}"))?;
            service.set_backend(Ok(Arc::new(backend)));
            health
                .set_serving::<PromptClassifierServiceServer<PromptGrpc>>()
                .await;
        }
        BackendChoice::Local { path, explicit } => {
            if !path.exists() {
                let message = format!(
                    "the local LLM {} does not exist: run scripts/setup-llm.sh, or set --llm-model / LEXTRAL_LLM_MODEL (or --llm-backend mistral|openai)",
                    path.display()
                );
                if explicit {
                    anyhow::bail!(message);
                }
                tracing::warn!("{message}; zero-shot and RAG are unavailable");
                service.set_backend(Err(message));
            } else {
                let constrained = config.constrained;
                let loading = service.clone();
                let health = health.clone();
                tokio::spawn(async move {
                    let loaded = tokio::task::spawn_blocking(move || {
                        local::LocalBackend::load(&path, constrained)
                    })
                    .await;
                    match loaded {
                        Ok(Ok(backend)) => {
                            loading.set_backend(Ok(Arc::new(backend)));
                            health
                                .set_serving::<PromptClassifierServiceServer<PromptGrpc>>()
                                .await;
                        }
                        Ok(Err(err)) => {
                            tracing::error!(error = %err, "local LLM failed to load");
                            loading.set_backend(Err(err.to_string()));
                        }
                        Err(err) => loading.set_backend(Err(format!("loading task failed: {err}"))),
                    }
                });
            }
        }
    }
    routes.add_service(
        PromptClassifierServiceServer::new(PromptGrpc::new(service.clone()))
            .max_decoding_message_size(lextral_common::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
    );
    Ok(service)
}

/// Runs the service alone on `listener` until `shutdown` resolves.
pub async fn run(
    config: PromptConfig,
    access: lextral_common::Access,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    tracing::info!(?config, "starting prompt-classifier");
    let mut routes = GrpcRoutes::with_access(access);
    add_to(&config, &mut routes).await?;
    // Generous: a local model answers a RAG prompt in seconds, not ms.
    let timeout = config.timeout() + std::time::Duration::from_secs(5);
    routes.serve(listener, timeout, shutdown).await
}
