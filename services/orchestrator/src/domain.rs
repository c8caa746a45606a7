//! What the orchestrator answers, in its own types: the strategies produce
//! them, and `grpc.rs` and `http.rs` convert them for their protocol.

use std::time::Duration;

use lextral_proto::v1::Strategy;

/// A label with a score (kNN vote share, fine-tuned probability).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its score.
    pub score: f32,
}

/// A stored clause retrieved as a neighbour, the evidence behind a kNN or
/// RAG answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// Store id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// The clause text.
    pub text: String,
    /// Its split.
    pub split: String,
}

/// What an LLM call cost and said (prompt strategies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmUsage {
    /// The LLM's raw answer.
    pub raw_output: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
}

/// The answer for one clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Predicted label; empty when abstained.
    pub label: String,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// Why the strategy declined to answer; `None` when it answered.
    pub abstain_reason: Option<String>,
    /// Best labels, best first.
    pub alternatives: Vec<LabelScore>,
    /// Neighbours considered.
    pub neighbours: Vec<Neighbour>,
    /// The strategy that produced the label (cascade: fine-tuned or kNN).
    pub answered_by: Strategy,
    /// Whether the clause was truncated on the way.
    pub truncated: bool,
    /// Prompt strategies: the LLM's answer and usage.
    pub llm: LlmUsage,
}

impl Classification {
    /// An answer by `answered_by` with nothing else set.
    pub fn answer(answered_by: Strategy, label: String, confidence: f32) -> Self {
        Self {
            label,
            confidence,
            abstain_reason: None,
            alternatives: Vec::new(),
            neighbours: Vec::new(),
            answered_by,
            truncated: false,
            llm: LlmUsage::default(),
        }
    }

    /// Whether the strategy declined to answer.
    pub fn abstained(&self) -> bool {
        self.abstain_reason.is_some()
    }
}

/// How long one stage of a request took.
#[derive(Debug, Clone, PartialEq)]
pub struct StageLatency {
    /// The stage: embed, search, vote, finetuned, llm, fallback_*, total.
    pub stage: String,
    /// Milliseconds.
    pub ms: f64,
}

impl StageLatency {
    /// `elapsed` as the latency of `stage`.
    pub fn new(stage: impl Into<String>, elapsed: Duration) -> Self {
        Self {
            stage: stage.into(),
            ms: elapsed.as_secs_f64() * 1000.0,
        }
    }
}

/// The answer to a classify request.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// The strategy requested.
    pub strategy: Strategy,
    /// One per text, in order.
    pub results: Vec<Classification>,
    /// Per stage.
    pub latencies: Vec<StageLatency>,
    /// Why the answer came another way than asked, when it did.
    pub degraded: Option<String>,
}

/// Stored clauses of one label in one split.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelCount {
    /// The label.
    pub label: String,
    /// The split.
    pub split: String,
    /// How many.
    pub count: u64,
}

/// The label set of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    /// Distinct labels, sorted.
    pub labels: Vec<String>,
    /// Counts per label and split.
    pub counts: Vec<LabelCount>,
}

/// A labelled clause to store.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledClause {
    /// The clause.
    pub text: String,
    /// Its label.
    pub label: String,
    /// Its split (empty: the retriever's default).
    pub split: String,
}

/// What an ingest stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// New clauses.
    pub inserted: u32,
    /// Clauses whose label changed.
    pub updated: u32,
    /// Clauses stored already as they are.
    pub unchanged: u32,
    /// Clauses truncated by the embedder.
    pub truncated: u32,
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
