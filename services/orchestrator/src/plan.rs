//! What a classify request asks for, validated once for both protocols.
//!
//! gRPC (`grpc.rs`) and REST (`http.rs`) each convert their request into a
//! [`ClassifyInput`] (names and enum numbers decoded, nothing else checked);
//! [`ClassifyPlan::new`] then fills in the server's defaults and checks every
//! value, so both protocols accept and refuse exactly the same requests with
//! the same messages.

use lextral_common::TextLimits;
use lextral_proto::v1::Strategy;

use crate::config::OrchestratorConfig;
use crate::error::OrchestratorError;
use crate::vote::Vote;

/// Largest k a kNN request may ask for (the retriever's limit).
pub use lextral_proto::MAX_SEARCH_K as MAX_K;

/// Largest number of RAG examples per clause.
pub const MAX_RAG_K: u32 = 32;
/// The ceiling on `max_output_tokens` at the gateway; the prompt
/// classifier's own `--llm-max-output-tokens-limit` (256 by default) is lower.
pub const MAX_OUTPUT_TOKENS: u32 = 4096;
/// Alternatives a fine-tuned answer may list (label sets are smaller).
pub const MAX_TOP_K: u32 = 1000;
/// Weighted-vote exponents accepted: below it every neighbour weighs the
/// same (and tiny values underflow to 0 in f32), above it only the first.
pub const POWER_RANGE: std::ops::RangeInclusive<f32> = 0.001..=1000.0;
/// Softmax temperatures accepted, for the same reasons.
pub const TEMPERATURE_RANGE: std::ops::RangeInclusive<f32> = 0.0001..=100.0;

/// A vote method by name, before its parameters are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteKind {
    /// similarity^power.
    Weighted,
    /// exp(similarity / temperature).
    Softmax,
    /// One vote each.
    Majority,
}

/// kNN options as sent: absent fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnnInput {
    /// Neighbours to retrieve.
    pub k: Option<u32>,
    /// Vote method.
    pub vote: Option<VoteKind>,
    /// Weighted-vote exponent.
    pub power: Option<f32>,
    /// Softmax temperature.
    pub temperature: Option<f32>,
    /// Similarity floor for voters.
    pub min_similarity: Option<f32>,
    /// Abstain below this vote share.
    pub min_confidence: Option<f32>,
    /// Search breadth.
    pub ef_search: Option<u32>,
    /// Only neighbours from these splits vote.
    pub splits: Vec<String>,
}

/// A classify request as sent, decoded but not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyInput {
    /// The clauses.
    pub texts: Vec<String>,
    /// The strategy (`Unspecified` is refused by the plan).
    pub strategy: Strategy,
    /// kNN options (kNN, cascade, RAG).
    pub knn: KnnInput,
    /// Fine-tuned alternatives (finetuned, cascade).
    pub top_k: Option<u32>,
    /// Cascade threshold.
    pub cascade_min_confidence: Option<f32>,
    /// RAG examples per clause.
    pub rag_k: Option<u32>,
    /// Cap on generated tokens (prompt strategies).
    pub max_output_tokens: Option<u32>,
}

/// Resolved kNN parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnParams {
    /// Neighbours to retrieve.
    pub k: u32,
    /// How they vote.
    pub vote: Vote,
    /// Similarity floor for voters.
    pub min_similarity: f32,
    /// Abstain below this vote share.
    pub min_confidence: f32,
    /// Search breadth; `None` takes the retriever's default.
    pub ef_search: Option<u32>,
    /// Only neighbours from these splits vote (empty: all).
    pub splits: Vec<String>,
}

/// Each strategy with exactly the parameters it runs with.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategyPlan {
    /// Neighbours vote.
    Knn(KnnParams),
    /// The fine-tuned classifier answers.
    Finetuned {
        /// Alternatives to return.
        top_k: Option<u32>,
    },
    /// Fine-tuned first, kNN below the threshold.
    Cascade {
        /// Alternatives to return.
        top_k: Option<u32>,
        /// Fine-tuned answers below this probability fall back.
        min_confidence: f32,
        /// The fallback's parameters.
        knn: KnnParams,
    },
    /// The LLM with the label list.
    ZeroShot {
        /// Cap on generated tokens.
        max_output_tokens: Option<u32>,
    },
    /// The LLM with retrieved examples.
    Rag {
        /// Examples per clause.
        k: u32,
        /// How examples are retrieved (similarity floor, splits, breadth).
        retrieval: KnnParams,
        /// Cap on generated tokens.
        max_output_tokens: Option<u32>,
    },
}

impl StrategyPlan {
    /// The strategy this plan runs.
    pub fn strategy(&self) -> Strategy {
        match self {
            Self::Knn(_) => Strategy::Knn,
            Self::Finetuned { .. } => Strategy::Finetuned,
            Self::Cascade { .. } => Strategy::Cascade,
            Self::ZeroShot { .. } => Strategy::ZeroShot,
            Self::Rag { .. } => Strategy::Rag,
        }
    }
}

/// A checked classify request.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyPlan {
    /// The clauses, within the request limits.
    pub texts: Vec<String>,
    /// What runs on them.
    pub strategy: StrategyPlan,
}

fn bad<T>(message: String) -> Result<T, OrchestratorError> {
    Err(OrchestratorError::InvalidArgument(message))
}

/// The orchestrator's limits on the texts of a request.
pub fn text_limits(config: &OrchestratorConfig) -> TextLimits {
    TextLimits {
        max_texts: config.max_texts,
        max_text_bytes: config.max_text_bytes,
        refuse_blank: true,
    }
}

/// The configured default vote method (checked at start-up).
pub fn default_vote(config: &OrchestratorConfig) -> Result<VoteKind, String> {
    lextral_proto::names::parse_vote(&config.knn_vote).map(VoteKind::from)
}

impl From<lextral_proto::v1::VoteMethod> for VoteKind {
    fn from(method: lextral_proto::v1::VoteMethod) -> Self {
        use lextral_proto::v1::VoteMethod;
        match method {
            VoteMethod::Weighted | VoteMethod::Unspecified => Self::Weighted,
            VoteMethod::Softmax => Self::Softmax,
            VoteMethod::Majority => Self::Majority,
        }
    }
}

impl KnnInput {
    /// Fills in `config`'s defaults and checks each value.
    pub fn resolve(
        self,
        config: &OrchestratorConfig,
        default_vote: VoteKind,
    ) -> Result<KnnParams, OrchestratorError> {
        let k = self.k.unwrap_or(config.knn_k);
        if k == 0 || k > MAX_K {
            return bad(format!("k must be in 1..={MAX_K}, got {k}"));
        }
        // Both are checked when given, whichever vote uses them.
        if let Some(power) = self.power.filter(|p| !POWER_RANGE.contains(p)) {
            return bad(format!(
                "power must be a positive number in [{}, {}], got {power}",
                POWER_RANGE.start(),
                POWER_RANGE.end()
            ));
        }
        if let Some(temperature) = self.temperature.filter(|t| !TEMPERATURE_RANGE.contains(t)) {
            return bad(format!(
                "temperature must be a positive number in [{}, {}], got {temperature}",
                TEMPERATURE_RANGE.start(),
                TEMPERATURE_RANGE.end()
            ));
        }
        let vote = match self.vote.unwrap_or(default_vote) {
            VoteKind::Weighted => {
                let power = self.power.unwrap_or(config.knn_power);
                if !(POWER_RANGE.contains(&power)) {
                    return bad(format!(
                        "power must be a positive number in [{}, {}], got {power}",
                        POWER_RANGE.start(),
                        POWER_RANGE.end()
                    ));
                }
                Vote::Weighted { power }
            }
            VoteKind::Softmax => {
                let temperature = self.temperature.unwrap_or(config.knn_temperature);
                if !(TEMPERATURE_RANGE.contains(&temperature)) {
                    return bad(format!(
                        "temperature must be a positive number in [{}, {}], got {temperature}",
                        TEMPERATURE_RANGE.start(),
                        TEMPERATURE_RANGE.end()
                    ));
                }
                Vote::Softmax { temperature }
            }
            VoteKind::Majority => Vote::Majority,
        };
        let min_similarity = self.min_similarity.unwrap_or(config.knn_min_similarity);
        if !(-1.0..=1.0).contains(&min_similarity) {
            return bad(format!(
                "min_similarity must be in [-1, 1], got {min_similarity}"
            ));
        }
        let min_confidence = self.min_confidence.unwrap_or(config.knn_min_confidence);
        if !(0.0..=1.0).contains(&min_confidence) {
            return bad(format!(
                "min_confidence must be in [0, 1], got {min_confidence}"
            ));
        }
        if let Some(ef) = self.ef_search {
            if !(1..=1000).contains(&ef) {
                return bad(format!("ef_search must be in 1..=1000, got {ef}"));
            }
        }
        Ok(KnnParams {
            k,
            vote,
            min_similarity,
            min_confidence,
            ef_search: self.ef_search,
            splits: self.splits,
        })
    }
}

fn check_top_k(top_k: Option<u32>) -> Result<Option<u32>, OrchestratorError> {
    if top_k == Some(0) {
        return bad("finetuned.top_k must be at least 1".into());
    }
    if let Some(top_k) = top_k.filter(|&k| k > MAX_TOP_K) {
        return bad(format!(
            "finetuned.top_k must be at most {MAX_TOP_K}, got {top_k}"
        ));
    }
    Ok(top_k)
}

fn check_max_output_tokens(tokens: Option<u32>) -> Result<Option<u32>, OrchestratorError> {
    if tokens == Some(0) {
        return bad("max_output_tokens must be at least 1".into());
    }
    if let Some(tokens) = tokens.filter(|&t| t > MAX_OUTPUT_TOKENS) {
        return bad(format!(
            "max_output_tokens must be at most {MAX_OUTPUT_TOKENS}, got {tokens}"
        ));
    }
    Ok(tokens)
}

impl ClassifyPlan {
    /// Checks `input` against `config`'s limits and fills in its defaults.
    pub fn new(
        input: ClassifyInput,
        config: &OrchestratorConfig,
        default_vote: VoteKind,
    ) -> Result<Self, OrchestratorError> {
        let ClassifyInput {
            texts,
            strategy,
            knn,
            top_k,
            cascade_min_confidence,
            rag_k,
            max_output_tokens,
        } = input;
        text_limits(config).check(&texts)?;
        if strategy == Strategy::Unspecified {
            return bad("strategy must be set (knn, finetuned, cascade, rag, zero-shot)".into());
        }
        // Every option given is checked, whichever strategy reads it: a bad
        // value is a mistake even where it would be ignored.
        let knn = knn.resolve(config, default_vote)?;
        let top_k = check_top_k(top_k)?;
        let max_output_tokens = check_max_output_tokens(max_output_tokens)?;
        let min_confidence = cascade_min_confidence.unwrap_or(config.cascade_min_confidence);
        if !(0.0..=1.0).contains(&min_confidence) {
            return bad(format!(
                "cascade.min_confidence must be within [0, 1], got {min_confidence}"
            ));
        }
        let strategy = match strategy {
            Strategy::Unspecified => unreachable!("refused above"),
            Strategy::Knn => StrategyPlan::Knn(knn),
            Strategy::Finetuned => StrategyPlan::Finetuned { top_k },
            Strategy::Cascade => StrategyPlan::Cascade {
                top_k,
                min_confidence,
                knn,
            },
            Strategy::ZeroShot => StrategyPlan::ZeroShot { max_output_tokens },
            Strategy::Rag => {
                let retrieval = knn;
                let k = rag_k.unwrap_or(config.rag_k);
                if k == 0 || k > MAX_RAG_K {
                    return bad(format!("RAG k must be in 1..={MAX_RAG_K}, got {k}"));
                }
                StrategyPlan::Rag {
                    k,
                    retrieval,
                    max_output_tokens,
                }
            }
        };
        Ok(Self { texts, strategy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OrchestratorConfig {
        OrchestratorConfig::with_urls("http://127.0.0.1:1", "http://127.0.0.1:1")
    }

    fn input(strategy: Strategy) -> ClassifyInput {
        ClassifyInput {
            texts: vec!["Notices shall be in writing.".into()],
            strategy,
            knn: KnnInput::default(),
            top_k: None,
            cascade_min_confidence: None,
            rag_k: None,
            max_output_tokens: None,
        }
    }

    fn refused(input: ClassifyInput) -> String {
        ClassifyPlan::new(input, &config(), VoteKind::Weighted)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let c = config();
        let plan = ClassifyPlan::new(input(Strategy::Cascade), &c, VoteKind::Weighted).unwrap();
        let StrategyPlan::Cascade {
            min_confidence,
            knn,
            top_k,
        } = plan.strategy
        else {
            panic!("{plan:?}");
        };
        assert_eq!(min_confidence, c.cascade_min_confidence);
        assert_eq!(knn.k, c.knn_k);
        assert_eq!(knn.vote, Vote::Weighted { power: c.knn_power });
        assert_eq!(top_k, None);
        let rag = ClassifyPlan::new(input(Strategy::Rag), &c, VoteKind::Softmax).unwrap();
        assert!(matches!(rag.strategy, StrategyPlan::Rag { k, .. } if k == c.rag_k));
        assert_eq!(rag.strategy.strategy(), Strategy::Rag);
    }

    #[test]
    fn each_bad_value_is_named() {
        let mut no_texts = input(Strategy::Knn);
        no_texts.texts.clear();
        assert_eq!(refused(no_texts), "texts must not be empty");
        assert!(refused(input(Strategy::Unspecified)).contains("strategy must be set"));
        let mut k = input(Strategy::Knn);
        k.knn.k = Some(0);
        assert_eq!(refused(k), "k must be in 1..=100, got 0");
        let mut power = input(Strategy::Knn);
        power.knn.power = Some(-1.0);
        assert!(refused(power).contains("power must be a positive number"));
        let mut temperature = input(Strategy::Knn);
        temperature.knn.vote = Some(VoteKind::Softmax);
        temperature.knn.temperature = Some(0.0);
        assert!(refused(temperature).contains("temperature must be a positive number"));
        let mut ef = input(Strategy::Knn);
        ef.knn.ef_search = Some(5000);
        assert!(refused(ef).contains("ef_search must be in 1..=1000"));
        let mut top_k = input(Strategy::Finetuned);
        top_k.top_k = Some(0);
        assert_eq!(refused(top_k), "finetuned.top_k must be at least 1");
        let mut threshold = input(Strategy::Cascade);
        threshold.cascade_min_confidence = Some(2.0);
        assert!(refused(threshold).contains("cascade.min_confidence must be within [0, 1]"));
        let mut tokens = input(Strategy::ZeroShot);
        tokens.max_output_tokens = Some(0);
        assert_eq!(refused(tokens), "max_output_tokens must be at least 1");
        let mut rag_k = input(Strategy::Rag);
        rag_k.rag_k = Some(33);
        assert_eq!(refused(rag_k), "RAG k must be in 1..=32, got 33");
    }
}
