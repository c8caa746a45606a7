//! The lexical model's linear layer on sparse TF-IDF rows.

use crate::tfidf::SparseRow;

/// A linear classifier: `logits = x·W + b`, `W` stored feature-major so a
/// sparse row touches contiguous memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// Input dimension.
    pub n_features: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// `n_features × n_classes`, row-major.
    pub weights: Vec<f32>,
    /// One per class.
    pub bias: Vec<f32>,
}

impl LinearModel {
    /// All-zero model.
    pub fn zeros(n_features: usize, n_classes: usize) -> Self {
        Self {
            n_features,
            n_classes,
            weights: vec![0.0; n_features * n_classes],
            bias: vec![0.0; n_classes],
        }
    }

    /// Class scores of one row.
    pub fn logits(&self, row: &SparseRow) -> Vec<f32> {
        let mut out = self.bias.clone();
        self.add_logits(row, &mut out);
        out
    }

    /// Adds the row's `x·W` to `out`.
    pub fn add_logits(&self, row: &SparseRow, out: &mut [f32]) {
        let k = self.n_classes;
        for (&i, &x) in row.indices.iter().zip(&row.values) {
            let w = &self.weights[i as usize * k..(i as usize + 1) * k];
            out.iter_mut().zip(w).for_each(|(o, w)| *o += x * w);
        }
    }
}
