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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    /// Data directory (labels.txt, <split>.jsonl).
    #[arg(long, required = true)]
    data: Option<PathBuf>,
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

/// `lextral eval` subcommands.
#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Score predictions made elsewhere: JSONL lines {"label": gold,
    /// "prediction": raw model text}, parsed to labels as the prompt
    /// classifier parses its LLM's answers.
    Score(ScoreArgs),
}

/// `lextral eval score`.
#[derive(Args)]
pub struct ScoreArgs {
    /// The label set (labels.txt: one label per line).
    #[arg(long)]
    labels: PathBuf,
    /// Predictions file (JSONL).
    #[arg(long)]
    predictions: PathBuf,
    /// Write the JSON report here (same keys as `lextral eval`).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Serialize, Default)]
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
    /// LLM prompt and generated tokens, and estimated cost (prompt strategies).
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    cost_per_1000_usd: f64,
    /// How answers were mapped to labels (prompt strategies, `eval score`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    parse_methods: std::collections::BTreeMap<String, usize>,
    per_label: std::collections::BTreeMap<String, LabelMetrics>,
}

impl Report {
    fn print(&self) {
        println!(
            "{} on {} ({} clauses): accuracy {:.4}  micro-F1 {:.4}  macro-F1 {:.4}  abstained {}",
            self.strategy,
            self.split,
            self.n,
            self.accuracy,
            self.micro_f1,
            self.macro_f1,
            self.abstained,
        );
        if self.latency_ms.p50 > 0.0 {
            println!(
                "latency p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  throughput {:.1}/s",
                self.latency_ms.p50,
                self.latency_ms.p95,
                self.latency_ms.p99,
                self.throughput_per_s
            );
        }
        if self.input_tokens > 0 {
            println!(
                "LLM tokens in {} / out {}  cost ${:.4} (${:.4} per 1,000 clauses)",
                self.input_tokens, self.output_tokens, self.cost_usd, self.cost_per_1000_usd
            );
        }
        if !self.parse_methods.is_empty() {
            println!("answers parsed: {:?}", self.parse_methods);
        }
    }

    fn write(&self, path: Option<&PathBuf>) -> anyhow::Result<()> {
        if let Some(path) = path {
            write_atomically(path, |file| {
                serde_json::to_writer_pretty(&mut *file, self)?;
                Ok(())
            })?;
            println!("report written to {}", path.display());
        }
        Ok(())
    }
}

/// One classified clause.
struct Outcome {
    gold: String,
    predicted: Option<String>,
    ms: f64,
    input_tokens: u32,
    output_tokens: u32,
    cost_usd: f64,
}

/// Runs `lextral eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(EvalCommand::Score(score_args)) = args.command {
        return score_predictions(score_args);
    }
    let data = args.data.clone().context("--data is required")?;
    let strategy = args.strategy.strategy()?;
    let mut examples = read_split(&data, &args.split)?;
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
    let outcomes: Vec<Outcome> = futures::stream::iter(examples.iter().cloned())
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
                            return anyhow::Ok(Outcome {
                                gold: example.label,
                                predicted: (!result.abstained).then_some(result.label),
                                ms,
                                input_tokens: result.input_tokens,
                                output_tokens: result.output_tokens,
                                cost_usd: result.cost_usd,
                            });
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
        .map(|o| (o.gold.clone(), o.predicted.clone()))
        .collect();
    let scores = score(&pairs);
    let cost_usd: f64 = outcomes.iter().map(|o| o.cost_usd).sum();
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    latencies.sort_by(f64::total_cmp);
    let report = Report {
        strategy: lextral_orchestrator::names::strategy_name(strategy).to_owned(),
        split: args.split.clone(),
        data: data.display().to_string(),
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
        input_tokens: outcomes.iter().map(|o| o.input_tokens as u64).sum(),
        output_tokens: outcomes.iter().map(|o| o.output_tokens as u64).sum(),
        cost_usd,
        cost_per_1000_usd: cost_usd * 1000.0 / scores.n.max(1) as f64,
        parse_methods: Default::default(),
        per_label: scores.per_label,
    };
    report.print();
    report.write(args.report.as_ref())?;
    Ok(())
}

/// `lextral eval score`: parse and score predictions made elsewhere.
fn score_predictions(args: ScoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let labels = lextral_common::labels::read_label_file(&args.labels)?;
    let matcher = lextral_prompt_classifier::parse::LabelMatcher::new(&labels);
    let known: std::collections::HashSet<&str> = labels.iter().map(String::as_str).collect();
    let text = std::fs::read_to_string(&args.predictions)
        .with_context(|| format!("cannot read {}", args.predictions.display()))?;
    let mut pairs = Vec::new();
    let mut methods: std::collections::BTreeMap<String, usize> = Default::default();
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", args.predictions.display(), index + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let gold = value
            .get("label")
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}: needs a string \"label\" (the gold label)", at()))?;
        let prediction = match value.get("prediction") {
            Some(serde_json::Value::String(p)) => p.as_str(),
            Some(serde_json::Value::Null) => "",
            _ => anyhow::bail!(
                "{}: needs a string \"prediction\" (the raw model answer)",
                at()
            ),
        };
        if !known.contains(gold) {
            anyhow::bail!(
                "{}: gold label {gold:?} is not in {}",
                at(),
                args.labels.display()
            );
        }
        let (label, method) = matcher.parse(prediction);
        *methods.entry(method.as_str().to_owned()).or_default() += 1;
        pairs.push((gold.to_owned(), label.map(str::to_owned)));
    }
    if pairs.is_empty() {
        anyhow::bail!("{} holds no predictions", args.predictions.display());
    }
    let scores = score(&pairs);
    let report = Report {
        strategy: "external".to_owned(),
        split: String::new(),
        data: args.predictions.display().to_string(),
        n: scores.n,
        accuracy: scores.accuracy,
        micro_f1: scores.micro_f1,
        macro_f1: scores.macro_f1,
        abstained: scores.abstained,
        latency_ms: Latency::default(),
        throughput_per_s: 0.0,
        wall_s: started.elapsed().as_secs_f64(),
        concurrency: 1,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        cost_per_1000_usd: 0.0,
        parse_methods: methods,
        per_label: scores.per_label,
    };
    report.print();
    report.write(args.report.as_ref())
}
