//! `lextral eval`: classify every clause of a split through the orchestrator
//! and report quality and latency.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::Code;

use crate::client::{ServerArgs, StrategyArgs};
use crate::data::{read_split, write_atomically};
use crate::metrics::{percentile, score, LabelMetrics};

/// `lextral eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Data directory (labels.txt, <split>.jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    #[command(flatten)]
    strategy: StrategyArgs,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests in flight (one clause each). One gives the honest
    /// per-clause latency; more measures behaviour under load.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Only the first N clauses.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    mean: f64,
}

#[derive(Serialize)]
struct Report {
    strategy: String,
    split: String,
    data: String,
    n: usize,
    accuracy: f64,
    micro_f1: f64,
    macro_f1: f64,
    abstained: usize,
    latency_ms: Latency,
    throughput_per_s: f64,
    wall_s: f64,
    concurrency: usize,
    per_label: std::collections::BTreeMap<String, LabelMetrics>,
}

/// Runs `lextral eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let strategy = args.strategy.strategy()?;
    let mut examples = read_split(&args.data, &args.split)?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    let client = args.server.connect().await?;
    let progress = ProgressBar::new(examples.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    progress.set_message(format!("eval {}", args.strategy.strategy));
    let started = Instant::now();
    let outcomes: Vec<(String, Option<String>, f64)> =
        futures::stream::iter(examples.iter().cloned())
            .map(|example| {
                let mut client = client.clone();
                let request = args.strategy.request(vec![example.text.clone()]);
                let progress = progress.clone();
                async move {
                    let request = request?;
                    let mut attempt = 0;
                    loop {
                        let sent = Instant::now();
                        match client.classify(request.clone()).await {
                            Ok(response) => {
                                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                                let result = response
                                    .into_inner()
                                    .results
                                    .into_iter()
                                    .next()
                                    .context("the orchestrator returned no result")?;
                                progress.inc(1);
                                let predicted = (!result.abstained).then_some(result.label);
                                return anyhow::Ok((example.label, predicted, ms));
                            }
                            // Overload and restarts are transient; anything else is a real failure.
                            Err(status)
                                if attempt < 3
                                    && matches!(
                                        status.code(),
                                        Code::Unavailable | Code::ResourceExhausted
                                    ) =>
                            {
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                            }
                            Err(status) => anyhow::bail!(
                                "classify failed: {:?}: {}",
                                status.code(),
                                status.message()
                            ),
                        }
                    }
                }
            })
            .buffered(args.concurrency.max(1))
            .try_collect()
            .await?;
    progress.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();

    let pairs: Vec<(String, Option<String>)> = outcomes
        .iter()
        .map(|(g, p, _)| (g.clone(), p.clone()))
        .collect();
    let scores = score(&pairs);
    let mut latencies: Vec<f64> = outcomes.iter().map(|(_, _, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let report = Report {
        strategy: lextral_orchestrator::names::strategy_name(strategy).to_owned(),
        split: args.split.clone(),
        data: args.data.display().to_string(),
        n: scores.n,
        accuracy: scores.accuracy,
        micro_f1: scores.micro_f1,
        macro_f1: scores.macro_f1,
        abstained: scores.abstained,
        latency_ms: Latency {
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        },
        throughput_per_s: scores.n as f64 / wall.max(1e-9),
        wall_s: wall,
        concurrency: args.concurrency.max(1),
        per_label: scores.per_label,
    };
    println!(
        "{} on {} ({} clauses): accuracy {:.4}  micro-F1 {:.4}  macro-F1 {:.4}  abstained {}\n\
         latency p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  throughput {:.1}/s",
        report.strategy,
        report.split,
        report.n,
        report.accuracy,
        report.micro_f1,
        report.macro_f1,
        report.abstained,
        report.latency_ms.p50,
        report.latency_ms.p95,
        report.latency_ms.p99,
        report.throughput_per_s
    );
    if let Some(path) = &args.report {
        write_atomically(path, |file| {
            serde_json::to_writer_pretty(&mut *file, &report)?;
            Ok(())
        })?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
