//! `lextral index`: ingest labelled splits through the orchestrator.
//!
//! Ingest is idempotent by content hash, so a batch that failed for a
//! passing reason (UNAVAILABLE, RESOURCE_EXHAUSTED, a deadline) is sent
//! again after a back-off. Acknowledged batches are written to a checkpoint
//! as they come back; running the same command again after a failure skips
//! them, and the checkpoint is removed once everything is in.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use lextral_proto::v1::{IngestRequest, IngestResponse, LabeledText};
use sha2::{Digest, Sha256};

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
    /// Times a batch is sent again after UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED or ABORTED, with exponential back-off (0.5 s
    /// doubling to 30 s, jittered; a server's retry-after is honoured).
    #[arg(long = "max-retries", default_value_t = 8)]
    max_retries: u32,
    /// Where acknowledged batches are recorded, so that the same command
    /// run again resumes. Default: a file under ~/.cache/lextral/index/
    /// named by the server, the batch size and the data's content.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Ignore (and replace) an existing checkpoint: send every batch.
    #[arg(long = "no-resume")]
    no_resume: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Codes worth sending the same batch again for.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    )
}

/// The wait before retry `n` (1-based): 0.5 s doubling to 30 s, drawn
/// between half and all of it; never shorter than the server asked.
fn backoff(n: u32, status: &tonic::Status) -> Duration {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1u32 << (n - 1).min(10))
        .min(Duration::from_secs(30));
    let jittered = ceiling.mul_f64(rand::random::<f64>() * 0.5 + 0.5);
    let asked = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)));
    asked.map_or(jittered, |asked| asked.max(jittered))
}

/// What the checkpoint file is for: this data, in these batches, to this server.
fn run_key(server: &str, batch_size: usize, items: &[LabeledText]) -> String {
    let mut hash = Sha256::new();
    hash.update(server.as_bytes());
    hash.update(batch_size.to_le_bytes());
    for item in items {
        for field in [&item.text, &item.label, &item.split] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field.as_bytes());
        }
    }
    hex::encode(hash.finalize())
}

const HEADER: &str = "lextral-index-checkpoint v1";

/// Acknowledged batches of an earlier run of the same command.
fn read_checkpoint(path: &Path, key: &str) -> anyhow::Result<HashSet<usize>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    if header != format!("{HEADER} {key}") {
        eprintln!(
            "checkpoint {} is for other data or another server; starting over",
            path.display()
        );
        return Ok(HashSet::new());
    }
    // A torn last line (the run was killed mid-write) is just not counted.
    Ok(lines
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("batch ")?.parse().ok())
        .collect())
}

/// Starts (or continues) the checkpoint file.
fn open_checkpoint(path: &Path, key: &str, fresh: bool) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    if fresh {
        options.write(true).create(true).truncate(true);
    } else {
        options.append(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    if fresh {
        writeln!(file, "{HEADER} {key}")?;
    } else {
        // Ends a line torn by a killed run; empty lines are skipped.
        writeln!(file)?;
    }
    Ok(file)
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
    let batch_size = args.batch_size.max(1);
    let key = run_key(&args.server.server, batch_size, &items);
    let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
        lextral_common::lextral_home()
            .join("index")
            .join(format!("{}.checkpoint", &key[..16]))
    });
    let done = if args.no_resume {
        HashSet::new()
    } else {
        read_checkpoint(&checkpoint, &key)?
    };
    let batches: Vec<(usize, Vec<LabeledText>)> = items
        .chunks(batch_size)
        .map(<[LabeledText]>::to_vec)
        .enumerate()
        .filter(|(i, _)| !done.contains(i))
        .collect();
    let total_batches = items.len().div_ceil(batch_size);
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {total_batches} batches already acknowledged ({})",
            done.len(),
            checkpoint.display()
        );
    }
    let journal = std::sync::Mutex::new(open_checkpoint(&checkpoint, &key, done.is_empty())?);
    let client = args.server.connect().await?;
    let remaining: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let progress = ProgressBar::new(remaining as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} indexing [{bar:40}] {pos}/{len} clauses {per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let max_retries = args.max_retries;
    let outcome = futures::stream::iter(batches)
        .map(|(index, batch)| {
            let mut client = client.clone();
            let progress = progress.clone();
            let journal = &journal;
            async move {
                let count = batch.len() as u64;
                let mut retries = 0;
                let response: IngestResponse = loop {
                    match client
                        .ingest(IngestRequest {
                            items: batch.clone(),
                        })
                        .await
                    {
                        Ok(response) => break response.into_inner(),
                        Err(status) if retryable(status.code()) && retries < max_retries => {
                            retries += 1;
                            let wait = backoff(retries, &status);
                            let line = format!(
                                "batch {index}: {:?}: {}; retry {retries}/{max_retries} in {:.1} s",
                                status.code(),
                                status.message(),
                                wait.as_secs_f64()
                            );
                            // A hidden bar (no terminal) prints nothing.
                            if progress.is_hidden() {
                                eprintln!("{line}");
                            } else {
                                progress.println(line);
                            }
                            tokio::time::sleep(wait).await;
                        }
                        Err(status) => {
                            anyhow::bail!(
                                "ingest of batch {index} failed after {} attempts: {:?}: {}",
                                retries + 1,
                                status.code(),
                                status.message()
                            )
                        }
                    }
                };
                {
                    let mut journal = journal.lock().unwrap_or_else(|p| p.into_inner());
                    writeln!(journal, "batch {index}")?;
                    journal.flush()?;
                }
                progress.inc(count);
                anyhow::Ok(response)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_fold((0u64, 0u64, 0u64, 0u64), |acc, r| async move {
            Ok((
                acc.0 + u64::from(r.inserted),
                acc.1 + u64::from(r.updated),
                acc.2 + u64::from(r.unchanged),
                acc.3 + u64::from(r.truncated),
            ))
        })
        .await;
    progress.finish_and_clear();
    let totals = outcome.with_context(|| {
        format!(
            "run the same command again to resume from the acknowledged batches ({})",
            checkpoint.display()
        )
    })?;
    // Everything is in: nothing to resume.
    drop(journal);
    if let Err(err) = std::fs::remove_file(&checkpoint) {
        eprintln!("could not remove {}: {err}", checkpoint.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "indexed {} clauses in {seconds:.1} s ({:.1}/s): {} new, {} relabelled, {} unchanged, {} truncated",
        remaining,
        remaining as f64 / seconds.max(1e-9),
        totals.0,
        totals.1,
        totals.2,
        totals.3
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_grows_and_honours_retry_after() {
        let status = tonic::Status::unavailable("down");
        let first = backoff(1, &status);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let late = backoff(20, &status);
        assert!(late >= Duration::from_secs(15) && late <= Duration::from_secs(30));
        let mut busy = tonic::Status::resource_exhausted("busy");
        busy.metadata_mut()
            .insert("retry-after", "3".parse().unwrap());
        assert!(backoff(1, &busy) >= Duration::from_secs(3));
        assert!(retryable(tonic::Code::ResourceExhausted));
        assert!(!retryable(tonic::Code::InvalidArgument));
    }

    #[test]
    fn a_checkpoint_counts_only_its_own_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/run.checkpoint");
        let mut file = open_checkpoint(&path, "k1", true).unwrap();
        writeln!(file, "batch 0").unwrap();
        writeln!(file, "batch 3").unwrap();
        write!(file, "batc").unwrap();
        drop(file);
        assert_eq!(read_checkpoint(&path, "k1").unwrap(), HashSet::from([0, 3]));
        assert!(read_checkpoint(&path, "k2").unwrap().is_empty());
        assert!(read_checkpoint(&dir.path().join("none"), "k1")
            .unwrap()
            .is_empty());
    }
}
