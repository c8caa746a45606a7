//! The serving side: validates requests, builds prompts, calls the
//! backend, parses answers, prices them and records metrics.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use lextral_common::{lazy_channel, TextLimits, MAX_MESSAGE_BYTES};
use lextral_common::{Access, PeerChannel};
use lextral_proto::v1::{
    embedder_service_client::EmbedderServiceClient, EmbedRequest, FewShotExamples,
    PromptClassification, PromptMode,
};

use crate::backend::{CompletionRequest, LlmBackend};
use crate::chat::{ChatSettings, RetryPolicy};
use crate::config::{PromptConfig, DEFAULT_MISTRAL_MODEL, MISTRAL_URL, OPENAI_URL};
use crate::error::PromptError;
use crate::local::LocalBackend;
use crate::parse::{LabelMatcher, ParseMethod};
use crate::prices::PriceTable;
use crate::prompt::{Budgets, Example, Templates};

/// A classify request after decoding.
#[derive(Debug, Clone)]
pub struct ClassifyInput {
    /// Clauses.
    pub texts: Vec<String>,
    /// Label set.
    pub labels: Vec<String>,
    /// Zero-shot or few-shot.
    pub mode: PromptMode,
    /// Few-shot examples, one entry per text.
    pub examples: Vec<FewShotExamples>,
    /// Cap on generated tokens.
    pub max_output_tokens: Option<u32>,
    /// When the caller stops waiting.
    pub deadline: Instant,
}

/// The service state.
pub struct PromptService {
    config: PromptConfig,
    templates: Templates,
    prices: PriceTable,
    backend: RwLock<Result<Arc<dyn LlmBackend>, String>>,
    embedder: Option<EmbedderServiceClient<PeerChannel>>,
    label_vectors: tokio::sync::Mutex<HashMap<String, Vec<f32>>>,
}

/// Which backend the configuration asks for, before loading.
pub enum BackendChoice {
    /// A local GGUF file; `explicit` when the user named it.
    Local {
        /// The file.
        path: std::path::PathBuf,
        /// Named by the user (a missing file is then a start-up error).
        explicit: bool,
    },
    /// A chat API.
    Chat(ChatSettings),
}

impl PromptService {
    /// Validates the configuration; the backend is attached later
    /// ([`Self::set_backend`]) because loading a local model takes seconds.
    pub fn new(config: PromptConfig, access: &Access) -> anyhow::Result<(Self, BackendChoice)> {
        let choice = Self::backend_choice(&config)?;
        let constrained = matches!(choice, BackendChoice::Local { .. }) && config.constrained;
        let templates = Templates::from_files(
            config.zero_shot_template.as_deref(),
            config.few_shot_template.as_deref(),
            config.example_template.as_deref(),
            constrained,
        )
        .map_err(anyhow::Error::msg)?;
        let prices = PriceTable::load(config.prices.as_deref()).map_err(anyhow::Error::msg)?;
        if config.clause_tokens == 0 || config.example_tokens == 0 {
            anyhow::bail!("--prompt-clause-tokens and --prompt-example-tokens must be at least 1");
        }
        if !["nearest-first", "nearest-last"].contains(&config.examples_order.as_str()) {
            anyhow::bail!(
                "--prompt-examples-order must be nearest-first or nearest-last, got {:?}",
                config.examples_order
            );
        }
        if !(-1.0..=1.0).contains(&config.embedding_min_similarity) {
            anyhow::bail!("--prompt-embedding-min-similarity must be within [-1, 1]");
        }
        let embedder = match &config.embedder_url {
            Some(url) => Some(
                EmbedderServiceClient::new(lazy_channel(
                    "embedder",
                    url,
                    Duration::from_secs(30),
                    access,
                )?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
            None => None,
        };
        Ok((
            Self {
                config,
                templates,
                prices,
                backend: RwLock::new(Err("the LLM backend is still loading".into())),
                embedder,
                label_vectors: tokio::sync::Mutex::new(HashMap::new()),
            },
            choice,
        ))
    }

    fn backend_choice(config: &PromptConfig) -> anyhow::Result<BackendChoice> {
        let retry = RetryPolicy {
            max_retries: config.max_retries,
            ..RetryPolicy::default()
        };
        let chat = |kind: &'static str,
                    url: &str,
                    model: Option<&str>,
                    key_vars: &[&str]|
         -> anyhow::Result<BackendChoice> {
            let model = model.ok_or_else(|| {
                anyhow::anyhow!("--llm-backend {kind} needs --llm-model / LEXTRAL_LLM_MODEL")
            })?;
            Ok(BackendChoice::Chat(ChatSettings {
                kind,
                base_url: config.url.clone().unwrap_or_else(|| url.to_owned()),
                model: model.to_owned(),
                api_key: lextral_common::api_key_from_env(key_vars)?,
                timeout: config.timeout(),
                retry: retry.clone(),
                concurrency: config.concurrency,
                breaker: config.breaker(),
            }))
        };
        match config.backend.as_str() {
            "local" => Ok(match &config.model {
                Some(path) => BackendChoice::Local {
                    path: path.into(),
                    explicit: true,
                },
                None => BackendChoice::Local {
                    path: LocalBackend::default_path(),
                    explicit: false,
                },
            }),
            "mistral" => chat(
                "mistral",
                MISTRAL_URL,
                Some(config.model.as_deref().unwrap_or(DEFAULT_MISTRAL_MODEL)),
                &["LEXTRAL_LLM_API_KEY", "MISTRAL_API_KEY"],
            ),
            "openai" => chat(
                "openai",
                OPENAI_URL,
                config.model.as_deref(),
                &["LEXTRAL_LLM_API_KEY", "OPENAI_API_KEY"],
            ),
            other => {
                anyhow::bail!("unknown --llm-backend {other:?}; expected local, mistral or openai")
            }
        }
    }

    /// Attaches the loaded backend, or the reason there is none.
    pub fn set_backend(&self, backend: Result<Arc<dyn LlmBackend>, String>) {
        if let Ok(b) = &backend {
            if b.kind() != "local-gguf" && self.prices.get(b.model()).is_none() {
                tracing::warn!(
                    model = b.model(),
                    "no price for this model: costs are reported as 0 (see --llm-prices)"
                );
            }
        }
        *self.backend.write().unwrap_or_else(PoisonError::into_inner) = backend;
    }

    /// The backend, or why there is none.
    pub fn backend(&self) -> Result<Arc<dyn LlmBackend>, String> {
        self.backend
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configuration.
    pub fn config(&self) -> &PromptConfig {
        &self.config
    }

    /// Prices.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    fn validate(&self, input: &ClassifyInput) -> Result<(), PromptError> {
        let bad = |m: String| Err(PromptError::BadRequest(m));
        TextLimits {
            max_texts: self.config.max_texts,
            max_text_bytes: self.config.max_text_bytes,
            refuse_blank: true,
        }
        .check(&input.texts)
        .map_err(|err| PromptError::BadRequest(err.to_string()))?;
        if input.labels.is_empty() {
            return bad("labels must not be empty: send the label set to choose from".into());
        }
        if input.labels.len() > self.config.max_labels {
            return bad(format!(
                "{} labels; the limit is {}",
                input.labels.len(),
                self.config.max_labels
            ));
        }
        if let Some(i) = input.labels.iter().position(|l| l.trim().is_empty()) {
            return bad(format!("label {i} is empty"));
        }
        if input.max_output_tokens == Some(0) {
            return bad("max_output_tokens must be at least 1".into());
        }
        let limit = self.config.max_output_tokens_limit;
        if input.max_output_tokens.is_some_and(|tokens| tokens > limit) {
            return bad(format!(
                "max_output_tokens must be at most {limit} (--llm-max-output-tokens-limit), got {}",
                input.max_output_tokens.unwrap_or_default()
            ));
        }
        match input.mode {
            PromptMode::FewShot => {
                if input.examples.len() != input.texts.len() {
                    return bad(format!(
                        "few-shot needs one examples entry per text: {} texts, {} entries",
                        input.texts.len(),
                        input.examples.len()
                    ));
                }
                for (i, entry) in input.examples.iter().enumerate() {
                    if entry.examples.is_empty() {
                        return bad(format!("text {i} has no few-shot examples"));
                    }
                    if entry
                        .examples
                        .iter()
                        .any(|e| e.text.trim().is_empty() || e.label.trim().is_empty())
                    {
                        return bad(format!(
                            "text {i} has an example with an empty text or label"
                        ));
                    }
                }
            }
            _ => {
                if !input.examples.is_empty() {
                    return bad("examples are only used in few-shot mode".into());
                }
            }
        }
        Ok(())
    }

    /// Classifies every text; results in input order.
    pub async fn classify(
        &self,
        input: ClassifyInput,
    ) -> Result<Vec<PromptClassification>, PromptError> {
        self.validate(&input)?;
        let backend = self.backend().map_err(PromptError::NotReady)?;
        let matcher = LabelMatcher::new(&input.labels);
        let budgets = Budgets {
            clause_tokens: self.config.clause_tokens,
            example_tokens: self.config.example_tokens,
            nearest_last: self.config.examples_order == "nearest-last",
        };
        let max_output_tokens = input
            .max_output_tokens
            .unwrap_or(self.config.max_output_tokens);
        let jobs = input.texts.iter().enumerate().map(|(i, text)| {
            let backend = backend.clone();
            let matcher = &matcher;
            let labels = &input.labels;
            let examples: Option<Vec<Example>> = (input.mode == PromptMode::FewShot).then(|| {
                input.examples[i]
                    .examples
                    .iter()
                    .map(|e| Example {
                        text: e.text.clone(),
                        label: e.label.clone(),
                    })
                    .collect()
            });
            async move {
                let built = self.templates.build(
                    backend.as_ref(),
                    labels,
                    examples.as_deref(),
                    text,
                    budgets,
                );
                self.classify_one(
                    backend.as_ref(),
                    matcher,
                    &built,
                    max_output_tokens,
                    input.deadline,
                )
                .await
            }
        });
        join_all(jobs).await.into_iter().collect()
    }

    async fn classify_one(
        &self,
        backend: &dyn LlmBackend,
        matcher: &LabelMatcher,
        built: &crate::prompt::BuiltPrompt,
        max_output_tokens: u32,
        deadline: Instant,
    ) -> Result<PromptClassification, PromptError> {
        let started = Instant::now();
        let outcome = backend
            .complete(CompletionRequest {
                prompt: &built.prompt,
                labels: matcher.labels(),
                max_output_tokens,
                deadline,
            })
            .await
            .map_err(PromptError::from);
        let elapsed = started.elapsed();
        let kind = backend.kind();
        metrics::histogram!("lextral_llm_request_duration_seconds", "backend" => kind)
            .record(elapsed.as_secs_f64());
        let completion = match outcome {
            Ok(c) => c,
            Err(err) => {
                metrics::counter!("lextral_llm_requests_total", "backend" => kind, "outcome" => "error")
                    .increment(1);
                metrics::counter!("lextral_llm_errors_total", "backend" => kind, "kind" => err.kind())
                    .increment(1);
                return Err(err);
            }
        };
        metrics::counter!("lextral_llm_requests_total", "backend" => kind, "outcome" => "ok")
            .increment(1);
        metrics::counter!("lextral_llm_tokens_total", "backend" => kind, "direction" => "input")
            .increment(completion.input_tokens as u64);
        metrics::counter!("lextral_llm_tokens_total", "backend" => kind, "direction" => "output")
            .increment(completion.output_tokens as u64);
        let cost = self.prices.cost(
            backend.model(),
            completion.input_tokens,
            completion.output_tokens,
        );
        metrics::counter!("lextral_llm_cost_microdollars_total", "backend" => kind)
            .increment((cost * 1e6).round() as u64);

        let (mut label, mut method) = match matcher.parse(&completion.text) {
            (Some(l), m) => (l.to_owned(), m),
            (None, m) => (String::new(), m),
        };
        if method == ParseMethod::None && !completion.text.trim().is_empty() {
            if let Some(found) = self.nearest_by_embedding(&completion.text, matcher).await {
                label = found;
                method = ParseMethod::Embedding;
            }
        }
        metrics::counter!("lextral_llm_parse_total", "method" => method.as_str()).increment(1);
        Ok(PromptClassification {
            label,
            raw_output: completion.text,
            parse_method: method.as_str().to_owned(),
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cost_usd: cost,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            truncated: built.clause_truncated,
            confidence: completion.confidence,
            attempts: completion.attempts,
        })
    }

    /// The parser's last step: the label whose embedding is closest to the
    /// answer's, if close enough. Embedder failures only skip the step.
    async fn nearest_by_embedding(&self, answer: &str, matcher: &LabelMatcher) -> Option<String> {
        let embedder = self.embedder.as_ref()?;
        let mut cache = self.label_vectors.lock().await;
        if cache.len() > 10_000 {
            // Label sets change rarely; a bound keeps a stream of ad-hoc sets from growing it.
            cache.clear();
        }
        let mut missing: Vec<String> = matcher
            .labels()
            .iter()
            .filter(|l| !cache.contains_key(*l))
            .cloned()
            .collect();
        let answer_index = missing.len();
        missing.push(answer.trim().to_owned());
        let response = embedder
            .clone()
            .embed(EmbedRequest {
                texts: missing.clone(),
                normalize: Some(true),
            })
            .await;
        let vectors = match response {
            Ok(r) => r.into_inner().embeddings,
            Err(status) => {
                tracing::warn!(error = %status.message(), "embedding parse step skipped: embedder failed");
                return None;
            }
        };
        if vectors.len() != missing.len() {
            return None;
        }
        let answer_vector = vectors[answer_index].values.clone();
        for (label, vector) in missing.into_iter().zip(vectors).take(answer_index) {
            cache.insert(label, vector.values);
        }
        let best = matcher
            .labels()
            .iter()
            .filter_map(|l| {
                let v = cache.get(l)?;
                let cosine: f32 = v.iter().zip(&answer_vector).map(|(a, b)| a * b).sum();
                Some((l, cosine))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (best.1 >= self.config.embedding_min_similarity).then(|| best.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lextral_proto::v1::LabeledText;

    fn input(texts: &[&str], labels: &[&str]) -> ClassifyInput {
        ClassifyInput {
            texts: texts.iter().map(|s| s.to_string()).collect(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            mode: PromptMode::ZeroShot,
            examples: Vec::new(),
            max_output_tokens: None,
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    async fn error(service: &PromptService, input: ClassifyInput) -> String {
        match service.classify(input).await {
            Err(PromptError::BadRequest(message)) => message,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_requests_are_rejected_before_any_llm_call() {
        let (service, _) = PromptService::new(PromptConfig::default(), &Access::open()).unwrap();
        assert!(error(&service, input(&[], &["A"])).await.contains("texts"));
        assert!(error(&service, input(&["  "], &["A"]))
            .await
            .contains("text 0 is empty"));
        assert!(error(&service, input(&["x"], &[]))
            .await
            .contains("labels must not be empty"));
        assert!(error(&service, input(&["x"], &["A", " "]))
            .await
            .contains("label 1 is empty"));
        let mut few = input(&["x", "y"], &["A"]);
        few.mode = PromptMode::FewShot;
        assert!(error(&service, few.clone())
            .await
            .contains("one examples entry per text"));
        few.examples = vec![
            FewShotExamples {
                examples: vec![LabeledText {
                    text: "t".into(),
                    label: "A".into(),
                    split: String::new(),
                }],
            },
            FewShotExamples::default(),
        ];
        assert!(error(&service, few)
            .await
            .contains("text 1 has no few-shot examples"));
        let mut zero = input(&["x"], &["A"]);
        zero.max_output_tokens = Some(0);
        assert!(error(&service, zero).await.contains("max_output_tokens"));
        let mut greedy = input(&["x"], &["A"]);
        greedy.max_output_tokens = Some(100_000);
        assert!(error(&service, greedy)
            .await
            .contains("at most 256 (--llm-max-output-tokens-limit)"));
        // Valid input without a loaded backend is "not ready", not a crash.
        match service.classify(input(&["x"], &["A"])).await {
            Err(PromptError::NotReady(_)) => {}
            other => panic!("expected not ready, got {other:?}"),
        }
    }

    #[test]
    fn backend_configuration_errors_are_clear() {
        let config = PromptConfig {
            backend: "gpt".into(),
            ..PromptConfig::default()
        };
        let err = PromptService::new(config, &Access::open())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown --llm-backend"), "{err}");
        let config = PromptConfig {
            backend: "openai".into(),
            ..PromptConfig::default()
        };
        let err = PromptService::new(config, &Access::open())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--llm-model"), "{err}");
        let config = PromptConfig {
            zero_shot_template: Some("/nonexistent/template.txt".into()),
            ..PromptConfig::default()
        };
        let err = PromptService::new(config, &Access::open())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read template"), "{err}");
    }
}
