//! Finetuned-classifier configuration: flags with `LEXTRAL_*` equivalents.

use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_EMBEDDER_URL: &str = "http://127.0.0.1:50052";
const DEFAULT_MAX_TEXTS: usize = 1024;
const DEFAULT_MAX_TEXT_BYTES: usize = 100_000;
const DEFAULT_TIMEOUT_S: u64 = 60;
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_OPEN_S: u64 = 30;

/// Service settings.
#[derive(clap::Args, Debug, Clone)]
pub struct FinetunedConfig {
    /// Model directory written by `lextral train`. Without one the service
    /// starts NOT_SERVING and answers FAILED_PRECONDITION until a Reload
    /// finds a model there.
    #[arg(
        id = "finetuned-model",
        long = "finetuned-model",
        env = "LEXTRAL_FINETUNED_MODEL"
    )]
    pub model: Option<PathBuf>,

    /// Embedder gRPC URL, for models with a head on frozen embeddings
    /// (ignored by `serve all`, which uses its own embedder).
    #[arg(
        id = "finetuned-embedder-url",
        long = "finetuned-embedder-url",
        env = "LEXTRAL_FINETUNED_EMBEDDER_URL",
        default_value = DEFAULT_EMBEDDER_URL
    )]
    pub embedder_url: String,

    /// Retriever gRPC URL: each load and Reload checks that the model's
    /// labels cover the labels stored in the index, and refuses a model
    /// trained on another label set (the previous one keeps serving).
    /// Unset: no check. `serve all` checks against its own store.
    #[arg(
        id = "finetuned-retriever-url",
        long = "finetuned-retriever-url",
        env = "LEXTRAL_FINETUNED_RETRIEVER_URL"
    )]
    pub retriever_url: Option<String>,

    /// Texts accepted in one Classify call.
    #[arg(
        id = "finetuned-max-texts",
        long = "finetuned-max-texts",
        env = "LEXTRAL_FINETUNED_MAX_TEXTS",
        default_value_t = DEFAULT_MAX_TEXTS
    )]
    pub max_texts: usize,

    /// Bytes accepted per text.
    #[arg(
        id = "finetuned-max-text-bytes",
        long = "finetuned-max-text-bytes",
        env = "LEXTRAL_FINETUNED_MAX_TEXT_BYTES",
        default_value_t = DEFAULT_MAX_TEXT_BYTES
    )]
    pub max_text_bytes: usize,

    /// Serve a classifier fine-tuned on Mistral's platform instead of a
    /// local model: its model id (e.g. `ft:classifier:ministral-3b:...`).
    /// The key comes from MISTRAL_API_KEY or MISTRAL_API_KEY_FILE.
    #[arg(
        id = "finetuned-mistral-model",
        long = "finetuned-mistral-model",
        env = "LEXTRAL_FINETUNED_MISTRAL_MODEL"
    )]
    pub mistral_model: Option<String>,

    /// Mistral API base URL.
    #[arg(
        id = "mistral-url",
        long = "mistral-url",
        env = "MISTRAL_API_URL",
        default_value = crate::mistral::DEFAULT_API_URL
    )]
    pub mistral_url: String,

    /// Per-call deadline in seconds.
    #[arg(
        id = "finetuned-timeout-s",
        long = "finetuned-timeout-s",
        env = "LEXTRAL_FINETUNED_TIMEOUT_S",
        default_value_t = DEFAULT_TIMEOUT_S
    )]
    pub timeout_s: u64,

    /// Remote classifier: failed calls in a row (network errors, 5xx)
    /// after which calls fail at once (UNAVAILABLE; `cascade` then answers
    /// by kNN) until a trial call after --finetuned-breaker-open-s
    /// succeeds. 0 turns the breaker off.
    #[arg(
        id = "finetuned-breaker-failures",
        long = "finetuned-breaker-failures",
        env = "LEXTRAL_FINETUNED_BREAKER_FAILURES",
        default_value_t = DEFAULT_BREAKER_FAILURES
    )]
    pub breaker_failures: u32,

    /// Seconds the remote classifier's circuit stays open before a trial.
    #[arg(
        id = "finetuned-breaker-open-s",
        long = "finetuned-breaker-open-s",
        env = "LEXTRAL_FINETUNED_BREAKER_OPEN_S",
        default_value_t = DEFAULT_BREAKER_OPEN_S
    )]
    pub breaker_open_s: u64,
}

impl FinetunedConfig {
    /// Settings for `model` with every other default.
    pub fn with_model(model: Option<PathBuf>) -> Self {
        Self {
            model,
            mistral_model: None,
            mistral_url: crate::mistral::DEFAULT_API_URL.to_owned(),
            embedder_url: DEFAULT_EMBEDDER_URL.to_owned(),
            retriever_url: None,
            max_texts: DEFAULT_MAX_TEXTS,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            timeout_s: DEFAULT_TIMEOUT_S,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_open_s: DEFAULT_BREAKER_OPEN_S,
        }
    }

    /// Per-call deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }

    /// The circuit breaker before the remote classifier.
    pub fn breaker(&self) -> lextral_common::BreakerPolicy {
        lextral_common::BreakerPolicy {
            failures: self.breaker_failures,
            open_for: Duration::from_secs(self.breaker_open_s.max(1)),
        }
    }
}
