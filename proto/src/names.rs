//! The user-facing names of strategies and vote methods, beside the enums
//! they name, so the REST gateway, the CLI and the metrics all use exactly
//! the same words.

use crate::v1::{Strategy, VoteMethod};

/// Every strategy name, in documentation order.
pub const STRATEGY_NAMES: &[&str] = &["knn", "finetuned", "cascade", "rag", "zero-shot"];

/// Parses a strategy name (`zero_shot` is accepted for `zero-shot`).
pub fn parse_strategy(name: &str) -> Result<Strategy, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "knn" => Ok(Strategy::Knn),
        "finetuned" | "fine-tuned" => Ok(Strategy::Finetuned),
        "cascade" => Ok(Strategy::Cascade),
        "rag" => Ok(Strategy::Rag),
        "zero-shot" | "zero_shot" | "zeroshot" => Ok(Strategy::ZeroShot),
        _ => Err(format!(
            "unknown strategy {name:?}; expected one of {}",
            STRATEGY_NAMES.join(", ")
        )),
    }
}

/// The name of a strategy.
pub fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Unspecified => "unspecified",
        Strategy::Knn => "knn",
        Strategy::Finetuned => "finetuned",
        Strategy::Cascade => "cascade",
        Strategy::Rag => "rag",
        Strategy::ZeroShot => "zero-shot",
    }
}

/// Parses a vote method name.
pub fn parse_vote(name: &str) -> Result<VoteMethod, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "weighted" => Ok(VoteMethod::Weighted),
        "softmax" => Ok(VoteMethod::Softmax),
        "majority" => Ok(VoteMethod::Majority),
        _ => Err(format!(
            "unknown vote {name:?}; expected weighted, softmax or majority"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_name_parses_and_round_trips() {
        for name in STRATEGY_NAMES {
            let strategy = parse_strategy(name).unwrap();
            assert_eq!(strategy_name(strategy), *name);
        }
        assert!(parse_strategy("telepathy")
            .unwrap_err()
            .contains("knn, finetuned"));
        assert_eq!(parse_vote("Softmax"), Ok(VoteMethod::Softmax));
        assert!(parse_vote("loudest").is_err());
    }
}
