//! `lextral eval`: classify every clause of a split through the orchestrator
//! with one or more strategies, and report quality, calibration, latency and
//! cost. With `--out RUN_DIR` each answer is journalled as it arrives, so a
//! Ctrl-C or crash leaves a run that `--resume` continues.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lextral_eval::report::{Load, ReportContext, RunReport, StrategyReport};
use lextral_eval::{
    write_run_reports, Journal, Prediction, RunData, RunFolder, RunLoad, RunRecord, RunStatus,
};
use lextral_proto::names::strategy_name;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::{OrchestratorServiceInfoRequest, Strategy};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::client::{ServerArgs, StrategyArgs};
use crate::data::{read_labels, read_split, Example};
use lextral_common::fs::{write_json_atomically, write_text_atomically};

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
    /// Strategies, comma-separated (knn,finetuned,cascade,rag,zero-shot),
    /// and their options.
    #[command(flatten)]
    strategy: StrategyArgs,
    /// Write one strategy's JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run folder: predictions, run.json, report.json/.md/.html, plots.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out: classify only the clauses it lacks.
    #[arg(long, requires = "out")]
    resume: bool,
    /// Requests in flight (one clause each). One gives the honest
    /// per-clause latency; more measures behaviour under load.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Only the first N clauses.
    #[arg(long)]
    limit: Option<usize>,
    /// Monthly cost estimate: clauses classified per day.
    #[arg(long, default_value_t = 100_000.0)]
    requests_per_day: f64,
    /// Monthly cost estimate: price per hour of one serving machine like the
    /// one measured (US dollars).
    #[arg(long = "infra-usd-per-hour", default_value_t = 0.10)]
    infra_usd_per_hour: f64,
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
    /// One overview table (configuration, latency, cost, macro-F1,
    /// micro-F1) across run folders.
    Compare(CompareArgs),
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

/// `lextral eval compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// Run folders made by `lextral eval --out` (or their report.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Also write the table (Markdown) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `lextral eval`.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        Some(EvalCommand::Score(score_args)) => return score_predictions(score_args),
        Some(EvalCommand::Compare(compare_args)) => return compare(compare_args),
        None => {}
    }
    let data = args.data.clone().context("--data is required")?;
    let mut names = strategy_names(&args.strategy)?;
    if !(args.requests_per_day >= 0.0 && args.infra_usd_per_hour >= 0.0) {
        anyhow::bail!("--requests-per-day and --infra-usd-per-hour must be ≥ 0");
    }
    // Checks every line (file:line errors) and refuses an empty split.
    let mut examples = read_split(&data, &args.split)?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    let labels = match read_labels(&data)? {
        Some(labels) => labels,
        None => {
            let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
            labels.sort();
            labels.dedup();
            labels
        }
    };
    let hashes: Vec<String> = examples.iter().map(|e| sha256_hex(&e.text)).collect();
    let folder = match &args.out {
        Some(dir) => Some(RunFolder::open(dir, args.resume)?),
        None => None,
    };
    // A resumed run keeps its earlier strategies (the report covers them
    // all); new ones in --strategy are added to it.
    if let Some(previous) = folder.as_ref().and_then(RunFolder::previous) {
        let mut all = previous.strategy_order.clone();
        for name in names {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        names = all;
    }
    if args.report.is_some() && names.len() > 1 {
        anyhow::bail!("--report takes one strategy; use --out RUN_DIR for several");
    }
    // Refuse an unwritable --report before classifying, not after.
    if let Some(dir) = args.report.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            anyhow::bail!("--report: folder {} does not exist", dir.display());
        }
    }
    let client = args.server.connect().await?;
    let metadata = run_metadata(&args, &data, &names, examples.len(), client.clone()).await?;
    let session = match &folder {
        Some(folder) => folder.begin(
            metadata,
            &names,
            std::env::args().collect::<Vec<_>>().join(" "),
        )?,
        None => 0,
    };

    let cancel = CancellationToken::new();
    let interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: finishing the answers in flight (Ctrl-C again to quit now)…"
                );
                cancel.cancel();
            }
            // Answers already written stay valid; the torn line, if any, is
            // dropped on --resume.
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        })
    };
    let load = Load {
        requests_per_day: args.requests_per_day,
        infra_usd_per_hour: args.infra_usd_per_hour,
    };
    let mut reports = Vec::new();
    let mut all_predictions = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    for name in &names {
        let strategy_args = StrategyArgs {
            strategy: name.clone(),
            ..args.strategy.clone()
        };
        let mut predictions = match &folder {
            Some(folder) => folder.earlier_predictions(name, &hashes)?,
            None => Vec::new(),
        };
        if failure.is_none() && !cancel.is_cancelled() {
            let journal = match &folder {
                Some(folder) => Some(Journal::open(&folder.predictions_path(name))?),
                None => None,
            };
            let outcome = classify_all(
                &client,
                &strategy_args,
                &examples,
                &hashes,
                &mut predictions,
                journal,
                Settings {
                    session,
                    concurrency: args.concurrency.max(1),
                    cancel: cancel.clone(),
                },
            )
            .await;
            if let Err(err) = outcome {
                failure = Some(err);
            }
        }
        predictions.sort_by_key(|p| p.index);
        let report = StrategyReport::build(
            ReportContext {
                strategy: name,
                split: &args.split,
                data: &data.display().to_string(),
                total: examples.len(),
                concurrency: args.concurrency.max(1),
                load: Some(load),
                options: strategy_args.options_json(),
            },
            &predictions,
        );
        println!("{}", report.summary());
        reports.push(report);
        all_predictions.push(predictions);
    }
    interrupt.abort();

    if let Some(path) = &args.report {
        let report = &reports[0];
        write_json_atomically(path, report)?;
        println!("report written to {}", path.display());
    }
    let complete = reports.iter().all(|r| r.complete);
    if let Some(folder) = &folder {
        let status = if complete {
            RunStatus::Complete
        } else if failure.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Interrupted
        };
        let run = folder.finish(session, status)?;
        let run_report = RunReport {
            complete,
            run,
            strategies: reports,
        };
        write_run_reports(folder.dir(), &run_report, &all_predictions, &labels)?;
        println!(
            "run folder {}: report.html, report.md, report.json, predictions/, plots/{}",
            folder.dir().display(),
            if complete { "" } else { " (partial)" }
        );
        if !complete {
            let done: usize = run_report.strategies.iter().map(|r| r.scores.n).sum();
            let total = run_report.strategies.len() * examples.len();
            eprintln!(
                "{done} of {total} classifications done; continue with the same command and --resume"
            );
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if cancel.is_cancelled() && !complete {
        anyhow::bail!("interrupted before every clause was classified");
    }
    Ok(())
}

/// The strategies asked for, checked, without repeats.
fn strategy_names(args: &StrategyArgs) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for name in args.strategy.split(',').map(str::trim) {
        if name.is_empty() {
            anyhow::bail!("--strategy has an empty entry: {:?}", args.strategy);
        }
        let parsed = lextral_proto::names::parse_strategy(name).map_err(anyhow::Error::msg)?;
        let canonical = strategy_name(parsed).to_owned();
        if !names.contains(&canonical) {
            names.push(canonical);
        }
    }
    Ok(names)
}

/// The f64 that prints like the f32 (0.35837597, not 0.3583759665489197):
/// the wire value is f32 and the extra digits are noise.
fn shortest_f64(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(value as f64)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

struct Settings {
    session: u32,
    concurrency: usize,
    cancel: CancellationToken,
}

/// Classifies the clauses `predictions` lacks, appending each answer to
/// `predictions` and the journal as it arrives.
async fn classify_all(
    client: &OrchestratorServiceClient<lextral_common::PeerChannel>,
    args: &StrategyArgs,
    examples: &[Example],
    hashes: &[String],
    predictions: &mut Vec<Prediction>,
    mut journal: Option<Journal>,
    settings: Settings,
) -> anyhow::Result<()> {
    let done: std::collections::HashSet<usize> = predictions.iter().map(|p| p.index).collect();
    let todo: Vec<usize> = (0..examples.len()).filter(|i| !done.contains(i)).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let progress = ProgressBar::new(examples.len() as u64).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} {per_sec} elapsed {elapsed} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    progress.set_message(format!("eval {}", args.strategy));
    progress.set_position(done.len() as u64);
    progress.reset_eta();
    let strategy = args.strategy()?;
    let started = Instant::now();
    let mut answers = futures::stream::iter(todo)
        .take_until(settings.cancel.clone().cancelled_owned())
        .map(|index| {
            let mut client = client.clone();
            let request = args.request(vec![examples[index].text.clone()]);
            async move {
                let outcome = match request {
                    Ok(request) => classify_one(&mut client, request).await,
                    Err(err) => Err(err),
                };
                (index, outcome)
            }
        })
        .buffer_unordered(settings.concurrency)
        .boxed();
    let mut result = Ok(());
    while let Some((index, outcome)) = answers.next().await {
        let (ms, answer) = match outcome {
            Ok(answer) => answer,
            Err(err) => {
                result = Err(err.context(format!("clause {} of the split", index + 1)));
                break;
            }
        };
        let prediction = Prediction {
            index,
            text_sha256: hashes[index].clone(),
            gold: examples[index].label.clone(),
            predicted: (!answer.abstained).then(|| answer.label.clone()),
            confidence: (!answer.abstained).then(|| shortest_f64(answer.confidence)),
            strategy: strategy_name(strategy).to_owned(),
            answered_by: (strategy == Strategy::Cascade)
                .then(|| Strategy::try_from(answer.answered_by).ok())
                .flatten()
                .map(|s| strategy_name(s).to_owned()),
            latency_ms: ms,
            input_tokens: answer.input_tokens as u64,
            output_tokens: answer.output_tokens as u64,
            cost_usd: answer.cost_usd,
            session: settings.session,
            finished_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        if let Some(journal) = journal.as_mut() {
            journal.append(&prediction)?;
        }
        predictions.push(prediction);
        progress.inc(1);
    }
    if let Some(journal) = journal.as_mut() {
        journal.sync()?;
    }
    progress.finish_and_clear();
    result
}

/// One clause, retrying overload and restarts a few times.
async fn classify_one(
    client: &mut OrchestratorServiceClient<lextral_common::PeerChannel>,
    request: lextral_proto::v1::ClassifyRequest,
) -> anyhow::Result<(f64, lextral_proto::v1::ClassificationResult)> {
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
                return Ok((ms, result));
            }
            // Overload and restarts are transient; anything else is a real failure.
            Err(status)
                if attempt < 3
                    && matches!(status.code(), Code::Unavailable | Code::ResourceExhausted) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(status) => {
                anyhow::bail!("classify failed: {:?}: {}", status.code(), status.message())
            }
        }
    }
}

/// Says so when the served fine-tuned model was fitted on the split being
/// evaluated (`lextral train` refits on train + validation): its figures on
/// that split are not held-out, and the manifest's cross-validated estimate
/// is the one to read.
fn warn_if_seen(stack: &serde_json::Value, split: &str, names: &[String]) {
    let manifest = &stack["finetuned"]["manifest"];
    let refit = manifest["training"]["refit"].as_bool() == Some(true);
    let uses_model = names.iter().any(|n| n == "finetuned" || n == "cascade");
    if !(refit && uses_model && (split == "validation" || split == "train")) {
        return;
    }
    let chosen = manifest["cross_validation"]["chosen"]
        .as_str()
        .unwrap_or("?");
    let estimate = manifest["cross_validation"]["candidates"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"].as_str() == Some(chosen)))
        .map(|row| {
            format!(
                "; its {}-fold cross-validated estimate is micro-F1 {:.4} ± {:.4}, macro-F1 {:.4} ± {:.4}",
                manifest["cross_validation"]["folds"],
                row["micro_f1_mean"].as_f64().unwrap_or(f64::NAN),
                row["micro_f1_sd"].as_f64().unwrap_or(f64::NAN),
                row["macro_f1_mean"].as_f64().unwrap_or(f64::NAN),
                row["macro_f1_sd"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .unwrap_or_default();
    eprintln!(
        "eval: warning: the fine-tuned model was fitted on train + validation (lextral train's refit), so its {split} figures are not held-out{estimate}"
    );
}

/// What the run records about itself: code, data, options, and the stack
/// that answered (models, index, server defaults).
async fn run_metadata(
    args: &EvalArgs,
    data: &Path,
    names: &[String],
    clauses: usize,
    mut client: OrchestratorServiceClient<lextral_common::PeerChannel>,
) -> anyhow::Result<RunRecord> {
    let split_file = data.join(format!("{}.jsonl", args.split));
    let labels_file = data.join("labels.txt");
    let stack = match client.info(OrchestratorServiceInfoRequest {}).await {
        Ok(info) => lextral_orchestrator::info::to_json(info.into_inner()),
        Err(status) => serde_json::json!({
            "error": format!("{:?}: {}", status.code(), status.message())
        }),
    };
    warn_if_seen(&stack, &args.split, names);
    let strategies: BTreeMap<String, serde_json::Value> = names
        .iter()
        .map(|name| {
            let options = StrategyArgs {
                strategy: name.clone(),
                ..args.strategy.clone()
            }
            .options_json();
            (name.clone(), options)
        })
        .collect();
    Ok(RunRecord {
        lextral_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("LEXTRAL_GIT_COMMIT").to_owned(),
        git_dirty: git_dirty(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        data: RunData {
            dir: data.display().to_string(),
            split: args.split.clone(),
            split_file: split_file.display().to_string(),
            split_sha256: file_sha256(&split_file)?,
            labels_sha256: if labels_file.is_file() {
                Some(file_sha256(&labels_file)?)
            } else {
                None
            },
            clauses,
            limit: args.limit,
        },
        server: args.server.server.clone(),
        concurrency: args.concurrency.max(1),
        load: RunLoad {
            requests_per_day: args.requests_per_day,
            infra_usd_per_hour: args.infra_usd_per_hour,
        },
        strategies,
        strategy_order: names.to_vec(),
        stack,
        sessions: Vec::new(),
        status: RunStatus::Running,
    })
}

/// Whether the checkout this binary was built from has uncommitted changes
/// now; `None` when it cannot tell (an installed binary, no git).
fn git_dirty() -> Option<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    if String::from_utf8_lossy(&head.stdout).trim() != env!("LEXTRAL_GIT_COMMIT") {
        return None;
    }
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .ok()?;
    status.status.success().then_some(!status.stdout.is_empty())
}

/// `lextral eval compare`.
fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let runs = lextral_eval::compare::load_runs(&args.runs)?;
    let table = lextral_eval::compare::overview(&runs);
    print!("{table}");
    if let Some(path) = &args.out {
        write_text_atomically(path, &table)?;
        println!("table written to {}", path.display());
    }
    Ok(())
}

/// `lextral eval score`: parse and score predictions made elsewhere.
fn score_predictions(args: ScoreArgs) -> anyhow::Result<()> {
    let labels = lextral_common::labels::read_label_file(&args.labels)?;
    let matcher = lextral_prompt_classifier::LabelMatcher::new(&labels);
    let known: std::collections::HashSet<&str> = labels.iter().map(String::as_str).collect();
    let text = std::fs::read_to_string(&args.predictions)
        .with_context(|| format!("cannot read {}", args.predictions.display()))?;
    let mut predictions = Vec::new();
    let mut methods: BTreeMap<String, usize> = BTreeMap::new();
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
        let answer = match value.get("prediction") {
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
        let (label, method) = matcher.parse(answer);
        *methods.entry(method.as_str().to_owned()).or_default() += 1;
        predictions.push(Prediction {
            index,
            text_sha256: String::new(),
            gold: gold.to_owned(),
            predicted: label.map(str::to_owned),
            confidence: None,
            strategy: "external".to_owned(),
            answered_by: None,
            latency_ms: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            session: 0,
            finished_ms: 0.0,
        });
    }
    if predictions.is_empty() {
        anyhow::bail!("{} holds no predictions", args.predictions.display());
    }
    let mut report = StrategyReport::build(
        ReportContext {
            strategy: "external",
            split: "",
            data: &args.predictions.display().to_string(),
            total: predictions.len(),
            concurrency: 1,
            load: None,
            options: serde_json::Value::Null,
        },
        &predictions,
    );
    report.parse_methods = methods;
    println!("{}", report.summary());
    if let Some(path) = &args.report {
        write_json_atomically(path, &report)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
