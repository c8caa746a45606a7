//! `lextral train`: trains a classifier from a data directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lextral_finetuned_classifier::Method;
use lextral_training::{Learner, TrainData, TrainOptions};
use sha2::{Digest, Sha256};

use crate::data::{read_labels, read_split, Example};

/// `lextral train` flags.
#[derive(Args)]
pub struct TrainArgs {
    /// Data directory with train.jsonl, validation.jsonl and (optionally) labels.txt.
    #[arg(long)]
    data: PathBuf,
    /// Model directory to write (replaced atomically if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Training method.
    #[arg(long, value_enum, default_value = "hybrid")]
    method: Method,
    /// Seed for every random choice (same seed, same data: same model).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Wall-time bound in minutes; the best model so far is saved when reached.
    #[arg(long = "max-minutes", default_value_t = 15.0)]
    max_minutes: f64,
    /// Embedding model for dense parts (directory or Hub id).
    #[arg(
        long = "embed-model",
        env = "LEXTRAL_EMBED_MODEL",
        default_value_t = lextral_embedding::default_model()
    )]
    embed_model: String,
    /// Lexical candidates compared by cross-validation (methods lexical and
    /// hybrid): `svm:C[:balanced]` (linear SVM, squared hinge, one-vs-rest)
    /// or `logistic:C[:balanced]` (multinomial logistic regression).
    #[arg(
        long = "candidates",
        value_delimiter = ',',
        default_value = "svm:0.5:balanced,svm:1:balanced,svm:1,logistic:30",
        value_parser = parse_learner
    )]
    candidates: Vec<Learner>,
    /// More logistic-regression C values to add as candidates (balanced with
    /// --balanced).
    #[arg(long = "c-grid", value_delimiter = ',')]
    c_grid: Vec<f64>,
    /// Folds of the stratified cross-validation over train + validation
    /// (methods lexical and hybrid).
    #[arg(long = "cv-folds", default_value_t = 5)]
    cv_folds: usize,
    /// Fit the chosen configuration on train only (default: refit it on
    /// train + validation once chosen).
    #[arg(long = "no-refit")]
    no_refit: bool,
    /// Weight classes inversely to their frequency (head, finetune and
    /// --c-grid candidates).
    #[arg(long)]
    balanced: bool,
    /// Fine-tuning epochs (method finetune).
    #[arg(long = "finetune-epochs", default_value_t = 3)]
    finetune_epochs: usize,
    /// Fine-tuning tokens per clause (method finetune).
    #[arg(long = "finetune-max-tokens", default_value_t = 128)]
    finetune_max_tokens: usize,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
}

fn parse_learner(spec: &str) -> Result<Learner, String> {
    Learner::parse(spec)
}

fn label_indices(
    examples: Vec<Example>,
    labels: &[String],
    split: &str,
) -> anyhow::Result<Vec<(String, usize)>> {
    let index: std::collections::HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    examples
        .into_iter()
        .map(|e| {
            let i = *index
                .get(e.label.as_str())
                .with_context(|| format!("{split}: label {:?} is not in the label set", e.label))?;
            Ok((e.text, i))
        })
        .collect()
}

/// Runs `lextral train`.
pub async fn run(args: TrainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_minutes > 0.0, "--max-minutes must be positive");
    anyhow::ensure!(
        args.c_grid.iter().all(|c| c.is_finite() && *c > 0.0),
        "--c-grid needs positive values"
    );
    anyhow::ensure!(args.cv_folds >= 2, "--cv-folds must be at least 2");
    let mut candidates = args.candidates.clone();
    candidates.extend(args.c_grid.iter().map(|&c| Learner::Logistic {
        c,
        balanced: args.balanced,
    }));
    anyhow::ensure!(
        !candidates.is_empty(),
        "--candidates needs at least one candidate"
    );
    let train = read_split(&args.data, "train")?;
    let validation = read_split(&args.data, "validation")?;
    let labels = match read_labels(&args.data)? {
        Some(labels) => labels,
        None => {
            let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
            labels.sort();
            labels.dedup();
            labels
        }
    };
    let mut hasher = Sha256::new();
    for name in ["labels.txt", "train.jsonl", "validation.jsonl"] {
        if let Ok(bytes) = std::fs::read(args.data.join(name)) {
            hasher.update(name.as_bytes());
            hasher.update(Sha256::digest(&bytes));
        }
    }
    let data = TrainData {
        train: label_indices(train, &labels, "train")?,
        validation: label_indices(validation, &labels, "validation")?,
        labels,
        data_sha256: hex::encode(hasher.finalize()),
    };
    let mut options = TrainOptions {
        method: args.method,
        seed: args.seed,
        max_minutes: args.max_minutes,
        embed_model: args.embed_model,
        cache_dir: Some(lextral_common::lextral_home().join("embeddings")),
        candidates,
        cv_folds: args.cv_folds,
        refit: !args.no_refit,
        balanced: args.balanced,
        progress: !args.quiet,
        ..TrainOptions::default()
    };
    options.finetune.epochs = args.finetune_epochs;
    options.finetune.max_seq_length = args.finetune_max_tokens;
    eprintln!(
        "training {} on {} clauses ({} labels), validating on {}",
        args.method.as_str(),
        data.train.len(),
        data.labels.len(),
        data.validation.len()
    );
    let manifest = lextral_training::train(&data, &options, &args.out).await?;
    let validation = manifest.validation.as_ref().map(|v| v.scores);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "out": args.out,
            "method": manifest.method.as_str(),
            "validation": validation,
            "cross_validation": manifest.cross_validation.as_ref().map(|cv| serde_json::json!({
                "chosen": cv.chosen,
                "folds": cv.folds,
                "candidates": cv.candidates.iter().map(|c| serde_json::json!({
                    "name": c.name,
                    "micro_f1": [c.micro_f1_mean, c.micro_f1_sd],
                    "macro_f1": [c.macro_f1_mean, c.macro_f1_sd],
                })).collect::<Vec<_>>(),
            })),
            "fit_examples": manifest.training.fit_examples,
            "dense_weight": manifest.combination.dense_weight,
            "temperature": manifest.combination.temperature,
            "training_seconds": manifest.training.seconds,
            "stage_seconds": manifest.training.stage_seconds,
            "content_hash": manifest.content_hash,
        }))?
    );
    Ok(())
}
