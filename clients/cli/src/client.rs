//! Talking to a running orchestrator, and `lextral classify`.

use std::io::Read;

use anyhow::Context;
use clap::Args;
use lextral_common::{ApiKey, PeerChannel};
use lextral_orchestrator::http::reply_body;
use lextral_proto::names::{parse_strategy, parse_vote};
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::{
    CascadeOptions, ClassifyRequest, FinetunedOptions, KnnOptions, PromptOptions, Strategy,
};
use tonic::transport::Channel;

/// Where the orchestrator is.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Orchestrator gRPC URL.
    #[arg(long, env = "LEXTRAL_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// API key, when the server wants one (`lextral keys create`).
    #[arg(long = "api-key", env = "LEXTRAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM CA of an `https://` server (default: the webpki roots).
    #[arg(long = "tls-ca", env = "LEXTRAL_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// The key to send, if any: `--api-key` / `LEXTRAL_API_KEY`, else the
    /// file `LEXTRAL_API_KEY_FILE` names (a mounted Secret).
    pub fn key(&self) -> anyhow::Result<Option<ApiKey>> {
        match api_key(self.api_key.as_deref()) {
            Some(key) => Ok(Some(key)),
            None => Ok(lextral_common::api_key_from_env(&["LEXTRAL_API_KEY"])?),
        }
    }

    /// Connects, with a message that says what to do when nothing listens.
    pub async fn connect(&self) -> anyhow::Result<OrchestratorServiceClient<PeerChannel>> {
        let mut endpoint = Channel::from_shared(self.server.clone())
            .with_context(|| format!("bad server URL {:?}", self.server))?;
        if self.server.starts_with("https://") {
            let tls = lextral_common::tls::PeerTls {
                ca: self.tls_ca.clone(),
                identity: None,
            };
            endpoint = endpoint.tls_config(tls.grpc()?)?;
        }
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the orchestrator at {}; start it with `lextral serve all`",
                self.server
            )
        })?;
        Ok(
            OrchestratorServiceClient::new(PeerChannel::new(channel, self.key()?.as_ref())?)
                .max_decoding_message_size(lextral_common::MAX_MESSAGE_BYTES),
        )
    }
}

/// A non-blank `--api-key` value as a key.
pub fn api_key(value: Option<&str>) -> Option<ApiKey> {
    value
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(ApiKey::new)
}

/// Strategy options shared by `classify` and `eval`.
#[derive(Args, Clone)]
pub struct StrategyArgs {
    /// knn, finetuned, cascade, rag or zero-shot (`eval`: several,
    /// comma-separated).
    #[arg(long, default_value = "knn")]
    pub strategy: String,
    /// kNN neighbours (1..=100); server default if absent.
    #[arg(long)]
    pub k: Option<u32>,
    /// kNN vote: weighted, softmax or majority.
    #[arg(long)]
    pub vote: Option<String>,
    /// Weighted-vote exponent.
    #[arg(long)]
    pub power: Option<f32>,
    /// Softmax temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Abstain below this vote share.
    #[arg(long = "min-confidence")]
    pub min_confidence: Option<f32>,
    /// Neighbours below this similarity do not vote.
    #[arg(long = "min-similarity")]
    pub min_similarity: Option<f32>,
    /// HNSW search breadth.
    #[arg(long = "ef-search")]
    pub ef_search: Option<u32>,
    /// Only neighbours from these splits vote (comma-separated).
    #[arg(long = "neighbor-splits", value_delimiter = ',')]
    pub neighbor_splits: Vec<String>,
    /// Fine-tuned alternatives per clause (finetuned, cascade).
    #[arg(long = "top-k")]
    pub top_k: Option<u32>,
    /// Cascade: fine-tuned answers below this probability fall back to kNN;
    /// server default if absent.
    #[arg(long = "cascade-min-confidence")]
    pub cascade_min_confidence: Option<f32>,
    /// RAG: labelled examples shown to the LLM (1..=32); server default
    /// (--rag-k) if absent.
    #[arg(long = "rag-k")]
    pub rag_k: Option<u32>,
    /// Prompt strategies: cap on generated tokens.
    #[arg(long = "max-output-tokens")]
    pub max_output_tokens: Option<u32>,
}

impl StrategyArgs {
    /// The parsed strategy.
    pub fn strategy(&self) -> anyhow::Result<Strategy> {
        parse_strategy(&self.strategy).map_err(anyhow::Error::msg)
    }

    /// The options set on the command line that apply to the strategy, as
    /// JSON; absent ones take the server's defaults (recorded separately).
    pub fn options_json(&self) -> serde_json::Value {
        let mut options = serde_json::Map::new();
        let mut put = |key: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                options.insert(key.to_owned(), value);
            }
        };
        let strategy = self.strategy().ok();
        let knn = matches!(strategy, Some(Strategy::Knn | Strategy::Cascade));
        let finetuned = matches!(strategy, Some(Strategy::Finetuned | Strategy::Cascade));
        let prompt = matches!(strategy, Some(Strategy::Rag | Strategy::ZeroShot));
        let retrieves = knn || matches!(strategy, Some(Strategy::Rag));
        if knn {
            put("k", self.k.map(Into::into));
            put("vote", self.vote.clone().map(Into::into));
            put("power", self.power.map(Into::into));
            put("temperature", self.temperature.map(Into::into));
            put("min_confidence", self.min_confidence.map(Into::into));
            put("min_similarity", self.min_similarity.map(Into::into));
            if !self.neighbor_splits.is_empty() {
                put("neighbor_splits", Some(self.neighbor_splits.clone().into()));
            }
        }
        if retrieves {
            put("ef_search", self.ef_search.map(Into::into));
        }
        if finetuned {
            put("top_k", self.top_k.map(Into::into));
        }
        if matches!(strategy, Some(Strategy::Cascade)) {
            put(
                "cascade_min_confidence",
                self.cascade_min_confidence.map(Into::into),
            );
        }
        if matches!(strategy, Some(Strategy::Rag)) {
            put("rag_k", self.rag_k.map(Into::into));
        }
        if prompt {
            put("max_output_tokens", self.max_output_tokens.map(Into::into));
        }
        serde_json::Value::Object(options)
    }

    /// A request for `texts`.
    pub fn request(&self, texts: Vec<String>) -> anyhow::Result<ClassifyRequest> {
        let vote = match &self.vote {
            Some(name) => parse_vote(name).map_err(anyhow::Error::msg)? as i32,
            None => 0,
        };
        Ok(ClassifyRequest {
            texts,
            strategy: self.strategy()? as i32,
            knn: Some(KnnOptions {
                k: self.k,
                vote,
                power: self.power,
                temperature: self.temperature,
                min_similarity: self.min_similarity,
                min_confidence: self.min_confidence,
                ef_search: self.ef_search,
                splits: self.neighbor_splits.clone(),
            }),
            finetuned: Some(FinetunedOptions { top_k: self.top_k }),
            cascade: Some(CascadeOptions {
                min_confidence: self.cascade_min_confidence,
            }),
            prompt: Some(PromptOptions {
                k: self.rag_k,
                max_output_tokens: self.max_output_tokens,
            }),
        })
    }
}

/// `lextral classify`.
#[derive(Args)]
pub struct ClassifyArgs {
    /// Clause texts; `-` reads one clause from standard input.
    #[arg(required = true)]
    texts: Vec<String>,
    #[command(flatten)]
    strategy: StrategyArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Print the full result as JSON (the REST response shape).
    #[arg(long)]
    json: bool,
}

/// Runs `lextral classify`.
pub async fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let mut texts = Vec::with_capacity(args.texts.len());
    for text in args.texts {
        if text == "-" {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            texts.push(input);
        } else {
            texts.push(text);
        }
    }
    let request = args.strategy.request(texts)?;
    let mut client = args.server.connect().await?;
    let response = client
        .classify(request)
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let reply = reply_body(response);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    for (index, result) in reply.results.iter().enumerate() {
        if reply.results.len() > 1 {
            println!("[{index}]");
        }
        if result.abstained {
            println!(
                "no answer ({})",
                result.abstain_reason.as_deref().unwrap_or("abstained")
            );
        } else {
            println!("{}  (confidence {:.3})", result.label, result.confidence);
        }
        if let Some(raw) = &result.raw_output {
            println!("  LLM answered: {raw:?}");
        }
        for alternative in result.alternatives.iter().skip(1).take(3) {
            println!("  also: {}  {:.3}", alternative.label, alternative.score);
        }
        for neighbor in result.neighbors.iter().take(3) {
            let preview: String = neighbor.text.chars().take(90).collect();
            println!(
                "  neighbour {:.3} {}: {preview}…",
                neighbor.similarity, neighbor.label
            );
        }
    }
    let total = reply.latency_ms.get("total").copied().unwrap_or_default();
    println!("latency {total:.1} ms");
    Ok(())
}
