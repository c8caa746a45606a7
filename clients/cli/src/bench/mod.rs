//! `lextral bench`: embedding throughput in-process, and search and
//! end-to-end latency against a running stack.

mod load;
mod retriever;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use lextral_embedder::EmbedderConfig;
use lextral_embedding::{resolve_model_dir, SentenceEmbedder};
use lextral_proto::v1::embedder_service_client::EmbedderServiceClient;
use lextral_proto::v1::retriever_service_client::RetrieverServiceClient;
use lextral_proto::v1::{EmbedRequest, QueryVector, SearchRequest};
use serde::Serialize;

use crate::data::read_texts;
use lextral_eval::metrics::percentile;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput and single-clause latency, in-process.
    Embed(EmbedArgs),
    /// Search and end-to-end REST latency against a running `lextral serve all`.
    Stack(StackArgs),
    /// A trained classifier in-process: latency and throughput at batch 1
    /// and batch N, peak memory.
    Classifier(ClassifierArgs),
    /// pgvector at scale: bulk load, HNSW build, recall@k and latency
    /// against `ef_search` (its own database on the given server).
    Retriever(retriever::RetrieverArgs),
    /// Classify latency and throughput with concurrent clients over REST and
    /// gRPC, and the memory each service reports, against a running stack.
    Load(load::LoadArgs),
}

/// `lextral bench classifier`.
#[derive(Args)]
pub struct ClassifierArgs {
    /// Model directory from `lextral train`.
    #[arg(long)]
    model: PathBuf,
    /// JSONL file whose `text` fields are classified.
    #[arg(long)]
    data: PathBuf,
    /// Clauses per call for the batched run.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Clauses to classify.
    #[arg(long, default_value_t = 366)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embedder: EmbedderConfig,
}

#[derive(Serialize)]
struct ClassifierReport {
    model: String,
    method: String,
    clauses: usize,
    batch: usize,
    p50_ms_batch1: f64,
    p99_ms_batch1: f64,
    throughput_per_s_batch1: f64,
    throughput_per_s_batched: f64,
    peak_rss_mb: f64,
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mb() -> f64 {
    lextral_common::process_memory_bytes("VmHWM").map_or(f64::NAN, |b| b / (1024.0 * 1024.0))
}

async fn classifier(args: ClassifierArgs) -> anyhow::Result<()> {
    use lextral_finetuned_classifier::Classifier;
    let texts = read_texts(&args.data, args.limit)?;
    anyhow::ensure!(!texts.is_empty(), "no clauses in {}", args.data.display());
    let model_dir = args.model.clone();
    let embed_model = args.embedder.model.clone();
    let embed_dir = resolve_model_dir(&embed_model).await?;
    let batch = args.batch.max(1);
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<ClassifierReport> {
        let model = Classifier::load(&model_dir)?;
        // Models with a head on frozen embeddings get them in-process here,
        // as the embedder service would compute them.
        let embedder = if model.needs_external_embeddings() {
            Some(SentenceEmbedder::load(&embed_dir, &embed_model)?)
        } else {
            None
        };
        let run = |chunk: &[String]| -> anyhow::Result<()> {
            let vectors = match &embedder {
                Some(e) => Some(
                    e.embed(chunk, true, 256)?
                        .into_iter()
                        .map(|v| v.values)
                        .collect::<Vec<_>>(),
                ),
                None => None,
            };
            model.predict(chunk, vectors.as_deref())?;
            Ok(())
        };
        run(&texts[..texts.len().min(batch)])?;
        let started = Instant::now();
        let mut singles = Vec::with_capacity(texts.len());
        for text in &texts {
            let t = Instant::now();
            run(std::slice::from_ref(text))?;
            singles.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let single_seconds = started.elapsed().as_secs_f64();
        singles.sort_by(f64::total_cmp);
        let started = Instant::now();
        for chunk in texts.chunks(batch) {
            run(chunk)?;
        }
        let batched_seconds = started.elapsed().as_secs_f64();
        Ok(ClassifierReport {
            model: model_dir.display().to_string(),
            method: model.manifest.method.as_str().to_owned(),
            clauses: texts.len(),
            batch,
            p50_ms_batch1: percentile(&singles, 50.0),
            p99_ms_batch1: percentile(&singles, 99.0),
            throughput_per_s_batch1: texts.len() as f64 / single_seconds,
            throughput_per_s_batched: texts.len() as f64 / batched_seconds,
            peak_rss_mb: peak_rss_mb(),
        })
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} ({}): batch 1 p50 {:.2} ms, p99 {:.2} ms, {:.1} clauses/s; batch {} {:.1} clauses/s; peak RSS {:.0} MiB",
            report.model,
            report.method,
            report.p50_ms_batch1,
            report.p99_ms_batch1,
            report.throughput_per_s_batch1,
            report.batch,
            report.throughput_per_s_batched,
            report.peak_rss_mb
        );
    }
    Ok(())
}

/// `lextral bench embed`.
#[derive(Args)]
pub struct EmbedArgs {
    /// JSONL file whose `text` fields are embedded.
    #[arg(long)]
    data: PathBuf,
    /// Clauses per embed call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Clauses to embed.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Clauses timed one at a time for single-clause latency.
    #[arg(long, default_value_t = 100)]
    single: usize,
    /// Also write the vectors, one JSON array per line in input order (to
    /// compare with another implementation).
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embedder: EmbedderConfig,
}

/// `lextral bench stack`.
#[derive(Args)]
pub struct StackArgs {
    /// JSONL file whose `text` fields are the queries.
    #[arg(long)]
    data: PathBuf,
    /// Queries to time.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Neighbours per search.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// gRPC URL serving the embedder and retriever (`serve all` serves both).
    #[arg(long, env = "LEXTRAL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The embedder's gRPC URL when it runs on its own [default: --server].
    #[arg(long)]
    embedder: Option<String>,
    /// The retriever's gRPC URL when it runs on its own [default: --server].
    #[arg(long)]
    retriever: Option<String>,
    /// REST gateway URL.
    #[arg(
        long,
        env = "LEXTRAL_HTTP_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    http: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EmbedReport {
    model: String,
    clauses: usize,
    batch: usize,
    tokens: usize,
    seconds: f64,
    clauses_per_s: f64,
    tokens_per_s: f64,
    p50_ms_single: f64,
    p95_ms_single: f64,
    /// Threads the encoder ran on (`RAYON_NUM_THREADS`, default: all cores).
    threads: usize,
    peak_rss_mb: f64,
}

#[derive(Serialize)]
struct StackReport {
    queries: usize,
    k: u32,
    search_p50_ms: f64,
    search_p95_ms: f64,
    e2e_rest_p50_ms: f64,
    e2e_rest_p95_ms: f64,
    e2e_rest_p99_ms: f64,
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Embed(args) => embed(args).await,
        BenchCommand::Stack(args) => stack(args).await,
        BenchCommand::Classifier(args) => classifier(args).await,
        BenchCommand::Retriever(args) => retriever::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
    }
}

async fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let texts = read_texts(&args.data, args.limit)?;
    let dir = resolve_model_dir(&args.embedder.model).await?;
    let model_id = args.embedder.model.clone();
    let max_batch_tokens = args.embedder.max_batch_tokens;
    let batch = args.batch.max(1);
    let single = args.single;
    let vectors_path = args.vectors.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<EmbedReport> {
        let embedder = SentenceEmbedder::load(&dir, &model_id)?;
        // Warm-up: first calls pay for allocations and thread start.
        embedder.embed(&texts[..texts.len().min(batch)], true, max_batch_tokens)?;
        let started = Instant::now();
        let mut tokens = 0;
        let mut vectors = Vec::new();
        for chunk in texts.chunks(batch) {
            let embeddings = embedder.embed(chunk, true, max_batch_tokens)?;
            tokens += embeddings
                .iter()
                .map(|e| e.token_count.min(embedder.info().max_seq_len))
                .sum::<usize>();
            if vectors_path.is_some() {
                vectors.extend(embeddings.into_iter().map(|e| e.values));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(path) = &vectors_path {
            let mut lines = String::new();
            for vector in &vectors {
                lines.push_str(&serde_json::to_string(vector)?);
                lines.push('\n');
            }
            lextral_common::fs::write_text_atomically(path, &lines)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let mut singles: Vec<f64> = texts
            .iter()
            .take(single)
            .map(|text| {
                let started = Instant::now();
                embedder.embed(std::slice::from_ref(text), true, max_batch_tokens)?;
                anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
            })
            .collect::<Result<_, _>>()?;
        singles.sort_by(f64::total_cmp);
        Ok(EmbedReport {
            model: embedder.info().model_id.clone(),
            clauses: texts.len(),
            batch,
            tokens,
            seconds,
            clauses_per_s: texts.len() as f64 / seconds,
            tokens_per_s: tokens as f64 / seconds,
            p50_ms_single: percentile(&singles, 50.0),
            p95_ms_single: percentile(&singles, 95.0),
            threads: rayon::current_num_threads(),
            peak_rss_mb: peak_rss_mb(),
        })
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "embedded {} clauses ({} tokens) in {:.2} s: {:.1} clauses/s, {:.0} tokens/s; \
             single clause p50 {:.1} ms, p95 {:.1} ms",
            report.clauses,
            report.tokens,
            report.seconds,
            report.clauses_per_s,
            report.tokens_per_s,
            report.p50_ms_single,
            report.p95_ms_single
        );
    }
    Ok(())
}

async fn stack(args: StackArgs) -> anyhow::Result<()> {
    let texts = read_texts(&args.data, args.queries)?;
    let connect = |url: Option<String>| {
        let url = url.unwrap_or_else(|| args.server.clone());
        async move {
            tonic::transport::Channel::from_shared(url.clone())?
                .connect()
                .await
                .with_context(|| format!("cannot reach {url}; start `lextral serve all`"))
        }
    };
    let mut embedder = EmbedderServiceClient::new(connect(args.embedder.clone()).await?);
    let mut retriever = RetrieverServiceClient::new(connect(args.retriever.clone()).await?);
    let vectors = embedder
        .embed(EmbedRequest {
            texts: texts.clone(),
            normalize: Some(true),
        })
        .await?
        .into_inner()
        .embeddings;

    let mut search = Vec::with_capacity(vectors.len());
    for vector in &vectors {
        let started = Instant::now();
        retriever
            .search(SearchRequest {
                queries: vec![QueryVector {
                    values: vector.values.clone(),
                }],
                k: args.k,
                ..Default::default()
            })
            .await?;
        search.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    search.sort_by(f64::total_cmp);

    let http = reqwest::Client::new();
    let url = format!("{}/v1/classify", args.http.trim_end_matches('/'));
    let mut e2e = Vec::with_capacity(texts.len());
    for text in &texts {
        let started = Instant::now();
        let response = http
            .post(&url)
            .json(&serde_json::json!({ "texts": [text], "strategy": "knn" }))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url} answered {}",
            response.status()
        );
        response.bytes().await?;
        e2e.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    e2e.sort_by(f64::total_cmp);

    let report = StackReport {
        queries: texts.len(),
        k: args.k,
        search_p50_ms: percentile(&search, 50.0),
        search_p95_ms: percentile(&search, 95.0),
        e2e_rest_p50_ms: percentile(&e2e, 50.0),
        e2e_rest_p95_ms: percentile(&e2e, 95.0),
        e2e_rest_p99_ms: percentile(&e2e, 99.0),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} queries, k={}: search p50 {:.2} ms p95 {:.2} ms; REST classify p50 {:.1} ms p95 {:.1} ms p99 {:.1} ms",
            report.queries,
            report.k,
            report.search_p50_ms,
            report.search_p95_ms,
            report.e2e_rest_p50_ms,
            report.e2e_rest_p95_ms,
            report.e2e_rest_p99_ms
        );
    }
    Ok(())
}
