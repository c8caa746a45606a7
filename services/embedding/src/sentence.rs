//! Loading a sentence-transformers model and embedding text with candle.
//!
//! Reproduces `SentenceTransformer.encode`: the tokenizer without padding,
//! truncation to `max_seq_length` keeping [SEP], the BERT encoder, pooling per
//! `1_Pooling/config.json`, and L2 normalisation when `modules.json` lists a
//! Normalize module.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::bert::BertEncoder;
use crate::error::EmbeddingError;

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
    model: BertEncoder,
    tokenizer: Tokenizer,
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
    pub fn load(dir: &Path, model_id: &str) -> Result<Self, EmbeddingError> {
        let fail = |reason: String| EmbeddingError::ModelLoad {
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
        let model =
            BertEncoder::load(vb, &config).map_err(|err| fail(format!("weights: {err}")))?;

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|err| fail(format!("tokenizer.json: {err}")))?;
        // Truncation is done by hand so the untruncated length can be reported.
        tokenizer
            .with_truncation(None)
            .map_err(|err| fail(format!("tokenizer.json: {err}")))?;
        tokenizer.with_padding(None);

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

    /// Embeds `texts`, packing consecutive texts into forward passes of at
    /// most `max_batch_tokens` tokens (a longer text goes alone). Packed
    /// texts are not padded, so the budget counts real tokens only. Vectors
    /// come back in input order, L2-normalised if asked.
    pub fn embed(
        &self,
        texts: &[String],
        normalize: bool,
        max_batch_tokens: usize,
    ) -> Result<Vec<TextEmbedding>, EmbeddingError> {
        let encoded = self.encode(texts)?;
        let mut vectors = Vec::with_capacity(encoded.len());
        let mut start = 0;
        while start < encoded.len() {
            let mut end = start + 1;
            let mut tokens = encoded[start].ids.len();
            while end < encoded.len() && tokens + encoded[end].ids.len() <= max_batch_tokens {
                tokens += encoded[end].ids.len();
                end += 1;
            }
            vectors.extend(self.forward(&encoded[start..end])?);
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

    fn encode(&self, texts: &[String]) -> Result<Vec<Encoded>, EmbeddingError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|err| EmbeddingError::Inference(format!("tokenizer: {err}")))?;
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

    /// Encodes a chunk of texts and pools each text's token vectors.
    fn forward(&self, chunk: &[Encoded]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        let ids: Vec<&[u32]> = chunk.iter().map(|e| e.ids.as_slice()).collect();
        let hidden = self.model.forward(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        let lens: Vec<usize> = chunk.iter().map(|e| e.ids.len()).collect();
        Ok(pool_texts(
            &hidden,
            &lens,
            self.info.dimension,
            self.info.pooling,
        ))
    }
}

/// Pools packed token vectors (`lens[i]` rows for text i, in order) into one
/// vector per text. Each text gets its own slice, so a pooling that stops
/// early (CLS) cannot shift the next text's rows.
fn pool_texts(hidden: &[f32], lens: &[usize], dim: usize, pooling: Pooling) -> Vec<Vec<f32>> {
    let mut start = 0;
    lens.iter()
        .map(|&len| {
            let rows = &hidden[start * dim..(start + len) * dim];
            start += len;
            pool(rows.chunks_exact(dim), len, dim, pooling)
        })
        .collect()
}

/// One text's vector from its token vectors, as sentence-transformers pools
/// (f32 sums, as PyTorch does).
fn pool<'a>(
    rows: impl Iterator<Item = &'a [f32]>,
    count: usize,
    dim: usize,
    pooling: Pooling,
) -> Vec<f32> {
    let mut out = match pooling {
        Pooling::Max => vec![f32::NEG_INFINITY; dim],
        Pooling::Mean | Pooling::Cls => vec![0f32; dim],
    };
    for (i, row) in rows.enumerate() {
        match pooling {
            Pooling::Mean => out.iter_mut().zip(row).for_each(|(o, v)| *o += v),
            Pooling::Max => out.iter_mut().zip(row).for_each(|(o, v)| *o = o.max(*v)),
            Pooling::Cls if i == 0 => out.copy_from_slice(row),
            Pooling::Cls => break,
        }
    }
    if pooling == Pooling::Mean {
        let scale = 1.0 / count.max(1) as f32;
        out.iter_mut().for_each(|v| *v *= scale);
    }
    out
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

/// The Hub id used when no local model is cached.
pub const DEFAULT_HUB_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The set-up script's cached model if present, else the Hub id.
pub fn default_model() -> String {
    let cached = lextral_common::lextral_home()
        .join("models")
        .join("all-MiniLM-L6-v2");
    if cached.join("model.safetensors").is_file() {
        cached.display().to_string()
    } else {
        DEFAULT_HUB_MODEL.to_owned()
    }
}

/// Turns `--embed-model` into a local directory: an existing directory as is,
/// otherwise a Hub id (`owner/name`) downloaded into the Hugging Face cache.
pub async fn resolve_model_dir(spec: &str) -> Result<PathBuf, EmbeddingError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id =
        !spec.starts_with(['/', '.', '~']) && spec.matches('/').count() == 1 && !path.exists();
    if !looks_like_hub_id {
        return Err(EmbeddingError::ModelLoad {
            path: spec.to_owned(),
            reason: "not a model directory nor a Hub model id (owner/name)".to_owned(),
        });
    }
    download_from_hub(spec)
        .await
        .map_err(|reason| EmbeddingError::ModelLoad {
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
    fn pooling_keeps_each_texts_rows() {
        // Two texts of 2 and 3 rows, dimension 2.
        let hidden = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let lens = [2, 3];
        assert_eq!(
            pool_texts(&hidden, &lens, 2, Pooling::Cls),
            vec![vec![1.0, 2.0], vec![10.0, 20.0]]
        );
        assert_eq!(
            pool_texts(&hidden, &lens, 2, Pooling::Mean),
            vec![vec![2.0, 3.0], vec![30.0, 40.0]]
        );
        assert_eq!(
            pool_texts(&hidden, &lens, 2, Pooling::Max),
            vec![vec![3.0, 4.0], vec![50.0, 60.0]]
        );
    }

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
