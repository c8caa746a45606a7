//! Classification metrics as scikit-learn computes them, with abstentions
//! counted as misses (a false negative for the gold label, no false positive).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scores {
    /// Clauses scored.
    pub n: usize,
    /// Correct / n.
    pub accuracy: f64,
    /// Micro-averaged F1 over all labels.
    pub micro_f1: f64,
    /// Mean F1 over the labels present in the gold data.
    pub macro_f1: f64,
    /// Clauses without a prediction.
    pub abstained: usize,
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

/// Scores `(gold, predicted)` pairs; `None` is an abstention.
pub fn score(pairs: &[(String, Option<String>)]) -> Scores {
    let mut tp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut support: BTreeMap<&str, usize> = BTreeMap::new();
    let mut labels: BTreeSet<&str> = BTreeSet::new();
    let mut correct = 0;
    let mut abstained = 0;
    for (gold, predicted) in pairs {
        *support.entry(gold).or_default() += 1;
        labels.insert(gold);
        match predicted.as_deref() {
            Some(p) if p == gold => {
                correct += 1;
                *tp.entry(gold).or_default() += 1;
            }
            Some(p) => {
                labels.insert(p);
                *fp.entry(p).or_default() += 1;
            }
            None => abstained += 1,
        }
    }
    let n = pairs.len();
    let per_label: BTreeMap<String, LabelMetrics> = labels
        .iter()
        .map(|&label| {
            let t = tp.get(label).copied().unwrap_or(0);
            let f = fp.get(label).copied().unwrap_or(0);
            let s = support.get(label).copied().unwrap_or(0);
            let precision = ratio(t, t + f);
            let recall = ratio(t, s);
            (
                label.to_owned(),
                LabelMetrics {
                    precision,
                    recall,
                    f1: f1(precision, recall),
                    support: s,
                },
            )
        })
        .collect();
    let total_fp: usize = fp.values().sum();
    let micro_precision = ratio(correct, correct + total_fp);
    let micro_recall = ratio(correct, n);
    let gold_labels: Vec<&LabelMetrics> = per_label.values().filter(|m| m.support > 0).collect();
    let macro_f1 = if gold_labels.is_empty() {
        0.0
    } else {
        gold_labels.iter().map(|m| m.f1).sum::<f64>() / gold_labels.len() as f64
    };
    Scores {
        n,
        accuracy: ratio(correct, n),
        micro_f1: f1(micro_precision, micro_recall),
        macro_f1,
        abstained,
        per_label,
    }
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
    }

    #[test]
    fn abstentions_are_misses_without_false_positives() {
        let scores = score(&pairs(&[("a", Some("a")), ("a", None)]));
        assert_eq!(scores.abstained, 1);
        assert!((scores.accuracy - 0.5).abs() < 1e-9);
        // micro precision 1.0, recall 0.5 -> F1 0.6667
        assert!((scores.micro_f1 - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn macro_averages_gold_labels_only() {
        // "z" is predicted but never gold: it does not enter the macro mean.
        let scores = score(&pairs(&[("a", Some("a")), ("b", Some("z"))]));
        assert!((scores.macro_f1 - 0.5).abs() < 1e-9);
        assert!(scores.per_label.contains_key("z"));
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
