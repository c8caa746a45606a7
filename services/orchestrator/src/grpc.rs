//! The gRPC adapter for `lextral.v1.OrchestratorService`: requests into
//! domain types (every field destructured, so a new proto field is a build
//! error here until it is handled), answers back into protobuf.

use std::sync::Arc;

use lextral_common::into_status;
use lextral_proto::v1::{
    self, orchestrator_service_server::OrchestratorService, CascadeOptions, ClassificationResult,
    ClassifyRequest, ClassifyResponse, FinetunedOptions, IngestRequest, IngestResponse, KnnOptions,
    LabeledText, LabelsRequest, LabelsResponse, Neighbor, OrchestratorServiceInfoRequest,
    OrchestratorServiceInfoResponse, PromptOptions, Strategy, VoteMethod,
};
use tonic::{Request, Response, Status};

use crate::domain::{
    Classification, Classified, IngestOutcome, LabelScore, LabelSet, LabelledClause, LlmUsage,
    Neighbour, StageLatency,
};
use crate::downstream::caller_deadline;
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::{ClassifyInput, KnnInput, VoteKind};
use lextral_common::access::Who;

/// Implements `lextral.v1.OrchestratorService`.
pub struct OrchestratorGrpc {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorGrpc {
    /// Serves `orchestrator`.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

impl TryFrom<ClassifyRequest> for ClassifyInput {
    type Error = OrchestratorError;

    fn try_from(request: ClassifyRequest) -> Result<Self, Self::Error> {
        let ClassifyRequest {
            texts,
            strategy,
            knn,
            finetuned,
            prompt,
            cascade,
        } = request;
        let strategy = Strategy::try_from(strategy).map_err(|_| {
            OrchestratorError::InvalidArgument(format!("unknown strategy {strategy}"))
        })?;
        let KnnOptions {
            k,
            vote,
            power,
            temperature,
            min_similarity,
            min_confidence,
            ef_search,
            splits,
        } = knn.unwrap_or_default();
        let vote = match VoteMethod::try_from(vote) {
            Ok(VoteMethod::Unspecified) => None,
            Ok(method) => Some(VoteKind::from(method)),
            Err(_) => {
                return Err(OrchestratorError::InvalidArgument(format!(
                    "unknown vote method {vote}"
                )))
            }
        };
        let FinetunedOptions { top_k } = finetuned.unwrap_or_default();
        let PromptOptions {
            k: rag_k,
            max_output_tokens,
        } = prompt.unwrap_or_default();
        let CascadeOptions {
            min_confidence: cascade_min_confidence,
        } = cascade.unwrap_or_default();
        Ok(Self {
            texts,
            strategy,
            knn: KnnInput {
                k,
                vote,
                power,
                temperature,
                min_similarity,
                min_confidence,
                ef_search,
                splits,
            },
            top_k,
            cascade_min_confidence,
            rag_k,
            max_output_tokens,
        })
    }
}

impl From<Neighbour> for Neighbor {
    fn from(n: Neighbour) -> Self {
        let Neighbour {
            id,
            label,
            similarity,
            text,
            split,
        } = n;
        Self {
            id,
            label,
            text,
            similarity,
            split,
        }
    }
}

impl From<Neighbor> for Neighbour {
    fn from(n: Neighbor) -> Self {
        let Neighbor {
            id,
            label,
            text,
            similarity,
            split,
        } = n;
        Self {
            id,
            label,
            similarity,
            text,
            split,
        }
    }
}

impl From<LabelScore> for v1::LabelScore {
    fn from(LabelScore { label, score }: LabelScore) -> Self {
        Self { label, score }
    }
}

impl From<v1::LabelScore> for LabelScore {
    fn from(v1::LabelScore { label, score }: v1::LabelScore) -> Self {
        Self { label, score }
    }
}

impl From<StageLatency> for v1::StageLatency {
    fn from(StageLatency { stage, ms }: StageLatency) -> Self {
        Self { stage, ms }
    }
}

impl From<v1::StageLatency> for StageLatency {
    fn from(v1::StageLatency { stage, ms }: v1::StageLatency) -> Self {
        Self { stage, ms }
    }
}

impl From<Classification> for ClassificationResult {
    fn from(result: Classification) -> Self {
        let Classification {
            label,
            confidence,
            abstain_reason,
            alternatives,
            neighbours,
            answered_by,
            truncated,
            llm,
        } = result;
        Self {
            label,
            confidence,
            abstained: abstain_reason.is_some(),
            abstain_reason: abstain_reason.unwrap_or_default(),
            alternatives: alternatives.into_iter().map(v1::LabelScore::from).collect(),
            neighbors: neighbours.into_iter().map(Neighbor::from).collect(),
            answered_by: answered_by as i32,
            raw_output: llm.raw_output,
            input_tokens: llm.input_tokens,
            output_tokens: llm.output_tokens,
            cost_usd: llm.cost_usd,
            truncated,
        }
    }
}

impl From<Classified> for ClassifyResponse {
    fn from(classified: Classified) -> Self {
        let Classified {
            strategy,
            results,
            latencies,
            degraded,
        } = classified;
        Self {
            results: results
                .into_iter()
                .map(ClassificationResult::from)
                .collect(),
            latencies: latencies.into_iter().map(v1::StageLatency::from).collect(),
            strategy: strategy as i32,
            degraded: degraded.unwrap_or_default(),
        }
    }
}

/// A gRPC answer read back into domain types (the CLI prints it as the REST
/// gateway would); unknown enum numbers read as unspecified.
impl From<ClassifyResponse> for Classified {
    fn from(response: ClassifyResponse) -> Self {
        let ClassifyResponse {
            results,
            latencies,
            strategy,
            degraded,
        } = response;
        let strategy_of = |n: i32| Strategy::try_from(n).unwrap_or(Strategy::Unspecified);
        Self {
            strategy: strategy_of(strategy),
            results: results
                .into_iter()
                .map(|r| Classification {
                    label: r.label,
                    confidence: r.confidence,
                    abstain_reason: r.abstained.then_some(r.abstain_reason),
                    alternatives: r.alternatives.into_iter().map(LabelScore::from).collect(),
                    neighbours: r.neighbors.into_iter().map(Neighbour::from).collect(),
                    answered_by: strategy_of(r.answered_by),
                    truncated: r.truncated,
                    llm: LlmUsage {
                        raw_output: r.raw_output,
                        input_tokens: r.input_tokens,
                        output_tokens: r.output_tokens,
                        cost_usd: r.cost_usd,
                    },
                })
                .collect(),
            latencies: latencies.into_iter().map(StageLatency::from).collect(),
            degraded: (!degraded.is_empty()).then_some(degraded),
        }
    }
}

impl From<LabelSet> for LabelsResponse {
    fn from(set: LabelSet) -> Self {
        Self {
            labels: set.labels,
            counts: set
                .counts
                .into_iter()
                .map(|c| v1::LabelCount {
                    label: c.label,
                    split: c.split,
                    count: c.count,
                })
                .collect(),
        }
    }
}

impl From<IngestOutcome> for IngestResponse {
    fn from(outcome: IngestOutcome) -> Self {
        let IngestOutcome {
            inserted,
            updated,
            unchanged,
            truncated,
        } = outcome;
        Self {
            inserted,
            updated,
            unchanged,
            truncated,
        }
    }
}

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    #[tracing::instrument(skip_all, fields(texts = request.get_ref().texts.len(), strategy = request.get_ref().strategy))]
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let who = request.extensions().get::<Who>().cloned();
        let input = ClassifyInput::try_from(request.into_inner()).map_err(into_status)?;
        let plan = self
            .orchestrator
            .plan(input, who.as_ref())
            .map_err(status_of)?;
        let classified = by_caller_deadline(deadline, self.orchestrator.classify(plan))
            .await
            .map_err(into_status)?;
        Ok(Response::new(classified.into()))
    }

    async fn labels(
        &self,
        _request: Request<LabelsRequest>,
    ) -> Result<Response<LabelsResponse>, Status> {
        let labels = self.orchestrator.labels().await.map_err(into_status)?;
        Ok(Response::new(labels.into()))
    }

    #[tracing::instrument(skip_all, fields(items = request.get_ref().items.len()))]
    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let deadline = caller_deadline(request.metadata());
        let IngestRequest { items } = request.into_inner();
        let items = items
            .into_iter()
            .map(|LabeledText { text, label, split }| LabelledClause { text, label, split })
            .collect();
        let outcome = by_caller_deadline(deadline, self.orchestrator.ingest(items))
            .await
            .map_err(into_status)?;
        Ok(Response::new(outcome.into()))
    }

    async fn info(
        &self,
        _request: Request<OrchestratorServiceInfoRequest>,
    ) -> Result<Response<OrchestratorServiceInfoResponse>, Status> {
        Ok(Response::new(self.orchestrator.info().await))
    }
}

/// The status of an orchestrator error, with `retry-after` metadata when
/// the caller should wait (a quota).
fn status_of(err: OrchestratorError) -> Status {
    let retry_after = err.retry_after_s();
    let overloaded = err.overloaded_dependency();
    let mut status = into_status(err);
    if let Some(service) = overloaded {
        status.metadata_mut().insert(
            lextral_common::admission::OVERLOADED_HEADER,
            tonic::metadata::MetadataValue::from_static(service),
        );
    }
    if let Some(seconds) = retry_after {
        status
            .metadata_mut()
            .insert("retry-after", tonic::metadata::MetadataValue::from(seconds));
    }
    status
}

/// Runs `work` within the caller's `grpc-timeout`, when it sent one.
async fn by_caller_deadline<F: std::future::Future>(
    deadline: Option<std::time::Instant>,
    work: F,
) -> F::Output {
    match deadline {
        Some(deadline) => crate::downstream::within(deadline, work).await,
        None => work.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_and_answers_round_trip() {
        let input = ClassifyInput::try_from(ClassifyRequest {
            texts: vec!["Notices.".into()],
            strategy: Strategy::Rag as i32,
            knn: Some(KnnOptions {
                vote: VoteMethod::Softmax as i32,
                ..Default::default()
            }),
            prompt: Some(PromptOptions {
                k: Some(3),
                max_output_tokens: Some(8),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(input.strategy, Strategy::Rag);
        assert_eq!(input.knn.vote, Some(VoteKind::Softmax));
        assert_eq!((input.rag_k, input.max_output_tokens), (Some(3), Some(8)));
        let bad = ClassifyInput::try_from(ClassifyRequest {
            strategy: 99,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(bad.to_string(), "unknown strategy 99");

        let mut answer = Classification::answer(Strategy::Knn, "Notices".into(), 0.75);
        answer.abstain_reason = Some("low".into());
        let classified = Classified {
            strategy: Strategy::Cascade,
            results: vec![answer],
            latencies: vec![StageLatency {
                stage: "total".into(),
                ms: 1.5,
            }],
            degraded: Some("finetuned: circuit open".into()),
        };
        let response = ClassifyResponse::from(classified.clone());
        assert!(response.results[0].abstained);
        assert_eq!(response.results[0].answered_by, Strategy::Knn as i32);
        assert_eq!(Classified::from(response), classified);
    }
}
