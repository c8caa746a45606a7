//! `lextral bench`: embedding throughput in-process, and search and
//! end-to-end latency against a running stack.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use lextral_embedder::{model::resolve_model_dir, EmbedderConfig, SentenceEmbedder};
use lextral_proto::v1::embedder_service_client::EmbedderServiceClient;
use lextral_proto::v1::retriever_service_client::RetrieverServiceClient;
use lextral_proto::v1::{EmbedRequest, QueryVector, SearchRequest};
use serde::Serialize;

use crate::data::read_texts;
use crate::metrics::percentile;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput and single-clause latency, in-process.
    Embed(EmbedArgs),
    /// Search and end-to-end REST latency against a running `lextral serve all`.
    Stack(StackArgs),
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
    }
}

async fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let texts = read_texts(&args.data, args.limit)?;
    let dir = resolve_model_dir(&args.embedder.model).await?;
    let model_id = args.embedder.model.clone();
    let max_batch_tokens = args.embedder.max_batch_tokens;
    let batch = args.batch.max(1);
    let single = args.single;
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<EmbedReport> {
        let embedder = SentenceEmbedder::load(&dir, &model_id)?;
        // Warm-up: first calls pay for allocations and thread start.
        embedder.embed(&texts[..texts.len().min(batch)], true, max_batch_tokens)?;
        let started = Instant::now();
        let mut tokens = 0;
        for chunk in texts.chunks(batch) {
            let embeddings = embedder.embed(chunk, true, max_batch_tokens)?;
            tokens += embeddings
                .iter()
                .map(|e| e.token_count.min(embedder.info().max_seq_len))
                .sum::<usize>();
        }
        let seconds = started.elapsed().as_secs_f64();
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
    let channel = tonic::transport::Channel::from_shared(args.server.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}; start `lextral serve all`", args.server))?;
    let mut embedder = EmbedderServiceClient::new(channel.clone());
    let mut retriever = RetrieverServiceClient::new(channel);
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
