//! Model selection by stratified k-fold cross-validation over every
//! labelled clause (train + validation).
//!
//! With a few hundred validation clauses one clause is a quarter of a point
//! of micro-F1 and the standard error of a difference between two models is
//! about two points, so choosing on validation alone mostly picks noise.
//! Here each candidate is fitted k times, on k−1 folds, and scored on the
//! fold left out; the table keeps the mean and the spread (standard
//! deviation over folds) of each, and the choice compares candidates fold
//! by fold.

use std::collections::BTreeMap;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use lextral_finetuned_classifier::{
    argmax, log_softmax_in_place, BlockConfig, CvCandidate, F1Scores, LinearModel, PairedGain,
    SparseRow, Vectorizer,
};

use crate::logistic::{train_logistic, LogisticConfig};
use crate::scoring::f1_scores;
use crate::svm::{train_svm, SvmConfig};

/// Test indices of each fold: every label's clauses shuffled (seeded) and
/// dealt to the folds in turn, the dealing continuing across labels so that
/// labels with fewer clauses than folds do not all land in the first ones.
pub fn stratified_folds(labels: &[usize], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let k = k.max(2);
    let mut by_label: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        by_label.entry(label).or_default().push(i);
    }
    let mut rng = crate::svm::SplitMix::new(seed);
    let mut folds = vec![Vec::new(); k];
    let mut next = 0usize;
    for members in by_label.values_mut() {
        rng.shuffle(members);
        for &i in members.iter() {
            folds[next % k].push(i);
            next += 1;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    folds
}

/// The complement of one fold: the clauses it is trained on.
pub fn training_indices(n: usize, test: &[usize]) -> Vec<usize> {
    let mut held_out = vec![false; n];
    for &i in test {
        held_out[i] = true;
    }
    (0..n).filter(|&i| !held_out[i]).collect()
}

/// A linear learner on sparse rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "solver", rename_all = "snake_case")]
pub enum Learner {
    /// One-vs-rest squared-hinge SVM (scikit-learn's `LinearSVC`).
    Svm {
        /// Inverse regularisation.
        c: f64,
        /// Class weights inverse to frequency.
        balanced: bool,
    },
    /// Multinomial logistic regression (L-BFGS).
    Logistic {
        /// Inverse regularisation.
        c: f64,
        /// Class weights inverse to frequency.
        balanced: bool,
    },
}

impl Learner {
    /// Name in the candidate table.
    pub fn name(&self) -> String {
        match *self {
            Self::Svm { c, balanced } => {
                format!("svm C={c}{}", if balanced { " balanced" } else { "" })
            }
            Self::Logistic { c, balanced } => {
                format!("logistic C={c}{}", if balanced { " balanced" } else { "" })
            }
        }
    }

    /// Parses `svm:C[:balanced]` / `logistic:C[:balanced]`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
        let bad = || {
            format!("bad candidate {spec:?}: expected svm:C[:balanced] or logistic:C[:balanced]")
        };
        let (kind, c, balanced) = match parts.as_slice() {
            [kind, c] => (*kind, *c, false),
            [kind, c, "balanced"] => (*kind, *c, true),
            _ => return Err(bad()),
        };
        let c: f64 = c.parse().map_err(|_| bad())?;
        if !(c.is_finite() && c > 0.0) {
            return Err(format!("bad candidate {spec:?}: C must be positive"));
        }
        match kind {
            "svm" => Ok(Self::Svm { c, balanced }),
            "logistic" => Ok(Self::Logistic { c, balanced }),
            _ => Err(bad()),
        }
    }

    /// Fits on `rows`; `deadline` stops an iterative solver early.
    pub fn fit(
        &self,
        rows: &[SparseRow],
        labels: &[usize],
        n_features: usize,
        n_classes: usize,
        seed: u64,
        deadline: Option<Instant>,
    ) -> LinearModel {
        match *self {
            Self::Svm { c, balanced } => train_svm(
                rows,
                labels,
                None,
                n_features,
                n_classes,
                &SvmConfig {
                    c,
                    balanced,
                    seed,
                    deadline,
                    ..SvmConfig::default()
                },
            ),
            Self::Logistic { c, balanced } => {
                train_logistic(
                    rows,
                    labels,
                    n_features,
                    n_classes,
                    &LogisticConfig {
                        c,
                        balanced,
                        deadline,
                        ..LogisticConfig::default()
                    },
                    None,
                )
                .0
            }
        }
    }
}

/// A row with dense features appended after the sparse ones, scaled by
/// `weight` (lexical and dense features in one linear model).
pub fn with_dense(row: &SparseRow, offset: u32, dense: &[f32], weight: f32) -> SparseRow {
    let mut joined = row.clone();
    joined
        .indices
        .extend((0..dense.len() as u32).map(|i| offset + i));
    joined.values.extend(dense.iter().map(|v| v * weight));
    joined
}

/// The class distribution of a similarity-weighted vote of the `k` nearest
/// (cosine; the embeddings are unit length) training clauses.
pub fn knn_vote(
    query: &[f32],
    train: &[&[f32]],
    train_labels: &[usize],
    n_classes: usize,
    k: usize,
) -> Vec<f32> {
    let mut scored: Vec<(f32, usize)> = train
        .iter()
        .zip(train_labels)
        .map(|(row, &label)| (row.iter().zip(query).map(|(a, b)| a * b).sum(), label))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return vec![1.0 / n_classes as f32; n_classes];
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    let mut votes = vec![0f32; n_classes];
    for &(similarity, label) in &scored[..k] {
        votes[label] += similarity.max(0.0);
    }
    let total: f32 = votes.iter().sum();
    if total > 0.0 {
        votes.iter_mut().for_each(|v| *v /= total);
    } else {
        votes.iter_mut().for_each(|v| *v = 1.0 / n_classes as f32);
    }
    votes
}

/// Summarises one candidate's per-fold scores.
pub fn summarise(name: String, folds: Vec<F1Scores>, dense: bool, seconds: f64) -> CvCandidate {
    let (micro_f1_mean, micro_f1_sd) = mean_sd(folds.iter().map(|s| s.micro_f1));
    let (macro_f1_mean, macro_f1_sd) = mean_sd(folds.iter().map(|s| s.macro_f1));
    CvCandidate {
        name,
        micro_f1_mean,
        micro_f1_sd,
        macro_f1_mean,
        macro_f1_sd,
        folds,
        dense,
        seconds,
    }
}

/// The selection order of [`F1Scores::key`] on the means: macro-F1 first.
pub fn key(candidate: &CvCandidate) -> (f64, f64) {
    (candidate.macro_f1_mean, candidate.micro_f1_mean)
}

/// Mean and sample standard deviation.
pub fn mean_sd(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// How `challenger` compares with `incumbent` fold by fold: the mean and
/// spread of the paired differences in micro- and macro-F1.
pub fn paired_gain(challenger: &CvCandidate, incumbent: &CvCandidate) -> PairedGain {
    let pairs = || challenger.folds.iter().zip(&incumbent.folds);
    let (micro_mean, micro_sd) = mean_sd(pairs().map(|(a, b)| a.micro_f1 - b.micro_f1));
    let (macro_mean, macro_sd) = mean_sd(pairs().map(|(a, b)| a.macro_f1 - b.macro_f1));
    PairedGain {
        micro_mean,
        micro_sd,
        macro_mean,
        macro_sd,
    }
}

/// Whether a gain is more than its spread on both averages: what a
/// candidate that costs more (an embedding per request) must show.
pub fn beyond_spread(gain: &PairedGain) -> bool {
    gain.micro_mean > gain.micro_sd && gain.macro_mean > gain.macro_sd
}

/// The lexical features of one fold: a vectorizer fitted on the fold's
/// training clauses only (so the left-out fold's words do not shape the
/// vocabulary or the IDF), with both sides transformed.
pub struct FoldFeatures {
    /// Feature count.
    pub dimension: usize,
    /// Rows of the training clauses.
    pub train: Vec<SparseRow>,
    /// Rows of the left-out clauses.
    pub test: Vec<SparseRow>,
}

impl FoldFeatures {
    /// Fits and transforms.
    pub fn build(configs: &[BlockConfig], train: &[&str], test: &[&str]) -> Self {
        let owned: Vec<String> = train.iter().map(|t| (*t).to_owned()).collect();
        let vectorizer = Vectorizer::fit(configs, &owned);
        Self {
            dimension: vectorizer.dimension(),
            train: train.par_iter().map(|t| vectorizer.transform(t)).collect(),
            test: test.par_iter().map(|t| vectorizer.transform(t)).collect(),
        }
    }
}

/// Log-probabilities of a linear model on rows.
pub fn log_probs(model: &LinearModel, rows: &[SparseRow]) -> Vec<Vec<f32>> {
    rows.par_iter()
        .map(|row| {
            let mut z = model.logits(row);
            log_softmax_in_place(&mut z);
            z
        })
        .collect()
}

/// F1 of the arg-max of `scores` against `gold`.
pub fn score_rows(scores: &[Vec<f32>], gold: &[usize]) -> F1Scores {
    let predicted: Vec<usize> = scores.iter().map(|z| argmax(z)).collect();
    f1_scores(gold, &predicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_clauses_and_spread_every_label() {
        let labels: Vec<usize> = (0..103).map(|i| i % 7).chain([9, 9, 8]).collect();
        let folds = stratified_folds(&labels, 5, 1);
        let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        for label in 0..7 {
            let counts: Vec<usize> = folds
                .iter()
                .map(|f| f.iter().filter(|&&i| labels[i] == label).count())
                .collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "label {label}: {counts:?}");
        }
        // Fold sizes differ by at most one.
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // Seeded.
        assert_eq!(folds, stratified_folds(&labels, 5, 1));
        assert_ne!(folds, stratified_folds(&labels, 5, 2));
        let train = training_indices(labels.len(), &folds[0]);
        assert_eq!(train.len() + folds[0].len(), labels.len());
        assert!(train.iter().all(|i| !folds[0].contains(i)));
    }

    #[test]
    fn candidates_parse_and_refuse_nonsense() {
        assert_eq!(
            Learner::parse("svm:0.5:balanced"),
            Ok(Learner::Svm {
                c: 0.5,
                balanced: true
            })
        );
        assert_eq!(
            Learner::parse("logistic:30"),
            Ok(Learner::Logistic {
                c: 30.0,
                balanced: false
            })
        );
        for bad in [
            "svm",
            "svm:x",
            "svm:-1",
            "tree:1",
            "svm:1:weighted",
            "svm:nan",
        ] {
            assert!(Learner::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Learner::parse("svm:1").unwrap().name(), "svm C=1");
    }

    #[test]
    fn paired_gains_need_to_exceed_their_spread() {
        let folds = |v: &[(f64, f64)]| -> Vec<F1Scores> {
            v.iter()
                .map(|&(micro_f1, macro_f1)| F1Scores {
                    n: 10,
                    micro_f1,
                    macro_f1,
                })
                .collect()
        };
        let base = summarise("a".into(), folds(&[(0.7, 0.6), (0.8, 0.7)]), false, 0.0);
        let steady = summarise("b".into(), folds(&[(0.72, 0.62), (0.82, 0.73)]), true, 0.0);
        let noisy = summarise("c".into(), folds(&[(0.75, 0.65), (0.79, 0.69)]), true, 0.0);
        assert!(beyond_spread(&paired_gain(&steady, &base)));
        assert!(!beyond_spread(&paired_gain(&noisy, &base)));
        assert!((base.micro_f1_mean - 0.75).abs() < 1e-12);
        assert!((base.micro_f1_sd - 0.0707).abs() < 1e-3);
    }

    #[test]
    fn the_vote_weights_neighbours_by_similarity() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let c = [0.8f32, 0.6];
        let train: Vec<&[f32]> = vec![&a, &b, &c];
        let votes = knn_vote(&[1.0, 0.0], &train, &[0, 1, 2], 3, 2);
        // Nearest two: a (1.0) and c (0.8).
        assert!((votes[0] - 1.0 / 1.8).abs() < 1e-6);
        assert!((votes[2] - 0.8 / 1.8).abs() < 1e-6);
        assert_eq!(votes[1], 0.0);
    }

    #[test]
    fn dense_features_follow_the_sparse_ones() {
        let row = SparseRow {
            indices: vec![1, 4],
            values: vec![0.5, 0.5],
        };
        let joined = with_dense(&row, 10, &[1.0, -2.0], 0.5);
        assert_eq!(joined.indices, vec![1, 4, 10, 11]);
        assert_eq!(joined.values, vec![0.5, 0.5, 0.5, -1.0]);
    }
}
