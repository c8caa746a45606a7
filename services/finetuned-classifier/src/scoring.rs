//! Validation scoring and probability calibration shared by every method.

/// Accuracy (= micro-F1 when every clause gets a label) and macro-F1 over
/// the labels present in the gold data, the figures `lextral eval` reports.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct F1Scores {
    /// Clauses scored.
    pub n: usize,
    /// Micro-averaged F1.
    pub micro_f1: f64,
    /// Mean per-label F1 over gold labels.
    pub macro_f1: f64,
}

impl F1Scores {
    /// Ordering used to pick hyper-parameters: macro-F1 first (the long tail
    /// is what the product must get right), micro-F1 to break ties.
    pub fn key(&self) -> (f64, f64) {
        (self.macro_f1, self.micro_f1)
    }

    /// Whether `self` beats `other`.
    pub fn better_than(&self, other: &F1Scores) -> bool {
        self.key() > other.key()
    }
}

/// Scores label indices.
pub fn f1_scores(gold: &[usize], predicted: &[usize], n_classes: usize) -> F1Scores {
    let mut tp = vec![0usize; n_classes];
    let mut fp = vec![0usize; n_classes];
    let mut support = vec![0usize; n_classes];
    for (&g, &p) in gold.iter().zip(predicted) {
        support[g] += 1;
        if g == p {
            tp[g] += 1;
        } else {
            fp[p] += 1;
        }
    }
    let mut macro_sum = 0.0;
    let mut present = 0usize;
    for label in 0..n_classes {
        if support[label] == 0 {
            continue;
        }
        present += 1;
        let precision = if tp[label] + fp[label] == 0 {
            0.0
        } else {
            tp[label] as f64 / (tp[label] + fp[label]) as f64
        };
        let recall = tp[label] as f64 / support[label] as f64;
        if precision + recall > 0.0 {
            macro_sum += 2.0 * precision * recall / (precision + recall);
        }
    }
    let correct: usize = tp.iter().sum();
    F1Scores {
        n: gold.len(),
        micro_f1: if gold.is_empty() {
            0.0
        } else {
            correct as f64 / gold.len() as f64
        },
        macro_f1: if present == 0 {
            0.0
        } else {
            macro_sum / present as f64
        },
    }
}

/// Index of the largest value.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// In-place log-softmax.
pub fn log_softmax_in_place(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    z.iter_mut().for_each(|v| *v -= lse);
}

/// Mean negative log-likelihood of `gold` under `softmax(scores / t)`.
pub fn nll(scores: &[Vec<f32>], gold: &[usize], t: f32) -> f64 {
    let mut total = 0.0f64;
    let mut z = Vec::new();
    for (row, &g) in scores.iter().zip(gold) {
        z.clear();
        z.extend(row.iter().map(|v| v / t));
        log_softmax_in_place(&mut z);
        total -= f64::from(z[g]);
    }
    total / scores.len().max(1) as f64
}

/// Temperature scaling: the `t` in [0.05, 20] minimising validation NLL,
/// found by golden-section search on `ln t` (NLL is unimodal in it).
pub fn fit_temperature(scores: &[Vec<f32>], gold: &[usize]) -> f32 {
    if scores.is_empty() {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.05f64.ln(), 20f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let f = |x: f64| nll(scores, gold, x.exp() as f32);
    let mut a = hi - phi * (hi - lo);
    let mut b = lo + phi * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + phi * (hi - lo);
            fb = f(b);
        }
    }
    (((lo + hi) / 2.0).exp()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_averages_gold_labels_only() {
        // Label 0: P=1/2 R=1 F=2/3; label 1: P=0 R=0; label 2 predicted only.
        let scores = f1_scores(&[0, 1, 0], &[0, 0, 0], 3);
        assert_eq!(scores.n, 3);
        assert!((scores.micro_f1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((scores.macro_f1 - (0.8 + 0.0) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn temperature_recovers_overconfidence() {
        // Scores scaled by 4 while the truth is right only ~73% of the time
        // at t=1: the fitted temperature must soften (t > 1).
        let mut scores = Vec::new();
        let mut gold = Vec::new();
        for i in 0..100 {
            scores.push(vec![4.0, 0.0]);
            gold.push(usize::from(i % 4 == 0));
        }
        let t = fit_temperature(&scores, &gold);
        // Optimum: sigmoid(4/t) = 0.75 -> t = 4 / ln 3.
        assert!((t - 4.0 / 3f32.ln()).abs() < 0.01, "t = {t}");
        assert!(nll(&scores, &gold, t) < nll(&scores, &gold, 1.0));
    }

    #[test]
    fn argmax_picks_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, -1.0]), 1);
    }
}
