//! The orchestrator's domain: validate a request, run its strategy through
//! the downstream services, and shape the answer. gRPC and REST both call it.

use std::time::{Duration, Instant};

use lextral_common::{lazy_channel, TextLimits, MAX_MESSAGE_BYTES};
use lextral_proto::v1::{
    embedder_service_client::EmbedderServiceClient,
    finetuned_classifier_service_client::FinetunedClassifierServiceClient,
    prompt_classifier_service_client::PromptClassifierServiceClient,
    retriever_service_client::RetrieverServiceClient, ClassificationResult, ClassifyRequest,
    ClassifyResponse, EmbedRequest, FewShotExamples, FinetunedClassifierServiceClassifyRequest,
    IngestRequest, IngestResponse, KnnOptions, LabelCount, LabelScore, LabeledText, LabelsResponse,
    Neighbor, OrchestratorServiceInfoResponse, PromptClassifierServiceClassifyRequest, PromptMode,
    PromptOptions, QueryVector, SearchRequest, StageLatency, StatsRequest, Strategy, UpsertRecord,
    UpsertRequest, VoteMethod,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::config::OrchestratorConfig;
use crate::error::OrchestratorError;
use crate::knn::{self, Vote};
use crate::names::{parse_vote, strategy_name};

/// Largest k a kNN request may ask for (the retriever's limit).
pub const MAX_K: u32 = 100;

/// Largest number of RAG examples per clause.
pub const MAX_RAG_K: u32 = 32;

/// How long the index's label list is reused for prompts.
const LABELS_TTL: Duration = Duration::from_secs(30);

/// A downstream answer must hold one item per input; anything else is a
/// bug there, reported as INTERNAL.
fn expect_count(
    service: &str,
    got: usize,
    want: usize,
    items: &str,
    inputs: &str,
) -> Result<(), OrchestratorError> {
    if got == want {
        Ok(())
    } else {
        Err(OrchestratorError::Internal(format!(
            "{service} returned {got} {items} for {want} {inputs}"
        )))
    }
}

/// The readiness of one dependency.
#[derive(Debug, Clone)]
pub struct DependencyStatus {
    /// Dependency name.
    pub name: &'static str,
    /// Whether it reports SERVING.
    pub ready: bool,
    /// What it said.
    pub detail: String,
}

/// Composes the services per strategy.
pub struct Orchestrator {
    embedder: EmbedderServiceClient<Channel>,
    retriever: RetrieverServiceClient<Channel>,
    finetuned: FinetunedClassifierServiceClient<Channel>,
    prompt: PromptClassifierServiceClient<Channel>,
    /// Label set for prompts from `--labels`, read once at start-up.
    fixed_labels: Option<Vec<String>>,
    /// Otherwise the index's labels, refreshed every LABELS_TTL.
    prompt_labels: tokio::sync::RwLock<Option<(Instant, Vec<String>)>>,
    embedder_channel: Channel,
    retriever_channel: Channel,
    config: OrchestratorConfig,
    default_vote: VoteMethod,
}

/// Neighbours per query, with the embedder's truncation flags and the
/// embed/search stage latencies.
struct Retrieved {
    results: Vec<lextral_proto::v1::SearchResult>,
    truncated: Vec<bool>,
    latencies: Vec<StageLatency>,
}

/// Resolved kNN parameters.
#[derive(Debug, Clone)]
struct KnnParams {
    k: u32,
    vote: Vote,
    min_similarity: f32,
    min_confidence: f32,
    ef_search: Option<u32>,
    splits: Vec<String>,
}

fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    lazy_channel("downstream", url, timeout)
}

impl Orchestrator {
    /// Creates clients for the configured downstream services.
    pub fn new(config: OrchestratorConfig) -> anyhow::Result<Self> {
        let default_vote = parse_vote(&config.knn_vote).map_err(anyhow::Error::msg)?;
        let embedder_channel = channel(&config.embedder_url, config.request_timeout())?;
        let retriever_channel = channel(&config.retriever_url, config.request_timeout())?;
        Ok(Self {
            embedder: EmbedderServiceClient::new(embedder_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            retriever: RetrieverServiceClient::new(retriever_channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            finetuned: FinetunedClassifierServiceClient::new(channel(
                &config.finetuned_url,
                config.request_timeout(),
            )?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            prompt: PromptClassifierServiceClient::new(channel(
                &config.prompt_url,
                config.request_timeout(),
            )?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            fixed_labels: config
                .labels_file
                .as_deref()
                .map(lextral_common::labels::read_label_file)
                .transpose()?,
            prompt_labels: tokio::sync::RwLock::new(None),
            embedder_channel,
            retriever_channel,
            config,
            default_vote,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    fn validate_texts(&self, texts: &[String]) -> Result<(), OrchestratorError> {
        TextLimits {
            max_texts: self.config.max_texts,
            max_text_bytes: self.config.max_text_bytes,
            refuse_blank: true,
        }
        .check(texts)
        .map_err(|err| OrchestratorError::InvalidArgument(err.to_string()))
    }

    fn knn_params(&self, options: Option<KnnOptions>) -> Result<KnnParams, OrchestratorError> {
        let options = options.unwrap_or_default();
        let bad = |message: String| Err(OrchestratorError::InvalidArgument(message));
        let k = options.k.unwrap_or(self.config.knn_k);
        if k == 0 || k > MAX_K {
            return bad(format!("k must be in 1..={MAX_K}, got {k}"));
        }
        let method = match VoteMethod::try_from(options.vote) {
            Ok(VoteMethod::Unspecified) => self.default_vote,
            Ok(method) => method,
            Err(_) => return bad(format!("unknown vote method {}", options.vote)),
        };
        let vote = match method {
            VoteMethod::Weighted | VoteMethod::Unspecified => {
                let power = options.power.unwrap_or(self.config.knn_power);
                if !(power.is_finite() && power > 0.0) {
                    return bad(format!("power must be a positive number, got {power}"));
                }
                Vote::Weighted { power }
            }
            VoteMethod::Softmax => {
                let temperature = options.temperature.unwrap_or(self.config.knn_temperature);
                if !(temperature.is_finite() && temperature > 0.0) {
                    return bad(format!(
                        "temperature must be a positive number, got {temperature}"
                    ));
                }
                Vote::Softmax { temperature }
            }
            VoteMethod::Majority => Vote::Majority,
        };
        let min_similarity = options
            .min_similarity
            .unwrap_or(self.config.knn_min_similarity);
        if !(-1.0..=1.0).contains(&min_similarity) {
            return bad(format!(
                "min_similarity must be in [-1, 1], got {min_similarity}"
            ));
        }
        let min_confidence = options
            .min_confidence
            .unwrap_or(self.config.knn_min_confidence);
        if !(0.0..=1.0).contains(&min_confidence) {
            return bad(format!(
                "min_confidence must be in [0, 1], got {min_confidence}"
            ));
        }
        if let Some(ef) = options.ef_search {
            if !(1..=1000).contains(&ef) {
                return bad(format!("ef_search must be in 1..=1000, got {ef}"));
            }
        }
        Ok(KnnParams {
            k,
            vote,
            min_similarity,
            min_confidence,
            ef_search: options.ef_search,
            splits: options.splits,
        })
    }

    /// Classifies a batch of clauses.
    pub async fn classify(
        &self,
        request: ClassifyRequest,
    ) -> Result<ClassifyResponse, OrchestratorError> {
        let strategy = Strategy::try_from(request.strategy).map_err(|_| {
            OrchestratorError::InvalidArgument(format!("unknown strategy {}", request.strategy))
        })?;
        self.validate_texts(&request.texts)?;
        let started = Instant::now();
        let mut response = match strategy {
            Strategy::Unspecified => {
                return Err(OrchestratorError::InvalidArgument(
                    "strategy must be set (knn, finetuned, cascade, rag, zero-shot)".into(),
                ))
            }
            Strategy::Knn => {
                let params = self.knn_params(request.knn)?;
                self.classify_knn(request.texts, &params).await?
            }
            Strategy::Finetuned => {
                let top_k = request.finetuned.and_then(|o| o.top_k);
                self.classify_finetuned(request.texts, top_k).await?
            }
            Strategy::Cascade => {
                let params = self.knn_params(request.knn)?;
                let threshold = request
                    .cascade
                    .and_then(|c| c.min_confidence)
                    .unwrap_or(self.config.cascade_min_confidence);
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(OrchestratorError::InvalidArgument(format!(
                        "cascade.min_confidence must be within [0, 1], got {threshold}"
                    )));
                }
                let top_k = request.finetuned.and_then(|o| o.top_k);
                self.classify_cascade(request.texts, top_k, threshold, &params)
                    .await?
            }
            Strategy::ZeroShot => {
                self.classify_prompt(request.texts, None, request.prompt)
                    .await?
            }
            Strategy::Rag => {
                let params = self.knn_params(request.knn)?;
                self.classify_prompt(request.texts, Some(&params), request.prompt)
                    .await?
            }
        };
        response.strategy = strategy as i32;
        response.latencies.push(stage("total", started.elapsed()));
        metrics::counter!("lextral_classified_total", "strategy" => strategy_name(strategy))
            .increment(response.results.len() as u64);
        metrics::histogram!("lextral_classify_duration_seconds", "strategy" => strategy_name(strategy))
            .record(started.elapsed().as_secs_f64());
        Ok(response)
    }

    async fn embed(
        &self,
        texts: Vec<String>,
    ) -> Result<Vec<lextral_proto::v1::Embedding>, OrchestratorError> {
        let count = texts.len();
        let embeddings = self
            .embedder
            .clone()
            .embed(EmbedRequest {
                texts,
                normalize: Some(true),
            })
            .await
            .map_err(OrchestratorError::downstream("embedder"))?
            .into_inner()
            .embeddings;
        expect_count("embedder", embeddings.len(), count, "vectors", "texts")?;
        Ok(embeddings)
    }

    async fn classify_knn(
        &self,
        texts: Vec<String>,
        params: &KnnParams,
    ) -> Result<ClassifyResponse, OrchestratorError> {
        let Retrieved {
            results: neighbours,
            truncated,
            mut latencies,
        } = self.retrieve(texts, params.k, params).await?;

        let started = Instant::now();
        let results = neighbours
            .into_iter()
            .zip(truncated)
            .map(|(result, truncated)| {
                let votes: Vec<(&str, f32)> = result
                    .neighbors
                    .iter()
                    .map(|n| (n.label.as_str(), n.similarity))
                    .collect();
                let outcome = knn::vote(&votes, params.vote, params.min_confidence);
                ClassificationResult {
                    label: outcome.label.unwrap_or_default(),
                    confidence: outcome.confidence,
                    abstained: outcome.abstain_reason.is_some(),
                    abstain_reason: outcome.abstain_reason.unwrap_or_default(),
                    alternatives: outcome
                        .ranking
                        .into_iter()
                        .take(5)
                        .map(|(label, score)| LabelScore { label, score })
                        .collect(),
                    neighbors: result.neighbors,
                    answered_by: Strategy::Knn as i32,
                    truncated,
                    ..Default::default()
                }
            })
            .collect();
        latencies.push(stage("vote", started.elapsed()));
        Ok(ClassifyResponse {
            results,
            latencies,
            strategy: Strategy::Knn as i32,
        })
    }

    /// Embeds `texts` and retrieves `k` neighbours for each (kNN and RAG).
    async fn retrieve(
        &self,
        texts: Vec<String>,
        k: u32,
        params: &KnnParams,
    ) -> Result<Retrieved, OrchestratorError> {
        let count = texts.len();
        let started = Instant::now();
        let embeddings = self.embed(texts).await?;
        let mut latencies = vec![stage("embed", started.elapsed())];
        let truncated = embeddings.iter().map(|e| e.truncated).collect();
        let started = Instant::now();
        let search = self
            .retriever
            .clone()
            .search(SearchRequest {
                queries: embeddings
                    .into_iter()
                    .map(|e| QueryVector { values: e.values })
                    .collect(),
                k,
                min_similarity: Some(params.min_similarity),
                splits: params.splits.clone(),
                labels: Vec::new(),
                ef_search: params.ef_search,
            })
            .await
            .map_err(OrchestratorError::downstream("retriever"))?
            .into_inner();
        latencies.push(stage("search", started.elapsed()));
        expect_count(
            "retriever",
            search.results.len(),
            count,
            "results",
            "queries",
        )?;
        Ok(Retrieved {
            results: search.results,
            truncated,
            latencies,
        })
    }

    async fn classify_finetuned(
        &self,
        texts: Vec<String>,
        top_k: Option<u32>,
    ) -> Result<ClassifyResponse, OrchestratorError> {
        if top_k == Some(0) {
            return Err(OrchestratorError::InvalidArgument(
                "finetuned.top_k must be at least 1".into(),
            ));
        }
        let count = texts.len();
        let started = Instant::now();
        let response = self
            .finetuned
            .clone()
            .classify(FinetunedClassifierServiceClassifyRequest { texts, top_k })
            .await
            .map_err(OrchestratorError::downstream("finetuned-classifier"))?
            .into_inner();
        expect_count(
            "finetuned-classifier",
            response.results.len(),
            count,
            "results",
            "texts",
        )?;
        let results = response
            .results
            .into_iter()
            .map(|r| ClassificationResult {
                label: r.label,
                confidence: r.probability,
                alternatives: r.alternatives,
                answered_by: Strategy::Finetuned as i32,
                ..Default::default()
            })
            .collect();
        Ok(ClassifyResponse {
            results,
            latencies: vec![stage("finetuned", started.elapsed())],
            strategy: Strategy::Finetuned as i32,
        })
    }

    /// Fine-tuned first; answers below `threshold` are re-classified by kNN,
    /// which answers unless it abstains. `answered_by` says who answered.
    async fn classify_cascade(
        &self,
        texts: Vec<String>,
        top_k: Option<u32>,
        threshold: f32,
        params: &KnnParams,
    ) -> Result<ClassifyResponse, OrchestratorError> {
        let mut response = self.classify_finetuned(texts.clone(), top_k).await?;
        let unsure: Vec<usize> = response
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.confidence < threshold)
            .map(|(i, _)| i)
            .collect();
        if !unsure.is_empty() {
            let fallback_texts = unsure.iter().map(|&i| texts[i].clone()).collect();
            let knn = self.classify_knn(fallback_texts, params).await?;
            for (&i, result) in unsure.iter().zip(knn.results) {
                if !result.abstained {
                    response.results[i] = result;
                }
            }
            response
                .latencies
                .extend(knn.latencies.into_iter().map(|mut l| {
                    l.stage = format!("fallback_{}", l.stage);
                    l
                }));
        }
        metrics::counter!("lextral_cascade_fallbacks_total").increment(unsure.len() as u64);
        Ok(response)
    }

    /// The label set prompts choose from: `--labels` if given, else the
    /// index's labels (cached for LABELS_TTL).
    async fn prompt_label_set(&self) -> Result<Vec<String>, OrchestratorError> {
        if let Some(labels) = &self.fixed_labels {
            return Ok(labels.clone());
        }
        if let Some((at, labels)) = self.prompt_labels.read().await.as_ref() {
            if at.elapsed() < LABELS_TTL {
                return Ok(labels.clone());
            }
        }
        let labels = self.labels().await?.labels;
        if labels.is_empty() {
            return Err(OrchestratorError::FailedPrecondition(
                "the index is empty, so there is no label set to prompt with: index labelled clauses (lextral index) or start the orchestrator with --labels labels.txt".into(),
            ));
        }
        *self.prompt_labels.write().await = Some((Instant::now(), labels.clone()));
        Ok(labels)
    }

    /// ZERO_SHOT (`rag` None) or RAG: retrieve k labelled neighbours per
    /// clause and show them to the LLM as examples.
    async fn classify_prompt(
        &self,
        texts: Vec<String>,
        rag: Option<&KnnParams>,
        options: Option<PromptOptions>,
    ) -> Result<ClassifyResponse, OrchestratorError> {
        let options = options.unwrap_or_default();
        if options.max_output_tokens == Some(0) {
            return Err(OrchestratorError::InvalidArgument(
                "max_output_tokens must be at least 1".into(),
            ));
        }
        let count = texts.len();
        let mut latencies = Vec::new();
        let labels = self.prompt_label_set().await?;
        let mut neighbors: Vec<Vec<Neighbor>> = vec![Vec::new(); count];
        let mut embed_truncated = vec![false; count];
        let (mode, strategy) = match rag {
            None => (PromptMode::ZeroShot, Strategy::ZeroShot),
            Some(params) => {
                let k = options.k.unwrap_or(self.config.rag_k);
                if k == 0 || k > MAX_RAG_K {
                    return Err(OrchestratorError::InvalidArgument(format!(
                        "RAG k must be in 1..={MAX_RAG_K}, got {k}"
                    )));
                }
                let retrieved = self.retrieve(texts.clone(), k, params).await?;
                latencies = retrieved.latencies;
                embed_truncated = retrieved.truncated;
                for (slot, result) in neighbors.iter_mut().zip(retrieved.results) {
                    if result.neighbors.is_empty() {
                        return Err(OrchestratorError::FailedPrecondition(
                            "RAG found no labelled examples: the index is empty (or min_similarity excludes every clause)".into(),
                        ));
                    }
                    *slot = result.neighbors;
                }
                (PromptMode::FewShot, Strategy::Rag)
            }
        };
        let examples = match mode {
            PromptMode::FewShot => neighbors
                .iter()
                .map(|n| FewShotExamples {
                    examples: n
                        .iter()
                        .map(|n| LabeledText {
                            text: n.text.clone(),
                            label: n.label.clone(),
                            split: n.split.clone(),
                        })
                        .collect(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let started = Instant::now();
        let response = self
            .prompt
            .clone()
            .classify(PromptClassifierServiceClassifyRequest {
                texts,
                labels,
                mode: mode as i32,
                examples,
                max_output_tokens: options.max_output_tokens,
            })
            .await
            .map_err(OrchestratorError::downstream("prompt-classifier"))?
            .into_inner();
        latencies.push(stage("llm", started.elapsed()));
        expect_count(
            "prompt-classifier",
            response.results.len(),
            count,
            "results",
            "texts",
        )?;
        let results = response
            .results
            .into_iter()
            .zip(neighbors)
            .zip(embed_truncated)
            .map(|((r, neighbors), embed_truncated)| {
                let abstained = r.label.is_empty();
                ClassificationResult {
                    abstain_reason: if abstained {
                        "the LLM answer matched no label".to_owned()
                    } else {
                        String::new()
                    },
                    confidence: r.confidence.unwrap_or(0.0),
                    abstained,
                    label: r.label,
                    neighbors,
                    answered_by: strategy as i32,
                    raw_output: r.raw_output,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost_usd: r.cost_usd,
                    truncated: r.truncated || embed_truncated,
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        let cost: f64 = results.iter().map(|r| r.cost_usd).sum();
        metrics::counter!("lextral_llm_cost_microdollars_total", "strategy" => strategy_name(strategy))
            .increment((cost * 1e6).round() as u64);
        Ok(ClassifyResponse {
            results,
            latencies,
            strategy: strategy as i32,
        })
    }

    /// The labels in the index with their counts.
    pub async fn labels(&self) -> Result<LabelsResponse, OrchestratorError> {
        let stats = self
            .retriever
            .clone()
            .stats(StatsRequest {})
            .await
            .map_err(OrchestratorError::downstream("retriever"))?
            .into_inner();
        let mut labels: Vec<String> = stats.labels.iter().map(|c| c.label.clone()).collect();
        labels.sort();
        labels.dedup();
        let counts: Vec<LabelCount> = stats.labels;
        Ok(LabelsResponse { labels, counts })
    }

    /// Embeds and stores labelled clauses.
    pub async fn ingest(
        &self,
        request: IngestRequest,
    ) -> Result<IngestResponse, OrchestratorError> {
        let IngestRequest { items } = request;
        if items.is_empty() {
            return Err(OrchestratorError::InvalidArgument(
                "items must not be empty".into(),
            ));
        }
        let texts: Vec<String> = items.iter().map(|item| item.text.clone()).collect();
        self.validate_texts(&texts)?;
        if let Some(index) = items.iter().position(|item| item.label.trim().is_empty()) {
            return Err(OrchestratorError::InvalidArgument(format!(
                "item {index} has an empty label"
            )));
        }
        let embeddings = self.embed(texts).await?;
        let truncated = embeddings.iter().filter(|e| e.truncated).count() as u32;
        let records = items
            .into_iter()
            .zip(embeddings)
            .map(
                |(LabeledText { text, label, split }, embedding)| UpsertRecord {
                    text,
                    label,
                    split,
                    embedding: embedding.values,
                },
            )
            .collect();
        let outcome = self
            .retriever
            .clone()
            .upsert(UpsertRequest { records })
            .await
            .map_err(OrchestratorError::downstream("retriever"))?
            .into_inner();
        Ok(IngestResponse {
            inserted: outcome.inserted,
            updated: outcome.updated,
            unchanged: outcome.unchanged,
            truncated,
        })
    }

    /// The server's defaults and each dependency's description; a dependency
    /// that does not answer within 5 s is named in `errors`.
    pub async fn info(&self) -> OrchestratorServiceInfoResponse {
        fn timed<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(Duration::from_secs(5));
            request
        }
        let (mut embedder, mut retriever, mut finetuned, mut prompt) = (
            self.embedder.clone(),
            self.retriever.clone(),
            self.finetuned.clone(),
            self.prompt.clone(),
        );
        let (embedder, index, finetuned, prompt) = tokio::join!(
            embedder.info(timed(lextral_proto::v1::EmbedderServiceInfoRequest {})),
            retriever.stats(timed(StatsRequest {})),
            finetuned.info(timed(
                lextral_proto::v1::FinetunedClassifierServiceInfoRequest {}
            )),
            prompt.info(timed(
                lextral_proto::v1::PromptClassifierServiceInfoRequest {}
            )),
        );
        fn keep<T>(
            errors: &mut std::collections::HashMap<String, String>,
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
        let mut errors = std::collections::HashMap::new();
        let embedder = keep(&mut errors, "embedder", embedder);
        let index = keep(&mut errors, "retriever", index);
        let finetuned = keep(&mut errors, "finetuned-classifier", finetuned);
        let prompt = keep(&mut errors, "prompt-classifier", prompt);
        let c = &self.config;
        // Flags are f32; print them as typed (0.2, not 0.20000000298).
        let num = |x: f32| -> serde_json::Value {
            x.to_string()
                .parse::<f64>()
                .map(serde_json::Value::from)
                .unwrap_or_default()
        };
        let defaults = serde_json::json!({
            "knn": {
                "k": c.knn_k,
                "vote": c.knn_vote,
                "power": num(c.knn_power),
                "temperature": num(c.knn_temperature),
                "min_similarity": num(c.knn_min_similarity),
                "min_confidence": num(c.knn_min_confidence),
            },
            "cascade": { "min_confidence": num(c.cascade_min_confidence) },
            "rag": { "k": c.rag_k },
            "labels_file": c.labels_file.as_ref().map(|p| p.display().to_string()),
        });
        OrchestratorServiceInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            defaults_json: defaults.to_string(),
            embedder,
            index,
            finetuned,
            prompt,
            errors,
        }
    }

    /// Asks each dependency's gRPC health service whether it is SERVING.
    pub async fn readiness(&self) -> Vec<DependencyStatus> {
        let checks = [
            (
                "embedder",
                "lextral.v1.EmbedderService",
                self.embedder_channel.clone(),
            ),
            (
                "retriever",
                "lextral.v1.RetrieverService",
                self.retriever_channel.clone(),
            ),
        ];
        let futures = checks
            .into_iter()
            .map(|(name, service, channel)| async move {
                let mut client = HealthClient::new(channel);
                let mut request = tonic::Request::new(HealthCheckRequest {
                    service: service.to_owned(),
                });
                request.set_timeout(Duration::from_secs(2));
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

fn stage(name: &str, elapsed: Duration) -> StageLatency {
    StageLatency {
        stage: name.to_owned(),
        ms: elapsed.as_secs_f64() * 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(labels_file: Option<std::path::PathBuf>) -> OrchestratorConfig {
        let mut config = OrchestratorConfig::with_urls("http://127.0.0.1:1", "http://127.0.0.1:1");
        config.labels_file = labels_file;
        config
    }

    #[tokio::test]
    async fn a_labels_file_is_the_prompt_label_set() {
        let dir = std::env::temp_dir().join(format!("lextral-orch-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("labels.txt");
        std::fs::write(&file, "Notices\nGoverning Laws\n").unwrap();
        // No retriever is running: the file alone answers.
        let orchestrator = Orchestrator::new(config(Some(file))).unwrap();
        assert_eq!(
            orchestrator.prompt_label_set().await.unwrap(),
            vec!["Notices", "Governing Laws"]
        );
        let err = Orchestrator::new(config(Some(dir.join("missing.txt"))))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read the label file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
