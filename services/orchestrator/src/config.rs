//! Orchestrator configuration: flags with `LEXTRAL_*` environment equivalents.

use std::time::Duration;

// One place per default: the flags and the `with_*` constructors share them.
const DEFAULT_KNN_K: u32 = 20;
const DEFAULT_KNN_VOTE: &str = "weighted";
const DEFAULT_KNN_POWER: f32 = 8.0;
const DEFAULT_KNN_TEMPERATURE: f32 = 0.05;
const DEFAULT_KNN_MIN_SIMILARITY: f32 = 0.0;
const DEFAULT_KNN_MIN_CONFIDENCE: f32 = 0.0;
const DEFAULT_MAX_TEXTS: usize = 256;
const DEFAULT_MAX_TEXT_BYTES: usize = 100_000;
const DEFAULT_HTTP_BODY_LIMIT: usize = 8 * 1024 * 1024;
const DEFAULT_REQUEST_TIMEOUT_S: u64 = 60;
const DEFAULT_FINETUNED_URL: &str = "http://127.0.0.1:50054";
/// Chosen on validation (see README): below it the fine-tuned answer is
/// re-checked by kNN.
const DEFAULT_CASCADE_MIN_CONFIDENCE: f32 = 0.2;
const DEFAULT_PROMPT_URL: &str = "http://127.0.0.1:50055";
/// RAG examples per clause: enough for the label to recur among them, few
/// enough that a local model reads the prompt in seconds.
const DEFAULT_RAG_K: u32 = 4;

/// Orchestrator and gateway settings.
#[derive(clap::Args, Debug, Clone)]
pub struct OrchestratorConfig {
    /// Embedder gRPC URL. `serve all` points it at its own gRPC port.
    #[arg(
        id = "embedder-url",
        long = "embedder-url",
        env = "LEXTRAL_EMBEDDER_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub embedder_url: String,

    /// Retriever gRPC URL. `serve all` points it at its own gRPC port.
    #[arg(
        id = "retriever-url",
        long = "retriever-url",
        env = "LEXTRAL_RETRIEVER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub retriever_url: String,

    /// Finetuned-classifier gRPC URL. `serve all` points it at its own gRPC port.
    #[arg(
        id = "finetuned-url",
        long = "finetuned-url",
        env = "LEXTRAL_FINETUNED_URL",
        default_value = DEFAULT_FINETUNED_URL
    )]
    pub finetuned_url: String,

    /// Prompt-classifier gRPC URL. `serve all` points it at its own gRPC port.
    #[arg(
        id = "prompt-url",
        long = "prompt-url",
        env = "LEXTRAL_PROMPT_URL",
        default_value = DEFAULT_PROMPT_URL
    )]
    pub prompt_url: String,

    /// RAG: labelled examples retrieved per clause (request option `k` overrides).
    #[arg(
        id = "rag-k",
        long = "rag-k",
        env = "LEXTRAL_RAG_K",
        default_value_t = DEFAULT_RAG_K
    )]
    pub rag_k: u32,

    /// Label set for ZERO_SHOT and RAG prompts: a labels.txt file (one label
    /// per line). Without it the labels in the index are used.
    #[arg(id = "labels", long = "labels", env = "LEXTRAL_LABELS")]
    pub labels_file: Option<std::path::PathBuf>,

    /// CASCADE: fine-tuned answers below this probability fall back to kNN.
    #[arg(
        id = "cascade-min-confidence",
        long = "cascade-min-confidence",
        env = "LEXTRAL_CASCADE_MIN_CONFIDENCE",
        default_value_t = DEFAULT_CASCADE_MIN_CONFIDENCE
    )]
    pub cascade_min_confidence: f32,

    /// Default neighbours for kNN.
    #[arg(
        id = "knn-k",
        long = "knn-k",
        env = "LEXTRAL_KNN_K",
        default_value_t = DEFAULT_KNN_K
    )]
    pub knn_k: u32,

    /// Default kNN vote: weighted, softmax or majority.
    #[arg(
        id = "knn-vote",
        long = "knn-vote",
        env = "LEXTRAL_KNN_VOTE",
        default_value = DEFAULT_KNN_VOTE
    )]
    pub knn_vote: String,

    /// Default exponent for weighted votes.
    #[arg(
        id = "knn-power",
        long = "knn-power",
        env = "LEXTRAL_KNN_POWER",
        default_value_t = DEFAULT_KNN_POWER
    )]
    pub knn_power: f32,

    /// Default temperature for softmax votes.
    #[arg(
        id = "knn-temperature",
        long = "knn-temperature",
        env = "LEXTRAL_KNN_TEMPERATURE",
        default_value_t = DEFAULT_KNN_TEMPERATURE
    )]
    pub knn_temperature: f32,

    /// Default similarity floor for voting neighbours.
    #[arg(
        id = "knn-min-similarity",
        long = "knn-min-similarity",
        env = "LEXTRAL_KNN_MIN_SIMILARITY",
        default_value_t = DEFAULT_KNN_MIN_SIMILARITY
    )]
    pub knn_min_similarity: f32,

    /// Default confidence floor; below it kNN abstains. 0 never abstains.
    #[arg(
        id = "knn-min-confidence",
        long = "knn-min-confidence",
        env = "LEXTRAL_KNN_MIN_CONFIDENCE",
        default_value_t = DEFAULT_KNN_MIN_CONFIDENCE
    )]
    pub knn_min_confidence: f32,

    /// Texts accepted in one classify call.
    #[arg(
        id = "max-texts",
        long = "max-texts",
        env = "LEXTRAL_MAX_TEXTS",
        default_value_t = DEFAULT_MAX_TEXTS
    )]
    pub max_texts: usize,

    /// Bytes accepted per text.
    #[arg(
        id = "max-text-bytes",
        long = "max-text-bytes",
        env = "LEXTRAL_MAX_TEXT_BYTES",
        default_value_t = DEFAULT_MAX_TEXT_BYTES
    )]
    pub max_text_bytes: usize,

    /// Largest REST request body in bytes.
    #[arg(id = "http-body-limit", long = "http-body-limit", env = "LEXTRAL_HTTP_BODY_LIMIT", default_value_t = DEFAULT_HTTP_BODY_LIMIT)]
    pub http_body_limit: usize,

    /// Browser origins allowed to call the REST API (CORS), comma-separated,
    /// e.g. `https://app.example.com`; `*` allows any. Default: none (only
    /// same-origin pages such as the built-in one).
    #[arg(
        id = "cors-allow-origin",
        long = "cors-allow-origin",
        env = "LEXTRAL_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,

    /// Deadline in seconds for a whole request, downstream calls included.
    #[arg(
        id = "request-timeout-s",
        long = "request-timeout-s",
        env = "LEXTRAL_REQUEST_TIMEOUT_S",
        default_value_t = DEFAULT_REQUEST_TIMEOUT_S
    )]
    pub request_timeout_s: u64,
}

impl OrchestratorConfig {
    /// Defaults with the given downstream URLs, for tests and `serve all`.
    pub fn with_urls(embedder_url: impl Into<String>, retriever_url: impl Into<String>) -> Self {
        Self {
            embedder_url: embedder_url.into(),
            retriever_url: retriever_url.into(),
            finetuned_url: DEFAULT_FINETUNED_URL.to_owned(),
            prompt_url: DEFAULT_PROMPT_URL.to_owned(),
            rag_k: DEFAULT_RAG_K,
            labels_file: None,
            cascade_min_confidence: DEFAULT_CASCADE_MIN_CONFIDENCE,
            knn_k: DEFAULT_KNN_K,
            knn_vote: DEFAULT_KNN_VOTE.to_owned(),
            knn_power: DEFAULT_KNN_POWER,
            knn_temperature: DEFAULT_KNN_TEMPERATURE,
            knn_min_similarity: DEFAULT_KNN_MIN_SIMILARITY,
            knn_min_confidence: DEFAULT_KNN_MIN_CONFIDENCE,
            max_texts: DEFAULT_MAX_TEXTS,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            http_body_limit: DEFAULT_HTTP_BODY_LIMIT,
            cors_allow_origin: Vec::new(),
            request_timeout_s: DEFAULT_REQUEST_TIMEOUT_S,
        }
    }

    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s.max(1))
    }
}
