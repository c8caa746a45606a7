//! `lextral train`: the head and finetune methods fit on the train split,
//! pick hyper-parameters (and stop early) on validation, calibrate, and
//! write the model directory atomically. The lexical and hybrid methods are
//! chosen by cross-validation and refitted ([`crate::select`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use lextral_embedding::{embed_cached, SentenceEmbedder};
use serde_json::json;

use lextral_finetuned_classifier::{argmax, log_softmax_in_place, DenseHead, F1Scores};
use lextral_finetuned_classifier::{
    write_model_dir, Combination, EmbeddingSpec, Manifest, Method, TrainingInfo, ValidationReport,
    FORMAT,
};

use crate::cv::Learner;
use crate::head::{train_head, HeadConfig};
use crate::scoring::{f1_scores, fit_temperature, nll};

/// Labelled data, labels as indices into `labels`.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Label names in model order.
    pub labels: Vec<String>,
    /// Training clauses.
    pub train: Vec<(String, usize)>,
    /// Validation clauses (selection, early stopping, calibration only).
    pub validation: Vec<(String, usize)>,
    /// Hash of the source files, recorded in the manifest.
    pub data_sha256: String,
}

/// Settings of one training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Method.
    pub method: Method,
    /// Seed for every random choice.
    pub seed: u64,
    /// Wall-time bound; the best model so far is saved when it is reached.
    pub max_minutes: f64,
    /// Embedding model (directory or Hub id) for dense parts.
    pub embed_model: String,
    /// Where embeddings of the training data are cached between runs.
    pub cache_dir: Option<PathBuf>,
    /// Linear learners on the lexical features compared by cross-validation.
    pub candidates: Vec<Learner>,
    /// Folds of the cross-validation (at least 2).
    pub cv_folds: usize,
    /// Refit the chosen configuration on train + validation.
    pub refit: bool,
    /// Weight classes inversely to frequency (head and finetune).
    pub balanced: bool,
    /// Head configurations tried.
    pub head_grid: Vec<HeadConfig>,
    /// Fine-tuning settings.
    pub finetune: crate::finetune::FinetuneConfig,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            method: Method::Hybrid,
            seed: 42,
            max_minutes: 15.0,
            embed_model: String::new(),
            cache_dir: None,
            candidates: default_candidates(),
            cv_folds: 5,
            refit: true,
            balanced: false,
            head_grid: vec![
                HeadConfig::default(),
                HeadConfig {
                    hidden: 512,
                    dropout: 0.2,
                    learning_rate: 1e-3,
                    ..HeadConfig::default()
                },
            ],
            finetune: crate::finetune::FinetuneConfig::default(),
            progress: true,
        }
    }
}

/// The lexical candidates of a default run: the linear SVM (the text
/// classification baseline) at two strengths, with and without class
/// weights, and the multinomial logistic regression of earlier models.
pub fn default_candidates() -> Vec<Learner> {
    ["svm:0.5:balanced", "svm:1:balanced", "svm:1", "logistic:30"]
        .iter()
        .map(|spec| Learner::parse(spec).expect("valid default candidates"))
        .collect()
}

pub(crate) struct Stages {
    pub(crate) start: Instant,
    last: Instant,
    pub(crate) seconds: BTreeMap<String, f64>,
}

impl Stages {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            seconds: BTreeMap::new(),
        }
    }
    pub(crate) fn done(&mut self, stage: &str) {
        let now = Instant::now();
        *self.seconds.entry(stage.to_owned()).or_default() += (now - self.last).as_secs_f64();
        self.last = now;
    }
}

/// The manifest's facts about a run whose final fit saw `fit_examples`
/// clauses (more than the train split after a refit).
pub(crate) fn training_info(
    data: &TrainData,
    options: &TrainOptions,
    stages: &Stages,
    time_limited: bool,
    fit_examples: usize,
) -> TrainingInfo {
    TrainingInfo {
        seconds: stages.start.elapsed().as_secs_f64(),
        stage_seconds: stages.seconds.clone(),
        seed: options.seed,
        train_examples: data.train.len(),
        validation_examples: data.validation.len(),
        data_sha256: data.data_sha256.clone(),
        time_limited,
        fit_examples,
        refit: fit_examples > data.train.len(),
        lextral_version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub(crate) fn bar(options: &TrainOptions, len: u64, what: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Embeds texts for training, through the embedding cache when there is one.
pub(crate) fn embed_texts(
    embedder: &SentenceEmbedder,
    texts: &[String],
    cache_dir: Option<&Path>,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Vec<f32>>> {
    progress.set_length(texts.len() as u64);
    let cached = || {
        progress.set_position(texts.len() as u64);
        progress.set_message("from cache");
    };
    embed_cached(
        cache_dir,
        &embedder.info().model_id,
        texts,
        cached,
        |texts| {
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(32) {
                for embedding in embedder.embed(chunk, true, 256)? {
                    out.push(embedding.values);
                }
                progress.inc(chunk.len() as u64);
            }
            Ok(out)
        },
    )
}

struct DenseFit {
    head: DenseHead,
    config: HeadConfig,
    val_log_probs: Vec<Vec<f32>>,
    scores: F1Scores,
}

#[allow(clippy::too_many_arguments)]
fn fit_head(
    train_x: &[Vec<f32>],
    data: &TrainData,
    val_x: &[Vec<f32>],
    options: &TrainOptions,
    deadline: Instant,
    name: &str,
    candidates: &mut BTreeMap<String, F1Scores>,
) -> anyhow::Result<DenseFit> {
    let train_y: Vec<usize> = data.train.iter().map(|(_, l)| *l).collect();
    let val_y: Vec<usize> = data.validation.iter().map(|(_, l)| *l).collect();
    let mut best: Option<DenseFit> = None;
    for config in &options.head_grid {
        let mut config = config.clone();
        config.balanced |= options.balanced;
        let progress = bar(options, config.max_epochs as u64, "head");
        let (head, report) = train_head(
            train_x,
            &train_y,
            val_x,
            &val_y,
            data.labels.len(),
            &config,
            options.seed,
            Some(deadline),
            &progress,
        )?;
        progress.finish();
        candidates.insert(
            format!(
                "{name} hidden={} best_epoch={}",
                config.hidden, report.best_epoch
            ),
            report.validation,
        );
        if best
            .as_ref()
            .is_none_or(|b| report.validation.better_than(&b.scores))
        {
            let mut val_log_probs = head.logits_rows(val_x)?;
            val_log_probs
                .iter_mut()
                .for_each(|z| log_softmax_in_place(z));
            best = Some(DenseFit {
                head,
                config,
                val_log_probs,
                scores: report.validation,
            });
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no head configuration to try"))
}

/// Trains with `options` and writes the model directory to `out`.
pub async fn train(
    data: &TrainData,
    options: &TrainOptions,
    out: &Path,
) -> anyhow::Result<Manifest> {
    anyhow::ensure!(!data.train.is_empty(), "the train split is empty");
    anyhow::ensure!(
        !data.validation.is_empty(),
        "the validation split is empty: it is needed to select hyper-parameters and calibrate"
    );
    let method = options.method;
    if matches!(method, Method::Lexical | Method::Hybrid) {
        anyhow::ensure!(
            options.cv_folds >= 2,
            "cross-validation needs at least 2 folds"
        );
        return crate::select::train_selected(data, options, out).await;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.max_minutes.max(0.0) * 60.0);
    let mut stages = Stages::new();
    let mut candidates = BTreeMap::new();
    let gold: Vec<usize> = data.validation.iter().map(|(_, l)| *l).collect();

    let mut embedding_spec = None;
    let mut encoder_dir: Option<tempfile::TempDir> = None;
    let model_dir = lextral_embedding::resolve_model_dir(&options.embed_model).await?;
    let train_texts: Vec<String> = data.train.iter().map(|(t, _)| t.clone()).collect();
    let val_texts: Vec<String> = data.validation.iter().map(|(t, _)| t.clone()).collect();
    let dense = tokio::task::block_in_place(|| -> anyhow::Result<DenseFit> {
        if method == Method::Finetune {
            let (dir, fit) = crate::finetune::finetune(
                &model_dir,
                &options.embed_model,
                data,
                options,
                deadline,
                &mut candidates,
            )?;
            embedding_spec = Some(EmbeddingSpec {
                model_id: format!("{} (fine-tuned)", options.embed_model),
                dimension: fit.dimension,
                source: "bundled-encoder".into(),
            });
            encoder_dir = Some(dir);
            stages.done("finetune");
            return Ok(DenseFit {
                head: fit.head,
                config: HeadConfig::default(),
                val_log_probs: fit.val_log_probs,
                scores: fit.scores,
            });
        }
        let embedder = SentenceEmbedder::load(&model_dir, &options.embed_model)?;
        let cache = options.cache_dir.as_deref();
        let progress = bar(options, 0, "embed");
        let train_x = embed_texts(&embedder, &train_texts, cache, &progress)?;
        let val_x = embed_texts(&embedder, &val_texts, cache, &progress)?;
        progress.finish();
        stages.done("embed");
        embedding_spec = Some(EmbeddingSpec {
            model_id: embedder.info().model_id.clone(),
            dimension: embedder.info().dimension,
            source: "embedder-service".into(),
        });
        let fit = fit_head(
            &train_x,
            data,
            &val_x,
            options,
            deadline,
            "head",
            &mut candidates,
        )?;
        stages.done("head");
        Ok(fit)
    })?;

    let val_scores = &dense.val_log_probs;
    let temperature = fit_temperature(val_scores, &gold);
    let predicted: Vec<usize> = val_scores.iter().map(|z| argmax(z)).collect();
    let validation = ValidationReport {
        scores: f1_scores(&gold, &predicted),
        nll_uncalibrated: nll(val_scores, &gold, 1.0),
        nll_calibrated: nll(val_scores, &gold, temperature),
        candidates,
    };
    stages.done("calibrate");

    let tensors: HashMap<String, Tensor> = dense.head.tensors("head");
    let mut hyper = serde_json::Map::new();
    if method == Method::Finetune {
        hyper.insert("finetune".into(), serde_json::to_value(&options.finetune)?);
    } else {
        hyper.insert("head".into(), serde_json::to_value(&dense.config)?);
    }
    hyper.insert("dense_weight".into(), json!(1.0));
    let time_limited = Instant::now() >= deadline;
    let manifest = Manifest {
        format: FORMAT.into(),
        method,
        labels: data.labels.clone(),
        hyper_parameters: serde_json::Value::Object(hyper),
        embedding: embedding_spec,
        lexical_preprocessing: None,
        combination: Combination {
            dense_weight: 1.0,
            temperature,
        },
        validation: Some(validation),
        cross_validation: None,
        training: training_info(data, options, &stages, time_limited, data.train.len()),
        files: BTreeMap::new(),
        content_hash: String::new(),
    };
    let encoder_path = encoder_dir.as_ref().map(|d| d.path().to_path_buf());
    let manifest = tokio::task::block_in_place(|| {
        write_model_dir(out, manifest, &tensors, None, encoder_path.as_deref())
    })?;
    tracing::info!(
        seconds = stages.start.elapsed().as_secs_f64(),
        "model written to {}",
        out.display()
    );
    Ok(manifest)
}
