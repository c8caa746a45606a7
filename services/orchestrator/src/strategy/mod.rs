//! The strategies, one module each, each turning a plan into answers.
//!
//! A new strategy is a variant of `plan::StrategyPlan` (with its checks in
//! `ClassifyPlan::new`), a module here, an arm in [`run`] and a line in
//! [`STRATEGY_NEEDS`], and its name in `lextral_proto::names` (see
//! CONTRIBUTING.md).

mod cascade;
mod finetuned;
mod knn;
mod prompt;

use std::time::Instant;

use crate::domain::{Classified, DependencyStatus, StageLatency};
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::{ClassifyPlan, StrategyPlan};

/// The dependencies each strategy needs to answer.
pub const STRATEGY_NEEDS: &[(&str, &[&str])] = &[
    ("knn", &["embedder", "retriever"]),
    ("finetuned", &["finetuned-classifier"]),
    (
        "cascade",
        &["finetuned-classifier", "embedder", "retriever"],
    ),
    ("rag", &["embedder", "retriever", "prompt-classifier"]),
    ("zero-shot", &["prompt-classifier"]),
];

/// Which strategies can answer now: per strategy `Ok(())` or the missing
/// dependencies, named with what they said.
pub fn strategy_readiness(
    statuses: &[DependencyStatus],
) -> Vec<(&'static str, Result<(), String>)> {
    STRATEGY_NEEDS
        .iter()
        .map(|(strategy, needs)| {
            let missing: Vec<String> = needs
                .iter()
                .filter_map(|need| match statuses.iter().find(|s| s.name == *need) {
                    Some(status) if status.ready => None,
                    Some(status) => Some(format!("{need}: {}", status.detail)),
                    None => Some(format!("{need}: not checked")),
                })
                .collect();
            let answer = if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("; "))
            };
            (*strategy, answer)
        })
        .collect()
}

/// Runs `plan`'s strategy; the answer carries the total latency last.
pub(crate) async fn run(
    orchestrator: &Orchestrator,
    plan: ClassifyPlan,
) -> Result<Classified, OrchestratorError> {
    let ClassifyPlan { texts, strategy } = plan;
    let started = Instant::now();
    let requested = strategy.strategy();
    let mut classified = match strategy {
        StrategyPlan::Knn(params) => knn::classify(orchestrator, texts, &params).await?,
        StrategyPlan::Finetuned { top_k } => {
            finetuned::classify(orchestrator, texts, top_k).await?
        }
        StrategyPlan::Cascade {
            top_k,
            min_confidence,
            knn,
        } => cascade::classify(orchestrator, texts, top_k, min_confidence, &knn).await?,
        StrategyPlan::ZeroShot { max_output_tokens } => {
            prompt::classify(orchestrator, texts, None, max_output_tokens).await?
        }
        StrategyPlan::Rag {
            k,
            retrieval,
            max_output_tokens,
        } => {
            prompt::classify(
                orchestrator,
                texts,
                Some((k, &retrieval)),
                max_output_tokens,
            )
            .await?
        }
    };
    classified.strategy = requested;
    classified
        .latencies
        .push(StageLatency::new("total", started.elapsed()));
    Ok(classified)
}
