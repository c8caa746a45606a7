//! `cascade`: fine-tuned first; answers below a probability threshold are
//! re-classified by kNN, which answers unless it abstains. `answered_by`
//! says who answered.

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
    let mut classified = super::finetuned::classify(orchestrator, texts.clone(), top_k).await?;
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
