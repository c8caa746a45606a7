//! The model directory `lextral train` writes and the service loads:
//! `manifest.json` (labels, method, hyper-parameters, metrics, file hashes),
//! `model.safetensors` (every weight), `vocabulary.json` (TF-IDF terms, for
//! lexical parts) and `encoder/` (a fine-tuned sentence encoder, for
//! `finetune`). Nothing in it refers to the training data.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lextral_embedding::SentenceEmbedder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dense::DenseHead;
use crate::linear::LinearModel;
use crate::scoring::{log_softmax_in_place, F1Scores};
use crate::tfidf::{Block, BlockConfig, SparseRow, Vectorizer};

/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// TF-IDF vocabulary file name.
pub const VOCABULARY_FILE: &str = "vocabulary.json";
/// Fine-tuned encoder sub-directory.
pub const ENCODER_DIR: &str = "encoder";
/// Model format written in the manifest.
pub const FORMAT: &str = "lextral-classifier/1";

/// Training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Classification head on frozen sentence embeddings.
    Head,
    /// Encoder and head trained end to end.
    Finetune,
    /// TF-IDF word + character n-grams with a linear model (SVM or
    /// logistic regression), chosen by cross-validation.
    Lexical,
    /// The lexical candidates and those adding sentence-embedding features,
    /// chosen by cross-validation.
    Hybrid,
}

impl Method {
    /// Name as written in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Head => "head",
            Self::Finetune => "finetune",
            Self::Lexical => "lexical",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Where dense features come from at serving time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// Embedding model id the head was trained on.
    pub model_id: String,
    /// Vector size.
    pub dimension: usize,
    /// `embedder-service` (frozen model, served by the embedder) or
    /// `bundled-encoder` (fine-tuned copy in `encoder/`).
    pub source: String,
}

/// How scores are combined and calibrated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combination {
    /// Weight of the dense log-probabilities (1 − it for the lexical ones).
    pub dense_weight: f32,
    /// Temperature fitted on validation (probabilities = softmax(score / t)).
    pub temperature: f32,
}

/// Validation figures recorded at training time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Scores of the saved model.
    pub scores: F1Scores,
    /// Negative log-likelihood before temperature scaling.
    pub nll_uncalibrated: f64,
    /// After.
    pub nll_calibrated: f64,
    /// Every candidate tried, by name.
    pub candidates: BTreeMap<String, F1Scores>,
}

/// One candidate's cross-validated figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvCandidate {
    /// As in the table.
    pub name: String,
    /// Mean micro-F1 over folds.
    pub micro_f1_mean: f64,
    /// Standard deviation of micro-F1 over folds.
    pub micro_f1_sd: f64,
    /// Mean macro-F1 over folds.
    pub macro_f1_mean: f64,
    /// Standard deviation of macro-F1 over folds.
    pub macro_f1_sd: f64,
    /// Per fold, in fold order.
    pub folds: Vec<F1Scores>,
    /// Whether the candidate needs an embedding per request.
    pub dense: bool,
    /// Seconds its fits took.
    pub seconds: f64,
}

/// A candidate's gain over another, fold by fold: the mean and spread
/// (standard deviation over folds) of the paired differences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedGain {
    /// Mean micro-F1 gain.
    pub micro_mean: f64,
    /// Its standard deviation over folds.
    pub micro_sd: f64,
    /// Mean macro-F1 gain.
    pub macro_mean: f64,
    /// Its standard deviation over folds.
    pub macro_sd: f64,
}

/// How the model was chosen: stratified k-fold cross-validation over train
/// + validation (`lextral train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Number of folds.
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Clauses the folds were drawn from.
    pub examples: usize,
    /// Every candidate, best first by the selection order.
    pub candidates: Vec<CvCandidate>,
    /// The candidate chosen.
    pub chosen: String,
    /// Why, in words.
    pub rule: String,
    /// Paired gains of each embedding-using candidate over the best lexical one.
    pub dense_gains: BTreeMap<String, PairedGain>,
}

/// Facts about the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Wall time, seconds.
    pub seconds: f64,
    /// Seconds per stage.
    pub stage_seconds: BTreeMap<String, f64>,
    /// `--seed`.
    pub seed: u64,
    /// Training clauses.
    pub train_examples: usize,
    /// Validation clauses.
    pub validation_examples: usize,
    /// SHA-256 of the training and validation files, for provenance.
    pub data_sha256: String,
    /// Whether `--max-minutes` cut training short.
    pub time_limited: bool,
    /// Clauses the saved model was fitted on: train, or train + validation
    /// after a refit (0 in manifests older than refits).
    #[serde(default)]
    pub fit_examples: usize,
    /// Whether the chosen configuration was refitted on train + validation.
    #[serde(default)]
    pub refit: bool,
    /// Lextral version that trained it.
    pub lextral_version: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Training method.
    pub method: Method,
    /// Labels in model order (output index i = labels[i]).
    pub labels: Vec<String>,
    /// Chosen hyper-parameters.
    pub hyper_parameters: serde_json::Value,
    /// Dense features, when used.
    pub embedding: Option<EmbeddingSpec>,
    /// TF-IDF settings, when used.
    pub lexical_preprocessing: Option<Vec<BlockConfig>>,
    /// Score combination and calibration.
    pub combination: Combination,
    /// Validation figures.
    pub validation: Option<ValidationReport>,
    /// The cross-validated selection, when the method was chosen that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_validation: Option<CrossValidation>,
    /// Training facts.
    pub training: TrainingInfo,
    /// SHA-256 of every file (relative path → hex).
    pub files: BTreeMap<String, String>,
    /// SHA-256 over `files`: identifies the model.
    pub content_hash: String,
}

/// Why a model directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Directory or a required file is missing.
    #[error("model directory {path}: {reason}")]
    Missing {
        /// The directory.
        path: String,
        /// What is missing.
        reason: String,
    },
    /// Present but unreadable, inconsistent or tampered with.
    #[error("model directory {path} is corrupt: {reason}")]
    Corrupt {
        /// The directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The caller passed bad input (e.g. embeddings of the wrong size).
    #[error("{0}")]
    BadInput(String),
}

#[derive(Serialize, Deserialize)]
struct VocabularyFile {
    blocks: Vec<VocabularyBlock>,
}

#[derive(Serialize, Deserialize)]
struct VocabularyBlock {
    config: BlockConfig,
    terms: Vec<String>,
}

/// The lexical part: vectoriser and linear model.
#[derive(Debug, Clone)]
pub struct LexicalModel {
    /// TF-IDF features.
    pub vectorizer: Vectorizer,
    /// Logistic regression over them.
    pub linear: LinearModel,
}

impl LexicalModel {
    /// Log-probabilities of one text.
    pub fn log_probs(&self, text: &str) -> Vec<f32> {
        let row: SparseRow = self.vectorizer.transform(text);
        let mut z = self.linear.logits(&row);
        log_softmax_in_place(&mut z);
        z
    }
}

/// A loaded classifier.
pub struct Classifier {
    /// Its manifest.
    pub manifest: Manifest,
    /// Lexical part (lexical, hybrid).
    pub lexical: Option<LexicalModel>,
    /// Dense head (head, finetune, hybrid).
    pub head: Option<DenseHead>,
    /// Bundled fine-tuned encoder (finetune, hybrid on a fine-tuned encoder).
    pub encoder: Option<SentenceEmbedder>,
}

/// One prediction: label probabilities in model order.
pub type Probabilities = Vec<f32>;

fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if path.file_name().is_some_and(|n| n != MANIFEST_FILE)
            || path.parent() != Some(root)
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Hashes every file under `dir` except the manifest.
pub fn hash_files(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut files = Vec::new();
    list_files(dir, dir, &mut files)?;
    let mut out = BTreeMap::new();
    for path in files {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        out.insert(rel, sha256_file(&path)?);
    }
    Ok(out)
}

/// The identity of a set of files.
pub fn content_hash(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (name, hash) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(hash.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

impl Classifier {
    /// Loads and verifies a model directory.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let shown = dir.display().to_string();
        let missing = |reason: String| ModelError::Missing {
            path: shown.clone(),
            reason,
        };
        let corrupt = |reason: String| ModelError::Corrupt {
            path: shown.clone(),
            reason,
        };
        if !dir.is_dir() {
            return Err(missing(
                "not a directory (train one with `lextral train --data DIR --out MODEL_DIR`)"
                    .into(),
            ));
        }
        let manifest_text = std::fs::read_to_string(dir.join(MANIFEST_FILE))
            .map_err(|err| missing(format!("{MANIFEST_FILE}: {err}")))?;
        let manifest: Manifest = serde_json::from_str(&manifest_text)
            .map_err(|err| corrupt(format!("{MANIFEST_FILE}: {err}")))?;
        if manifest.format != FORMAT {
            return Err(corrupt(format!(
                "format {:?}, this build reads {FORMAT:?}",
                manifest.format
            )));
        }
        if manifest.labels.is_empty() {
            return Err(corrupt("the manifest lists no labels".into()));
        }
        let actual = hash_files(dir).map_err(|err| corrupt(err.to_string()))?;
        for (name, expected) in &manifest.files {
            match actual.get(name) {
                None => {
                    return Err(missing(format!(
                        "{name} is listed in the manifest but absent"
                    )))
                }
                Some(hash) if hash != expected => {
                    return Err(corrupt(format!(
                        "{name} does not match its hash in the manifest"
                    )))
                }
                Some(_) => {}
            }
        }
        if content_hash(&manifest.files) != manifest.content_hash {
            return Err(corrupt("content_hash does not match the file list".into()));
        }
        let device = Device::Cpu;
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(dir.join(WEIGHTS_FILE), &device)
                .map_err(|err| corrupt(format!("{WEIGHTS_FILE}: {err}")))?;
        let n_classes = manifest.labels.len();

        let lexical = match &manifest.lexical_preprocessing {
            None => None,
            Some(configs) => {
                Some(load_lexical(dir, configs, &tensors, n_classes).map_err(corrupt)?)
            }
        };
        let head = if tensors.contains_key("head.0.weight") {
            let head = DenseHead::from_tensors(&tensors, "head").map_err(corrupt)?;
            Some(head)
        } else {
            None
        };
        let encoder = if dir.join(ENCODER_DIR).is_dir() {
            let model_id = manifest
                .embedding
                .as_ref()
                .map_or_else(|| "fine-tuned".to_owned(), |e| e.model_id.clone());
            Some(
                SentenceEmbedder::load(&dir.join(ENCODER_DIR), &model_id)
                    .map_err(|err| corrupt(format!("{ENCODER_DIR}/: {err}")))?,
            )
        } else {
            None
        };
        // A hybrid may have dropped either part on validation, not both.
        let needs_head = matches!(manifest.method, Method::Head | Method::Finetune);
        if needs_head && head.is_none() {
            return Err(corrupt(format!(
                "method {} needs head.* tensors",
                manifest.method.as_str()
            )));
        }
        if let Some(head) = &head {
            let spec = manifest
                .embedding
                .as_ref()
                .ok_or_else(|| corrupt("a dense head without an embedding spec".into()))?;
            if head.input_dim() != spec.dimension {
                return Err(corrupt(format!(
                    "head expects {}-dimensional input, manifest says {}",
                    head.input_dim(),
                    spec.dimension
                )));
            }
            let out = head
                .logits_rows(&[vec![0.0; spec.dimension]])
                .map_err(|err| corrupt(err.to_string()))?;
            if out[0].len() != n_classes {
                return Err(corrupt(format!(
                    "head has {} outputs for {n_classes} labels",
                    out[0].len()
                )));
            }
            if spec.source == "bundled-encoder" && encoder.is_none() {
                return Err(missing(format!("{ENCODER_DIR}/ (the fine-tuned encoder)")));
            }
        }
        if manifest.method == Method::Hybrid && lexical.is_none() && head.is_none() {
            return Err(corrupt(
                "a hybrid model without lexical or dense part".into(),
            ));
        }
        if manifest.method == Method::Lexical && lexical.is_none() {
            return Err(corrupt(
                "lexical preprocessing missing from the manifest".into(),
            ));
        }
        Ok(Self {
            manifest,
            lexical,
            head,
            encoder,
        })
    }

    /// Whether `predict` needs vectors from the embedder service.
    pub fn needs_external_embeddings(&self) -> bool {
        self.head.is_some() && self.encoder.is_none()
    }

    /// Label names in model order.
    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }

    /// Uncalibrated combined scores (log-probability mixtures).
    pub fn raw_scores(
        &self,
        texts: &[String],
        embeddings: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let dense = self.dense_log_probs(texts, embeddings)?;
        let weight = self.manifest.combination.dense_weight;
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let scores = match (&self.lexical, &dense) {
                (Some(lexical), Some(dense)) => {
                    let lex = lexical.log_probs(text);
                    lex.iter()
                        .zip(&dense[i])
                        .map(|(l, d)| (1.0 - weight) * l + weight * d)
                        .collect()
                }
                (Some(lexical), None) => lexical.log_probs(text),
                (None, Some(dense)) => dense[i].clone(),
                (None, None) => return Err(ModelError::Inference("model has no parts".into())),
            };
            out.push(scores);
        }
        Ok(out)
    }

    /// Calibrated probabilities per text, in label order.
    pub fn predict(
        &self,
        texts: &[String],
        embeddings: Option<&[Vec<f32>]>,
    ) -> Result<Vec<Probabilities>, ModelError> {
        let t = self.manifest.combination.temperature.max(1e-3);
        let mut scores = self.raw_scores(texts, embeddings)?;
        for row in &mut scores {
            row.iter_mut().for_each(|v| *v /= t);
            log_softmax_in_place(row);
            row.iter_mut().for_each(|v| *v = v.exp());
        }
        Ok(scores)
    }

    fn dense_log_probs(
        &self,
        texts: &[String],
        embeddings: Option<&[Vec<f32>]>,
    ) -> Result<Option<Vec<Vec<f32>>>, ModelError> {
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let owned;
        let vectors: &[Vec<f32>] = match (&self.encoder, embeddings) {
            (Some(encoder), _) => {
                owned = encoder
                    .embed(texts, true, 256)
                    .map_err(|err| ModelError::Inference(err.to_string()))?
                    .into_iter()
                    .map(|e| e.values)
                    .collect::<Vec<_>>();
                &owned
            }
            (None, Some(vectors)) => vectors,
            (None, None) => {
                return Err(ModelError::BadInput(
                    "this model needs sentence embeddings from the embedder".into(),
                ))
            }
        };
        if vectors.len() != texts.len() {
            return Err(ModelError::BadInput(format!(
                "{} embeddings for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != head.input_dim()) {
            return Err(ModelError::BadInput(format!(
                "embedding has {} dimensions, the model expects {}",
                bad.len(),
                head.input_dim()
            )));
        }
        let mut logits = head
            .logits_rows(vectors)
            .map_err(|err| ModelError::Inference(err.to_string()))?;
        logits.iter_mut().for_each(|z| log_softmax_in_place(z));
        Ok(Some(logits))
    }
}

fn load_lexical(
    dir: &Path,
    configs: &[BlockConfig],
    tensors: &HashMap<String, Tensor>,
    n_classes: usize,
) -> Result<LexicalModel, String> {
    let text = std::fs::read_to_string(dir.join(VOCABULARY_FILE))
        .map_err(|err| format!("{VOCABULARY_FILE}: {err}"))?;
    let vocabulary: VocabularyFile =
        serde_json::from_str(&text).map_err(|err| format!("{VOCABULARY_FILE}: {err}"))?;
    if vocabulary.blocks.len() != configs.len() {
        return Err("vocabulary blocks differ from the manifest".into());
    }
    let tensor = |name: &str| -> Result<Vec<f32>, String> {
        tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} missing"))?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|err| format!("{name}: {err}"))
    };
    let mut blocks = Vec::new();
    for (i, (block, config)) in vocabulary.blocks.into_iter().zip(configs).enumerate() {
        if &block.config != config {
            return Err(format!(
                "vocabulary block {i} settings differ from the manifest"
            ));
        }
        let idf = tensor(&format!("lexical.idf.{i}"))?;
        if idf.len() != block.terms.len() {
            return Err(format!(
                "lexical.idf.{i} has {} values for {} terms",
                idf.len(),
                block.terms.len()
            ));
        }
        blocks.push(Block::from_parts(block.config, block.terms, idf));
    }
    let vectorizer = Vectorizer { blocks };
    let n_features = vectorizer.dimension();
    let weights = tensor("lexical.weight")?;
    let bias = tensor("lexical.bias")?;
    if weights.len() != n_features * n_classes || bias.len() != n_classes {
        return Err(format!(
            "lexical weights hold {} values, expected {n_features} × {n_classes}",
            weights.len()
        ));
    }
    Ok(LexicalModel {
        vectorizer,
        linear: LinearModel {
            n_features,
            n_classes,
            weights,
            bias,
        },
    })
}

/// The labels in `index_labels` that `model_labels` lacks, each once, in
/// first-seen order (a model trained on another label set).
pub fn labels_missing_from<'a>(
    model_labels: &[String],
    index_labels: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let known: std::collections::HashSet<&str> = model_labels.iter().map(String::as_str).collect();
    let mut seen = std::collections::HashSet::new();
    index_labels
        .into_iter()
        .filter(|label| !known.contains(label) && seen.insert(*label))
        .collect()
}

/// Tensors and vocabulary of a lexical model, for saving.
pub fn lexical_tensors(
    lexical: &LexicalModel,
    tensors: &mut HashMap<String, Tensor>,
) -> candle_core::Result<String> {
    let device = Device::Cpu;
    for (i, block) in lexical.vectorizer.blocks.iter().enumerate() {
        tensors.insert(
            format!("lexical.idf.{i}"),
            Tensor::new(block.idf.as_slice(), &device)?,
        );
    }
    let linear = &lexical.linear;
    tensors.insert(
        "lexical.weight".into(),
        Tensor::from_slice(
            &linear.weights,
            (linear.n_features, linear.n_classes),
            &device,
        )?,
    );
    tensors.insert(
        "lexical.bias".into(),
        Tensor::new(linear.bias.as_slice(), &device)?,
    );
    let vocabulary = VocabularyFile {
        blocks: lexical
            .vectorizer
            .blocks
            .iter()
            .map(|b| VocabularyBlock {
                config: b.config.clone(),
                terms: b.terms.clone(),
            })
            .collect(),
    };
    Ok(serde_json::to_string(&vocabulary).expect("vocabulary serialises"))
}

/// Writes a complete model directory next to `out`, syncs it, then swaps
/// it into place in one step, so `out` is always either the old model or
/// the new one. The
/// manifest's `files` and `content_hash` are filled in here.
pub fn write_model_dir(
    out: &Path,
    mut manifest: Manifest,
    tensors: &HashMap<String, Tensor>,
    vocabulary_json: Option<&str>,
    encoder_dir: Option<&Path>,
) -> anyhow::Result<Manifest> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let name = out
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--out {} has no directory name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)?;
    let dir = staging.path();
    candle_core::safetensors::save(tensors, dir.join(WEIGHTS_FILE))?;
    if let Some(vocabulary) = vocabulary_json {
        std::fs::write(dir.join(VOCABULARY_FILE), vocabulary)?;
    }
    if let Some(encoder) = encoder_dir {
        copy_dir(encoder, &dir.join(ENCODER_DIR), &|_| false)?;
    }
    manifest.files = hash_files(dir)?;
    manifest.content_hash = content_hash(&manifest.files);
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    // Verify before replacing anything.
    Classifier::load(dir)
        .map_err(|err| anyhow::anyhow!("the model just written does not load: {err}"))?;
    // Durable before it is published; then one exchange, so a crash at any
    // point leaves `out` holding the old model or the new one.
    lextral_common::fs::sync_tree(dir)?;
    let staged = staging.keep();
    lextral_common::fs::replace_dir(&staged, out)?;
    if staged.exists() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(manifest)
}

/// Copies a directory tree, leaving out entries whose name `skip` accepts.
pub fn copy_dir(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if skip(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target, skip)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexical_model() -> (Manifest, HashMap<String, Tensor>, String) {
        let texts: Vec<String> = [
            "governed by the laws of New York",
            "laws of Delaware govern this agreement",
            "notices shall be in writing and delivered",
            "any notice must be sent by mail",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let labels = vec![0, 0, 1, 1];
        let vectorizer = Vectorizer::fit(&Vectorizer::default_configs(), &texts);
        let rows: Vec<SparseRow> = texts.iter().map(|t| vectorizer.transform(t)).collect();
        // A nearest-centroid linear layer: each class scores the features
        // of its own training texts (training is lextral-training's).
        let mut linear = LinearModel::zeros(vectorizer.dimension(), 2);
        for (row, &label) in rows.iter().zip(&labels) {
            for (&i, &x) in row.indices.iter().zip(&row.values) {
                linear.weights[i as usize * 2 + label] += x;
            }
        }
        let lexical = LexicalModel { vectorizer, linear };
        let mut tensors = HashMap::new();
        let vocabulary = lexical_tensors(&lexical, &mut tensors).unwrap();
        let manifest = Manifest {
            format: FORMAT.into(),
            method: Method::Lexical,
            labels: vec!["Governing Laws".into(), "Notices".into()],
            hyper_parameters: serde_json::json!({}),
            embedding: None,
            lexical_preprocessing: Some(
                lexical
                    .vectorizer
                    .blocks
                    .iter()
                    .map(|b| b.config.clone())
                    .collect(),
            ),
            combination: Combination {
                dense_weight: 0.0,
                temperature: 1.0,
            },
            validation: None,
            cross_validation: None,
            training: TrainingInfo {
                seconds: 0.0,
                stage_seconds: BTreeMap::new(),
                seed: 1,
                train_examples: 4,
                validation_examples: 0,
                data_sha256: String::new(),
                time_limited: false,
                fit_examples: 4,
                refit: false,
                lextral_version: "test".into(),
            },
            files: BTreeMap::new(),
            content_hash: String::new(),
        };
        (manifest, tensors, vocabulary)
    }

    #[test]
    fn labels_missing_from_the_model_are_reported_once() {
        let model = vec!["Notices".to_owned(), "Governing Laws".to_owned()];
        assert!(labels_missing_from(&model, ["Notices", "Notices"]).is_empty());
        assert_eq!(
            labels_missing_from(&model, ["Taxes", "Notices", "Taxes", "Waivers"]),
            ["Taxes", "Waivers"]
        );
    }

    #[test]
    fn written_model_loads_and_predicts() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        let (manifest, tensors, vocabulary) = lexical_model();
        let written = write_model_dir(&out, manifest, &tensors, Some(&vocabulary), None).unwrap();
        assert_eq!(written.files.len(), 2, "{:?}", written.files);
        let model = Classifier::load(&out).unwrap();
        assert_eq!(model.manifest.content_hash, written.content_hash);
        let p = model
            .predict(
                &["This Agreement is governed by the laws of Texas".to_string()],
                None,
            )
            .unwrap();
        assert!(p[0][0] > p[0][1], "{p:?}");
        assert!((p[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(!model.needs_external_embeddings());
        // Only the model directory is left behind: no staging directories.
        let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn rewriting_replaces_the_model_atomically() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        let (manifest, tensors, vocabulary) = lexical_model();
        let first =
            write_model_dir(&out, manifest.clone(), &tensors, Some(&vocabulary), None).unwrap();
        let mut second_manifest = manifest;
        second_manifest.labels = vec!["A".into(), "B".into()];
        let second =
            write_model_dir(&out, second_manifest, &tensors, Some(&vocabulary), None).unwrap();
        assert_eq!(
            first.content_hash, second.content_hash,
            "same weights, same hash"
        );
        assert_eq!(Classifier::load(&out).unwrap().labels(), ["A", "B"]);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_missing_models_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let missing = Classifier::load(&root.path().join("nope")).err().unwrap();
        assert!(missing.to_string().contains("lextral train"), "{missing}");

        let out = root.path().join("model");
        let (manifest, tensors, vocabulary) = lexical_model();
        write_model_dir(&out, manifest, &tensors, Some(&vocabulary), None).unwrap();
        let weights = out.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&weights, bytes).unwrap();
        let err = Classifier::load(&out).err().unwrap();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("does not match its hash"), "{err}");

        let (manifest, tensors, vocabulary) = lexical_model();
        write_model_dir(&out, manifest, &tensors, Some(&vocabulary), None).unwrap();
        std::fs::remove_file(out.join(VOCABULARY_FILE)).unwrap();
        let err = Classifier::load(&out).err().unwrap();
        assert!(err.to_string().contains("absent"), "{err}");

        std::fs::write(out.join(MANIFEST_FILE), "{not json").unwrap();
        let err = Classifier::load(&out).err().unwrap();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }
}
