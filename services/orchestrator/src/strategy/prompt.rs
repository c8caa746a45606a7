//! `zero-shot` and `rag`: an LLM chooses from the label set, shown the
//! clause alone or with its nearest labelled clauses as examples.

use std::time::Instant;

use lextral_proto::names::strategy_name;
use lextral_proto::v1::Strategy;

use crate::domain::{Classification, Classified, LlmUsage, Neighbour, StageLatency};
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::KnnParams;

/// Classifies `texts` zero-shot (`rag` None) or with `k` retrieved examples
/// each (`rag` = `(k, retrieval)`).
pub(super) async fn classify(
    orchestrator: &Orchestrator,
    texts: Vec<String>,
    rag: Option<(u32, &KnnParams)>,
    max_output_tokens: Option<u32>,
) -> Result<Classified, OrchestratorError> {
    let count = texts.len();
    let mut latencies = Vec::new();
    let labels = orchestrator.prompt_label_set().await?;
    let mut examples: Vec<Vec<Neighbour>> = vec![Vec::new(); count];
    let mut embed_truncated = vec![false; count];
    let strategy = match rag {
        None => Strategy::ZeroShot,
        Some((k, retrieval)) => {
            let retrieved = super::knn::retrieve(orchestrator, texts.clone(), k, retrieval).await?;
            latencies = retrieved.latencies;
            embed_truncated = retrieved.truncated;
            for (slot, neighbours) in examples.iter_mut().zip(retrieved.neighbours) {
                if neighbours.is_empty() {
                    return Err(OrchestratorError::FailedPrecondition(
                        "RAG found no labelled examples: the index is empty (or min_similarity excludes every clause)".into(),
                    ));
                }
                *slot = neighbours;
            }
            Strategy::Rag
        }
    };
    let started = Instant::now();
    let few_shot = (strategy == Strategy::Rag).then_some(examples.as_slice());
    let answers = orchestrator
        .downstream
        .prompt(texts, labels, few_shot, max_output_tokens)
        .await?;
    latencies.push(StageLatency::new("llm", started.elapsed()));
    let results: Vec<Classification> = answers
        .into_iter()
        .zip(examples)
        .zip(embed_truncated)
        .map(|((answer, neighbours), embed_truncated)| {
            let abstained = answer.label.is_empty();
            let mut result =
                Classification::answer(strategy, answer.label, answer.confidence.unwrap_or(0.0));
            result.abstain_reason = abstained.then(|| "the LLM answer matched no label".to_owned());
            result.neighbours = neighbours;
            result.truncated = answer.truncated || embed_truncated;
            result.llm = LlmUsage {
                raw_output: answer.raw_output,
                input_tokens: answer.input_tokens,
                output_tokens: answer.output_tokens,
                cost_usd: answer.cost_usd,
            };
            result
        })
        .collect();
    let cost: f64 = results.iter().map(|r| r.llm.cost_usd).sum();
    metrics::counter!("lextral_llm_cost_microdollars_total", "strategy" => strategy_name(strategy))
        .increment((cost * 1e6).round() as u64);
    Ok(Classified {
        strategy,
        results,
        latencies,
        degraded: None,
    })
}
