//! Score types and helpers the model and its training share.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_picks_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, -1.0]), 1);
    }
}
