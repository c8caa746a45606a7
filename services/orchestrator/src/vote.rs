//! kNN voting: turns retrieved neighbours into a label, a confidence and
//! ranked alternatives, or an abstention.

use std::collections::HashMap;

/// How neighbours vote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Vote {
    /// similarity^power per neighbour.
    Weighted { power: f32 },
    /// exp(similarity / temperature) per neighbour.
    Softmax { temperature: f32 },
    /// One vote per neighbour.
    Majority,
}

/// The outcome for one clause.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteOutcome {
    /// Winning label, or `None` when abstaining.
    pub label: Option<String>,
    /// The winner's share of all votes, in [0, 1].
    pub confidence: f32,
    /// Labels with their vote shares, best first.
    pub ranking: Vec<(String, f32)>,
    /// Why the vote abstained.
    pub abstain_reason: Option<String>,
}

impl Vote {
    fn weight(self, similarity: f32, best_similarity: f32) -> f64 {
        match self {
            // Negative similarities carry no evidence; a tiny floor keeps a
            // vote possible when every neighbour is that far away. Relative
            // to the best, so the best weighs 1 and a high power cannot
            // underflow every weight to 0 (shares are scale-free).
            Vote::Weighted { power } => {
                let best = f64::from(best_similarity.max(1e-6));
                (f64::from(similarity.max(1e-6)) / best).powf(f64::from(power))
            }
            // Shifting by the best similarity avoids overflow at low temperatures.
            Vote::Softmax { temperature } => {
                (f64::from(similarity - best_similarity) / f64::from(temperature.max(1e-6))).exp()
            }
            Vote::Majority => 1.0,
        }
    }
}

/// Votes over `(label, similarity)` neighbours, most similar first.
/// Ties go to the label whose closest neighbour is closer, then by name, so
/// results are deterministic.
pub fn vote(neighbors: &[(&str, f32)], method: Vote, min_confidence: f32) -> VoteOutcome {
    if neighbors.is_empty() {
        return VoteOutcome {
            label: None,
            confidence: 0.0,
            ranking: Vec::new(),
            abstain_reason: Some("no neighbour passed the similarity threshold".to_owned()),
        };
    }
    let best_similarity = neighbors
        .iter()
        .map(|(_, s)| *s)
        .fold(f32::NEG_INFINITY, f32::max);
    // label -> (score, closest similarity)
    let mut scores: HashMap<&str, (f64, f32)> = HashMap::new();
    for &(label, similarity) in neighbors {
        let entry = scores.entry(label).or_insert((0.0, f32::NEG_INFINITY));
        entry.0 += method.weight(similarity, best_similarity);
        entry.1 = entry.1.max(similarity);
    }
    let total: f64 = scores.values().map(|(score, _)| score).sum();
    let mut ranked: Vec<(&str, f64, f32)> = scores
        .into_iter()
        .map(|(label, (score, closest))| (label, score, closest))
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(b.2.total_cmp(&a.2))
            .then(a.0.cmp(b.0))
    });
    let ranking: Vec<(String, f32)> = ranked
        .iter()
        .map(|(label, score, _)| ((*label).to_owned(), (score / total) as f32))
        .collect();
    let confidence = ranking[0].1;
    if confidence < min_confidence {
        return VoteOutcome {
            label: None,
            confidence,
            abstain_reason: Some(format!(
                "confidence {confidence:.3} is below min_confidence {min_confidence:.3}"
            )),
            ranking,
        };
    }
    VoteOutcome {
        label: Some(ranking[0].0.clone()),
        confidence,
        ranking,
        abstain_reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_power_still_gives_shares_not_nan() {
        let outcome = vote(
            &[("A", 0.3), ("B", 0.2)],
            Vote::Weighted { power: 760.0 },
            0.0,
        );
        assert_eq!(outcome.label.as_deref(), Some("A"));
        assert!(outcome.ranking.iter().all(|(_, share)| share.is_finite()));
        assert!((outcome.confidence - 1.0).abs() < 1e-6);
    }

    const NEIGHBOURS: [(&str, f32); 4] = [
        ("Notices", 0.9),
        ("Governing Laws", 0.8),
        ("Governing Laws", 0.7),
        ("Notices", 0.2),
    ];

    #[test]
    fn weighted_vote_uses_similarity_powers() {
        let outcome = vote(&NEIGHBOURS, Vote::Weighted { power: 1.0 }, 0.0);
        // Governing Laws 1.5 vs Notices 1.1.
        assert_eq!(outcome.label.as_deref(), Some("Governing Laws"));
        assert!((outcome.confidence - 1.5 / 2.6).abs() < 1e-6);
        let sharp = vote(&NEIGHBOURS, Vote::Weighted { power: 8.0 }, 0.0);
        // 0.9^8 + 0.2^8 = 0.430 beats 0.8^8 + 0.7^8 = 0.225.
        assert_eq!(sharp.label.as_deref(), Some("Notices"));
        let shares: f32 = sharp.ranking.iter().map(|(_, s)| s).sum();
        assert!((shares - 1.0).abs() < 1e-5);
    }

    #[test]
    fn softmax_temperature_sharpens_towards_the_nearest() {
        let warm = vote(&NEIGHBOURS, Vote::Softmax { temperature: 10.0 }, 0.0);
        assert_eq!(warm.label.as_deref(), Some("Governing Laws"));
        let cold = vote(&NEIGHBOURS, Vote::Softmax { temperature: 0.01 }, 0.0);
        assert_eq!(cold.label.as_deref(), Some("Notices"));
        assert!(cold.confidence > 0.99);
    }

    #[test]
    fn majority_ties_break_by_closest_neighbour() {
        let outcome = vote(&NEIGHBOURS, Vote::Majority, 0.0);
        assert_eq!(outcome.label.as_deref(), Some("Notices"));
        assert!((outcome.confidence - 0.5).abs() < 1e-6);
    }

    #[test]
    fn abstains_below_threshold_or_without_neighbours() {
        let outcome = vote(&NEIGHBOURS, Vote::Majority, 0.6);
        assert_eq!(outcome.label, None);
        assert!(outcome
            .abstain_reason
            .unwrap()
            .contains("below min_confidence"));
        assert_eq!(
            outcome.ranking.len(),
            2,
            "alternatives are kept when abstaining"
        );
        let empty = vote(&[], Vote::Majority, 0.0);
        assert_eq!(empty.label, None);
        assert!(empty.abstain_reason.is_some());
    }

    #[test]
    fn negative_similarities_do_not_break_weighted_votes() {
        let outcome = vote(
            &[("A", -0.2), ("B", -0.5)],
            Vote::Weighted { power: 2.0 },
            0.0,
        );
        assert!(outcome.label.is_some());
        assert!(outcome.confidence.is_finite());
    }
}
