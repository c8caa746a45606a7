//! The services the orchestrator composes: one client each, the calls the
//! strategies make (with their answers in domain types and their sizes
//! checked), readiness and the Info fan-out. The only module besides
//! `grpc.rs` that speaks protobuf.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use lextral_common::{lazy_channel, MAX_MESSAGE_BYTES};
use lextral_common::{Access, PeerChannel};
use lextral_proto::v1::{
    embedder_service_client::EmbedderServiceClient,
    finetuned_classifier_service_client::FinetunedClassifierServiceClient,
    prompt_classifier_service_client::PromptClassifierServiceClient,
    retriever_service_client::RetrieverServiceClient, EmbedRequest, EmbedderServiceInfoRequest,
    FewShotExamples, FinetunedClassifierServiceClassifyRequest,
    FinetunedClassifierServiceInfoRequest, LabeledText, OrchestratorServiceInfoResponse,
    PromptClassifierServiceClassifyRequest, PromptClassifierServiceInfoRequest, PromptMode,
    QueryVector, SearchRequest, StatsRequest, UpsertRecord, UpsertRequest,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::config::OrchestratorConfig;
use crate::domain::{
    DependencyStatus, LabelCount, LabelScore, LabelSet, LabelledClause, Neighbour,
};
use crate::error::OrchestratorError;
use crate::plan::KnnParams;

/// How long one dependency may take to describe itself in `Info`.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a readiness check may take.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// A downstream answer must hold one item per input; anything else is a
/// bug there, reported as INTERNAL.
fn one_per_input<T>(
    service: &str,
    answer: Vec<T>,
    want: usize,
    items: &str,
    inputs: &str,
) -> Result<Vec<T>, OrchestratorError> {
    if answer.len() == want {
        Ok(answer)
    } else {
        Err(OrchestratorError::Internal(format!(
            "{service} returned {} {items} for {want} {inputs}",
            answer.len()
        )))
    }
}

/// One text's embedding.
pub struct Embedded {
    /// The unit vector.
    pub values: Vec<f32>,
    /// Whether the embedder truncated the text.
    pub truncated: bool,
}

/// The fine-tuned classifier's answer for one text.
pub struct FinetunedAnswer {
    /// Its label.
    pub label: String,
    /// Its probability.
    pub probability: f32,
    /// The best labels with their probabilities.
    pub alternatives: Vec<LabelScore>,
}

/// The prompt classifier's answer for one text.
pub struct PromptAnswer {
    /// The label; empty when the answer matched none.
    pub label: String,
    /// Confidence where the backend gives one.
    pub confidence: Option<f32>,
    /// The raw answer.
    pub raw_output: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Estimated cost.
    pub cost_usd: f64,
    /// Whether the prompt was truncated.
    pub truncated: bool,
}

tokio::task_local! {
    /// When the request being served must be answered by: every downstream
    /// call gets the time left as its `grpc-timeout`.
    static DEADLINE: Instant;
}

/// Runs `work` with downstream calls bounded by `deadline` (or by one set
/// further out, e.g. from the caller's `grpc-timeout`, if that is sooner).
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    let deadline = DEADLINE
        .try_with(|outer| (*outer).min(deadline))
        .unwrap_or(deadline);
    DEADLINE.scope(deadline, work).await
}

/// The caller's deadline from a `grpc-timeout` header value (`100m`, `5S`).
pub fn caller_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

/// A request carrying the time left before the current deadline.
fn call<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(deadline) = DEADLINE.try_with(|d| *d) {
        let left = deadline.saturating_duration_since(Instant::now());
        request.set_timeout(left.max(Duration::from_millis(1)));
    }
    request
}

/// Runs an idempotent call, and once more after a short random pause when
/// the peer was UNAVAILABLE (a replica going away, a connection reset) and
/// there is time left for it.
async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    match attempt().await {
        Err(status) if status.code() == tonic::Code::Unavailable => {
            let pause = Duration::from_millis(rand::random::<u64>() % 60 + 20);
            let room = DEADLINE
                .try_with(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::MAX);
            if room <= pause * 2 {
                return Err(status);
            }
            metrics::counter!("lextral_downstream_retries_total").increment(1);
            tokio::time::sleep(pause).await;
            attempt().await
        }
        other => other,
    }
}

/// Clients for the four services.
pub struct Downstream {
    embedder: EmbedderServiceClient<PeerChannel>,
    retriever: RetrieverServiceClient<PeerChannel>,
    finetuned: FinetunedClassifierServiceClient<PeerChannel>,
    prompt: PromptClassifierServiceClient<PeerChannel>,
    embedder_channel: PeerChannel,
    retriever_channel: PeerChannel,
    finetuned_channel: PeerChannel,
    prompt_channel: PeerChannel,
}

impl Downstream {
    /// Lazy clients for the configured URLs, sending `access`'s peer key:
    /// services may start in any order.
    pub fn new(config: &OrchestratorConfig, access: &Access) -> anyhow::Result<Self> {
        let timeout = config.request_timeout();
        let channel = |url: &str| lazy_channel("downstream", url, timeout, access);
        let embedder_channel = channel(&config.embedder_url)?;
        let retriever_channel = channel(&config.retriever_url)?;
        let finetuned_channel = channel(&config.finetuned_url)?;
        let prompt_channel = channel(&config.prompt_url)?;
        Ok(Self {
            embedder: EmbedderServiceClient::new(embedder_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            retriever: RetrieverServiceClient::new(retriever_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            finetuned: FinetunedClassifierServiceClient::new(finetuned_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            prompt: PromptClassifierServiceClient::new(prompt_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            embedder_channel,
            retriever_channel,
            finetuned_channel,
            prompt_channel,
        })
    }

    /// Unit vectors of `texts`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedded>, OrchestratorError> {
        let count = texts.len();
        let embeddings = retried(|| {
            let mut client = self.embedder.clone();
            let request = call(EmbedRequest {
                texts: texts.clone(),
                normalize: Some(true),
            });
            async move { client.embed(request).await }
        })
        .await
        .map_err(OrchestratorError::downstream("embedder"))?
        .into_inner()
        .embeddings;
        Ok(
            one_per_input("embedder", embeddings, count, "vectors", "texts")?
                .into_iter()
                .map(|e| Embedded {
                    values: e.values,
                    truncated: e.truncated,
                })
                .collect(),
        )
    }

    /// The `k` nearest stored clauses of each query that pass `params`'
    /// similarity floor and splits.
    pub async fn search(
        &self,
        queries: Vec<Vec<f32>>,
        k: u32,
        params: &KnnParams,
    ) -> Result<Vec<Vec<Neighbour>>, OrchestratorError> {
        let count = queries.len();
        let request = SearchRequest {
            queries: queries
                .into_iter()
                .map(|values| QueryVector { values })
                .collect(),
            k,
            min_similarity: Some(params.min_similarity),
            splits: params.splits.clone(),
            labels: Vec::new(),
            ef_search: params.ef_search,
        };
        let results = retried(|| {
            let mut client = self.retriever.clone();
            let request = call(request.clone());
            async move { client.search(request).await }
        })
        .await
        .map_err(OrchestratorError::downstream("retriever"))?
        .into_inner()
        .results;
        Ok(
            one_per_input("retriever", results, count, "results", "queries")?
                .into_iter()
                .map(|r| r.neighbors.into_iter().map(Neighbour::from).collect())
                .collect(),
        )
    }

    /// The fine-tuned classifier's answers.
    pub async fn finetuned(
        &self,
        texts: Vec<String>,
        top_k: Option<u32>,
    ) -> Result<Vec<FinetunedAnswer>, OrchestratorError> {
        let count = texts.len();
        let request = FinetunedClassifierServiceClassifyRequest { texts, top_k };
        let results = retried(|| {
            let mut client = self.finetuned.clone();
            let request = call(request.clone());
            async move { client.classify(request).await }
        })
        .await
        .map_err(OrchestratorError::downstream("finetuned-classifier"))?
        .into_inner()
        .results;
        Ok(
            one_per_input("finetuned-classifier", results, count, "results", "texts")?
                .into_iter()
                .map(|r| FinetunedAnswer {
                    label: r.label,
                    probability: r.probability,
                    alternatives: r.alternatives.into_iter().map(LabelScore::from).collect(),
                })
                .collect(),
        )
    }

    /// The prompt classifier's answers: zero-shot without `examples`,
    /// few-shot with one list of labelled examples per text.
    pub async fn prompt(
        &self,
        texts: Vec<String>,
        labels: Vec<String>,
        examples: Option<&[Vec<Neighbour>]>,
        max_output_tokens: Option<u32>,
    ) -> Result<Vec<PromptAnswer>, OrchestratorError> {
        let count = texts.len();
        let (mode, examples) = match examples {
            None => (PromptMode::ZeroShot, Vec::new()),
            Some(examples) => (
                PromptMode::FewShot,
                examples
                    .iter()
                    .map(|neighbours| FewShotExamples {
                        examples: neighbours
                            .iter()
                            .map(|n| LabeledText {
                                text: n.text.clone(),
                                label: n.label.clone(),
                                split: n.split.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
        };
        let results = self
            .prompt
            .clone()
            .classify(call(PromptClassifierServiceClassifyRequest {
                texts,
                labels,
                mode: mode as i32,
                examples,
                max_output_tokens,
            }))
            .await
            .map_err(OrchestratorError::downstream("prompt-classifier"))?
            .into_inner()
            .results;
        Ok(
            one_per_input("prompt-classifier", results, count, "results", "texts")?
                .into_iter()
                .map(|r| PromptAnswer {
                    label: r.label,
                    confidence: r.confidence,
                    raw_output: r.raw_output,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost_usd: r.cost_usd,
                    truncated: r.truncated,
                })
                .collect(),
        )
    }

    /// The labels in the index with their counts.
    pub async fn labels(&self) -> Result<LabelSet, OrchestratorError> {
        let stats = retried(|| {
            let mut client = self.retriever.clone();
            async move { client.stats(call(StatsRequest {})).await }
        })
        .await
        .map_err(OrchestratorError::downstream("retriever"))?
        .into_inner();
        let mut labels: Vec<String> = stats.labels.iter().map(|c| c.label.clone()).collect();
        labels.sort();
        labels.dedup();
        let counts = stats
            .labels
            .into_iter()
            .map(|c| LabelCount {
                label: c.label,
                split: c.split,
                count: c.count,
            })
            .collect();
        Ok(LabelSet { labels, counts })
    }

    /// Stores labelled clauses with their vectors; returns (inserted,
    /// updated, unchanged).
    pub async fn upsert(
        &self,
        clauses: Vec<(LabelledClause, Vec<f32>)>,
    ) -> Result<(u32, u32, u32), OrchestratorError> {
        let records = clauses
            .into_iter()
            .map(
                |(LabelledClause { text, label, split }, embedding)| UpsertRecord {
                    text,
                    label,
                    split,
                    embedding,
                },
            )
            .collect();
        // Idempotent by content hash, so a retry cannot store twice.
        let request = UpsertRequest { records };
        let outcome = retried(|| {
            let mut client = self.retriever.clone();
            let request = call(request.clone());
            async move { client.upsert(request).await }
        })
        .await
        .map_err(OrchestratorError::downstream("retriever"))?
        .into_inner();
        Ok((outcome.inserted, outcome.updated, outcome.unchanged))
    }

    /// Each dependency's description beside the server's `defaults_json`; a
    /// dependency that does not answer within `INFO_TIMEOUT` is named in
    /// `errors`.
    pub async fn info(&self, defaults_json: String) -> OrchestratorServiceInfoResponse {
        fn timed<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(INFO_TIMEOUT);
            request
        }
        fn keep<T>(
            errors: &mut HashMap<String, String>,
            name: &str,
            result: Result<tonic::Response<T>, tonic::Status>,
        ) -> Option<T> {
            match result {
                Ok(response) => Some(response.into_inner()),
                Err(status) => {
                    errors.insert(
                        name.to_owned(),
                        format!("{:?}: {}", status.code(), status.message()),
                    );
                    None
                }
            }
        }
        let (mut embedder, mut retriever, mut finetuned, mut prompt) = (
            self.embedder.clone(),
            self.retriever.clone(),
            self.finetuned.clone(),
            self.prompt.clone(),
        );
        let (embedder, index, finetuned, prompt) = tokio::join!(
            embedder.info(timed(EmbedderServiceInfoRequest {})),
            retriever.stats(timed(StatsRequest {})),
            finetuned.info(timed(FinetunedClassifierServiceInfoRequest {})),
            prompt.info(timed(PromptClassifierServiceInfoRequest {})),
        );
        let mut errors = HashMap::new();
        OrchestratorServiceInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            defaults_json,
            embedder: keep(&mut errors, "embedder", embedder),
            index: keep(&mut errors, "retriever", index),
            finetuned: keep(&mut errors, "finetuned-classifier", finetuned),
            prompt: keep(&mut errors, "prompt-classifier", prompt),
            errors,
        }
    }

    /// Asks each dependency's gRPC health service whether it is SERVING
    /// (embedder, retriever, finetuned-classifier, prompt-classifier).
    pub async fn readiness(&self) -> Vec<DependencyStatus> {
        let checks = [
            (
                "embedder",
                "lextral.v1.EmbedderService",
                self.embedder_channel.channel(),
            ),
            (
                "retriever",
                "lextral.v1.RetrieverService",
                self.retriever_channel.channel(),
            ),
            (
                "finetuned-classifier",
                "lextral.v1.FinetunedClassifierService",
                self.finetuned_channel.channel(),
            ),
            (
                "prompt-classifier",
                "lextral.v1.PromptClassifierService",
                self.prompt_channel.channel(),
            ),
        ];
        let futures = checks
            .into_iter()
            .map(|(name, service, channel)| async move {
                let mut client = HealthClient::new(channel);
                let mut request = tonic::Request::new(HealthCheckRequest {
                    service: service.to_owned(),
                });
                request.set_timeout(READINESS_TIMEOUT);
                match client.check(request).await {
                    Ok(response) => {
                        let status = response.into_inner().status();
                        DependencyStatus {
                            name,
                            ready: status == ServingStatus::Serving,
                            detail: status.as_str_name().to_owned(),
                        }
                    }
                    Err(status) => DependencyStatus {
                        name,
                        ready: false,
                        detail: status.message().to_owned(),
                    },
                }
            });
        futures::future::join_all(futures).await
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert!(caller_deadline(&metadata).is_none());
        metadata.insert("grpc-timeout", "1500m".parse().unwrap());
        let left = caller_deadline(&metadata).unwrap() - Instant::now();
        assert!(left <= Duration::from_millis(1500) && left > Duration::from_millis(1000));
        metadata.insert("grpc-timeout", "2x".parse().unwrap());
        assert!(caller_deadline(&metadata).is_none());
    }

    #[tokio::test]
    async fn calls_carry_the_time_left_and_the_sooner_deadline_wins() {
        let soon = Instant::now() + Duration::from_millis(300);
        let later = Instant::now() + Duration::from_secs(60);
        let timeout = within(soon, within(later, async { call(()) }))
            .await
            .metadata()
            .get("grpc-timeout")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let micros: u64 = timeout.trim_end_matches(['u', 'm', 'n']).parse().unwrap();
        assert!(timeout.ends_with('u') && micros <= 300_000, "{timeout}");
        assert!(call(()).metadata().get("grpc-timeout").is_none());
    }

    #[tokio::test]
    async fn unavailable_is_retried_once_and_other_errors_not() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), tonic::Status> = retried(|| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(tonic::Status::unavailable("gone")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        attempts.store(0, std::sync::atomic::Ordering::SeqCst);
        let _ = retried(|| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<(), _>(tonic::Status::invalid_argument("no")) }
        })
        .await;
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
