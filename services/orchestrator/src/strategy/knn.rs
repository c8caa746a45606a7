//! `knn`: embed the clauses, retrieve their nearest labelled clauses, and
//! let them vote.

use std::time::Instant;

use lextral_proto::v1::Strategy;

use crate::domain::{Classification, Classified, LabelScore, Neighbour, StageLatency};
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::KnnParams;
use crate::vote::vote;

/// Alternatives a kNN answer lists.
const ALTERNATIVES: usize = 5;

/// Neighbours per query, with the embedder's truncation flags and the
/// embed/search stage latencies.
pub(super) struct Retrieved {
    pub neighbours: Vec<Vec<Neighbour>>,
    pub truncated: Vec<bool>,
    pub latencies: Vec<StageLatency>,
}

/// Embeds `texts` and retrieves `k` neighbours for each (kNN and RAG).
pub(super) async fn retrieve(
    orchestrator: &Orchestrator,
    texts: Vec<String>,
    k: u32,
    params: &KnnParams,
) -> Result<Retrieved, OrchestratorError> {
    let started = Instant::now();
    let embeddings = orchestrator.downstream.embed(texts).await?;
    let mut latencies = vec![StageLatency::new("embed", started.elapsed())];
    let truncated = embeddings.iter().map(|e| e.truncated).collect();
    let started = Instant::now();
    let neighbours = orchestrator
        .downstream
        .search(
            embeddings.into_iter().map(|e| e.values).collect(),
            k,
            params,
        )
        .await?;
    latencies.push(StageLatency::new("search", started.elapsed()));
    Ok(Retrieved {
        neighbours,
        truncated,
        latencies,
    })
}

/// Classifies `texts` by the vote of their neighbours.
pub(super) async fn classify(
    orchestrator: &Orchestrator,
    texts: Vec<String>,
    params: &KnnParams,
) -> Result<Classified, OrchestratorError> {
    let Retrieved {
        neighbours,
        truncated,
        mut latencies,
    } = retrieve(orchestrator, texts, params.k, params).await?;
    let started = Instant::now();
    let results = neighbours
        .into_iter()
        .zip(truncated)
        .map(|(neighbours, truncated)| {
            let votes: Vec<(&str, f32)> = neighbours
                .iter()
                .map(|n| (n.label.as_str(), n.similarity))
                .collect();
            let outcome = vote(&votes, params.vote, params.min_confidence);
            let mut answer = Classification::answer(
                Strategy::Knn,
                outcome.label.unwrap_or_default(),
                outcome.confidence,
            );
            answer.abstain_reason = outcome.abstain_reason;
            answer.alternatives = outcome
                .ranking
                .into_iter()
                .take(ALTERNATIVES)
                .map(|(label, score)| LabelScore { label, score })
                .collect();
            answer.neighbours = neighbours;
            answer.truncated = truncated;
            answer
        })
        .collect();
    latencies.push(StageLatency::new("vote", started.elapsed()));
    Ok(Classified {
        strategy: Strategy::Knn,
        results,
        latencies,
        degraded: None,
    })
}
