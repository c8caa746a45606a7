//! Loading a sentence-transformers model and embedding text with candle.
//!
//! Reproduces `SentenceTransformer.encode`: the tokenizer without padding,
//! truncation to `max_seq_length` keeping [SEP], the BERT encoder, pooling per
//! `1_Pooling/config.json`, and L2 normalisation when `modules.json` lists a
//! Normalize module.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::EmbedderError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over real (non-padding) tokens.
    Mean,
    /// The [CLS] token.
    Cls,
    /// Element-wise max over real tokens.
    Max,
}

impl Pooling {
    /// The name reported by `Info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        }
    }
}

/// What the loaded model is.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Where it came from (Hub id or directory).
    pub model_id: String,
    /// Vector dimension.
    pub dimension: usize,
    /// Tokens per text after truncation, [CLS] and [SEP] included.
    pub max_seq_len: usize,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether sentence-transformers normalises this model's vectors.
    pub normalize: bool,
}

/// The embedding of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbedding {
    /// The vector.
    pub values: Vec<f32>,
    /// Tokens before truncation, special tokens included.
    pub token_count: usize,
    /// Whether the text was cut to the max sequence length.
    pub truncated: bool,
}

struct Encoded {
    ids: Vec<u32>,
    token_count: usize,
    truncated: bool,
}

/// A loaded model and tokenizer.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    info: ModelInfo,
}

#[derive(Deserialize)]
struct StModule {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

impl SentenceEmbedder {
    /// Loads a model directory in Hugging Face layout.
    pub fn load(dir: &Path, model_id: &str) -> Result<Self, EmbedderError> {
        let fail = |reason: String| EmbedderError::ModelLoad {
            path: dir.display().to_string(),
            reason,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|err| fail(format!("config.json: {err}")))?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|err| fail(format!("config.json is not a BERT config: {err}")))?;

        let weights_path = dir.join("model.safetensors");
        let weights = std::fs::read(&weights_path).map_err(|err| {
            fail(format!(
                "model.safetensors: {err} (only safetensors weights are supported)"
            ))
        })?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|err| fail(format!("model.safetensors: {err}")))?;
        let model = BertModel::load(vb, &config).map_err(|err| fail(format!("weights: {err}")))?;

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|err| fail(format!("tokenizer.json: {err}")))?;
        // Truncation is done by hand so the untruncated length can be reported.
        tokenizer
            .with_truncation(None)
            .map_err(|err| fail(format!("tokenizer.json: {err}")))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);

        let modules: Vec<StModule> = read_optional_json(&dir.join("modules.json"))
            .map_err(fail)?
            .unwrap_or_default();
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| dir.join(&m.path));
        let pooling_config: PoolingConfig = match pooling_dir {
            Some(pooling_dir) => read_optional_json(&pooling_dir.join("config.json"))
                .map_err(fail)?
                .unwrap_or_default(),
            None => PoolingConfig::default(),
        };
        let pooling = if pooling_config.pooling_mode_cls_token {
            Pooling::Cls
        } else if pooling_config.pooling_mode_max_tokens {
            Pooling::Max
        } else {
            Pooling::Mean
        };
        let st_config: Option<StConfig> =
            read_optional_json(&dir.join("sentence_bert_config.json")).map_err(fail)?;
        let max_seq_len = st_config
            .and_then(|c| c.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        if max_seq_len < 2 {
            return Err(fail(format!("max_seq_length {max_seq_len} is too small")));
        }

        Ok(Self {
            model,
            tokenizer,
            device,
            pad_id,
            info: ModelInfo {
                model_id: model_id.to_owned(),
                dimension: config.hidden_size,
                max_seq_len,
                pooling,
                normalize,
            },
        })
    }

    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Embeds `texts`, packing length-sorted texts into forward passes of at
    /// most `max_batch_tokens` padded tokens so short texts are not padded to
    /// long ones. Vectors come back in input order, L2-normalised if asked.
    pub fn embed(
        &self,
        texts: &[String],
        normalize: bool,
        max_batch_tokens: usize,
    ) -> Result<Vec<TextEmbedding>, EmbedderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = self.encode(texts)?;
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| Reverse(encoded[i].ids.len()));

        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encoded.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first, so the first text sets the padded length.
            let longest = encoded[order[start]].ids.len();
            let per_batch = (max_batch_tokens / longest).max(1);
            let end = (start + per_batch).min(order.len());
            let batch: Vec<&Encoded> = order[start..end].iter().map(|&i| &encoded[i]).collect();
            for (&index, vector) in order[start..end].iter().zip(self.forward(&batch)?) {
                vectors[index] = vector;
            }
            start = end;
        }

        Ok(encoded
            .into_iter()
            .zip(vectors)
            .map(|(encoding, mut values)| {
                if normalize {
                    l2_normalize(&mut values);
                }
                TextEmbedding {
                    values,
                    token_count: encoding.token_count,
                    truncated: encoding.truncated,
                }
            })
            .collect())
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Encoded>, EmbedderError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|err| EmbedderError::Inference(format!("tokenizer: {err}")))?;
        let max = self.info.max_seq_len;
        Ok(encodings
            .into_iter()
            .map(|encoding| {
                let mut ids = encoding.get_ids().to_vec();
                let token_count = ids.len();
                let truncated = token_count > max;
                if truncated {
                    // Keep [CLS] + the first tokens and end with [SEP], as
                    // Hugging Face truncation does.
                    let last = ids[token_count - 1];
                    ids.truncate(max - 1);
                    ids.push(last);
                }
                Encoded {
                    ids,
                    token_count,
                    truncated,
                }
            })
            .collect())
    }

    fn forward(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let rows = batch.len();
        let width = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for encoded in batch {
            let pad = width - encoded.ids.len();
            ids.extend_from_slice(&encoded.ids);
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend(std::iter::repeat_n(1u32, encoded.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let input_ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let attention_mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&attention_mask))?;
        let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = match self.info.pooling {
            Pooling::Mean => {
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                // Padding gets a huge negative offset so it never wins the max.
                let offset = ((mask - 1.0)? * 1e9)?;
                hidden.broadcast_add(&offset)?.max(1)?
            }
        };
        Ok(pooled.to_vec2::<f32>()?)
    }
}

/// Scales `values` to unit length (left as is when all zero).
pub fn l2_normalize(values: &mut [f32]) {
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 1e-12 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
}

fn read_optional_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| format!("{}: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// Turns `--embed-model` into a local directory: an existing directory as is,
/// otherwise a Hub id (`owner/name`) downloaded into the Hugging Face cache.
pub async fn resolve_model_dir(spec: &str) -> Result<PathBuf, EmbedderError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id =
        !spec.starts_with(['/', '.', '~']) && spec.matches('/').count() == 1 && !path.exists();
    if !looks_like_hub_id {
        return Err(EmbedderError::ModelLoad {
            path: spec.to_owned(),
            reason: "not a model directory nor a Hub model id (owner/name)".to_owned(),
        });
    }
    download_from_hub(spec)
        .await
        .map_err(|reason| EmbedderError::ModelLoad {
            path: spec.to_owned(),
            reason: format!(
                "Hub download failed ({reason}); run scripts/setup-model.sh or set \
             LEXTRAL_EMBED_MODEL to a local model directory"
            ),
        })
}

async fn download_from_hub(model_id: &str) -> Result<PathBuf, String> {
    let api = hf_hub::api::tokio::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|err| err.to_string())?;
    let repo = api.model(model_id.to_owned());
    let config = repo
        .get("config.json")
        .await
        .map_err(|err| err.to_string())?;
    for required in ["tokenizer.json", "model.safetensors"] {
        repo.get(required)
            .await
            .map_err(|err| format!("{required}: {err}"))?;
    }
    // Sentence-transformers files are optional: plain BERT repos lack them.
    if let Ok(modules_path) = repo.get("modules.json").await {
        let _ = repo.get("sentence_bert_config.json").await;
        let modules: Vec<StModule> = read_optional_json(&modules_path)?.unwrap_or_default();
        for module in modules.iter().filter(|m| m.kind.ends_with(".Pooling")) {
            let _ = repo.get(&format!("{}/config.json", module.path)).await;
        }
    }
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "downloaded file has no parent directory".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_unit_length() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut zero = vec![0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }

    #[test]
    fn missing_model_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SentenceEmbedder::load(dir.path(), "x").err().unwrap();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[tokio::test]
    async fn rejects_specs_that_are_neither_dirs_nor_hub_ids() {
        let err = resolve_model_dir("/no/such/dir").await.unwrap_err();
        assert!(err.to_string().contains("not a model directory"), "{err}");
    }
}
