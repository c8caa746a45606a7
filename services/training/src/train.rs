//! `lextral train`: fits every part the method needs on the train split,
//! picks hyper-parameters on validation, calibrates, and writes the model
//! directory atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use lextral_embedding::{embed_cached, SentenceEmbedder};
use serde_json::json;

use lextral_finetuned_classifier::{
    argmax, log_softmax_in_place, DenseHead, F1Scores, LinearModel, SparseRow, Vectorizer,
};
use lextral_finetuned_classifier::{
    lexical_tensors, write_model_dir, Combination, EmbeddingSpec, LexicalModel, Manifest, Method,
    TrainingInfo, ValidationReport, FORMAT,
};

use crate::head::{train_head, HeadConfig};
use crate::logistic::{train_logistic, LogisticConfig};
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
    /// Logistic-regression `C` values tried.
    pub c_grid: Vec<f64>,
    /// Weight classes inversely to frequency.
    pub balanced: bool,
    /// Head configurations tried.
    pub head_grid: Vec<HeadConfig>,
    /// Hybrid keeps its dense part only if, on validation, it fixes
    /// significantly more lexical mistakes than it introduces (one-sided
    /// sign test on the changed clauses, p below this). A smaller gain is
    /// noise at this data size and would cost an embedding per request.
    pub hybrid_max_p_value: f64,
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
            c_grid: vec![10.0, 30.0, 100.0],
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
            hybrid_max_p_value: 0.05,
            finetune: crate::finetune::FinetuneConfig::default(),
            progress: true,
        }
    }
}

struct Stages {
    start: Instant,
    last: Instant,
    seconds: BTreeMap<String, f64>,
}

impl Stages {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            seconds: BTreeMap::new(),
        }
    }
    fn done(&mut self, stage: &str) {
        let now = Instant::now();
        *self.seconds.entry(stage.to_owned()).or_default() += (now - self.last).as_secs_f64();
        self.last = now;
    }
}

fn bar(options: &TrainOptions, len: u64, what: &str) -> ProgressBar {
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

struct LexicalFit {
    model: LexicalModel,
    c: f64,
    val_log_probs: Vec<Vec<f32>>,
}

fn fit_lexical(
    data: &TrainData,
    options: &TrainOptions,
    deadline: Instant,
    candidates: &mut BTreeMap<String, F1Scores>,
) -> anyhow::Result<LexicalFit> {
    let texts: Vec<String> = data.train.iter().map(|(t, _)| t.clone()).collect();
    let labels: Vec<usize> = data.train.iter().map(|(_, l)| *l).collect();
    let gold: Vec<usize> = data.validation.iter().map(|(_, l)| *l).collect();
    let n_classes = data.labels.len();
    let vectorizer = Vectorizer::fit(&Vectorizer::default_configs(), &texts);
    let rows: Vec<SparseRow> = texts.iter().map(|t| vectorizer.transform(t)).collect();
    let val_rows: Vec<SparseRow> = data
        .validation
        .iter()
        .map(|(t, _)| vectorizer.transform(t))
        .collect();
    tracing::info!(features = vectorizer.dimension(), "TF-IDF vocabulary built");
    let progress = bar(options, options.c_grid.len() as u64, "lexical");
    // (linear model, C, validation log-probabilities, scores) of the best C.
    let mut best: Option<(LinearModel, f64, Vec<Vec<f32>>, F1Scores)> = None;
    let mut previous: Option<LinearModel> = None;
    for &c in &options.c_grid {
        let config = LogisticConfig {
            c,
            balanced: options.balanced,
            deadline: Some(deadline),
            ..LogisticConfig::default()
        };
        let (linear, report) = train_logistic(
            &rows,
            &labels,
            vectorizer.dimension(),
            n_classes,
            &config,
            previous.as_ref(),
        );
        let val_log_probs: Vec<Vec<f32>> = val_rows
            .iter()
            .map(|r| {
                let mut z = linear.logits(r);
                log_softmax_in_place(&mut z);
                z
            })
            .collect();
        let predicted: Vec<usize> = val_log_probs.iter().map(|z| argmax(z)).collect();
        let scores = f1_scores(&gold, &predicted);
        candidates.insert(format!("lexical C={c}"), scores);
        progress.inc(1);
        progress.set_message(format!(
            "C={c}: {} iterations, validation macro-F1 {:.4} micro-F1 {:.4}",
            report.iterations, scores.macro_f1, scores.micro_f1
        ));
        if best.as_ref().is_none_or(|b| scores.better_than(&b.3)) {
            best = Some((linear.clone(), c, val_log_probs, scores));
        }
        // Warm start for the next C.
        previous = Some(linear);
        if Instant::now() >= deadline {
            break;
        }
    }
    progress.finish();
    let (linear, c, val_log_probs, _) = best.ok_or_else(|| anyhow::anyhow!("no C value to try"))?;
    Ok(LexicalFit {
        model: LexicalModel { vectorizer, linear },
        c,
        val_log_probs,
    })
}

/// Embeds texts for training, through the embedding cache when there is one.
fn embed_texts(
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

/// One-sided sign test: the probability of at least `wins` successes in
/// `wins + losses` fair coin flips.
pub fn sign_test_p_value(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    // ln C(n, i) accumulated to stay finite for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0f64;
    let mut total = 0.0f64;
    for i in 0..=n {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        if i >= wins {
            total += (ln_choose + ln_half_n).exp();
        }
    }
    total.min(1.0)
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
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.max_minutes.max(0.0) * 60.0);
    let mut stages = Stages::new();
    let mut candidates = BTreeMap::new();
    let gold: Vec<usize> = data.validation.iter().map(|(_, l)| *l).collect();
    let method = options.method;

    let lexical = if matches!(method, Method::Lexical | Method::Hybrid) {
        let fit =
            tokio::task::block_in_place(|| fit_lexical(data, options, deadline, &mut candidates))?;
        stages.done("lexical");
        Some(fit)
    } else {
        None
    };

    let mut embedding_spec = None;
    let mut encoder_dir: Option<tempfile::TempDir> = None;
    let dense = if matches!(method, Method::Head | Method::Hybrid | Method::Finetune) {
        let model_dir = lextral_embedding::resolve_model_dir(&options.embed_model).await?;
        let train_texts: Vec<String> = data.train.iter().map(|(t, _)| t.clone()).collect();
        let val_texts: Vec<String> = data.validation.iter().map(|(t, _)| t.clone()).collect();
        let fit = tokio::task::block_in_place(|| -> anyhow::Result<DenseFit> {
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
        Some(fit)
    } else {
        None
    };

    // Combine (hybrid) and calibrate.
    let mut dense_weight = if method == Method::Lexical { 0.0 } else { 1.0 };
    let mut keep_dense = dense.is_some();
    let mut keep_lexical = lexical.is_some();
    let mut val_scores: Vec<Vec<f32>> = Vec::new();
    let mut hybrid_selection = None;
    if let (Some(lex), Some(den)) = (&lexical, &dense) {
        let mut best: Option<(f32, F1Scores, Vec<usize>)> = None;
        let mut lexical_only: Option<Vec<usize>> = None;
        for step in 0..=10 {
            let w = step as f32 / 10.0;
            let predicted: Vec<usize> = lex
                .val_log_probs
                .iter()
                .zip(&den.val_log_probs)
                .map(|(l, d)| {
                    let mixed: Vec<f32> = l
                        .iter()
                        .zip(d)
                        .map(|(l, d)| (1.0 - w) * l + w * d)
                        .collect();
                    argmax(&mixed)
                })
                .collect();
            let scores = f1_scores(&gold, &predicted);
            candidates.insert(format!("hybrid dense_weight={w:.1}"), scores);
            if step == 0 {
                lexical_only = Some(predicted.clone());
            }
            if best.as_ref().is_none_or(|(_, b, _)| scores.better_than(b)) {
                best = Some((w, scores, predicted));
            }
        }
        let (w, _, predicted) = best.expect("grid is not empty");
        let baseline = lexical_only.expect("grid starts at 0");
        let fixed = (0..gold.len())
            .filter(|&i| predicted[i] == gold[i] && baseline[i] != gold[i])
            .count();
        let broken = (0..gold.len())
            .filter(|&i| predicted[i] != gold[i] && baseline[i] == gold[i])
            .count();
        let p_value = sign_test_p_value(fixed, broken);
        hybrid_selection = Some(json!({
            "best_dense_weight": w,
            "fixed_vs_lexical": fixed,
            "broken_vs_lexical": broken,
            "p_value": p_value,
            "max_p_value": options.hybrid_max_p_value,
        }));
        if w == 0.0 || p_value >= options.hybrid_max_p_value {
            tracing::info!(
                dense_weight = w,
                fixed,
                broken,
                p_value,
                "the dense part's gain on validation is not significant; the hybrid keeps the lexical model only"
            );
            keep_dense = false;
            dense_weight = 0.0;
        } else if w == 1.0 {
            keep_lexical = false;
        } else {
            dense_weight = w;
        }
    }
    match (keep_lexical, keep_dense) {
        (true, true) => {
            let (lex, den) = (
                lexical.as_ref().expect("kept"),
                dense.as_ref().expect("kept"),
            );
            val_scores = lex
                .val_log_probs
                .iter()
                .zip(&den.val_log_probs)
                .map(|(l, d)| {
                    l.iter()
                        .zip(d)
                        .map(|(l, d)| (1.0 - dense_weight) * l + dense_weight * d)
                        .collect()
                })
                .collect();
        }
        (true, false) => val_scores.clone_from(&lexical.as_ref().expect("kept").val_log_probs),
        (false, true) => val_scores.clone_from(&dense.as_ref().expect("kept").val_log_probs),
        (false, false) => unreachable!("at least one part is trained"),
    }
    let temperature = fit_temperature(&val_scores, &gold);
    let predicted: Vec<usize> = val_scores.iter().map(|z| argmax(z)).collect();
    let final_scores = f1_scores(&gold, &predicted);
    let validation = ValidationReport {
        scores: final_scores,
        nll_uncalibrated: nll(&val_scores, &gold, 1.0),
        nll_calibrated: nll(&val_scores, &gold, temperature),
        candidates,
    };
    stages.done("calibrate");

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut vocabulary = None;
    let mut hyper = serde_json::Map::new();
    if keep_lexical {
        let lex = lexical.as_ref().expect("kept");
        vocabulary = Some(lexical_tensors(&lex.model, &mut tensors)?);
        hyper.insert(
            "lexical".into(),
            json!({"c": lex.c, "balanced": options.balanced, "solver": "lbfgs"}),
        );
    }
    if let Some(selection) = hybrid_selection {
        hyper.insert("hybrid_selection".into(), selection);
    }
    if keep_dense {
        let den = dense.as_ref().expect("kept");
        tensors.extend(den.head.tensors("head"));
        if method == Method::Finetune {
            hyper.insert("finetune".into(), serde_json::to_value(&options.finetune)?);
        } else {
            hyper.insert("head".into(), serde_json::to_value(&den.config)?);
        }
        hyper.insert("dense_weight".into(), json!(dense_weight));
    }
    let time_limited = Instant::now() >= deadline;
    let manifest = Manifest {
        format: FORMAT.into(),
        method,
        labels: data.labels.clone(),
        hyper_parameters: serde_json::Value::Object(hyper),
        embedding: if keep_dense { embedding_spec } else { None },
        lexical_preprocessing: keep_lexical.then(|| {
            lexical
                .as_ref()
                .expect("kept")
                .model
                .vectorizer
                .blocks
                .iter()
                .map(|b| b.config.clone())
                .collect()
        }),
        combination: Combination {
            dense_weight: if keep_lexical { dense_weight } else { 1.0 },
            temperature,
        },
        validation: Some(validation),
        training: TrainingInfo {
            seconds: start.elapsed().as_secs_f64(),
            stage_seconds: stages.seconds.clone(),
            seed: options.seed,
            train_examples: data.train.len(),
            validation_examples: data.validation.len(),
            data_sha256: data.data_sha256.clone(),
            time_limited,
            lextral_version: env!("CARGO_PKG_VERSION").into(),
        },
        files: BTreeMap::new(),
        content_hash: String::new(),
    };
    let encoder_path = if keep_dense {
        encoder_dir.as_ref().map(|d| d.path().to_path_buf())
    } else {
        None
    };
    let manifest = tokio::task::block_in_place(|| {
        write_model_dir(
            out,
            manifest,
            &tensors,
            vocabulary.as_deref(),
            encoder_path.as_deref(),
        )
    })?;
    tracing::info!(
        seconds = stages.start.elapsed().as_secs_f64(),
        "model written to {}",
        out.display()
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::sign_test_p_value;

    #[test]
    fn sign_test_matches_binomial_tails() {
        assert_eq!(sign_test_p_value(0, 0), 1.0);
        // P(X >= 5 | n = 5) = 1/32.
        assert!((sign_test_p_value(5, 0) - 1.0 / 32.0).abs() < 1e-12);
        // P(X >= 6 | n = 10) = 386/1024.
        assert!((sign_test_p_value(6, 4) - 386.0 / 1024.0).abs() < 1e-12);
        assert!((sign_test_p_value(0, 7) - 1.0).abs() < 1e-12);
        assert!(sign_test_p_value(60, 40) < 0.05);
    }
}
