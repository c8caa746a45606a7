//! `cascade`: fine-tuned first; answers below a probability threshold are
//! re-classified by kNN, which answers unless it abstains. `answered_by`
//! says who answered. While the fine-tuned classifier is unavailable kNN
//! answers every clause and the answer's `degraded` says so.

use lextral_common::{ServiceError, ServiceErrorCode};
use lextral_proto::v1::Strategy;

use crate::domain::Classified;
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::KnnParams;

/// Classifies `texts` by the cascade.
pub(super) async fn classify(
    orchestrator: &Orchestrator,
    texts: Vec<String>,
    top_k: Option<u32>,
    threshold: f32,
    knn: &KnnParams,
) -> Result<Classified, OrchestratorError> {
    let mut classified = match super::finetuned::classify(orchestrator, texts.clone(), top_k).await
    {
        Ok(classified) => classified,
        // While the fine-tuned classifier cannot answer (down, or its remote
        // model's circuit open) kNN answers every clause, and says so.
        Err(err) if err.error_code() == ServiceErrorCode::Unavailable => {
            tracing::warn!(error = %err, "cascade: the fine-tuned classifier is unavailable; kNN answers");
            metrics::counter!("lextral_cascade_degraded_total").increment(1);
            let mut classified = super::knn::classify(orchestrator, texts, knn).await?;
            classified.strategy = Strategy::Cascade;
            classified.degraded = Some(format!("answered by knn: {err}"));
            return Ok(classified);
        }
        Err(err) => return Err(err),
    };
    let unsure: Vec<usize> = classified
        .results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.confidence < threshold)
        .map(|(i, _)| i)
        .collect();
    if !unsure.is_empty() {
        let fallback_texts = unsure.iter().map(|&i| texts[i].clone()).collect();
        let fallback = super::knn::classify(orchestrator, fallback_texts, knn).await?;
        for (&i, result) in unsure.iter().zip(fallback.results) {
            if !result.abstained() {
                classified.results[i] = result;
            }
        }
        classified
            .latencies
            .extend(fallback.latencies.into_iter().map(|mut l| {
                l.stage = format!("fallback_{}", l.stage);
                l
            }));
    }
    metrics::counter!("lextral_cascade_fallbacks_total").increment(unsure.len() as u64);
    Ok(classified)
}
