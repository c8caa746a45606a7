//! Embedder configuration: flags with `LEXTRAL_*` environment equivalents.

use std::time::Duration;

use lextral_common::TextLimits;
use lextral_embedding::default_model;

// One place per default: the flags and the `with_*` constructors share them.
const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;
const DEFAULT_QUEUE_CAPACITY: usize = 256;
const DEFAULT_MAX_QUEUED_TOKENS: usize = 65_536;
const DEFAULT_MAX_QUEUE_DELAY_MS: u64 = 150;
const DEFAULT_MAX_TEXTS: usize = 1024;
const DEFAULT_MAX_TEXT_BYTES: usize = 100_000;
const DEFAULT_TIMEOUT_S: u64 = 60;

/// Embedder settings.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedderConfig {
    /// Model: a local directory in Hugging Face layout (config.json,
    /// tokenizer.json, model.safetensors, sentence-transformers configs) or a
    /// Hub model id downloaded when online. Defaults to the set-up script's
    /// cache, else sentence-transformers/all-MiniLM-L6-v2 from the Hub.
    #[arg(id = "embed-model", long = "embed-model", env = "LEXTRAL_EMBED_MODEL", default_value_t = default_model())]
    pub model: String,

    /// Tokens (summed over the texts; packed texts are not padded) run in
    /// one forward pass.
    #[arg(
        id = "embed-max-batch-tokens",
        long = "embed-max-batch-tokens",
        env = "LEXTRAL_EMBED_MAX_BATCH_TOKENS",
        default_value_t = DEFAULT_MAX_BATCH_TOKENS
    )]
    pub max_batch_tokens: usize,

    /// Requests that may wait for the model; beyond it calls fail fast with
    /// RESOURCE_EXHAUSTED.
    #[arg(
        id = "embed-queue-capacity",
        long = "embed-queue-capacity",
        env = "LEXTRAL_EMBED_QUEUE_CAPACITY",
        default_value_t = DEFAULT_QUEUE_CAPACITY
    )]
    pub queue_capacity: usize,

    /// Estimated tokens admitted and not yet embedded, at most; beyond it
    /// calls fail fast with RESOURCE_EXHAUSTED (a call finding the queue
    /// empty is always taken).
    #[arg(
        id = "embed-max-queued-tokens",
        long = "embed-max-queued-tokens",
        env = "LEXTRAL_EMBED_MAX_QUEUED_TOKENS",
        default_value_t = DEFAULT_MAX_QUEUED_TOKENS
    )]
    pub max_queued_tokens: usize,

    /// Milliseconds a call may expect to wait for the work queued ahead of
    /// it, at the speed the model has measured; beyond it the call fails
    /// fast with RESOURCE_EXHAUSTED. 0 turns the check off.
    #[arg(
        id = "embed-max-queue-delay-ms",
        long = "embed-max-queue-delay-ms",
        env = "LEXTRAL_EMBED_MAX_QUEUE_DELAY_MS",
        default_value_t = DEFAULT_MAX_QUEUE_DELAY_MS
    )]
    pub max_queue_delay_ms: u64,

    /// Texts accepted in one Embed call.
    #[arg(
        id = "embed-max-texts",
        long = "embed-max-texts",
        env = "LEXTRAL_EMBED_MAX_TEXTS",
        default_value_t = DEFAULT_MAX_TEXTS
    )]
    pub max_texts_per_request: usize,

    /// Bytes accepted per text; longer texts are rejected rather than
    /// tokenised (the model only reads the first 256 tokens anyway).
    #[arg(
        id = "embed-max-text-bytes",
        long = "embed-max-text-bytes",
        env = "LEXTRAL_EMBED_MAX_TEXT_BYTES",
        default_value_t = DEFAULT_MAX_TEXT_BYTES
    )]
    pub max_text_bytes: usize,

    /// Per-call deadline in seconds.
    #[arg(
        id = "embed-timeout-s",
        long = "embed-timeout-s",
        env = "LEXTRAL_EMBED_TIMEOUT_S",
        default_value_t = DEFAULT_TIMEOUT_S
    )]
    pub timeout_s: u64,
}

impl EmbedderConfig {
    /// The handler's limits: any text within them is embedded, blank ones too.
    pub fn limits(&self) -> TextLimits {
        TextLimits {
            max_texts: self.max_texts_per_request,
            max_text_bytes: self.max_text_bytes,
            refuse_blank: false,
        }
    }

    /// The queue's bounds.
    pub fn queue_limits(&self) -> crate::batcher::QueueLimits {
        crate::batcher::QueueLimits {
            capacity: self.queue_capacity,
            max_batch_tokens: self.max_batch_tokens,
            max_queued_tokens: self.max_queued_tokens,
            max_queue_delay: Duration::from_millis(self.max_queue_delay_ms),
        }
    }

    /// The per-call deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// Defaults with the given model, for tests and embedding tools.
    pub fn with_model(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_queued_tokens: DEFAULT_MAX_QUEUED_TOKENS,
            max_queue_delay_ms: DEFAULT_MAX_QUEUE_DELAY_MS,
            max_texts_per_request: DEFAULT_MAX_TEXTS,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            timeout_s: DEFAULT_TIMEOUT_S,
        }
    }
}
