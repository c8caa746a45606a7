//! The `finetune` method: the sentence encoder and a linear head trained end
//! to end with candle (full fine-tuning of the transformer layers; the token
//! embedding table stays frozen, which halves optimiser memory and keeps
//! rare-token embeddings stable on small data). Runs on CPU; with candle
//! built for CUDA it runs on the GPU (`Device::cuda_if_available`).
//!
//! The result is a complete sentence-transformers-style directory (config,
//! tokenizer, pooling, fine-tuned weights) bundled in the model as
//! `encoder/`, so serving embeds with the same code as the embedder.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use candle_transformers::models::bert::Config as BertConfig;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use lextral_finetuned_classifier::{argmax, copy_dir, log_softmax_in_place, DenseHead, F1Scores};

use crate::head::{class_weights, weighted_cross_entropy};
use crate::scoring::f1_scores;
use crate::train::{TrainData, TrainOptions};
use crate::trainable_bert::TrainableBert;

/// Fine-tuning hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FinetuneConfig {
    /// Passes over the training data (fewer if `--max-minutes` is reached).
    pub epochs: usize,
    /// Clauses per step.
    pub batch_size: usize,
    /// AdamW learning rate of the encoder.
    pub learning_rate: f64,
    /// AdamW learning rate of the head.
    pub head_learning_rate: f64,
    /// Tokens per clause while training and serving (shorter = faster).
    pub max_seq_length: usize,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 16,
            learning_rate: 5e-5,
            head_learning_rate: 3e-3,
            max_seq_length: 128,
        }
    }
}

/// Logit scale of the centroid-initialised head (cosine similarity × 20
/// spans a softmax's useful range).
const CENTROID_SCALE: f32 = 20.0;

/// What fine-tuning produced.
pub struct FinetuneFit {
    /// The head (on normalised mean-pooled encoder output).
    pub head: DenseHead,
    /// Encoder output size.
    pub dimension: usize,
    /// Validation log-probabilities of the kept weights.
    pub val_log_probs: Vec<Vec<f32>>,
    /// Their scores.
    pub scores: F1Scores,
}

struct Encoded {
    ids: Vec<u32>,
}

fn encode(tokenizer: &Tokenizer, texts: &[String], max_len: usize) -> anyhow::Result<Vec<Encoded>> {
    let mut out = Vec::with_capacity(texts.len());
    for text in texts {
        let encoding = tokenizer
            .encode(text.as_str(), true)
            .map_err(|err| anyhow::anyhow!("tokenizer: {err}"))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > max_len {
            // Keep the closing [SEP], as sentence-transformers does.
            let last = *ids.last().expect("non-empty");
            ids.truncate(max_len - 1);
            ids.push(last);
        }
        out.push(Encoded { ids });
    }
    Ok(out)
}

struct Network {
    bert: TrainableBert,
    head_w: Var,
    head_b: Var,
}

impl Network {
    /// Normalised mean-pooled sentence vectors `[n, hidden]`.
    fn embed(&self, batch: &[&Encoded], device: &Device) -> candle_core::Result<Tensor> {
        let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for e in batch {
            ids.extend(e.ids.iter().copied());
            ids.extend(std::iter::repeat_n(0u32, len - e.ids.len()));
            mask.extend(std::iter::repeat_n(1u32, e.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, len - e.ids.len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), len), device)?;
        let mask = Tensor::from_vec(mask, (batch.len(), len), device)?;
        let hidden = self.bert.forward(&ids, &mask)?;
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?;
        let counts = maskf.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)
    }

    fn logits(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        pooled
            .matmul(self.head_w.as_tensor())?
            .broadcast_add(self.head_b.as_tensor())
    }
}

/// Steps of linear warm-up at the start of fine-tuning.
const WARMUP_STEPS: usize = 20;
/// Clauses per "sortish" pool: each pool is sorted by length and cut into
/// batches, so padding stays small while batches still mix labels.
const POOL_BATCHES: usize = 8;

/// One epoch's batches: shuffled, then sorted by length within pools of
/// `POOL_BATCHES` batches, and the batches shuffled again. Fully
/// length-sorted batches would group clauses of a few labels together and
/// bias each step's gradient (on LEDGAR, length says much about the label).
fn epoch_batches(train: &[Encoded], batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(train.len().div_ceil(batch_size));
    for pool in order.chunks_mut(batch_size * POOL_BATCHES) {
        pool.sort_by_key(|&i| train[i].ids.len());
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Learning-rate multiplier: linear warm-up, then linear decay to zero at
/// whichever ends first, the planned steps or the time budget — so a run cut
/// short by `--max-minutes` still ends with a small learning rate instead of
/// stopping mid-stride.
fn lr_scale(
    step: usize,
    planned_steps: usize,
    elapsed: std::time::Duration,
    budget: std::time::Duration,
) -> f64 {
    let warmup = ((step + 1) as f64 / WARMUP_STEPS as f64).min(1.0);
    let by_steps = step as f64 / planned_steps.max(1) as f64;
    let by_time = if budget.is_zero() {
        1.0
    } else {
        elapsed.as_secs_f64() / budget.as_secs_f64()
    };
    warmup * (1.0 - by_steps.max(by_time)).clamp(0.0, 1.0)
}

fn evaluate(
    net: &Network,
    val: &[Encoded],
    gold: &[usize],
    device: &Device,
) -> anyhow::Result<(Vec<Vec<f32>>, F1Scores)> {
    let mut log_probs = Vec::with_capacity(val.len());
    for chunk in val.chunks(16) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let pooled = net.embed(&refs, device)?.detach();
        let rows = net.logits(&pooled)?.detach().to_vec2::<f32>()?;
        for mut row in rows {
            log_softmax_in_place(&mut row);
            log_probs.push(row);
        }
    }
    let predicted: Vec<usize> = log_probs.iter().map(|z| argmax(z)).collect();
    let scores = f1_scores(gold, &predicted);
    Ok((log_probs, scores))
}

/// Fine-tunes the encoder in `model_dir`; returns the encoder directory
/// (to bundle) and the head.
pub fn finetune(
    model_dir: &Path,
    model_id: &str,
    data: &TrainData,
    options: &TrainOptions,
    deadline: Instant,
    candidates: &mut BTreeMap<String, F1Scores>,
) -> anyhow::Result<(tempfile::TempDir, FinetuneFit)> {
    let config = &options.finetune;
    anyhow::ensure!(
        config.max_seq_length >= 2,
        "fine-tuning tokens per clause (--finetune-max-tokens) must be at least 2"
    );
    anyhow::ensure!(
        config.epochs >= 1,
        "fine-tuning epochs (--finetune-epochs) must be at least 1"
    );
    let device = Device::cuda_if_available(0)?;
    tracing::info!(?device, model_id, "fine-tuning the encoder");
    let bert_config: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json"))?)?;
    let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|err| anyhow::anyhow!("tokenizer.json: {err}"))?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let bert = TrainableBert::load(vb, &bert_config)?;
    varmap.load(model_dir.join("model.safetensors"))?;
    let hidden = bert_config.hidden_size;
    let n_classes = data.labels.len();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let head_w = Var::from_tensor(&Tensor::zeros((hidden, n_classes), DType::F32, &device)?)?;
    let head_b = Var::from_tensor(&Tensor::zeros(n_classes, DType::F32, &device)?)?;
    let net = Network {
        bert,
        head_w,
        head_b,
    };

    let encoder_vars: Vec<Var> = {
        let data = varmap.data().lock().expect("varmap lock");
        data.iter()
            .filter(|(name, _)| !name.starts_with("embeddings.word_embeddings"))
            .map(|(_, var)| var.clone())
            .collect()
    };
    let mut encoder_opt = AdamW::new(
        encoder_vars,
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let mut head_opt = AdamW::new(
        vec![net.head_w.clone(), net.head_b.clone()],
        ParamsAdamW {
            lr: config.head_learning_rate,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;

    let train_texts: Vec<String> = data.train.iter().map(|(t, _)| t.clone()).collect();
    let train_y: Vec<usize> = data.train.iter().map(|(_, l)| *l).collect();
    let val_texts: Vec<String> = data.validation.iter().map(|(t, _)| t.clone()).collect();
    let gold: Vec<usize> = data.validation.iter().map(|(_, l)| *l).collect();
    let train = encode(&tokenizer, &train_texts, config.max_seq_length)?;
    let val = encode(&tokenizer, &val_texts, config.max_seq_length)?;
    let weights = Tensor::new(
        class_weights(&train_y, n_classes, options.balanced),
        &device,
    )?;

    // Start the head as a cosine classifier on class centroids of the
    // pre-trained encoder: a random head would need far more steps than a
    // CPU budget allows before the encoder gets useful gradients.
    let mut centroids = vec![0.0f32; hidden * n_classes];
    let all: Vec<usize> = (0..train.len()).collect();
    for chunk in all.chunks(32) {
        let refs: Vec<&Encoded> = chunk.iter().map(|&i| &train[i]).collect();
        let pooled = net.embed(&refs, &device)?.detach().to_vec2::<f32>()?;
        for (&i, row) in chunk.iter().zip(pooled) {
            for (d, v) in row.into_iter().enumerate() {
                centroids[d * n_classes + train_y[i]] += v;
            }
        }
    }
    for c in 0..n_classes {
        let norm = (0..hidden)
            .map(|d| centroids[d * n_classes + c].powi(2))
            .sum::<f32>()
            .sqrt();
        if norm > 0.0 {
            (0..hidden).for_each(|d| centroids[d * n_classes + c] *= CENTROID_SCALE / norm);
        }
    }
    net.head_w
        .set(&Tensor::from_vec(centroids, (hidden, n_classes), &device)?)?;

    let planned_steps = config.epochs * train.len().div_ceil(config.batch_size.max(1));
    let budget = deadline.saturating_duration_since(Instant::now());
    let started = Instant::now();
    let staging = tempfile::tempdir()?;
    let best_weights = staging.path().join("best.safetensors");
    let mut best: Option<(Vec<Vec<f32>>, F1Scores, Tensor, Tensor)> = None;
    let progress = if options.progress {
        indicatif::ProgressBar::new(planned_steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut stopped = false;
    let mut step = 0usize;
    for epoch in 1..=config.epochs {
        let batches = epoch_batches(&train, config.batch_size, &mut rng);
        let mut loss_sum = 0.0f32;
        for (index, batch_ids) in batches.iter().enumerate() {
            if Instant::now() >= deadline {
                stopped = true;
                break;
            }
            let scale = lr_scale(step, planned_steps, started.elapsed(), budget);
            encoder_opt.set_learning_rate(config.learning_rate * scale);
            head_opt.set_learning_rate(config.head_learning_rate * scale);
            step += 1;
            let batch: Vec<&Encoded> = batch_ids.iter().map(|&i| &train[i]).collect();
            let labels: Vec<u32> = batch_ids.iter().map(|&i| train_y[i] as u32).collect();
            let pooled = net.embed(&batch, &device)?;
            let logits = net.logits(&pooled)?;
            let loss = weighted_cross_entropy(&logits, &Tensor::new(labels, &device)?, &weights)?;
            let grads = loss.backward()?;
            encoder_opt.step(&grads)?;
            head_opt.step(&grads)?;
            loss_sum += loss.to_scalar::<f32>()?;
            progress.inc(1);
            progress.set_message(format!(
                "epoch {epoch} loss {:.3}",
                loss_sum / (index + 1) as f32
            ));
        }
        let (log_probs, scores) = evaluate(&net, &val, &gold, &device)?;
        candidates.insert(format!("finetune epoch={epoch}"), scores);
        tracing::info!(
            epoch,
            macro_f1 = scores.macro_f1,
            micro_f1 = scores.micro_f1,
            "fine-tuning epoch done"
        );
        if best
            .as_ref()
            .is_none_or(|(_, s, _, _)| scores.better_than(s))
        {
            varmap.save(&best_weights)?;
            best = Some((
                log_probs,
                scores,
                net.head_w.as_tensor().copy()?,
                net.head_b.as_tensor().copy()?,
            ));
        }
        if stopped {
            break;
        }
    }
    progress.finish();
    let (val_log_probs, scores, w, b) =
        best.ok_or_else(|| anyhow::anyhow!("fine-tuning produced no model"))?;

    // The bundled encoder: the base model's files with the tuned weights and
    // the training sequence length.
    let encoder = tempfile::tempdir()?;
    // Everything but the base weights (replaced below) and docs.
    copy_dir(model_dir, encoder.path(), &|name| {
        name == "model.safetensors" || name.ends_with(".bin") || name == "README.md"
    })?;
    std::fs::rename(&best_weights, encoder.path().join("model.safetensors")).or_else(|_| {
        std::fs::copy(&best_weights, encoder.path().join("model.safetensors")).map(|_| ())
    })?;
    std::fs::write(
        encoder.path().join("sentence_bert_config.json"),
        serde_json::json!({"max_seq_length": config.max_seq_length, "do_lower_case": false})
            .to_string(),
    )?;
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("head.0.weight".to_owned(), w.to_device(&Device::Cpu)?);
    tensors.insert("head.0.bias".to_owned(), b.to_device(&Device::Cpu)?);
    let head = DenseHead::from_tensors(&tensors, "head").map_err(anyhow::Error::msg)?;
    Ok((
        encoder,
        FinetuneFit {
            head,
            dimension: hidden,
            val_log_probs,
            scores,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn encoded(lengths: &[usize]) -> Vec<Encoded> {
        lengths
            .iter()
            .map(|&n| Encoded { ids: vec![1; n] })
            .collect()
    }

    #[test]
    fn epoch_batches_cover_every_clause_once_and_mix_lengths() {
        // 300 clauses whose length grows with their index.
        let train = encoded(&(1..=300).collect::<Vec<_>>());
        let mut rng = StdRng::seed_from_u64(7);
        let batches = epoch_batches(&train, 16, &mut rng);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 16));
        // Sorted within a pool: each batch is in length order ...
        for b in &batches {
            assert!(b
                .windows(2)
                .all(|w| train[w[0]].ids.len() <= train[w[1]].ids.len()));
        }
        // ... but the epoch is not one global length sort: the first batch
        // is not the 16 shortest clauses, and consecutive batches are not
        // in length order.
        let firsts: Vec<usize> = batches.iter().map(|b| b[0]).collect();
        assert!(firsts.windows(2).any(|w| w[0] > w[1]));
        // Another epoch draws other batches; the same seed the same ones.
        let again = epoch_batches(&train, 16, &mut rng);
        assert_ne!(batches, again);
        let mut rng2 = StdRng::seed_from_u64(7);
        assert_eq!(batches, epoch_batches(&train, 16, &mut rng2));
    }

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero_by_steps_or_time() {
        let long = Duration::from_secs(3600);
        let no_time = Duration::ZERO;
        // Warm-up: 1/20, 2/20, ... of the rate over the first steps.
        assert!((lr_scale(0, 1000, no_time, long) - 1.0 / WARMUP_STEPS as f64).abs() < 1e-9);
        assert!(lr_scale(5, 1000, no_time, long) < lr_scale(10, 1000, no_time, long));
        // Then linear decay by steps when time is plentiful.
        assert!((lr_scale(500, 1000, no_time, long) - 0.5).abs() < 1e-9);
        assert_eq!(lr_scale(1000, 1000, no_time, long), 0.0);
        // Or by time when the budget runs out first.
        let scale = lr_scale(100, 1000, Duration::from_secs(2700), long);
        assert!((scale - 0.25).abs() < 1e-9, "{scale}");
        assert_eq!(lr_scale(100, 1000, long, long), 0.0);
        assert_eq!(lr_scale(100, 1000, long * 2, long), 0.0);
        // A zero budget (deadline already passed) never trains at a rate.
        assert_eq!(lr_scale(100, 1000, no_time, Duration::ZERO), 0.0);
    }
}
