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
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::dense::{class_weights, weighted_cross_entropy, DenseHead};
use crate::scoring::{argmax, f1_scores, log_softmax_in_place, F1Scores};
use crate::train::{TrainData, TrainOptions};

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
    bert: BertModel,
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
        let types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
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

fn evaluate(
    net: &Network,
    val: &[Encoded],
    gold: &[usize],
    n_classes: usize,
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
    let scores = f1_scores(gold, &predicted, n_classes);
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
        "max_seq_length must be at least 2"
    );
    let device = Device::cuda_if_available(0)?;
    tracing::info!(?device, model_id, "fine-tuning the encoder");
    let bert_config: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json"))?)?;
    let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|err| anyhow::anyhow!("tokenizer.json: {err}"))?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let bert = BertModel::load(vb, &bert_config)?;
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

    // Length-bucketed batches: similar lengths together waste less padding.
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.sort_by_key(|&i| train[i].ids.len());
    let batches: Vec<Vec<usize>> = order
        .chunks(config.batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();

    let staging = tempfile::tempdir()?;
    let best_weights = staging.path().join("best.safetensors");
    let mut best: Option<(Vec<Vec<f32>>, F1Scores, Tensor, Tensor)> = None;
    let progress = if options.progress {
        indicatif::ProgressBar::new((batches.len() * config.epochs) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut stopped = false;
    for epoch in 1..=config.epochs {
        let mut batch_order: Vec<usize> = (0..batches.len()).collect();
        batch_order.shuffle(&mut rng);
        let mut loss_sum = 0.0f32;
        for (step, &b) in batch_order.iter().enumerate() {
            if Instant::now() >= deadline {
                stopped = true;
                break;
            }
            let batch: Vec<&Encoded> = batches[b].iter().map(|&i| &train[i]).collect();
            let labels: Vec<u32> = batches[b].iter().map(|&i| train_y[i] as u32).collect();
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
                loss_sum / (step + 1) as f32
            ));
        }
        let (log_probs, scores) = evaluate(&net, &val, &gold, n_classes, &device)?;
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
    crate::model::copy_dir(model_dir, encoder.path(), &|name| {
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
