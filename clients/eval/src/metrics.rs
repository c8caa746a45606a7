//! Classification metrics as scikit-learn computes them.
//!
//! Conventions, chosen to match `sklearn.metrics` called with
//! `labels = sorted(set(gold) | set(predicted))` and `zero_division=0`:
//! - an abstention is a miss: a false negative for the gold label and no
//!   false positive for any label (it is not in `labels`);
//! - macro averages run over every label that is gold or predicted (a label
//!   predicted but never gold counts with F1 0, as scikit-learn's default);
//!   `macro_f1_gold_labels` is the mean over gold labels only;
//! - weighted averages weight each label by its gold support.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelMetrics {
    /// TP / (TP + FP); 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the label has no gold examples.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Gold examples.
    pub support: usize,
}

/// Aggregate metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    /// Clauses scored.
    pub n: usize,
    /// Correct / n.
    pub accuracy: f64,
    /// Micro-averaged precision (abstentions are not predictions).
    pub micro_precision: f64,
    /// Micro-averaged recall (= accuracy).
    pub micro_recall: f64,
    /// Micro-averaged F1 over all labels.
    pub micro_f1: f64,
    /// Mean precision over gold-or-predicted labels.
    pub macro_precision: f64,
    /// Mean recall over gold-or-predicted labels.
    pub macro_recall: f64,
    /// Mean F1 over gold-or-predicted labels (scikit-learn's `average="macro"`).
    pub macro_f1: f64,
    /// Mean F1 over the labels present in the gold data only.
    pub macro_f1_gold_labels: f64,
    /// Support-weighted precision.
    pub weighted_precision: f64,
    /// Support-weighted recall.
    pub weighted_recall: f64,
    /// Support-weighted F1.
    pub weighted_f1: f64,
    /// Clauses without a prediction.
    pub abstained: usize,
    /// Abstained / n.
    pub abstention_rate: f64,
    /// Correct / answered: how often an answer, when given, is right.
    pub answered_accuracy: f64,
    /// Per label (gold or predicted).
    pub per_label: BTreeMap<String, LabelMetrics>,
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// Per-label counts of one set of answers.
#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    support: usize,
}

/// Scores `(gold, predicted)` pairs; `None` is an abstention.
pub fn score(pairs: &[(String, Option<String>)]) -> Scores {
    score_pairs(
        pairs
            .iter()
            .map(|(gold, predicted)| (gold.as_str(), predicted.as_deref())),
    )
}

/// Scores label indices (every clause answered), as `score` would score the
/// same labels by name; used where labels are already numbered (training).
pub fn score_indices(gold: &[usize], predicted: &[usize]) -> Scores {
    score_pairs(gold.iter().zip(predicted).map(|(&g, &p)| (g, Some(p))))
}

fn score_pairs<L: Ord + Copy + ToString>(pairs: impl Iterator<Item = (L, Option<L>)>) -> Scores {
    let mut counts: BTreeMap<L, Counts> = BTreeMap::new();
    let mut correct = 0;
    let mut abstained = 0;
    let mut n = 0;
    for (gold, predicted) in pairs {
        n += 1;
        counts.entry(gold).or_default().support += 1;
        match predicted {
            Some(p) if p == gold => {
                correct += 1;
                counts.entry(gold).or_default().tp += 1;
            }
            Some(p) => counts.entry(p).or_default().fp += 1,
            None => abstained += 1,
        }
    }
    let per_label: BTreeMap<String, LabelMetrics> = counts
        .iter()
        .map(|(label, c)| {
            let precision = ratio(c.tp, c.tp + c.fp);
            let recall = ratio(c.tp, c.support);
            (
                label.to_string(),
                LabelMetrics {
                    precision,
                    recall,
                    f1: f1(precision, recall),
                    support: c.support,
                },
            )
        })
        .collect();
    let total_fp: usize = counts.values().map(|c| c.fp).sum();
    let micro_precision = ratio(correct, correct + total_fp);
    let micro_recall = ratio(correct, n);
    let weighted = |get: fn(&LabelMetrics) -> f64| {
        if n == 0 {
            0.0
        } else {
            per_label
                .values()
                .map(|m| get(m) * m.support as f64)
                .sum::<f64>()
                / n as f64
        }
    };
    Scores {
        n,
        accuracy: ratio(correct, n),
        micro_precision,
        micro_recall,
        micro_f1: f1(micro_precision, micro_recall),
        macro_precision: mean(per_label.values().map(|m| m.precision)),
        macro_recall: mean(per_label.values().map(|m| m.recall)),
        macro_f1: mean(per_label.values().map(|m| m.f1)),
        macro_f1_gold_labels: mean(per_label.values().filter(|m| m.support > 0).map(|m| m.f1)),
        weighted_precision: weighted(|m| m.precision),
        weighted_recall: weighted(|m| m.recall),
        weighted_f1: weighted(|m| m.f1),
        abstained,
        abstention_rate: ratio(abstained, n),
        answered_accuracy: ratio(correct, n - abstained),
        per_label,
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibrationBin {
    /// Lower edge (exclusive, except for the first bin).
    pub lower: f64,
    /// Upper edge (inclusive).
    pub upper: f64,
    /// Answers whose confidence falls in the bin.
    pub count: usize,
    /// Their mean confidence.
    pub mean_confidence: f64,
    /// The share of them that is correct.
    pub accuracy: f64,
}

/// Calibration of the confidences of answered clauses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Expected calibration error: Σ_b (n_b / N) · |accuracy_b − confidence_b|.
    pub ece: f64,
    /// Largest |accuracy_b − confidence_b| over non-empty bins.
    pub mce: f64,
    /// Answers scored.
    pub answered: usize,
    /// Equal-width bins over [0, 1].
    pub bins: Vec<CalibrationBin>,
}

/// Reliability bins and ECE for `(confidence, correct)` pairs, with
/// `bins` equal-width bins. A value on an inner edge belongs to the bin
/// below it, as `sklearn.calibration.calibration_curve` bins
/// (`np.searchsorted(edges[1:-1], p)`). `None` when there is nothing to score.
pub fn calibration(answers: &[(f64, bool)], bins: usize) -> Option<Calibration> {
    if answers.is_empty() || bins == 0 {
        return None;
    }
    // Edges as numpy's linspace computes them, so ties land as in scikit-learn.
    let step = 1.0 / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step).collect();
    let mut count = vec![0usize; bins];
    let mut confidence = vec![0.0f64; bins];
    let mut correct = vec![0usize; bins];
    for &(p, right) in answers {
        let p = p.clamp(0.0, 1.0);
        let bin = edges[1..bins].iter().take_while(|&&edge| edge < p).count();
        count[bin] += 1;
        confidence[bin] += p;
        correct[bin] += usize::from(right);
    }
    let total = answers.len() as f64;
    let mut ece = 0.0;
    let mut mce: f64 = 0.0;
    let bins: Vec<CalibrationBin> = (0..bins)
        .map(|b| {
            let mean_confidence = if count[b] == 0 {
                0.0
            } else {
                confidence[b] / count[b] as f64
            };
            let accuracy = ratio(correct[b], count[b]);
            if count[b] > 0 {
                let gap = (accuracy - mean_confidence).abs();
                ece += count[b] as f64 / total * gap;
                mce = mce.max(gap);
            }
            CalibrationBin {
                lower: edges[b],
                upper: edges[b + 1],
                count: count[b],
                mean_confidence,
                accuracy,
            }
        })
        .collect();
    Some(Calibration {
        ece,
        mce,
        answered: answers.len(),
        bins,
    })
}

/// One off-diagonal cell of the confusion matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    /// The gold label.
    pub gold: String,
    /// What was predicted instead.
    pub predicted: String,
    /// How often.
    pub count: usize,
    /// count / support of the gold label.
    pub share_of_gold: f64,
}

/// The `limit` most frequent confusions (gold ≠ predicted, abstentions
/// excluded), most frequent first; ties by gold then predicted label.
pub fn top_confusions(pairs: &[(String, Option<String>)], limit: usize) -> Vec<Confusion> {
    let mut cells: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut support: BTreeMap<&str, usize> = BTreeMap::new();
    for (gold, predicted) in pairs {
        *support.entry(gold).or_default() += 1;
        if let Some(p) = predicted.as_deref().filter(|p| *p != gold) {
            *cells.entry((gold, p)).or_default() += 1;
        }
    }
    let mut list: Vec<Confusion> = cells
        .into_iter()
        .map(|((gold, predicted), count)| Confusion {
            gold: gold.to_owned(),
            predicted: predicted.to_owned(),
            count,
            share_of_gold: ratio(count, support[gold]),
        })
        .collect();
    // Stable sort keeps the BTreeMap's (gold, predicted) order among ties.
    list.sort_by_key(|c| std::cmp::Reverse(c.count));
    list.truncate(limit);
    list
}

/// The p-th percentile (0..=100) by linear interpolation, as numpy's default.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(data: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        data.iter()
            .map(|(g, p)| (g.to_string(), p.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn matches_scikit_learn_on_a_small_case() {
        // y_true = [a, a, b, c], y_pred = [a, b, b, a]
        // sklearn: accuracy 0.5, micro-F1 0.5,
        // per label F1: a 0.5, b 0.6667, c 0.0 -> macro 0.388889
        let scores = score(&pairs(&[
            ("a", Some("a")),
            ("a", Some("b")),
            ("b", Some("b")),
            ("c", Some("a")),
        ]));
        assert!((scores.accuracy - 0.5).abs() < 1e-9);
        assert!((scores.micro_f1 - 0.5).abs() < 1e-9);
        assert!((scores.macro_f1 - 0.388_888_9).abs() < 1e-6);
        assert!((scores.per_label["b"].precision - 0.5).abs() < 1e-9);
        assert_eq!(scores.per_label["a"].support, 2);
        // weighted F1 = (0.5*2 + 0.6667*1 + 0*1) / 4
        assert!((scores.weighted_f1 - (1.0 + 2.0 / 3.0) / 4.0).abs() < 1e-9);
    }

    #[test]
    fn abstentions_are_misses_without_false_positives() {
        let scores = score(&pairs(&[("a", Some("a")), ("a", None)]));
        assert_eq!(scores.abstained, 1);
        assert!((scores.accuracy - 0.5).abs() < 1e-9);
        // micro precision 1.0, recall 0.5 -> F1 0.6667
        assert!((scores.micro_f1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((scores.answered_accuracy - 1.0).abs() < 1e-9);
        assert!((scores.abstention_rate - 0.5).abs() < 1e-9);
    }

    #[test]
    fn macro_counts_predicted_only_labels_like_scikit_learn() {
        // "z" is predicted but never gold: F1 0 in the macro mean, as
        // sklearn's default label set; not in the gold-only mean.
        let scores = score(&pairs(&[("a", Some("a")), ("b", Some("z"))]));
        assert!((scores.macro_f1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((scores.macro_f1_gold_labels - 0.5).abs() < 1e-9);
        assert!(scores.per_label.contains_key("z"));
    }

    #[test]
    fn calibration_bins_as_scikit_learn() {
        // 0.1 sits on the first inner edge: it belongs to bin 0.
        let cal =
            calibration(&[(0.1, true), (0.95, true), (0.95, false), (1.0, true)], 10).unwrap();
        assert_eq!(cal.bins[0].count, 1);
        assert_eq!(cal.bins[9].count, 3);
        // bin 0: |1 - 0.1| * 1/4; bin 9: |2/3 - 0.9667| * 3/4
        let expected = 0.9 / 4.0 + (2.0f64 / 3.0 - (0.95 + 0.95 + 1.0) / 3.0).abs() * 0.75;
        assert!((cal.ece - expected).abs() < 1e-9);
        assert!(calibration(&[], 10).is_none());
    }

    #[test]
    fn top_confusions_are_ordered() {
        let list = top_confusions(
            &pairs(&[
                ("a", Some("b")),
                ("a", Some("b")),
                ("a", Some("a")),
                ("c", Some("a")),
                ("c", None),
            ]),
            5,
        );
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].gold.as_str(), list[0].count), ("a", 2));
        assert!((list[0].share_of_gold - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(list[1].predicted, "a");
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
