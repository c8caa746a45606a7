//! `lextral train`: trains a classifier from a data directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lextral_finetuned_classifier::Method;
use lextral_training::{TrainData, TrainOptions};
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
    /// Logistic-regression C values tried on validation (lexical part).
    #[arg(long = "c-grid", value_delimiter = ',', default_value = "10,30,100")]
    c_grid: Vec<f64>,
    /// Weight classes inversely to their frequency.
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
        !args.c_grid.is_empty() && args.c_grid.iter().all(|c| *c > 0.0),
        "--c-grid needs positive values"
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
        c_grid: args.c_grid,
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
            "dense_weight": manifest.combination.dense_weight,
            "temperature": manifest.combination.temperature,
            "training_seconds": manifest.training.seconds,
            "stage_seconds": manifest.training.stage_seconds,
            "content_hash": manifest.content_hash,
        }))?
    );
    Ok(())
}
