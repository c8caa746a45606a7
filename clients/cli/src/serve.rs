//! `lextral serve`: one service, or all of them in one process sharing one
//! gRPC port (so grpcurl reaches every service at the same address).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use clap::{Args, Subcommand};
use lextral_common::server::{bind, serve_grpc, serve_grpc_loopback, GrpcRoutes};
use lextral_common::shutdown::shutdown_token;
use lextral_common::{Access, AccessConfig, ApiKey};
use lextral_embedder::EmbedderConfig;
use lextral_finetuned_classifier::FinetunedConfig;
use lextral_orchestrator::OrchestratorConfig;
use lextral_prompt_classifier::PromptConfig;
use lextral_retriever::RetrieverConfig;
use tokio_util::sync::CancellationToken;

/// What to serve.
#[derive(Subcommand)]
pub enum Target {
    /// Every built service and the REST gateway in one process.
    All(Box<AllArgs>),
    /// The embedder alone.
    Embedder(EmbedderArgs),
    /// The retriever alone.
    Retriever(RetrieverArgs),
    /// The orchestrator and REST gateway alone.
    Orchestrator(OrchestratorArgs),
    /// The fine-tuned classifier alone.
    FinetunedClassifier(FinetunedArgs),
    /// The prompt classifier (LLM backends) alone.
    PromptClassifier(PromptArgs),
}

/// Prometheus endpoint flag shared by all targets.
#[derive(Args)]
pub struct MetricsArgs {
    /// Address for Prometheus `/metrics`; empty disables it.
    #[arg(
        long = "metrics",
        env = "LEXTRAL_METRICS",
        default_value = "127.0.0.1:9464"
    )]
    metrics: String,
}

/// Who may call, and how many calls run at once: shared by all targets.
#[derive(Args, Debug)]
pub struct AccessArgs {
    /// API keys file (`lextral keys create`). With it every data call needs
    /// `authorization: Bearer KEY`; the file is re-read when it changes.
    #[arg(long = "keys-file", env = "LEXTRAL_KEYS_FILE")]
    keys_file: Option<std::path::PathBuf>,
    /// Key this service sends to the services it calls and accepts from
    /// them (scope admin). Services run apart share one. Also read from the
    /// file LEXTRAL_SERVICE_KEY_FILE names.
    #[arg(
        long = "service-key",
        env = "LEXTRAL_SERVICE_KEY",
        hide_env_values = true
    )]
    service_key: Option<String>,
    /// Serve without API keys on a non-loopback address (logged as a warning).
    #[arg(long = "insecure-no-auth", env = "LEXTRAL_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Calls in flight per service; more are refused at once with
    /// RESOURCE_EXHAUSTED / 429 and Retry-After. 0: no limit.
    #[arg(
        long = "max-concurrent-requests",
        env = "LEXTRAL_MAX_CONCURRENT_REQUESTS",
        default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS
    )]
    max_concurrent_requests: usize,
    /// Per-caller quotas as token buckets: CLASS=COUNT/UNIT, comma-separated;
    /// CLASS is a key scope (classify, ingest, admin), `anonymous` (per
    /// client address, servers without keys) or `llm` (rag and zero-shot, on
    /// top); UNIT s, m or h. E.g. `classify=600/m,llm=20/m`. Default: none.
    #[arg(long = "quota", env = "LEXTRAL_QUOTA", default_value = "")]
    quota: lextral_common::quota::QuotaSpec,
    /// PEM certificate chain: with --tls-key, gRPC and the REST gateway
    /// speak TLS only (it is also the client certificate shown to mTLS peers).
    #[arg(long = "tls-cert", env = "LEXTRAL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "LEXTRAL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA: clients must present a certificate it signed (mTLS).
    #[arg(
        long = "tls-client-ca",
        env = "LEXTRAL_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<std::path::PathBuf>,
    /// PEM CA of `https://` downstream services (default: the webpki roots).
    #[arg(long = "tls-ca", env = "LEXTRAL_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

/// Enough to keep the embedder's batches full; few enough that an admitted
/// call is answered in well under a second on two cores.
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

impl AccessArgs {
    fn config(&self) -> anyhow::Result<AccessConfig> {
        let service_key = match &self.service_key {
            Some(key) if !key.trim().is_empty() => Some(ApiKey::new(key.trim())),
            _ => lextral_common::api_key_from_env(&["LEXTRAL_SERVICE_KEY"])?,
        };
        Ok(AccessConfig {
            keys_file: self.keys_file.clone(),
            service_key,
            insecure_no_auth: self.insecure_no_auth,
            max_concurrent_requests: self.max_concurrent_requests,
            quotas: self.quota.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(lextral_common::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            peer_ca: self.tls_ca.clone(),
        })
    }

    /// The policy of a service whose peers are other processes.
    fn access(&self) -> anyhow::Result<Access> {
        Access::new(&self.config()?)
    }
}

/// `serve all`.
#[derive(Args)]
pub struct AllArgs {
    /// REST gateway address.
    #[arg(long, env = "LEXTRAL_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// gRPC address for every service (orchestrator, embedder, retriever,
    /// finetuned-classifier, prompt-classifier).
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50051")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    embedder: EmbedderConfig,
    #[command(flatten)]
    retriever: RetrieverConfig,
    /// Fine-tuned classifier settings; its embedder URL is ignored.
    #[command(flatten)]
    finetuned: FinetunedConfig,
    /// Prompt classifier settings; its embedder URL is ignored.
    #[command(flatten)]
    prompt: PromptConfig,
    /// Orchestrator settings; its downstream URLs are ignored, since every
    /// service is in this process.
    #[command(flatten)]
    orchestrator: OrchestratorConfig,
}

/// `serve embedder`.
#[derive(Args)]
pub struct EmbedderArgs {
    /// gRPC address.
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50052")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    config: EmbedderConfig,
}

/// `serve retriever`.
#[derive(Args)]
pub struct RetrieverArgs {
    /// gRPC address.
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50053")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    config: RetrieverConfig,
}

/// `serve finetuned-classifier`.
#[derive(Args)]
pub struct FinetunedArgs {
    /// gRPC address.
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50054")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    config: FinetunedConfig,
}

/// `serve prompt-classifier`.
#[derive(Args)]
pub struct PromptArgs {
    /// gRPC address.
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50055")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    config: PromptConfig,
}

/// `serve orchestrator`.
#[derive(Args)]
pub struct OrchestratorArgs {
    /// REST gateway address.
    #[arg(long, env = "LEXTRAL_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// gRPC address.
    #[arg(long, env = "LEXTRAL_GRPC", default_value = "127.0.0.1:50051")]
    grpc: String,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    config: OrchestratorConfig,
}

async fn start_metrics(args: &MetricsArgs, token: &CancellationToken) -> anyhow::Result<()> {
    if args.metrics.trim().is_empty() {
        return Ok(());
    }
    let listener = bind(&args.metrics).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics on /metrics");
    let token = token.clone();
    tokio::spawn(async move {
        if let Err(err) =
            lextral_common::metrics::serve_metrics(listener, async move { token.cancelled().await })
                .await
        {
            tracing::error!(error = %err, "metrics server failed");
        }
    });
    Ok(())
}

fn loopback_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// Binds `addr` for `what`, refusing a public address `access` leaves open.
async fn bind_guarded(addr: &str, access: &Access, what: &str) -> anyhow::Result<TcpListener> {
    let listener = bind(addr).await?;
    access.check_exposure(listener.local_addr()?, what)?;
    Ok(listener)
}

/// Builds a lone service's admission policy, starts its `/metrics` and
/// binds its gRPC port.
async fn listen_alone(
    metrics: &MetricsArgs,
    access: &AccessArgs,
    grpc: &str,
    token: &CancellationToken,
    name: &str,
) -> anyhow::Result<(Access, TcpListener)> {
    let access = access.access()?;
    start_metrics(metrics, token).await?;
    let listener = bind_guarded(grpc, &access, &format!("the {name} gRPC API")).await?;
    tracing::info!(addr = %listener.local_addr()?, keys = access.requires_keys(), "{name} gRPC listening");
    Ok((access, listener))
}

/// Resolves when `token` is cancelled (ctrl-c or SIGTERM).
async fn cancelled(token: CancellationToken) {
    token.cancelled().await
}

/// Runs the chosen target until ctrl-c or SIGTERM.
pub async fn run(target: Target) -> anyhow::Result<()> {
    lextral_common::metrics::prometheus_handle();
    let token = shutdown_token();
    match target {
        Target::All(args) => run_all(*args, token).await,
        Target::Embedder(args) => {
            let (access, listener) =
                listen_alone(&args.metrics, &args.access, &args.grpc, &token, "embedder").await?;
            lextral_embedder::run(args.config, access, listener, cancelled(token)).await
        }
        Target::Retriever(args) => {
            // A store misconfiguration is reported before any port is taken.
            args.config.store_kind()?;
            let (access, listener) =
                listen_alone(&args.metrics, &args.access, &args.grpc, &token, "retriever").await?;
            lextral_retriever::run(args.config, access, listener, cancelled(token)).await
        }
        Target::FinetunedClassifier(args) => {
            let (access, listener) = listen_alone(
                &args.metrics,
                &args.access,
                &args.grpc,
                &token,
                "finetuned-classifier",
            )
            .await?;
            lextral_finetuned_classifier::run(args.config, access, listener, cancelled(token)).await
        }
        Target::PromptClassifier(args) => {
            let (access, listener) = listen_alone(
                &args.metrics,
                &args.access,
                &args.grpc,
                &token,
                "prompt-classifier",
            )
            .await?;
            lextral_prompt_classifier::run(args.config, access, listener, cancelled(token)).await
        }
        Target::Orchestrator(args) => {
            let access = args.access.access()?;
            start_metrics(&args.metrics, &token).await?;
            let grpc = bind_guarded(&args.grpc, &access, "the orchestrator gRPC API").await?;
            let http = bind_guarded(&args.http, &access, "the REST gateway").await?;
            tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, keys = access.requires_keys(), "orchestrator listening");
            lextral_orchestrator::run(args.config, access, grpc, http, cancelled(token)).await
        }
    }
}

async fn run_all(args: AllArgs, token: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(
        embedder = ?args.embedder,
        retriever = ?args.retriever,
        finetuned = ?args.finetuned,
        prompt = ?args.prompt,
        orchestrator = ?args.orchestrator,
        "starting all services"
    );
    let access = Access::for_one_process(&args.access.config()?)?;
    start_metrics(&args.metrics, &token).await?;
    let grpc_listener = bind_guarded(&args.grpc, &access, "the gRPC APIs").await?;
    let http_listener = bind_guarded(&args.http, &access, "the REST gateway").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    // With TLS on the public port, the services' calls to each other go
    // through a plaintext port of their own on loopback.
    let internal_listener = match access.grpc_tls() {
        Some(_) => Some(bind("127.0.0.1:0").await?),
        None => None,
    };
    let internal_addr = match &internal_listener {
        Some(listener) => listener.local_addr()?,
        None => grpc_addr,
    };

    let mut routes = GrpcRoutes::with_access(access);
    let queue = lextral_embedder::add_to(&args.embedder, &mut routes).await?;
    if queue.info().dimension != args.retriever.dimension {
        anyhow::bail!(
            "the embedding model produces {}-dimensional vectors but the retriever is set to {}; \
             pass --dimension {}",
            queue.info().dimension,
            args.retriever.dimension,
            queue.info().dimension
        );
    }
    let store = lextral_retriever::add_to(&args.retriever, &mut routes).await?;
    let mut finetuned_config = args.finetuned.clone();
    finetuned_config.embedder_url = loopback_url(internal_addr);
    // Cascade mixes both: a label the model cannot produce but the index
    // holds means the model was trained on another label set. Checked at
    // start (refusing to start) and at every Reload (keeping the old model).
    let index_labels: lextral_finetuned_classifier::IndexLabels = {
        let store = store.clone();
        std::sync::Arc::new(move || {
            let store = store.clone();
            Box::pin(async move {
                let stats = store.stats().await?;
                Ok(stats
                    .counts
                    .into_iter()
                    .map(|(label, _, _)| label)
                    .collect())
            })
        })
    };
    lextral_finetuned_classifier::add_to_checked(
        &finetuned_config,
        &mut routes,
        Some(index_labels),
    )
    .await?;
    let mut prompt_config = args.prompt.clone();
    prompt_config.embedder_url = Some(loopback_url(internal_addr));
    lextral_prompt_classifier::add_to(&prompt_config, &mut routes).await?;
    let mut orchestrator_config = args.orchestrator.clone();
    orchestrator_config.finetuned_url = loopback_url(internal_addr);
    orchestrator_config.prompt_url = loopback_url(internal_addr);
    orchestrator_config.embedder_url = loopback_url(internal_addr);
    orchestrator_config.retriever_url = loopback_url(internal_addr);
    let orchestrator = lextral_orchestrator::add_to(&orchestrator_config, &mut routes).await?;

    let http_token = token.clone();
    let http = tokio::spawn(lextral_orchestrator::http::serve(
        http_listener,
        orchestrator,
        async move { http_token.cancelled().await },
    ));
    tracing::info!(grpc = %grpc_addr, http = %http_addr, keys = routes.access().requires_keys(), "lextral is up: REST http://{http_addr}/ , gRPC {grpc_addr}");
    if let Some(listener) = internal_listener {
        let internal_token = token.clone();
        let internal_routes = routes.clone();
        let timeout = Duration::from_secs(args.orchestrator.request_timeout_s.max(1));
        tokio::spawn(async move {
            if let Err(err) = serve_grpc_loopback(listener, internal_routes, timeout, async move {
                internal_token.cancelled().await
            })
            .await
            {
                tracing::error!(error = %err, "internal gRPC port failed");
            }
        });
    }
    let grpc_token = token.clone();
    serve_grpc(
        grpc_listener,
        routes,
        Duration::from_secs(args.orchestrator.request_timeout_s.max(1)),
        async move { grpc_token.cancelled().await },
    )
    .await?;
    token.cancel();
    http.await??;
    tracing::info!("stopped");
    Ok(())
}
