//! Chat-completions backend for Mistral's API and any OpenAI-compatible
//! server (vLLM, Ollama, llama.cpp server, LM Studio): `POST
//! {base}/chat/completions` with temperature 0. Retries 429 and 5xx with
//! exponential backoff and jitter (each wait drawn between half and all of
//! its ceiling), honouring `Retry-After`; never
//! sleeps past the caller's deadline; a semaphore caps calls in flight
//! (a call waiting out its back-off holds no slot). A circuit breaker in
//! front fails calls at once while the provider is down.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use tokio::sync::Semaphore;

use lextral_common::provider::provider_message;
use lextral_common::{ApiKey, Breaker, BreakerPolicy};

use crate::backend::{truncate_estimated, Completion, CompletionRequest, LlmBackend, LlmError};

/// Retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry.
    pub base_delay: Duration,
    /// Longest single wait (also caps Retry-After).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Settings of a chat backend.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// "mistral" or "openai".
    pub kind: &'static str,
    /// Base URL up to and including the version, e.g. `https://api.mistral.ai/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Key, if the server needs one.
    pub api_key: Option<ApiKey>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Calls in flight.
    pub concurrency: usize,
    /// When to stop calling a provider that keeps failing.
    pub breaker: BreakerPolicy,
}

/// The chat-completions backend.
pub struct ChatBackend {
    settings: ChatSettings,
    url: String,
    http: reqwest::Client,
    slots: Semaphore,
    breaker: Breaker,
}

impl fmt::Debug for ChatBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatBackend")
            .field("settings", &self.settings)
            .finish()
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

enum Attempt {
    Done(Completion),
    Retry {
        wait: Option<Duration>,
        why: String,
        rate_limited: bool,
    },
    Fail(LlmError),
}

impl ChatBackend {
    /// Creates the backend.
    pub fn new(settings: ChatSettings) -> Result<Self, LlmError> {
        let base = settings.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::NotConfigured(format!(
                "LLM base URL must start with http:// or https://, got {:?}",
                settings.base_url
            )));
        }
        if settings.model.trim().is_empty() {
            return Err(LlmError::NotConfigured(
                "an LLM model name is required for this backend (--llm-model)".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| LlmError::NotConfigured(format!("HTTP client: {err}")))?;
        Ok(Self {
            url: format!("{base}/chat/completions"),
            slots: Semaphore::new(settings.concurrency.max(1)),
            breaker: Breaker::new(format!("llm-{}", settings.kind), settings.breaker),
            settings,
            http,
        })
    }

    async fn attempt(&self, request: &CompletionRequest<'_>, remaining: Duration) -> Attempt {
        let body = serde_json::json!({
            "model": self.settings.model,
            "messages": [{"role": "user", "content": request.prompt.text()}],
            "temperature": 0.0,
            "max_tokens": request.max_output_tokens,
        });
        let mut call = self
            .http
            .post(&self.url)
            .timeout(self.settings.timeout.min(remaining))
            .json(&body);
        if let Some(key) = &self.settings.api_key {
            call = call.bearer_auth(key.expose());
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(err) if err.is_timeout() => {
                return Attempt::Retry {
                    wait: None,
                    why: "request timed out".into(),
                    rate_limited: false,
                }
            }
            Err(err) => {
                return Attempt::Retry {
                    wait: None,
                    why: format!("cannot reach {}: {err}", self.url),
                    rate_limited: false,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = match response.text().await {
            Ok(t) => t,
            Err(err) => {
                return Attempt::Retry {
                    wait: None,
                    why: format!("reading the response: {err}"),
                    rate_limited: false,
                }
            }
        };
        let message = provider_message(&text);
        match status {
            200..=299 => {}
            429 => {
                return Attempt::Retry {
                    wait: retry_after,
                    why: message,
                    rate_limited: true,
                }
            }
            500..=599 => {
                return Attempt::Retry {
                    wait: retry_after,
                    why: format!("HTTP {status}: {message}"),
                    rate_limited: false,
                }
            }
            401 | 403 => return Attempt::Fail(LlmError::Unauthorized { status, message }),
            _ => return Attempt::Fail(LlmError::Rejected { status, message }),
        }
        let parsed: ChatResponse = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(err) => {
                return Attempt::Fail(LlmError::Malformed(format!(
                    "{err} (body starts {:?})",
                    text.chars().take(80).collect::<String>()
                )))
            }
        };
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Attempt::Fail(LlmError::Malformed("no choices in the response".into()));
        };
        let usage = parsed.usage.unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        Attempt::Done(Completion {
            text: choice.message.content.unwrap_or_default(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            confidence: None,
            attempts: 0,
        })
    }

    fn backoff(&self, retry: u32) -> Duration {
        let policy = &self.settings.retry;
        let ceiling = policy
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(policy.max_delay);
        // Full jitter spreads clients that failed together.
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[tonic::async_trait]
impl LlmBackend for ChatBackend {
    fn kind(&self) -> &'static str {
        self.settings.kind
    }

    fn model(&self) -> &str {
        &self.settings.model
    }

    fn truncate(&self, text: &str, max_tokens: usize) -> (String, bool) {
        truncate_estimated(text, max_tokens)
    }

    async fn complete(&self, request: CompletionRequest<'_>) -> Result<Completion, LlmError> {
        let remaining = || request.deadline.saturating_duration_since(Instant::now());
        let mut attempts = 0;
        loop {
            if remaining().is_zero() {
                return Err(LlmError::Deadline(format!("after {attempts} attempts")));
            }
            let permit = self
                .breaker
                .allow()
                .map_err(|open| LlmError::CircuitOpen(format!("{}: {open}", self.url)))?;
            // The slot is held for one attempt only, not through the back-off.
            let slot = tokio::time::timeout(remaining(), self.slots.acquire())
                .await
                .map_err(|_| LlmError::Deadline("waiting for a free LLM slot".into()))?
                .map_err(|_| LlmError::Unavailable {
                    attempts,
                    message: "backend closed".into(),
                })?;
            attempts += 1;
            let attempt = self.attempt(&request, remaining()).await;
            drop(slot);
            let (wait, why, rate_limited) = match attempt {
                Attempt::Done(mut completion) => {
                    permit.success();
                    completion.attempts = attempts;
                    return Ok(completion);
                }
                Attempt::Fail(err) => {
                    // The provider answered: it is up, whatever it said.
                    permit.success();
                    return Err(err);
                }
                Attempt::Retry {
                    wait,
                    why,
                    rate_limited,
                } => {
                    if rate_limited {
                        permit.success();
                    } else {
                        permit.failure();
                    }
                    (wait, why, rate_limited)
                }
            };
            metrics::counter!("lextral_llm_retries_total", "reason" => if rate_limited { "429" } else { "unavailable" })
                .increment(1);
            if attempts > self.settings.retry.max_retries {
                return Err(if rate_limited {
                    LlmError::RateLimited {
                        attempts,
                        message: why,
                    }
                } else {
                    LlmError::Unavailable {
                        attempts,
                        message: why,
                    }
                });
            }
            let wait = wait
                .map(|w| w.min(self.settings.retry.max_delay))
                .unwrap_or_else(|| self.backoff(attempts - 1));
            if wait >= remaining() {
                return Err(LlmError::Deadline(format!(
                    "the next retry ({why}) would start after the deadline"
                )));
            }
            tracing::warn!(attempt = attempts, wait_ms = wait.as_millis() as u64, reason = %why, "LLM call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Wire-format tests against a local server speaking the OpenAI /
    //! Mistral chat-completions protocol.
    use super::*;
    use crate::backend::Prompt;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    enum Reply {
        Ok(&'static str),
        Status(u16, Option<&'static str>, &'static str),
        Hang,
    }

    /// Authorization header and body of each request received.
    type Seen = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

    #[derive(Clone)]
    struct Script {
        replies: Arc<Vec<Reply>>,
        calls: Arc<AtomicUsize>,
        seen: Seen,
    }

    async fn handler(
        axum::extract::State(script): axum::extract::State<Script>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> axum::response::Response {
        let n = script.calls.fetch_add(1, Ordering::SeqCst);
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        script.seen.lock().unwrap().push((auth, body));
        let reply = script.replies[n.min(script.replies.len() - 1)].clone();
        match reply {
            Reply::Ok(body) => (StatusCode::OK, body).into_response(),
            Reply::Status(code, retry_after, body) => {
                let mut response = (StatusCode::from_u16(code).unwrap(), body).into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", after.parse().unwrap());
                }
                response
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (StatusCode::OK, "late").into_response()
            }
        }
    }

    const GOOD: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Governing Laws"},"finish_reason":"stop"}],"usage":{"prompt_tokens":812,"completion_tokens":3,"total_tokens":815}}"#;

    async fn serve(replies: Vec<Reply>) -> (ChatBackend, Script) {
        serve_with(replies, BreakerPolicy::default(), 2).await
    }

    async fn serve_with(
        replies: Vec<Reply>,
        breaker: BreakerPolicy,
        concurrency: usize,
    ) -> (ChatBackend, Script) {
        let script = Script {
            replies: Arc::new(replies),
            calls: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(handler))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let backend = ChatBackend::new(ChatSettings {
            kind: "mistral",
            base_url: format!("http://{addr}/v1/"),
            model: "mistral-small-latest".into(),
            api_key: Some(ApiKey::new("sk-test-secret")),
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_retries: 2,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(2),
            },
            concurrency,
            breaker,
        })
        .unwrap();
        (backend, script)
    }

    async fn call(backend: &ChatBackend, within: Duration) -> Result<Completion, LlmError> {
        let prompt = Prompt {
            prefix: "Categories:\n- Governing Laws\n".into(),
            suffix: "Clause: governed by New York law\nCategory:".into(),
        };
        backend
            .complete(CompletionRequest {
                prompt: &prompt,
                labels: &[],
                max_output_tokens: 16,
                deadline: Instant::now() + within,
            })
            .await
    }

    #[tokio::test]
    async fn success_sends_the_chat_format() {
        let (backend, script) = serve(vec![Reply::Ok(GOOD)]).await;
        let c = call(&backend, Duration::from_secs(5)).await.unwrap();
        assert_eq!(c.text, "Governing Laws");
        assert_eq!((c.input_tokens, c.output_tokens, c.attempts), (812, 3, 1));
        let seen = script.seen.lock().unwrap();
        let (auth, body) = &seen[0];
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret"));
        assert_eq!(body["model"], "mistral-small-latest");
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["messages"][0]["role"], "user");
        assert!(body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("Category:"));
    }

    #[tokio::test]
    async fn retries_429_honouring_retry_after() {
        let (backend, script) = serve(vec![
            Reply::Status(
                429,
                Some("1"),
                r#"{"message":"Requests rate limit exceeded"}"#,
            ),
            Reply::Ok(GOOD),
        ])
        .await;
        let started = Instant::now();
        let c = call(&backend, Duration::from_secs(10)).await.unwrap();
        assert_eq!(c.attempts, 2);
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(script.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retries_500_then_succeeds() {
        let (backend, _) = serve(vec![
            Reply::Status(500, None, "internal"),
            Reply::Status(503, None, "overloaded"),
            Reply::Ok(GOOD),
        ])
        .await;
        let c = call(&backend, Duration::from_secs(10)).await.unwrap();
        assert_eq!(c.attempts, 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_retry_budget() {
        let (backend, script) = serve(vec![Reply::Status(
            429,
            None,
            r#"{"error":{"message":"slow down"}}"#,
        )])
        .await;
        let err = call(&backend, Duration::from_secs(10)).await.unwrap_err();
        assert!(
            matches!(err, LlmError::RateLimited { attempts: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("slow down"));
        assert_eq!(script.calls.load(Ordering::SeqCst), 3);
        let (backend, _) = serve(vec![Reply::Status(502, None, "bad gateway")]).await;
        let err = call(&backend, Duration::from_secs(10)).await.unwrap_err();
        assert!(
            matches!(err, LlmError::Unavailable { attempts: 3, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hanging_server_hits_the_deadline() {
        let (backend, _) = serve(vec![Reply::Hang]).await;
        let started = Instant::now();
        let err = call(&backend, Duration::from_millis(800))
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Deadline(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_retry_after_past_the_deadline_fails_fast() {
        let (backend, _) = serve(vec![Reply::Status(429, Some("2"), "{}"), Reply::Ok(GOOD)]).await;
        let started = Instant::now();
        let err = call(&backend, Duration::from_millis(1000))
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Deadline(_)), "{err}");
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[tokio::test]
    async fn malformed_and_empty_answers_are_errors() {
        let (backend, _) = serve(vec![Reply::Ok("{not json")]).await;
        let err = call(&backend, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{err}");
        let (backend, _) = serve(vec![Reply::Ok(
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":0}}"#,
        )])
        .await;
        let err = call(&backend, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("no choices"), "{err}");
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (backend, script) = serve(vec![Reply::Status(
            401,
            None,
            r#"{"message":"Unauthorized"}"#,
        )])
        .await;
        let err = call(&backend, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(err, LlmError::Unauthorized { status: 401, .. }),
            "{err}"
        );
        assert_eq!(script.calls.load(Ordering::SeqCst), 1);
        let (backend, _) = serve(vec![Reply::Status(
            400,
            None,
            r#"{"error":{"message":"Invalid model: nope"}}"#,
        )])
        .await;
        let err = call(&backend, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("Invalid model"), "{err}");
    }

    #[tokio::test]
    async fn a_provider_that_keeps_failing_opens_the_circuit() {
        let policy = BreakerPolicy {
            failures: 3,
            open_for: Duration::from_millis(300),
        };
        let (backend, script) = serve_with(
            vec![
                Reply::Status(503, None, "down"),
                Reply::Status(503, None, "down"),
                Reply::Status(503, None, "down"),
                Reply::Ok(GOOD),
            ],
            policy,
            2,
        )
        .await;
        // Three failed attempts (one call and its two retries) open it.
        let err = call(&backend, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, LlmError::Unavailable { .. }), "{err}");
        let started = Instant::now();
        let err = call(&backend, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, LlmError::CircuitOpen(_)), "{err}");
        assert!(err.to_string().contains("circuit open"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(script.calls.load(Ordering::SeqCst), 3, "no call while open");
        // After the pause one trial goes through and closes it.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let c = call(&backend, Duration::from_secs(10)).await.unwrap();
        assert_eq!(c.attempts, 1);
        call(&backend, Duration::from_secs(10)).await.unwrap();
    }

    #[tokio::test]
    async fn a_call_waiting_out_its_back_off_holds_no_slot() {
        let (backend, _) = serve_with(
            vec![
                Reply::Status(429, Some("1"), "{}"),
                Reply::Ok(GOOD),
                Reply::Ok(GOOD),
            ],
            BreakerPolicy::default(),
            1,
        )
        .await;
        let backend = Arc::new(backend);
        let first = {
            let backend = backend.clone();
            tokio::spawn(async move { call(&backend, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        call(&backend, Duration::from_secs(10)).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "the second call waited {:?} for the only slot",
            started.elapsed()
        );
        assert_eq!(first.await.unwrap().unwrap().attempts, 2);
    }

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
        let settings = ChatSettings {
            kind: "openai",
            base_url: "http://localhost:1/v1".into(),
            model: "m".into(),
            api_key: Some(key),
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            concurrency: 1,
            breaker: BreakerPolicy::default(),
        };
        assert!(!format!("{settings:?}").contains("secret"));
    }
}
