//! The orchestrator: runs a checked [`ClassifyPlan`] through the downstream
//! services, stores labelled clauses, and describes the stack. gRPC and REST
//! both call it with domain types.

use std::time::{Duration, Instant};

use lextral_common::access::Who;
use lextral_common::quota::QuotaClass;
use lextral_common::Access;
use lextral_proto::names::strategy_name;

use crate::config::OrchestratorConfig;
use crate::domain::{Classified, DependencyStatus, IngestOutcome, LabelSet, LabelledClause};
use crate::downstream::{within, Downstream};
use crate::error::OrchestratorError;
use crate::plan::{default_vote, text_limits, ClassifyInput, ClassifyPlan, StrategyPlan, VoteKind};
use crate::strategy;

/// How long the index's label list is reused for prompts.
const LABELS_TTL: Duration = Duration::from_secs(30);

/// Composes the services per strategy.
pub struct Orchestrator {
    pub(crate) downstream: Downstream,
    /// Label set for prompts from `--labels`, read once at start-up.
    fixed_labels: Option<Vec<String>>,
    /// Otherwise the index's labels, refreshed every LABELS_TTL.
    prompt_labels: tokio::sync::RwLock<Option<(Instant, Vec<String>)>>,
    pub(crate) config: OrchestratorConfig,
    default_vote: VoteKind,
    access: Access,
}

impl Orchestrator {
    /// Creates clients for the configured downstream services; open to all
    /// callers (tests, embedded use).
    pub fn new(config: OrchestratorConfig) -> anyhow::Result<Self> {
        Self::with_access(config, Access::open())
    }

    /// Creates the orchestrator admitting REST calls by `access` and sending
    /// its peer key downstream.
    pub fn with_access(config: OrchestratorConfig, access: Access) -> anyhow::Result<Self> {
        let default_vote = default_vote(&config).map_err(anyhow::Error::msg)?;
        crate::http::check_cors(&config.cors_allow_origin)?;
        Ok(Self {
            downstream: Downstream::new(&config, &access)?,
            fixed_labels: config
                .labels_file
                .as_deref()
                .map(lextral_common::labels::read_label_file)
                .transpose()?,
            prompt_labels: tokio::sync::RwLock::new(None),
            config,
            default_vote,
            access,
        })
    }

    /// Who may call the gateway, and how many calls it takes at once.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The configuration.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// Checks a request against this server's limits and defaults, and a
    /// prompt strategy against `who`'s LLM quota.
    pub fn plan(
        &self,
        input: ClassifyInput,
        who: Option<&Who>,
    ) -> Result<ClassifyPlan, OrchestratorError> {
        let plan = ClassifyPlan::new(input, &self.config, self.default_vote)?;
        if let (Some(who), StrategyPlan::Rag { .. } | StrategyPlan::ZeroShot { .. }) =
            (who, &plan.strategy)
        {
            self.access.charge(who, Some(QuotaClass::Llm))?;
        }
        Ok(plan)
    }

    /// Classifies a batch of clauses.
    pub async fn classify(&self, plan: ClassifyPlan) -> Result<Classified, OrchestratorError> {
        let started = Instant::now();
        let classified = within(self.deadline(), strategy::run(self, plan)).await?;
        let name = strategy_name(classified.strategy);
        metrics::counter!("lextral_classified_total", "strategy" => name)
            .increment(classified.results.len() as u64);
        metrics::histogram!("lextral_classify_duration_seconds", "strategy" => name)
            .record(started.elapsed().as_secs_f64());
        Ok(classified)
    }

    /// The label set prompts choose from: `--labels` if given, else the
    /// index's labels (cached for LABELS_TTL).
    pub(crate) async fn prompt_label_set(&self) -> Result<Vec<String>, OrchestratorError> {
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

    /// The labels in the index with their counts.
    pub async fn labels(&self) -> Result<LabelSet, OrchestratorError> {
        within(self.deadline(), self.downstream.labels()).await
    }

    /// When a request starting now must be answered by.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout()
    }

    /// Embeds and stores labelled clauses.
    pub async fn ingest(
        &self,
        items: Vec<LabelledClause>,
    ) -> Result<IngestOutcome, OrchestratorError> {
        within(self.deadline(), self.ingest_now(items)).await
    }

    async fn ingest_now(
        &self,
        items: Vec<LabelledClause>,
    ) -> Result<IngestOutcome, OrchestratorError> {
        if items.is_empty() {
            return Err(OrchestratorError::InvalidArgument(
                "items must not be empty".into(),
            ));
        }
        let texts: Vec<String> = items.iter().map(|item| item.text.clone()).collect();
        text_limits(&self.config).check(&texts)?;
        if let Some(index) = items.iter().position(|item| item.label.trim().is_empty()) {
            return Err(OrchestratorError::InvalidArgument(format!(
                "item {index} has an empty label"
            )));
        }
        let embeddings = self.downstream.embed(texts).await?;
        let truncated = embeddings.iter().filter(|e| e.truncated).count() as u32;
        let clauses = items
            .into_iter()
            .zip(embeddings)
            .map(|(item, embedding)| (item, embedding.values))
            .collect();
        let (inserted, updated, unchanged) = self.downstream.upsert(clauses).await?;
        Ok(IngestOutcome {
            inserted,
            updated,
            unchanged,
            truncated,
        })
    }

    /// The server's defaults and each dependency's description.
    pub async fn info(&self) -> lextral_proto::v1::OrchestratorServiceInfoResponse {
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
        self.downstream.info(defaults.to_string()).await
    }

    /// Whether each dependency reports SERVING.
    pub async fn readiness(&self) -> Vec<DependencyStatus> {
        self.downstream.readiness().await
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labels.txt");
        std::fs::write(&file, "Notices\nGoverning Laws\n").unwrap();
        // No retriever is running: the file alone answers.
        let orchestrator = Orchestrator::new(config(Some(file))).unwrap();
        assert_eq!(
            orchestrator.prompt_label_set().await.unwrap(),
            vec!["Notices", "Governing Laws"]
        );
        let err = Orchestrator::new(config(Some(dir.path().join("missing.txt"))))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read the label file"), "{err}");
    }
}
