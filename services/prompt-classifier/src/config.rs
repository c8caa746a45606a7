//! Prompt-classifier configuration: flags with `LEXTRAL_*` equivalents.

use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_BACKEND: &str = "local";
const DEFAULT_TIMEOUT_S: u64 = 120;
const DEFAULT_MAX_RETRIES: u32 = 4;
const DEFAULT_CONCURRENCY: usize = 4;
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_OPEN_S: u64 = 30;
const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 24;
/// Label names are a few tokens; more than this is someone spending the budget.
const DEFAULT_MAX_OUTPUT_TOKENS_LIMIT: u32 = 256;
const DEFAULT_CLAUSE_TOKENS: usize = 384;
const DEFAULT_EXAMPLE_TOKENS: usize = 96;
const DEFAULT_MAX_TEXTS: usize = 256;
/// Chosen on validation (first 120 clauses, Gemma 3 270M, k 4: accuracy
/// 0.683 nearest-last vs 0.575 nearest-first).
const DEFAULT_EXAMPLES_ORDER: &str = "nearest-last";
const DEFAULT_MAX_LABELS: usize = 1000;
const DEFAULT_MAX_TEXT_BYTES: usize = 100_000;
const DEFAULT_EMBEDDING_MIN_SIMILARITY: f32 = 0.5;
/// Mistral's API.
pub const MISTRAL_URL: &str = "https://api.mistral.ai/v1";
/// OpenAI's API (any OpenAI-compatible server works with --llm-url).
pub const OPENAI_URL: &str = "https://api.openai.com/v1";
/// Mistral model used when none is named.
pub const DEFAULT_MISTRAL_MODEL: &str = "mistral-small-latest";

/// Service settings.
#[derive(clap::Args, Debug, Clone)]
pub struct PromptConfig {
    /// LLM backend: `local` (in-process GGUF, no network, the default),
    /// `mistral` (Mistral's chat API) or `openai` (any OpenAI-compatible
    /// server: vLLM, Ollama, llama.cpp server, LM Studio, OpenAI).
    #[arg(long = "llm-backend", env = "LEXTRAL_LLM_BACKEND", default_value = DEFAULT_BACKEND)]
    pub backend: String,

    /// Model: for `local` a GGUF file (default: the Gemma 3 270M that
    /// scripts/setup-llm.sh caches); for `mistral`/`openai` the model name.
    #[arg(long = "llm-model", env = "LEXTRAL_LLM_MODEL")]
    pub model: Option<String>,

    /// Base URL of the chat API, up to the version (`.../v1`). Defaults to
    /// Mistral's or OpenAI's. Keys come from LEXTRAL_LLM_API_KEY, then
    /// MISTRAL_API_KEY / OPENAI_API_KEY (or the same names with _FILE).
    #[arg(long = "llm-url", env = "LEXTRAL_LLM_URL")]
    pub url: Option<String>,

    /// Per-call timeout in seconds (also bounds retries).
    #[arg(long = "llm-timeout-s", env = "LEXTRAL_LLM_TIMEOUT_S", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout_s: u64,

    /// Retries on HTTP 429/5xx and network errors.
    #[arg(long = "llm-max-retries", env = "LEXTRAL_LLM_MAX_RETRIES", default_value_t = DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,

    /// Remote calls in flight at once.
    #[arg(long = "llm-concurrency", env = "LEXTRAL_LLM_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Failed remote calls in a row (network errors, timeouts, 5xx) after
    /// which calls fail at once (UNAVAILABLE) until a trial call after
    /// --llm-breaker-open-s succeeds. 0 turns the breaker off.
    #[arg(long = "llm-breaker-failures", env = "LEXTRAL_LLM_BREAKER_FAILURES", default_value_t = DEFAULT_BREAKER_FAILURES)]
    pub breaker_failures: u32,

    /// Seconds the circuit stays open before one trial call.
    #[arg(long = "llm-breaker-open-s", env = "LEXTRAL_LLM_BREAKER_OPEN_S", default_value_t = DEFAULT_BREAKER_OPEN_S)]
    pub breaker_open_s: u64,

    /// Default cap on generated tokens.
    #[arg(long = "llm-max-output-tokens", env = "LEXTRAL_LLM_MAX_OUTPUT_TOKENS", default_value_t = DEFAULT_MAX_OUTPUT_TOKENS)]
    pub max_output_tokens: u32,

    /// The most generated tokens a request may ask for (`max_output_tokens`
    /// above it is refused), so no caller can spend a paid budget at will.
    #[arg(long = "llm-max-output-tokens-limit", env = "LEXTRAL_LLM_MAX_OUTPUT_TOKENS_LIMIT", default_value_t = DEFAULT_MAX_OUTPUT_TOKENS_LIMIT)]
    pub max_output_tokens_limit: u32,

    /// Local backend: decode only label names (every answer is a label,
    /// with a probability). `false` generates free text for the parser.
    #[arg(long = "llm-constrained", env = "LEXTRAL_LLM_CONSTRAINED", default_value_t = true, action = clap::ArgAction::Set)]
    pub constrained: bool,

    /// JSON price table merged over the built-in one:
    /// `{"model": {"input": 0.1, "output": 0.3}}` in dollars per million tokens.
    #[arg(long = "llm-prices", env = "LEXTRAL_LLM_PRICES")]
    pub prices: Option<PathBuf>,

    /// Token budget for the clause; longer clauses are cut (and say so).
    #[arg(long = "prompt-clause-tokens", env = "LEXTRAL_PROMPT_CLAUSE_TOKENS", default_value_t = DEFAULT_CLAUSE_TOKENS)]
    pub clause_tokens: usize,

    /// Token budget for each few-shot example clause.
    #[arg(long = "prompt-example-tokens", env = "LEXTRAL_PROMPT_EXAMPLE_TOKENS", default_value_t = DEFAULT_EXAMPLE_TOKENS)]
    pub example_tokens: usize,

    /// Few-shot example order in the prompt: `nearest-first` or
    /// `nearest-last` (the most similar example right before the query).
    #[arg(long = "prompt-examples-order", env = "LEXTRAL_PROMPT_EXAMPLES_ORDER", default_value = DEFAULT_EXAMPLES_ORDER)]
    pub examples_order: String,

    /// Zero-shot template file ({labels}, {clause}).
    #[arg(
        long = "prompt-zero-shot-template",
        env = "LEXTRAL_PROMPT_ZERO_SHOT_TEMPLATE"
    )]
    pub zero_shot_template: Option<PathBuf>,

    /// Few-shot template file ({labels}, {examples}, {clause}).
    #[arg(
        long = "prompt-few-shot-template",
        env = "LEXTRAL_PROMPT_FEW_SHOT_TEMPLATE"
    )]
    pub few_shot_template: Option<PathBuf>,

    /// Few-shot example template file ({text}, {label}).
    #[arg(
        long = "prompt-example-template",
        env = "LEXTRAL_PROMPT_EXAMPLE_TEMPLATE"
    )]
    pub example_template: Option<PathBuf>,

    /// Embedder gRPC URL for the last parsing step (nearest label by
    /// embedding). Unset: that step is skipped. `serve all` sets its own.
    #[arg(long = "prompt-embedder-url", env = "LEXTRAL_PROMPT_EMBEDDER_URL")]
    pub embedder_url: Option<String>,

    /// Cosine an answer needs to a label for the embedding step.
    #[arg(long = "prompt-embedding-min-similarity", env = "LEXTRAL_PROMPT_EMBEDDING_MIN_SIMILARITY", default_value_t = DEFAULT_EMBEDDING_MIN_SIMILARITY)]
    pub embedding_min_similarity: f32,

    /// Texts accepted in one Classify call.
    #[arg(long = "prompt-max-texts", env = "LEXTRAL_PROMPT_MAX_TEXTS", default_value_t = DEFAULT_MAX_TEXTS)]
    pub max_texts: usize,

    /// Labels accepted in one Classify call.
    #[arg(long = "prompt-max-labels", env = "LEXTRAL_PROMPT_MAX_LABELS", default_value_t = DEFAULT_MAX_LABELS)]
    pub max_labels: usize,

    /// Bytes accepted per text.
    #[arg(long = "prompt-max-text-bytes", env = "LEXTRAL_PROMPT_MAX_TEXT_BYTES", default_value_t = DEFAULT_MAX_TEXT_BYTES)]
    pub max_text_bytes: usize,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            backend: DEFAULT_BACKEND.to_owned(),
            model: None,
            url: None,
            timeout_s: DEFAULT_TIMEOUT_S,
            max_retries: DEFAULT_MAX_RETRIES,
            concurrency: DEFAULT_CONCURRENCY,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_open_s: DEFAULT_BREAKER_OPEN_S,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            max_output_tokens_limit: DEFAULT_MAX_OUTPUT_TOKENS_LIMIT,
            constrained: true,
            prices: None,
            clause_tokens: DEFAULT_CLAUSE_TOKENS,
            example_tokens: DEFAULT_EXAMPLE_TOKENS,
            examples_order: DEFAULT_EXAMPLES_ORDER.to_owned(),
            zero_shot_template: None,
            few_shot_template: None,
            example_template: None,
            embedder_url: None,
            embedding_min_similarity: DEFAULT_EMBEDDING_MIN_SIMILARITY,
            max_texts: DEFAULT_MAX_TEXTS,
            max_labels: DEFAULT_MAX_LABELS,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
        }
    }
}

impl PromptConfig {
    /// Per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.max(1))
    }

    /// The circuit breaker before a remote backend.
    pub fn breaker(&self) -> lextral_common::BreakerPolicy {
        lextral_common::BreakerPolicy {
            failures: self.breaker_failures,
            open_for: Duration::from_secs(self.breaker_open_s.max(1)),
        }
    }
}
