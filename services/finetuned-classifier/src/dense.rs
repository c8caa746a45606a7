//! A dense head on frozen sentence embeddings: a linear layer or a
//! one-hidden-layer MLP, loaded from the model directory.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

/// A trained head: `(weight [in, out], bias [out])` per layer, ReLU between.
#[derive(Debug, Clone)]
pub struct DenseHead {
    layers: Vec<(Tensor, Tensor)>,
}

/// Rows of a matrix as one `[n, dim]` tensor.
pub fn matrix(rows: &[Vec<f32>], device: &Device) -> candle_core::Result<Tensor> {
    let dim = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), dim), device)
}

impl DenseHead {
    /// A head from `(weight [in, out], bias [out])` per layer.
    pub fn from_layers(layers: Vec<(Tensor, Tensor)>) -> Self {
        Self { layers }
    }

    /// Class scores for a batch `[n, dim]`.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w)?.broadcast_add(b)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Class scores per row, as plain vectors.
    pub fn logits_rows(&self, rows: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let x = matrix(rows, &self.layers[0].0.device().clone())?;
        self.logits(&x)?.to_vec2::<f32>()
    }

    /// Input dimension.
    pub fn input_dim(&self) -> usize {
        self.layers[0].0.dims()[0]
    }

    /// Tensors to save, named `{prefix}.{layer}.weight|bias`.
    pub fn tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.insert(format!("{prefix}.{i}.weight"), w.clone());
            out.insert(format!("{prefix}.{i}.bias"), b.clone());
        }
        out
    }

    /// Rebuilds a head from saved tensors.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<Self, String> {
        let mut layers = Vec::new();
        while let (Some(w), Some(b)) = (
            tensors.get(&format!("{prefix}.{}.weight", layers.len())),
            tensors.get(&format!("{prefix}.{}.bias", layers.len())),
        ) {
            let (w_dims, b_dims) = (w.dims(), b.dims());
            if w_dims.len() != 2 || b_dims.len() != 1 || w_dims[1] != b_dims[0] {
                return Err(format!(
                    "{prefix}.{}: weight {w_dims:?} and bias {b_dims:?} do not fit",
                    layers.len()
                ));
            }
            if let Some((prev, _)) = layers.last() {
                let prev: &Tensor = prev;
                if prev.dims()[1] != w_dims[0] {
                    return Err(format!("{prefix}.{}: input size mismatch", layers.len()));
                }
            }
            layers.push((
                w.to_dtype(DType::F32).map_err(|e| e.to_string())?,
                b.to_dtype(DType::F32).map_err(|e| e.to_string())?,
            ));
        }
        if layers.is_empty() {
            return Err(format!("no {prefix}.0.weight / {prefix}.0.bias tensors"));
        }
        Ok(Self { layers })
    }
}
