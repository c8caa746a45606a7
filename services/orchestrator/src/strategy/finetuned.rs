//! `finetuned`: the fine-tuned classifier answers.

use std::time::Instant;

use lextral_proto::v1::Strategy;

use crate::domain::{Classification, Classified, StageLatency};
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;

/// Classifies `texts` with the fine-tuned classifier.
pub(super) async fn classify(
    orchestrator: &Orchestrator,
    texts: Vec<String>,
    top_k: Option<u32>,
) -> Result<Classified, OrchestratorError> {
    let started = Instant::now();
    let answers = orchestrator.downstream.finetuned(texts, top_k).await?;
    let results = answers
        .into_iter()
        .map(|answer| {
            let mut result =
                Classification::answer(Strategy::Finetuned, answer.label, answer.probability);
            result.alternatives = answer.alternatives;
            result
        })
        .collect();
    Ok(Classified {
        strategy: Strategy::Finetuned,
        results,
        latencies: vec![StageLatency::new("finetuned", started.elapsed())],
        degraded: None,
    })
}
