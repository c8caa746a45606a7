//! Validation scoring and probability calibration shared by every method.

use lextral_finetuned_classifier::{log_softmax_in_place, F1Scores};

/// Scores label indices: micro-F1 (accuracy) and macro-F1 over the gold
/// labels, computed by `lextral-eval` as `lextral eval` reports them.
pub fn f1_scores(gold: &[usize], predicted: &[usize]) -> F1Scores {
    let scores = lextral_eval::metrics::score_indices(gold, predicted);
    F1Scores {
        n: gold.len(),
        micro_f1: scores.accuracy,
        macro_f1: scores.macro_f1_gold_labels,
    }
}

/// The rows a temperature can be fitted on: those whose gold label the
/// model could predict at all. A label without a single training clause
/// (rare labels in a fold, or in train) gets a sentinel score far below the
/// rest (see the SVM); leaving its clauses in would let a handful of
/// hopeless rows push the temperature to its bound.
pub fn calibratable(scores: &[Vec<f32>], gold: &[usize]) -> (Vec<Vec<f32>>, Vec<usize>) {
    scores
        .iter()
        .zip(gold)
        .filter(|(row, &g)| row[g] > UNPREDICTABLE)
        .map(|(row, &g)| (row.clone(), g))
        .unzip()
}

/// Log-probabilities below this mark a label the model never predicts.
const UNPREDICTABLE: f32 = -100.0;

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
    fn clauses_of_labels_the_model_never_predicts_are_not_calibrated_on() {
        let scores = vec![vec![-0.1, -2.5, -1000.0], vec![-1.2, -0.4, -999.0]];
        let (rows, gold) = calibratable(&scores, &[0, 2]);
        assert_eq!(gold, vec![0]);
        assert_eq!(rows, vec![scores[0].clone()]);
    }

    #[test]
    fn macro_f1_averages_gold_labels_only() {
        // Label 0: P=1/2 R=1 F=2/3; label 1: P=0 R=0; label 2 predicted only.
        let scores = f1_scores(&[0, 1, 0], &[0, 0, 0]);
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
}
