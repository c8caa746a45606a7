//! Multinomial logistic regression on sparse rows, trained with L-BFGS.
//!
//! The objective is scikit-learn's `LogisticRegression` divided by `C·n`:
//! mean (optionally class-weighted) cross-entropy plus `‖W‖² / (2·C·n)`;
//! the bias is not penalised. Full-batch L-BFGS needs no learning rate and
//! is deterministic, which `--seed` runs rely on.

use std::time::Instant;

use rayon::prelude::*;

use lextral_finetuned_classifier::{LinearModel, SparseRow};

/// Training settings.
#[derive(Debug, Clone)]
pub struct LogisticConfig {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// Most L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when the gradient's largest entry falls below this.
    pub tol: f64,
    /// Weight each class inversely to its frequency.
    pub balanced: bool,
    /// Stop early at this instant (the `--max-minutes` bound).
    pub deadline: Option<Instant>,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self {
            c: 30.0,
            max_iter: 300,
            tol: 1e-5,
            balanced: false,
            deadline: None,
        }
    }
}

/// What training did.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Iterations run.
    pub iterations: usize,
    /// Final objective.
    pub loss: f64,
    /// Whether the gradient tolerance was reached.
    pub converged: bool,
}

/// In-place log-softmax probabilities; returns log-sum-exp.
pub fn softmax_in_place(z: &mut [f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
    max + sum.ln()
}

struct Problem<'a> {
    rows: &'a [SparseRow],
    labels: &'a [usize],
    sample_weight: Vec<f32>,
    n_features: usize,
    n_classes: usize,
    lambda: f64,
    total_weight: f64,
}

impl Problem<'_> {
    fn params(&self) -> usize {
        self.n_features * self.n_classes + self.n_classes
    }

    /// Objective and gradient at `theta` (`[W, b]` flattened).
    fn evaluate(&self, theta: &[f32], grad: &mut [f32]) -> f64 {
        let k = self.n_classes;
        let wlen = self.n_features * k;
        let model_w = &theta[..wlen];
        let model_b = &theta[wlen..];
        let threads = rayon::current_num_threads().max(1);
        let chunk = self.rows.len().div_ceil(threads).max(1);
        let partials: Vec<(f64, Vec<f32>)> = self
            .rows
            .par_chunks(chunk)
            .enumerate()
            .map(|(c, rows)| {
                let mut g = vec![0.0f32; theta.len()];
                let mut loss = 0.0f64;
                let mut z = vec![0.0f32; k];
                for (j, row) in rows.iter().enumerate() {
                    let n = c * chunk + j;
                    z.copy_from_slice(model_b);
                    for (&i, &x) in row.indices.iter().zip(&row.values) {
                        let w = &model_w[i as usize * k..(i as usize + 1) * k];
                        z.iter_mut().zip(w).for_each(|(o, w)| *o += x * w);
                    }
                    let label = self.labels[n];
                    let true_logit = z[label];
                    let lse = softmax_in_place(&mut z);
                    let sw = self.sample_weight[n];
                    loss += f64::from(sw) * f64::from(lse - true_logit);
                    z[label] -= 1.0;
                    z.iter_mut().for_each(|v| *v *= sw);
                    for (&i, &x) in row.indices.iter().zip(&row.values) {
                        let gw = &mut g[i as usize * k..(i as usize + 1) * k];
                        gw.iter_mut().zip(&z).for_each(|(g, d)| *g += x * d);
                    }
                    g[wlen..].iter_mut().zip(&z).for_each(|(g, d)| *g += d);
                }
                (loss, g)
            })
            .collect();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, g) in partials {
            loss += l;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let scale = 1.0 / self.total_weight;
        loss *= scale;
        let mut penalty = 0.0f64;
        for (i, g) in grad.iter_mut().enumerate() {
            *g *= scale as f32;
            if i < wlen {
                let w = f64::from(theta[i]);
                penalty += w * w;
                *g += (self.lambda * w) as f32;
            }
        }
        loss + 0.5 * self.lambda * penalty
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// Fits a multinomial logistic regression. `init` warm-starts (used when a
/// grid of `C` values is searched).
pub fn train_logistic(
    rows: &[SparseRow],
    labels: &[usize],
    n_features: usize,
    n_classes: usize,
    config: &LogisticConfig,
    init: Option<&LinearModel>,
) -> (LinearModel, FitReport) {
    let mut counts = vec![0usize; n_classes];
    labels.iter().for_each(|&l| counts[l] += 1);
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let sample_weight: Vec<f32> = labels
        .iter()
        .map(|&l| {
            if config.balanced {
                rows.len() as f32 / (present as f32 * counts[l] as f32)
            } else {
                1.0
            }
        })
        .collect();
    let total_weight = sample_weight.iter().map(|&w| f64::from(w)).sum::<f64>();
    let problem = Problem {
        rows,
        labels,
        sample_weight,
        n_features,
        n_classes,
        lambda: 1.0 / (config.c * rows.len().max(1) as f64),
        total_weight: total_weight.max(1e-12),
    };
    let p = problem.params();
    let mut theta = vec![0.0f32; p];
    if let Some(init) = init {
        theta[..n_features * n_classes].copy_from_slice(&init.weights);
        theta[n_features * n_classes..].copy_from_slice(&init.bias);
    }
    let mut grad = vec![0.0f32; p];
    let mut loss = problem.evaluate(&theta, &mut grad);

    const MEMORY: usize = 8;
    let mut s_hist: Vec<Vec<f32>> = Vec::new();
    let mut y_hist: Vec<Vec<f32>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let mut direction = vec![0.0f32; p];
    let mut candidate = vec![0.0f32; p];
    let mut new_grad = vec![0.0f32; p];
    let mut report = FitReport {
        iterations: 0,
        loss,
        converged: false,
    };
    for iteration in 0..config.max_iter {
        let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        if f64::from(gmax) < config.tol {
            report.converged = true;
            break;
        }
        if config.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Two-loop recursion: direction = -H·grad.
        direction.copy_from_slice(&grad);
        let mut alphas = vec![0.0f64; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let a = rho_hist[i] * dot(&s_hist[i], &direction);
            alphas[i] = a;
            direction
                .iter_mut()
                .zip(&y_hist[i])
                .for_each(|(d, y)| *d -= (a as f32) * y);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y).max(1e-30),
            _ => 1.0 / f64::from(gmax).max(1e-12),
        };
        direction.iter_mut().for_each(|d| *d *= gamma as f32);
        for i in 0..s_hist.len() {
            let b = rho_hist[i] * dot(&y_hist[i], &direction);
            let a = alphas[i];
            direction
                .iter_mut()
                .zip(&s_hist[i])
                .for_each(|(d, s)| *d += ((a - b) as f32) * s);
        }
        direction.iter_mut().for_each(|d| *d = -*d);
        let mut slope = dot(&grad, &direction);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            for (d, g) in direction.iter_mut().zip(&grad) {
                *d = -g / gmax.max(1e-12);
            }
            slope = dot(&grad, &direction);
        }
        // Backtracking (Armijo) line search.
        let mut step = 1.0f32;
        let mut new_loss = f64::INFINITY;
        for _ in 0..30 {
            for ((c, t), d) in candidate.iter_mut().zip(&theta).zip(&direction) {
                *c = t + step * d;
            }
            new_loss = problem.evaluate(&candidate, &mut new_grad);
            if new_loss <= loss + 1e-4 * f64::from(step) * slope {
                break;
            }
            step *= 0.5;
        }
        if new_loss >= loss {
            // No progress possible at f32 precision.
            report.converged = true;
            break;
        }
        let s: Vec<f32> = candidate.iter().zip(&theta).map(|(c, t)| c - t).collect();
        let y: Vec<f32> = new_grad.iter().zip(&grad).map(|(n, g)| n - g).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho_hist.push(1.0 / sy);
        }
        std::mem::swap(&mut theta, &mut candidate);
        std::mem::swap(&mut grad, &mut new_grad);
        let improvement = (loss - new_loss) / loss.abs().max(1e-12);
        loss = new_loss;
        report.iterations = iteration + 1;
        if improvement < 1e-9 {
            report.converged = true;
            break;
        }
    }
    report.loss = loss;
    let wlen = n_features * n_classes;
    let model = LinearModel {
        n_features,
        n_classes,
        weights: theta[..wlen].to_vec(),
        bias: theta[wlen..].to_vec(),
    };
    (model, report)
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

    #[test]
    fn gradient_matches_finite_differences() {
        let rows = vec![
            row(&[(0, 1.0), (2, 0.5)]),
            row(&[(1, 1.0)]),
            row(&[(2, 2.0)]),
        ];
        let labels = vec![0, 1, 2];
        let problem = Problem {
            rows: &rows,
            labels: &labels,
            sample_weight: vec![1.0, 2.0, 1.0],
            n_features: 3,
            n_classes: 3,
            lambda: 0.1,
            total_weight: 4.0,
        };
        let theta: Vec<f32> = (0..problem.params())
            .map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.1)
            .collect();
        let mut grad = vec![0.0; theta.len()];
        problem.evaluate(&theta, &mut grad);
        let mut scratch = vec![0.0; theta.len()];
        for i in 0..theta.len() {
            let mut plus = theta.clone();
            plus[i] += 1e-2;
            let mut minus = theta.clone();
            minus[i] -= 1e-2;
            let numeric = (problem.evaluate(&plus, &mut scratch)
                - problem.evaluate(&minus, &mut scratch))
                / 2e-2;
            assert!(
                (numeric - f64::from(grad[i])).abs() < 1e-3,
                "param {i}: analytic {} numeric {numeric}",
                grad[i]
            );
        }
    }

    #[test]
    fn learns_a_separable_problem_and_converges() {
        let rows: Vec<SparseRow> = (0..60)
            .map(|i| row(&[((i % 3) as u32, 1.0), (3, 0.3)]))
            .collect();
        let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let (model, report) =
            train_logistic(&rows, &labels, 4, 3, &LogisticConfig::default(), None);
        assert!(report.converged, "{report:?}");
        for (r, &l) in rows.iter().zip(&labels) {
            let mut z = model.logits(r);
            softmax_in_place(&mut z);
            assert!(z[l] > 0.9, "p = {}", z[l]);
        }
    }

    #[test]
    fn stronger_regularisation_shrinks_weights() {
        let rows: Vec<SparseRow> = (0..40).map(|i| row(&[((i % 2) as u32, 1.0)])).collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let norm = |c: f64| {
            let config = LogisticConfig {
                c,
                ..Default::default()
            };
            let (m, _) = train_logistic(&rows, &labels, 2, 2, &config, None);
            m.weights.iter().map(|w| w * w).sum::<f32>()
        };
        assert!(norm(0.1) < norm(10.0));
    }
}
