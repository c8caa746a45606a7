//! Training the `head` method: a linear layer or a one-hidden-layer MLP on
//! frozen sentence embeddings, trained with candle (AdamW, mini-batches, dropout,
//! optional class-balanced loss) and early-stopped on validation.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use lextral_finetuned_classifier::{argmax, matrix, DenseHead, F1Scores};

use crate::scoring::f1_scores;

/// Head hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadConfig {
    /// Hidden units; 0 means a linear head.
    pub hidden: usize,
    /// Dropout on the input and hidden activations while training.
    pub dropout: f32,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Most epochs.
    pub max_epochs: usize,
    /// Epochs without a better validation score before stopping.
    pub patience: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Weight the loss inversely to class frequency.
    pub balanced: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden: 0,
            dropout: 0.1,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            max_epochs: 200,
            patience: 25,
            batch_size: 32,
            balanced: false,
        }
    }
}

/// How head training went.
#[derive(Debug, Clone, Serialize)]
pub struct HeadReport {
    /// Epochs run.
    pub epochs: usize,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation scores of the kept weights.
    pub validation: F1Scores,
}

fn uniform(rng: &mut StdRng, rows: usize, cols: usize, bound: f32) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound))
        .collect()
}

fn dropout_mask(
    rng: &mut StdRng,
    shape: (usize, usize),
    p: f32,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let keep = 1.0 - p;
    let values: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// Mean of `weight[y] · -log softmax(logits)[y]`.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    let w = weights.gather(labels, 0)?;
    (picked * &w)?.sum_all()? / f64::from(w.sum_all()?.to_scalar::<f32>()?)
}

/// Per-class loss weights: `n / (classes present · count)`, or all ones.
pub fn class_weights(labels: &[usize], n_classes: usize, balanced: bool) -> Vec<f32> {
    let mut counts = vec![0usize; n_classes];
    labels.iter().for_each(|&l| counts[l] += 1);
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if balanced && c > 0 {
                labels.len() as f32 / (present as f32 * c as f32)
            } else {
                1.0
            }
        })
        .collect()
}

/// Trains a head, keeping the weights of the best validation epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_head(
    train_x: &[Vec<f32>],
    train_y: &[usize],
    val_x: &[Vec<f32>],
    val_y: &[usize],
    n_classes: usize,
    config: &HeadConfig,
    seed: u64,
    deadline: Option<Instant>,
    progress: &ProgressBar,
) -> anyhow::Result<(DenseHead, HeadReport)> {
    anyhow::ensure!(!train_x.is_empty(), "no training examples");
    let device = Device::Cpu;
    let dim = train_x[0].len();
    let mut rng = StdRng::seed_from_u64(seed);
    let sizes: Vec<usize> = if config.hidden > 0 {
        vec![dim, config.hidden, n_classes]
    } else {
        vec![dim, n_classes]
    };
    let mut vars = Vec::new();
    for pair in sizes.windows(2) {
        let bound = (6.0 / (pair[0] + pair[1]) as f32).sqrt();
        let w = Tensor::from_vec(
            uniform(&mut rng, pair[0], pair[1], bound),
            (pair[0], pair[1]),
            &device,
        )?;
        vars.push(Var::from_tensor(&w)?);
        vars.push(Var::from_tensor(&Tensor::zeros(
            pair[1],
            DType::F32,
            &device,
        )?)?);
    }
    let snapshot = |vars: &[Var]| -> candle_core::Result<DenseHead> {
        let mut layers = Vec::new();
        for pair in vars.chunks(2) {
            layers.push((pair[0].as_tensor().copy()?, pair[1].as_tensor().copy()?));
        }
        Ok(DenseHead::from_layers(layers))
    };
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;
    let weights = Tensor::new(class_weights(train_y, n_classes, config.balanced), &device)?;
    let val_matrix = matrix(val_x, &device)?;

    let mut best: Option<(DenseHead, F1Scores, usize)> = None;
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    let mut epochs = 0;
    progress.set_length(config.max_epochs as u64);
    for epoch in 1..=config.max_epochs {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        epochs = epoch;
        order.shuffle(&mut rng);
        for batch in order.chunks(config.batch_size.max(1)) {
            let rows: Vec<Vec<f32>> = batch.iter().map(|&i| train_x[i].clone()).collect();
            let labels: Vec<u32> = batch.iter().map(|&i| train_y[i] as u32).collect();
            let mut h = matrix(&rows, &device)?;
            let layer_count = vars.len() / 2;
            for (i, pair) in vars.chunks(2).enumerate() {
                if config.dropout > 0.0 {
                    let mask = dropout_mask(&mut rng, h.dims2()?, config.dropout, &device)?;
                    h = (h * mask)?;
                }
                h = h
                    .matmul(pair[0].as_tensor())?
                    .broadcast_add(pair[1].as_tensor())?;
                if i + 1 < layer_count {
                    h = h.relu()?;
                }
            }
            let labels = Tensor::new(labels, &device)?;
            let loss = weighted_cross_entropy(&h, &labels, &weights)?;
            optimizer.backward_step(&loss)?;
        }
        let head = snapshot(&vars)?;
        let scores = if val_x.is_empty() {
            F1Scores {
                n: 0,
                micro_f1: 0.0,
                macro_f1: 0.0,
            }
        } else {
            let logits = head.logits(&val_matrix)?.to_vec2::<f32>()?;
            let predicted: Vec<usize> = logits.iter().map(|z| argmax(z)).collect();
            f1_scores(val_y, &predicted)
        };
        progress.set_position(epoch as u64);
        progress.set_message(format!(
            "head epoch {epoch}: validation macro-F1 {:.4} micro-F1 {:.4}",
            scores.macro_f1, scores.micro_f1
        ));
        // Without validation data the last epoch is kept.
        let improved =
            val_x.is_empty() || best.as_ref().is_none_or(|(_, s, _)| scores.better_than(s));
        if improved {
            best = Some((head, scores, epoch));
        } else if best
            .as_ref()
            .is_some_and(|(_, _, e)| epoch - e >= config.patience)
        {
            break;
        }
    }
    let (head, validation, best_epoch) = match best {
        Some(best) => best,
        None => (
            snapshot(&vars)?,
            F1Scores {
                n: 0,
                micro_f1: 0.0,
                macro_f1: 0.0,
            },
            0,
        ),
    };
    Ok((
        head,
        HeadReport {
            epochs,
            best_epoch,
            validation,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn blobs(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let label = i % 3;
            let mut v = vec![0.0f32; 4];
            v[label] = 1.0;
            v.iter_mut().for_each(|x| *x += rng.random_range(-0.3..0.3));
            x.push(v);
            y.push(label);
        }
        (x, y)
    }

    #[test]
    fn learns_blobs_deterministically_and_round_trips() {
        let (tx, ty) = blobs(90, 1);
        let (vx, vy) = blobs(30, 2);
        let config = HeadConfig {
            hidden: 8,
            max_epochs: 60,
            ..Default::default()
        };
        let bar = ProgressBar::hidden();
        let (head, report) = train_head(&tx, &ty, &vx, &vy, 3, &config, 7, None, &bar).unwrap();
        assert!(report.validation.micro_f1 > 0.95, "{report:?}");
        let (again, _) = train_head(&tx, &ty, &vx, &vy, 3, &config, 7, None, &bar).unwrap();
        assert_eq!(
            head.logits_rows(&vx).unwrap(),
            again.logits_rows(&vx).unwrap(),
            "same seed, same weights"
        );
        let restored = DenseHead::from_tensors(&head.tensors("head"), "head").unwrap();
        assert_eq!(
            restored.logits_rows(&vx).unwrap(),
            head.logits_rows(&vx).unwrap()
        );
        assert_eq!(restored.input_dim(), 4);
    }

    #[test]
    fn rejects_mismatched_tensors() {
        let device = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert(
            "h.0.weight".into(),
            Tensor::zeros((4, 3), DType::F32, &device).unwrap(),
        );
        tensors.insert(
            "h.0.bias".into(),
            Tensor::zeros(2, DType::F32, &device).unwrap(),
        );
        assert!(DenseHead::from_tensors(&tensors, "h").is_err());
        assert!(DenseHead::from_tensors(&HashMap::new(), "h").is_err());
    }

    #[test]
    fn balanced_weights_upweight_rare_classes() {
        let w = class_weights(&[0, 0, 0, 1], 3, true);
        assert!(w[1] > w[0]);
        assert_eq!(class_weights(&[0, 1], 2, false), vec![1.0, 1.0]);
    }
}
