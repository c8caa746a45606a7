//! `lextral index`: ingest labelled splits through the orchestrator.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use lextral_proto::v1::{IngestRequest, LabeledText};

use crate::client::ServerArgs;
use crate::data::read_split;

/// `lextral index`.
#[derive(Args)]
pub struct IndexArgs {
    /// Data directory (labels.txt, <split>.jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Splits to ingest, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "train")]
    splits: Vec<String>,
    /// Clauses per ingest request.
    #[arg(long = "batch-size", default_value_t = 64)]
    batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `lextral index`.
pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    // Read and check every split before sending anything.
    let mut items = Vec::new();
    for split in &args.splits {
        let examples = read_split(&args.data, split)?;
        eprintln!("{split}: {} clauses", examples.len());
        items.extend(examples.into_iter().map(|e| LabeledText {
            text: e.text,
            label: e.label,
            split: split.clone(),
        }));
    }
    let client = args.server.connect().await?;
    let progress = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} indexing [{bar:40}] {pos}/{len} clauses {per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let batches: Vec<Vec<LabeledText>> = items
        .chunks(args.batch_size.max(1))
        .map(<[LabeledText]>::to_vec)
        .collect();
    let totals = futures::stream::iter(batches)
        .map(|batch| {
            let mut client = client.clone();
            let progress = progress.clone();
            async move {
                let count = batch.len() as u64;
                let response = client
                    .ingest(IngestRequest { items: batch })
                    .await
                    .map_err(|status| {
                        anyhow::anyhow!("ingest failed: {:?}: {}", status.code(), status.message())
                    })?
                    .into_inner();
                progress.inc(count);
                anyhow::Ok(response)
            }
        })
        .buffered(args.concurrency.max(1))
        .try_fold((0u64, 0u64, 0u64, 0u64), |acc, r| async move {
            Ok((
                acc.0 + u64::from(r.inserted),
                acc.1 + u64::from(r.updated),
                acc.2 + u64::from(r.unchanged),
                acc.3 + u64::from(r.truncated),
            ))
        })
        .await?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "indexed {} clauses in {seconds:.1} s ({:.1}/s): {} new, {} relabelled, {} unchanged, {} truncated",
        items.len(),
        items.len() as f64 / seconds.max(1e-9),
        totals.0,
        totals.1,
        totals.2,
        totals.3
    );
    Ok(())
}
