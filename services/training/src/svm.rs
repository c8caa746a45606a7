//! One-vs-rest linear SVM (L2-regularised squared hinge) on sparse rows,
//! trained by dual coordinate descent — liblinear's solver 1, the one behind
//! scikit-learn's `LinearSVC`, which is the text-classification baseline
//! (LexGLUE) our lexical model is compared with.
//!
//! As in liblinear, the bias is a constant feature of value 1 and is
//! regularised with the weights; with class weights, a class's own
//! clauses get `C·weight` and the rest `C` in its binary problem. The
//! decision values are used as logits: the trainer fits a temperature on
//! them like on any other model's scores.

use std::time::Instant;

use rayon::prelude::*;

use lextral_finetuned_classifier::{LinearModel, SparseRow};

/// Training settings.
#[derive(Debug, Clone)]
pub struct SvmConfig {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// Weight each class's own clauses inversely to its frequency.
    pub balanced: bool,
    /// Most passes over the data per class.
    pub max_iter: usize,
    /// Stop when the projected gradient's range falls below this.
    pub tol: f64,
    /// Seed of the visiting order.
    pub seed: u64,
    /// Stop early at this instant (the `--max-minutes` bound).
    pub deadline: Option<Instant>,
}

impl Default for SvmConfig {
    fn default() -> Self {
        Self {
            c: 1.0,
            balanced: false,
            max_iter: 1000,
            tol: 0.01,
            seed: 42,
            deadline: None,
        }
    }
}

/// SplitMix64: a seeded visiting order without a dependency on rand's
/// stream stability.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn shuffle(&mut self, order: &mut [usize]) {
        for i in (1..order.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
}

/// `balanced` class weights as scikit-learn computes them:
/// `n / (classes present · count)`; absent classes get 0.
pub fn balanced_weights(labels: &[usize], n_classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n_classes];
    for &label in labels {
        counts[label] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                labels.len() as f64 / (present * c) as f64
            }
        })
        .collect()
}

/// The weights and bias of one binary problem (`positive` against the rest).
fn train_binary(
    rows: &[SparseRow],
    squared_norms: &[f64],
    positive: &[bool],
    cost: &[f64],
    n_features: usize,
    config: &SvmConfig,
    seed: u64,
) -> (Vec<f32>, f32) {
    let n = rows.len();
    let mut w = vec![0f64; n_features];
    let mut bias = 0f64;
    let mut alpha = vec![0f64; n];
    // Squared hinge: no upper bound on alpha, 1/(2C) on the diagonal.
    let diag: Vec<f64> = cost.iter().map(|c| 0.5 / c).collect();
    let qd: Vec<f64> = (0..n).map(|i| squared_norms[i] + 1.0 + diag[i]).collect();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix(seed);
    for _ in 0..config.max_iter {
        rng.shuffle(&mut order);
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        for &i in &order {
            let y = if positive[i] { 1.0 } else { -1.0 };
            let row = &rows[i];
            let mut score = bias;
            for (&f, &v) in row.indices.iter().zip(&row.values) {
                score += w[f as usize] * f64::from(v);
            }
            let g = y * score - 1.0 + alpha[i] * diag[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let step = (alpha[i] - old) * y;
                for (&f, &v) in row.indices.iter().zip(&row.values) {
                    w[f as usize] += step * f64::from(v);
                }
                bias += step;
            }
        }
        if pg_max - pg_min <= config.tol || config.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    (w.into_iter().map(|v| v as f32).collect(), bias as f32)
}

/// Trains one binary SVM per class (in parallel) and returns their decision
/// functions as one linear model. `sample_weight` scales each clause's cost
/// (1 for all when `None`).
pub fn train_svm(
    rows: &[SparseRow],
    labels: &[usize],
    sample_weight: Option<&[f32]>,
    n_features: usize,
    n_classes: usize,
    config: &SvmConfig,
) -> LinearModel {
    let squared_norms: Vec<f64> = rows
        .iter()
        .map(|r| r.values.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
        .collect();
    let class_weight = if config.balanced {
        balanced_weights(labels, n_classes)
    } else {
        vec![1.0; n_classes]
    };
    let per_class: Vec<(Vec<f32>, f32)> = (0..n_classes)
        .into_par_iter()
        .map(|k| {
            let positive: Vec<bool> = labels.iter().map(|&l| l == k).collect();
            if !positive.contains(&true) {
                // A class without clauses is never predicted: its score
                // sits far below any other (see `scoring::calibratable`).
                return (vec![0.0; n_features], -1e3);
            }
            let cost: Vec<f64> = (0..rows.len())
                .map(|i| {
                    let own = if positive[i] { class_weight[k] } else { 1.0 };
                    let weight = sample_weight.map_or(1.0, |w| f64::from(w[i]));
                    config.c * own * weight
                })
                .collect();
            train_binary(
                rows,
                &squared_norms,
                &positive,
                &cost,
                n_features,
                config,
                config.seed ^ (k as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            )
        })
        .collect();
    let mut model = LinearModel::zeros(n_features, n_classes);
    for (k, (w, b)) in per_class.into_iter().enumerate() {
        for (f, v) in w.into_iter().enumerate() {
            model.weights[f * n_classes + k] = v;
        }
        model.bias[k] = b;
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(u32, f32)]) -> SparseRow {
        SparseRow {
            indices: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| p.1).collect(),
        }
    }

    /// Three classes, each marked by its own feature plus shared noise.
    fn three_classes() -> (Vec<SparseRow>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60u32 {
            let class = (i % 3) as usize;
            rows.push(row(&[(class as u32, 1.0), (3 + i % 5, 0.3)]));
            labels.push(class);
        }
        (rows, labels)
    }

    fn predict(model: &LinearModel, row: &SparseRow) -> usize {
        let z = model.logits(row);
        (0..z.len()).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap()
    }

    #[test]
    fn separates_a_separable_problem_with_margins() {
        let (rows, labels) = three_classes();
        let model = train_svm(&rows, &labels, None, 8, 3, &SvmConfig::default());
        for (row, &label) in rows.iter().zip(&labels) {
            assert_eq!(predict(&model, row), label);
            // The own class's decision value is past the margin, others below.
            let z = model.logits(row);
            assert!(z[label] > 0.5, "{z:?}");
            for (k, &v) in z.iter().enumerate() {
                if k != label {
                    assert!(v < -0.5, "{z:?}");
                }
            }
        }
    }

    /// Against the dual optimum computed in closed form: one feature, one
    /// clause per side, x = ±1. With the bias as a feature of value 1 the
    /// primal is min ½(w² + b²) + C·Σ max(0, 1 − y(wx + b))², whose
    /// solution by symmetry is b = 0 and w = 4C/(1 + 4C).
    #[test]
    fn matches_the_closed_form_optimum() {
        let rows = vec![row(&[(0, 1.0)]), row(&[(0, -1.0)])];
        let labels = vec![0, 1];
        for c in [0.1, 1.0, 10.0] {
            let config = SvmConfig {
                c,
                tol: 1e-9,
                ..SvmConfig::default()
            };
            let model = train_svm(&rows, &labels, None, 1, 2, &config);
            let expected = (4.0 * c / (1.0 + 4.0 * c)) as f32;
            assert!((model.weights[0] - expected).abs() < 1e-4, "C={c}");
            assert!((model.weights[1] + expected).abs() < 1e-4, "C={c}");
            assert!(model.bias[0].abs() < 1e-4 && model.bias[1].abs() < 1e-4);
        }
    }

    #[test]
    fn balanced_weights_follow_scikit_learn() {
        let weights = balanced_weights(&[0, 0, 0, 1], 3);
        assert!((weights[0] - 4.0 / 6.0).abs() < 1e-12);
        assert!((weights[1] - 2.0).abs() < 1e-12);
        assert_eq!(weights[2], 0.0);
    }

    /// A minority class the unweighted model gives up on is kept when its
    /// clauses cost more (balanced class weights or sample weights).
    #[test]
    fn weights_move_the_boundary_towards_the_majority() {
        // Class 1: two clauses that share the majority's feature but carry
        // a weak feature of their own.
        let mut rows: Vec<SparseRow> = (0..40).map(|_| row(&[(0, 1.0)])).collect();
        let mut labels = vec![0; 40];
        for _ in 0..2 {
            rows.push(row(&[(0, 1.0), (1, 1.0)]));
            labels.push(1);
        }
        let probe = row(&[(0, 1.0), (1, 1.0)]);
        let config = SvmConfig {
            c: 0.05,
            ..SvmConfig::default()
        };
        let plain = train_svm(&rows, &labels, None, 2, 2, &config);
        assert_eq!(predict(&plain, &probe), 0);
        let balanced = train_svm(
            &rows,
            &labels,
            None,
            2,
            2,
            &SvmConfig {
                balanced: true,
                ..config.clone()
            },
        );
        assert_eq!(predict(&balanced, &probe), 1);
        let mut weight = vec![1.0f32; rows.len()];
        weight[40] = 20.0;
        weight[41] = 20.0;
        let weighted = train_svm(&rows, &labels, Some(&weight), 2, 2, &config);
        assert_eq!(predict(&weighted, &probe), 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_model() {
        let (rows, labels) = three_classes();
        let a = train_svm(&rows, &labels, None, 8, 3, &SvmConfig::default());
        let b = train_svm(&rows, &labels, None, 8, 3, &SvmConfig::default());
        assert_eq!(a.weights, b.weights);
        assert_eq!(a.bias, b.bias);
    }
}
