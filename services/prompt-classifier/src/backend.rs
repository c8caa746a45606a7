//! The one interface every LLM backend implements, and what it returns.

use std::time::Instant;

/// A prompt in two parts: `prefix` is identical for every clause of a
/// label set (instructions and label list) so backends may cache it;
/// `suffix` holds the examples and the clause.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Shared part.
    pub prefix: String,
    /// Per-clause part.
    pub suffix: String,
}

impl Prompt {
    /// The whole prompt text.
    pub fn text(&self) -> String {
        format!("{}{}", self.prefix, self.suffix)
    }
}

/// One completion request.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    /// The prompt.
    pub prompt: &'a Prompt,
    /// The label set; backends that can constrain decoding to it may.
    pub labels: &'a [String],
    /// Cap on generated tokens.
    pub max_output_tokens: u32,
    /// The caller's deadline.
    pub deadline: Instant,
}

/// What the model answered.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// Generated text.
    pub text: String,
    /// Prompt tokens (as counted by the provider, or our tokenizer).
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// The model's probability for its answer, when the backend knows it.
    pub confidence: Option<f32>,
    /// Provider attempts made (retries + 1).
    pub attempts: u32,
}

/// Why a completion failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The backend is not usable as configured (no key, no model file).
    #[error("{0}")]
    NotConfigured(String),
    /// The provider rejected the credentials.
    #[error("the LLM provider rejected the API key (HTTP {status}): {message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Provider message.
        message: String,
    },
    /// The provider rejected the request (bad model name, prompt too long).
    #[error("the LLM provider rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Provider message.
        message: String,
    },
    /// Still rate limited after every retry.
    #[error("the LLM provider is rate limiting (HTTP 429) after {attempts} attempts: {message}")]
    RateLimited {
        /// Attempts made.
        attempts: u32,
        /// Provider message.
        message: String,
    },
    /// The provider kept failing or could not be reached.
    #[error("the LLM provider is unavailable after {attempts} attempts: {message}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// What happened last.
        message: String,
    },
    /// The local model's queue is full.
    #[error("{0}")]
    Busy(String),
    /// The provider failed so often that calls to it are paused.
    #[error("the LLM provider is unavailable (circuit open) at {0}")]
    CircuitOpen(String),
    /// The provider answered something that is not a chat completion.
    #[error("the LLM provider sent a malformed response: {0}")]
    Malformed(String),
    /// The deadline passed.
    #[error("the LLM call ran out of time: {0}")]
    Deadline(String),
    /// The prompt does not fit the model.
    #[error("{0}")]
    TooLong(String),
    /// Local inference failed.
    #[error("local model: {0}")]
    Inference(String),
}

/// A way to run prompts.
#[tonic::async_trait]
pub trait LlmBackend: Send + Sync {
    /// Backend kind: "mistral", "openai" or "local-gguf".
    fn kind(&self) -> &'static str;
    /// Model name (price-table key).
    fn model(&self) -> &str;
    /// Cuts `text` to at most `max_tokens` tokens; says whether it cut.
    /// Remote backends estimate (no tokenizer for the provider's model).
    fn truncate(&self, text: &str, max_tokens: usize) -> (String, bool);
    /// Runs one prompt.
    async fn complete(&self, request: CompletionRequest<'_>) -> Result<Completion, LlmError>;
}

/// Characters per token assumed when the provider's tokenizer is unknown
/// (English prose with BPE vocabularies averages about four).
pub const CHARS_PER_TOKEN_ESTIMATE: usize = 4;

/// Truncation by the character estimate, at a word boundary.
pub fn truncate_estimated(text: &str, max_tokens: usize) -> (String, bool) {
    let max_chars = max_tokens.saturating_mul(CHARS_PER_TOKEN_ESTIMATE);
    if text.chars().count() <= max_chars {
        return (text.to_owned(), false);
    }
    let cut: String = text.chars().take(max_chars).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > cut.len() / 2 => cut[..i].to_owned(),
        _ => cut,
    };
    (cut, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimated_truncation_cuts_at_words() {
        assert_eq!(
            truncate_estimated("short text", 10),
            ("short text".into(), false)
        );
        let (cut, truncated) = truncate_estimated("alpha beta gamma delta", 3);
        assert!(truncated);
        assert_eq!(cut, "alpha beta");
    }
}
