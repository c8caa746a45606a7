//! `lextral bench retriever`: a store at scale. Real clause embeddings plus
//! synthetic vectors drawn around them are loaded through the store's own
//! upsert (pgvector: binary COPY, then the HNSW index is built once after the
//! load, or with `--pg-search codes` the search mirror is loaded instead;
//! embedded: its fsynced log, codes kept as rows arrive), and recall@k
//! against exact search and search latency are swept over `ef_search`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lextral_embedder::EmbedderConfig;
use lextral_embedding::{resolve_model_dir, SentenceEmbedder};
use lextral_eval::metrics::percentile;
use lextral_retriever::search::{dot, TopK, RERANK_PER_EF_SEARCH};
use lextral_retriever::{content_hash, NewClause, SearchParams};
use lextral_retriever::{PgSearch, RetrieverConfig, Store};
use lextral_retriever::{
    DEFAULT_EF_SEARCH, DEFAULT_EXACT_MAX_ROWS, DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_M,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::data::read_texts;

/// Split and label of every benchmark row.
const BENCH_SPLIT: &str = "bench";
const BENCH_LABEL: &str = "unlabeled";
/// Rows generated per RNG stream: the vectors do not depend on thread count.
const ROWS_PER_STREAM: usize = 4096;

/// Which store `bench retriever` measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchStore {
    /// PostgreSQL with pgvector (HNSW).
    Postgres,
    /// The embedded store (exact up to --exact-max-rows, then one-bit codes
    /// with exact re-scoring).
    Embedded,
}

/// `lextral bench retriever`.
#[derive(Args)]
pub struct RetrieverArgs {
    /// The store measured.
    #[arg(long, value_enum, default_value_t = BenchStore::Postgres)]
    store: BenchStore,
    /// PostgreSQL server (with pgvector), for `--store postgres`. The
    /// benchmark works in its own database on that server
    /// (`--bench-database`), never in the one named by the URL.
    #[arg(long, env = "LEXTRAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory of the embedded store, for `--store embedded`; emptied
    /// first [default: ~/.cache/lextral/bench/embedded-store].
    #[arg(long)]
    store_path: Option<PathBuf>,
    /// `--store postgres`: search through the in-memory mirror of codes (the
    /// service's default; no index build, the mirror's load is timed
    /// instead), or through the HNSW index.
    #[arg(long, value_enum, default_value_t = PgSearch::Codes)]
    pg_search: PgSearch,
    /// Embedded store and the codes mirror: largest store searched exactly.
    #[arg(long, default_value_t = DEFAULT_EXACT_MAX_ROWS)]
    exact_max_rows: usize,
    /// Database the benchmark creates (if absent) and empties.
    #[arg(long, default_value = "lextral_bench")]
    bench_database: String,
    /// JSONL clauses embedded as the real vectors; the synthetic ones are
    /// drawn around them.
    #[arg(long)]
    base: PathBuf,
    /// JSONL clauses used as queries (not loaded), in order; repeatable.
    #[arg(long = "query-data", required = true)]
    query_data: Vec<PathBuf>,
    /// Vectors in the index, real and synthetic.
    #[arg(long, default_value_t = 1_000_000)]
    vectors: usize,
    /// Queries timed and checked against exact search.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// `ef_search` values swept (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,40,64,100,150,200,400"
    )]
    ef_search: Vec<u32>,
    /// HNSW graph degree.
    #[arg(long, default_value_t = DEFAULT_HNSW_M)]
    hnsw_m: u32,
    /// HNSW build breadth.
    #[arg(long, default_value_t = DEFAULT_HNSW_EF_CONSTRUCTION)]
    hnsw_ef_construction: u32,
    /// Rows per upsert call during the load.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Upsert calls in flight during the load.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// `maintenance_work_mem` for the index build, MiB.
    #[arg(long, default_value_t = 4096)]
    maintenance_work_mem_mb: u64,
    /// Parallel workers for the index build (besides the leader).
    #[arg(long, default_value_t = 1)]
    build_workers: u32,
    /// Seed of the synthetic vectors.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How synthetic vectors are drawn around the real ones.
    #[arg(long, value_enum, default_value_t = Synthetic::Spread)]
    synthetic: Synthetic,
    /// Keep the loaded and indexed table when it holds exactly this data set
    /// (same inputs, seed, sizes and HNSW parameters) and only sweep the
    /// searches again; the stored load and build times are reported.
    #[arg(long)]
    reuse: bool,
    /// Folder for `retriever.json` and `recall_vs_ef_search.png`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where embeddings of the input files are cached.
    #[arg(long)]
    vectors_cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embedder: EmbedderConfig,
}

/// What `bench retriever` measured.
#[derive(Serialize, Deserialize, Clone)]
struct LoadFigures {
    rows: u64,
    seconds: f64,
    rows_per_s: f64,
    batch: usize,
    writers: usize,
}

#[derive(Serialize, Deserialize, Clone)]
struct BuildFigures {
    seconds: f64,
    maintenance_work_mem_mb: u64,
    parallel_workers: u32,
    table_mib: f64,
    index_mib: f64,
}

#[derive(Serialize, Clone)]
struct SweepPoint {
    ef_search: u32,
    recall_at_k: f64,
    min_recall_at_k: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize)]
struct RetrieverReport {
    store: BenchStore,
    /// `--store postgres`: "hnsw" or "codes".
    pg_search: Option<&'static str>,
    vectors: usize,
    real_vectors: usize,
    dimension: usize,
    queries: usize,
    k: u32,
    seed: u64,
    synthetic: Synthetic,
    hnsw_m: u32,
    hnsw_ef_construction: u32,
    reused: bool,
    load: LoadFigures,
    /// pgvector's index build (the embedded store has none to build).
    build: Option<BuildFigures>,
    /// Embedded store: reopening it (replaying its log) after the load.
    reopen_seconds: Option<f64>,
    /// Embedded store: the log's size.
    store_mib: Option<f64>,
    /// Embedded store (in this process): peak resident memory.
    peak_rss_mib: Option<f64>,
    /// `--pg-search codes`: loading the search mirror from the table.
    mirror_load_seconds: Option<f64>,
    /// `--pg-search codes`: memory the mirror holds.
    mirror_mib: Option<f64>,
    exact_search_seconds: f64,
    default_ef_search: u32,
    at_default: Option<SweepPoint>,
    sweep: Vec<SweepPoint>,
    server: Vec<(String, String)>,
}

/// The stored record of a finished load and build, for `--reuse`.
#[derive(Serialize, Deserialize)]
struct Loaded {
    fingerprint: String,
    load: LoadFigures,
    build: Option<BuildFigures>,
}

/// A loaded store, ready to sweep.
struct Prepared {
    store: Arc<Store>,
    load: LoadFigures,
    build: Option<BuildFigures>,
    reused: bool,
    /// Stored id of each row; `None` for a row repeating an earlier text.
    ids: Vec<Option<i64>>,
    server: Vec<(String, String)>,
    reopen_seconds: Option<f64>,
    store_mib: Option<f64>,
    mirror_load_seconds: Option<f64>,
}

pub async fn run(args: RetrieverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.k >= 1, "--k must be at least 1");
    anyhow::ensure!(args.queries >= 1, "--queries must be at least 1");
    anyhow::ensure!(!args.ef_search.is_empty(), "--ef-search needs a value");
    anyhow::ensure!(
        args.bench_database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--bench-database may hold letters, digits and _ only"
    );

    // The server first: an unreachable one fails before minutes of embedding.
    let bench_url = match args.store {
        BenchStore::Postgres => {
            let url = args
                .database_url
                .as_deref()
                .context("--store postgres needs --database-url (or LEXTRAL_DATABASE_URL)")?;
            Some(bench_database_url(url, &args.bench_database).await?)
        }
        BenchStore::Embedded => None,
    };

    // Inputs: real embeddings, queries, synthetic vectors.
    let base_texts = read_texts(&args.base, usize::MAX)?;
    let mut query_texts = Vec::new();
    for path in &args.query_data {
        if query_texts.len() >= args.queries {
            break;
        }
        query_texts.extend(read_texts(path, args.queries - query_texts.len())?);
    }
    anyhow::ensure!(
        args.vectors >= base_texts.len(),
        "--vectors {} is fewer than the {} base clauses",
        args.vectors,
        base_texts.len()
    );
    let cache = args
        .vectors_cache
        .clone()
        .unwrap_or_else(|| lextral_common::lextral_home().join("bench").join("vectors"));
    let base = embed_cached(&args.embedder, &base_texts, &cache, "base clauses").await?;
    let queries = embed_cached(&args.embedder, &query_texts, &cache, "queries").await?;
    let dim = base[0].len();
    let started = Instant::now();
    let vectors = synthesize(&base, args.vectors, args.seed, args.synthetic);
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        rows = args.vectors,
        "synthetic vectors drawn"
    );
    let texts = RowTexts {
        real: &base_texts,
        total: args.vectors,
    };
    let fingerprint = fingerprint(&args, &base_texts, &query_texts, dim);
    let prepared = match bench_url {
        Some(url) => prepare_postgres(&args, url, &vectors, dim, &texts, &fingerprint).await?,
        None => prepare_embedded(&args, &vectors, dim, &texts, &fingerprint).await?,
    };
    let store = prepared.store;

    let started = Instant::now();
    let truth = exact_top_k(&vectors, dim, &prepared.ids, &queries, args.k as usize);
    let exact_search_seconds = started.elapsed().as_secs_f64();
    drop(vectors);

    let sweep = sweep(&store, &queries, &truth, &args).await?;
    let mirror_mib = match store.as_ref() {
        Store::Postgres(pg) => pg
            .mirror()
            .map(|mirror| mirror.memory_bytes() as f64 / (1024.0 * 1024.0)),
        Store::Embedded(_) => None,
    };
    let peak_rss_mib = (args.store == BenchStore::Embedded).then(super::peak_rss_mb);
    let at_default = sweep
        .iter()
        .find(|p| p.ef_search == DEFAULT_EF_SEARCH)
        .cloned();
    let report = RetrieverReport {
        store: args.store,
        pg_search: (args.store == BenchStore::Postgres).then_some(match args.pg_search {
            PgSearch::Hnsw => "hnsw",
            PgSearch::Codes => "codes",
        }),
        vectors: args.vectors,
        real_vectors: base.len(),
        dimension: dim,
        queries: queries.len(),
        k: args.k,
        seed: args.seed,
        synthetic: args.synthetic,
        hnsw_m: args.hnsw_m,
        hnsw_ef_construction: args.hnsw_ef_construction,
        reused: prepared.reused,
        load: prepared.load,
        build: prepared.build,
        reopen_seconds: prepared.reopen_seconds,
        store_mib: prepared.store_mib,
        peak_rss_mib,
        mirror_load_seconds: prepared.mirror_load_seconds,
        mirror_mib,
        exact_search_seconds,
        default_ef_search: DEFAULT_EF_SEARCH,
        at_default,
        sweep,
        server: prepared.server,
    };
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        lextral_common::fs::write_json_atomically(&out.join("retriever.json"), &report)?;
        let points: Vec<lextral_eval::plots::EfPoint> = report
            .sweep
            .iter()
            .map(|p| lextral_eval::plots::EfPoint {
                ef_search: p.ef_search,
                recall: p.recall_at_k,
                p50_ms: p.p50_ms,
                p95_ms: p.p95_ms,
            })
            .collect();
        lextral_eval::plots::recall_vs_ef_search(
            &out.join("recall_vs_ef_search.png"),
            &points,
            &format!(
                "{}, {} vectors × {dim} ({} real, synthetic: {}), k={}, {} queries",
                store_title(&report),
                report.vectors,
                report.real_vectors,
                report.synthetic.name(),
                report.k,
                report.queries
            ),
            DEFAULT_EF_SEARCH,
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// pgvector in its own database: emptied, loaded with the HNSW index
/// dropped, then indexed once (or reused when it holds this data set). With
/// `--pg-search codes` no index is built; a second store loads its search
/// mirror from the table, as a starting replica would.
async fn prepare_postgres(
    args: &RetrieverArgs,
    bench_url: String,
    vectors: &[f32],
    dim: usize,
    texts: &RowTexts<'_>,
    fingerprint: &str,
) -> anyhow::Result<Prepared> {
    let mut config = RetrieverConfig::with_database_url(bench_url.clone());
    // The load goes through a store without a mirror (it would first load
    // the table's previous contents).
    config.pg_search = PgSearch::Hnsw;
    config.dimension = dim;
    config.hnsw_m = args.hnsw_m;
    config.hnsw_ef_construction = args.hnsw_ef_construction;
    config.pool_size = args.writers.max(1) + 1;
    let store = Arc::new(Store::connect(&config)?);
    store.ensure_ready().await?;
    let Store::Postgres(pg) = store.as_ref() else {
        bail!("the benchmark needs PostgreSQL");
    };
    let (client, connection) = tokio_postgres::connect(&bench_url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lextral_bench_meta (key text PRIMARY KEY, value text NOT NULL)",
        )
        .await?;

    let previous: Option<Loaded> = client
        .query_opt(
            "SELECT value FROM lextral_bench_meta WHERE key = 'loaded'",
            &[],
        )
        .await?
        .and_then(|row| serde_json::from_str(row.get::<_, &str>(0)).ok());
    let index_exists: bool = client
        .query_one(
            "SELECT to_regclass('lextral_clauses_embedding_hnsw') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let codes = args.pg_search == PgSearch::Codes;
    let reused = args.reuse
        && previous.as_ref().is_some_and(|p| {
            p.fingerprint == fingerprint && (codes || (index_exists && p.build.is_some()))
        });
    if args.reuse && !reused {
        eprintln!("--reuse: the bench database does not hold this data set; loading it");
    }
    let (load, build) = if reused {
        let previous = previous.expect("checked above");
        (previous.load, previous.build)
    } else {
        client
            .batch_execute("DELETE FROM lextral_bench_meta; TRUNCATE lextral_clauses")
            .await?;
        pg.drop_ann_index().await?;
        let (load, _) = load_rows(&store, vectors, dim, texts, args).await?;
        let build = if codes {
            None
        } else {
            Some(build_index(pg, &client, args).await?)
        };
        let loaded = Loaded {
            fingerprint: fingerprint.to_owned(),
            load: load.clone(),
            build: build.clone(),
        };
        client
            .execute(
                "INSERT INTO lextral_bench_meta (key, value) VALUES ('loaded', $1)",
                &[&serde_json::to_string(&loaded)?],
            )
            .await?;
        (load, build)
    };
    // Row index -> stored id (duplicate texts share one row, so truth skips
    // all but the first).
    let ids = stored_ids(&client, texts).await?;
    let server = server_settings(&client).await?;
    // A reused table's HNSW build is not what codes searches with.
    let build = if codes { None } else { build };
    let (store, mirror_load_seconds) = if codes {
        drop(store);
        config.pg_search = PgSearch::Codes;
        config.exact_max_rows = args.exact_max_rows;
        let store = Arc::new(Store::connect(&config)?);
        let started = Instant::now();
        store.ensure_ready().await?;
        (store, Some(started.elapsed().as_secs_f64()))
    } else {
        (store, None)
    };
    Ok(Prepared {
        store,
        load,
        build,
        reused,
        ids,
        server,
        reopen_seconds: None,
        store_mib: None,
        mirror_load_seconds,
    })
}

/// The embedded store in its own directory: emptied and loaded (or reused
/// when it holds this data set), then reopened the way a restart would.
async fn prepare_embedded(
    args: &RetrieverArgs,
    vectors: &[f32],
    dim: usize,
    texts: &RowTexts<'_>,
    fingerprint: &str,
) -> anyhow::Result<Prepared> {
    let dir = args.store_path.clone().unwrap_or_else(|| {
        lextral_common::lextral_home()
            .join("bench")
            .join("embedded-store")
    });
    let meta_path = dir.join("bench-meta.json");
    let previous: Option<Loaded> = std::fs::read(&meta_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let reused = args.reuse
        && previous
            .as_ref()
            .is_some_and(|p| p.fingerprint == fingerprint);
    if args.reuse && !reused {
        eprintln!("--reuse: the bench store does not hold this data set; loading it");
    }
    if !reused {
        // Only the files this benchmark writes: never a directory's other contents.
        for name in ["clauses.log", "bench-meta.json"] {
            match std::fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("cannot empty {}", dir.display()));
                }
                _ => {}
            }
        }
    }
    let mut config = RetrieverConfig::embedded(&dir);
    config.dimension = dim;
    config.exact_max_rows = args.exact_max_rows;
    let store = Arc::new(Store::connect(&config)?);
    let log_len = || std::fs::metadata(dir.join("clauses.log")).map_or(0, |m| m.len());
    let before = log_len();
    // Upserting rows the store holds writes nothing and returns their ids,
    // so a reused store is checked row by row this way too: if anything was
    // written, the store did not hold the data set and the new load counts.
    let (mut load, ids) = load_rows(&store, vectors, dim, texts, args).await?;
    let reused = reused && log_len() == before;
    if let (true, Some(previous)) = (reused, previous) {
        load = previous.load;
    } else {
        let loaded = Loaded {
            fingerprint: fingerprint.to_owned(),
            load: load.clone(),
            build: None,
        };
        lextral_common::fs::write_json_atomically(&meta_path, &loaded)?;
    }
    drop(store);
    let started = Instant::now();
    let store = Arc::new(Store::connect(&config)?);
    let reopen_seconds = started.elapsed().as_secs_f64();
    let stored = match store.as_ref() {
        Store::Embedded(embedded) => embedded.stats().total,
        Store::Postgres(_) => bail!("the embedded benchmark opened PostgreSQL"),
    };
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<Option<i64>> = ids
        .into_iter()
        .map(|id| seen.insert(id).then_some(id))
        .collect();
    anyhow::ensure!(
        seen.len() as u64 == stored,
        "the bench store holds {stored} clauses, this data set {}; rerun without --reuse",
        seen.len()
    );
    let store_mib = std::fs::metadata(dir.join("clauses.log"))
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .ok();
    Ok(Prepared {
        store,
        load,
        build: None,
        reused,
        ids,
        server: Vec::new(),
        reopen_seconds: Some(reopen_seconds),
        store_mib,
        mirror_load_seconds: None,
    })
}

/// What the plot and the summary call the measured store.
fn store_title(report: &RetrieverReport) -> String {
    match report.store {
        BenchStore::Postgres if report.pg_search == Some("codes") => format!(
            "pgvector + in-memory mirror (1-bit codes, int8 re-score of {}×ef_search, exact re-rank in PostgreSQL)",
            RERANK_PER_EF_SEARCH
        ),
        BenchStore::Postgres => format!(
            "pgvector HNSW m={}, ef_construction={}",
            report.hnsw_m, report.hnsw_ef_construction
        ),
        BenchStore::Embedded => format!(
            "embedded store, 1-bit codes + exact re-score of {}×ef_search candidates",
            RERANK_PER_EF_SEARCH
        ),
    }
}

fn print_report(report: &RetrieverReport) {
    let reused = if report.reused { ", reused" } else { "" };
    println!(
        "{}: {} vectors ({} real) × {}, load {:.0} s ({:.0} rows/s{reused})",
        store_title(report),
        report.vectors,
        report.real_vectors,
        report.dimension,
        report.load.seconds,
        report.load.rows_per_s,
    );
    if let Some(build) = &report.build {
        println!(
            "HNSW build {:.1} min, index {:.0} MiB",
            build.seconds / 60.0,
            build.index_mib
        );
    }
    if let (Some(reopen), Some(mib)) = (report.reopen_seconds, report.store_mib) {
        println!(
            "store file {mib:.0} MiB, reopened in {reopen:.1} s, peak resident memory {:.0} MiB",
            report.peak_rss_mib.unwrap_or(f64::NAN)
        );
    }
    if let (Some(seconds), Some(mib)) = (report.mirror_load_seconds, report.mirror_mib) {
        println!("search mirror loaded in {seconds:.1} s, holds {mib:.0} MiB");
    }
    println!(
        "{} queries, k={}: exact search {:.1} s",
        report.queries, report.k, report.exact_search_seconds
    );
    println!("ef_search  recall@k  min     p50 ms  p95 ms  p99 ms");
    for p in &report.sweep {
        println!(
            "{:>9}  {:.4}    {:.2}    {:>6.2}  {:>6.2}  {:>6.2}{}",
            p.ef_search,
            p.recall_at_k,
            p.min_recall_at_k,
            p.p50_ms,
            p.p95_ms,
            p.p99_ms,
            if p.ef_search == report.default_ef_search {
                "  (default)"
            } else {
                ""
            }
        );
    }
}

/// Texts of the benchmark rows: the real clauses, then one unique line per
/// synthetic vector (the content hash makes texts the identity of a row).
struct RowTexts<'a> {
    real: &'a [String],
    total: usize,
}

impl RowTexts<'_> {
    fn get(&self, row: usize) -> String {
        match self.real.get(row) {
            Some(text) => text.clone(),
            None => format!("synthetic clause vector {row}"),
        }
    }
}

/// Identifies the data set in the table: inputs, sizes, seed, index shape.
fn fingerprint(args: &RetrieverArgs, base: &[String], queries: &[String], dim: usize) -> String {
    let mut hasher = Sha256::new();
    for text in base.iter().chain(queries) {
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hasher.update(
        format!(
            "{}|{}|{}|{:?}|{}|{}|{}",
            args.embedder.model,
            args.vectors,
            args.seed,
            args.synthetic,
            dim,
            args.hnsw_m,
            args.hnsw_ef_construction
        )
        .as_bytes(),
    );
    hex::encode(hasher.finalize())
}

/// Creates `name` on the server of `url` if absent; returns its URL.
async fn bench_database_url(url: &str, name: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| "cannot connect to --database-url")?;
    tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    let mut parsed = reqwest::Url::parse(url).context("--database-url is not a URL")?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

/// Embeddings of `texts`, cached by model and content.
async fn embed_cached(
    config: &EmbedderConfig,
    texts: &[String],
    cache: &Path,
    what: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let dir = resolve_model_dir(&config.model).await?;
    let model_id = config.model.clone();
    let max_batch_tokens = config.max_batch_tokens;
    let texts = texts.to_vec();
    let cache = cache.to_path_buf();
    let progress = ProgressBar::new(texts.len() as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} embedding {what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))?
        .progress_chars("=> "),
    );
    tokio::task::spawn_blocking(move || {
        lextral_embedding::embed_cached(
            Some(&cache),
            &model_id,
            &texts,
            || {},
            |texts| {
                // The model loads only when the cache misses.
                let embedder = SentenceEmbedder::load(&dir, &model_id)?;
                let mut vectors = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(32) {
                    vectors.extend(
                        embedder
                            .embed(chunk, true, max_batch_tokens)?
                            .into_iter()
                            .map(|e| e.values),
                    );
                    progress.inc(chunk.len() as u64);
                }
                progress.finish_and_clear();
                Ok(vectors)
            },
        )
    })
    .await?
}

/// How synthetic vectors are drawn around the real ones.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synthetic {
    /// On the segment from a real clause to one of its 10 nearest real
    /// clauses, at a uniform random point, plus slight noise (SMOTE): keeps
    /// the local structure of real clause embeddings.
    Neighbours,
    /// Moved from a real clause along the difference of two random real
    /// clauses by 0.2–0.6 of it, plus slight noise: spreads vectors between
    /// clusters (a harder, nearly structureless stress case).
    Spread,
}

impl Synthetic {
    fn name(self) -> &'static str {
        match self {
            Self::Neighbours => "neighbours",
            Self::Spread => "spread",
        }
    }
}

/// Real neighbours used by [`Synthetic::Neighbours`].
const SEGMENT_NEIGHBOURS: usize = 10;

/// `total` unit vectors, row-major: the `base` vectors first, then synthetic
/// ones drawn as `kind` says, each with Gaussian noise of norm ≈ 0.02 so no
/// two coincide. Deterministic for a seed, whatever the thread count.
fn synthesize(base: &[Vec<f32>], total: usize, seed: u64, kind: Synthetic) -> Vec<f32> {
    let dim = base[0].len();
    let mut out = vec![0f32; total * dim];
    let (real, synthetic) = out.split_at_mut(base.len() * dim);
    for (row, vector) in real.chunks_mut(dim).zip(base) {
        row.copy_from_slice(vector);
        normalize(row);
    }
    let unit: Vec<f32> = real.to_vec();
    let neighbours = match kind {
        Synthetic::Neighbours => nearest_real(&unit, dim, SEGMENT_NEIGHBOURS),
        Synthetic::Spread => Vec::new(),
    };
    let row_of = |i: usize| &unit[i * dim..(i + 1) * dim];
    let count = base.len();
    synthetic
        .par_chunks_mut(ROWS_PER_STREAM * dim)
        .enumerate()
        .for_each(|(stream, rows)| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let noise = 0.02 / (dim as f32).sqrt();
            for row in rows.chunks_mut(dim) {
                let from = rng.random_range(0..count);
                let (to_a, to_b, step) = match kind {
                    Synthetic::Neighbours => {
                        let near = &neighbours[from];
                        let to = if near.is_empty() {
                            from
                        } else {
                            near[rng.random_range(0..near.len())]
                        };
                        (to, from, rng.random_range(0.0..1.0f32))
                    }
                    Synthetic::Spread => (
                        rng.random_range(0..count),
                        rng.random_range(0..count),
                        rng.random_range(0.2..0.6f32),
                    ),
                };
                let (x, a, b) = (row_of(from), row_of(to_a), row_of(to_b));
                for (i, value) in row.iter_mut().enumerate() {
                    *value = x[i] + step * (a[i] - b[i]) + noise * gaussian(&mut rng);
                }
                normalize(row);
            }
        });
    out
}

/// The `k` most similar other rows of each unit row (exact).
fn nearest_real(unit: &[f32], dim: usize, k: usize) -> Vec<Vec<usize>> {
    let rows: Vec<&[f32]> = unit.chunks(dim).collect();
    rows.par_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut top = TopK::new(k);
            for (j, other) in rows.iter().enumerate() {
                if j != i {
                    top.offer(dot(row, other), j as i64, j);
                }
            }
            top.into_sorted().into_iter().map(|(_, j)| j).collect()
        })
        .collect()
}

/// A standard normal draw (Box–Muller; one of the pair is enough here).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn normalize(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Loads every row through `Store::upsert` (validation, binary COPY into a
/// staging table, insert with the content-hash conflict rule), `writers`
/// batches at a time. Returns the stored id of every row, in row order.
async fn load_rows(
    store: &Arc<Store>,
    vectors: &[f32],
    dim: usize,
    texts: &RowTexts<'_>,
    args: &RetrieverArgs,
) -> anyhow::Result<(LoadFigures, Vec<i64>)> {
    let total = texts.total;
    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} loading [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    let batch = args.batch.max(1);
    let started = Instant::now();
    let batches = (0..total).step_by(batch).map(|start| {
        let end = (start + batch).min(total);
        let records = (start..end)
            .map(|row| NewClause {
                text: texts.get(row),
                label: BENCH_LABEL.to_owned(),
                split: BENCH_SPLIT.to_owned(),
                embedding: vectors[row * dim..(row + 1) * dim].to_vec(),
            })
            .collect::<Vec<_>>();
        (start, records)
    });
    let mut ids = vec![0i64; total];
    let mut results = futures::stream::iter(batches)
        .map(|(start, records)| {
            let store = Arc::clone(store);
            let progress = progress.clone();
            async move {
                let count = records.len();
                let outcome = store.upsert(records).await?;
                progress.inc(count as u64);
                anyhow::Ok((start, outcome.ids))
            }
        })
        .buffer_unordered(args.writers.max(1));
    while let Some(result) = results.next().await {
        let (start, batch_ids) = result?;
        ids[start..start + batch_ids.len()].copy_from_slice(&batch_ids);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let figures = LoadFigures {
        rows: total as u64,
        seconds,
        rows_per_s: total as f64 / seconds,
        batch,
        writers: args.writers.max(1),
    };
    Ok((figures, ids))
}

/// Builds the HNSW index, showing PostgreSQL's own progress while it runs.
async fn build_index(
    pg: &lextral_retriever::PgStore,
    client: &tokio_postgres::Client,
    args: &RetrieverArgs,
) -> anyhow::Result<BuildFigures> {
    let progress = ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let build = pg.build_ann_index(args.maintenance_work_mem_mb, args.build_workers);
    tokio::pin!(build);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            result = &mut build => { result?; break; }
            _ = tick.tick() => {
                let row = client
                    .query_opt(
                        "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index
                         WHERE datname = current_database()",
                        &[],
                    )
                    .await?;
                let status = row.map_or_else(String::new, |row| {
                    format!("{} {}/{}", row.get::<_, &str>(0), row.get::<_, i64>(1), row.get::<_, i64>(2))
                });
                progress.set_message(format!(
                    "building HNSW index, {:.1} min: {status}",
                    started.elapsed().as_secs_f64() / 60.0
                ));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let row = client
        .query_one(
            "SELECT pg_relation_size('lextral_clauses'), pg_relation_size('lextral_clauses_embedding_hnsw')",
            &[],
        )
        .await?;
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    Ok(BuildFigures {
        seconds,
        maintenance_work_mem_mb: args.maintenance_work_mem_mb,
        parallel_workers: args.build_workers,
        table_mib: mib(row.get(0)),
        index_mib: mib(row.get(1)),
    })
}

/// Stored id of each row; `None` for a row whose text repeats an earlier one.
async fn stored_ids(
    client: &tokio_postgres::Client,
    texts: &RowTexts<'_>,
) -> anyhow::Result<Vec<Option<i64>>> {
    let by_hash: std::collections::HashMap<Vec<u8>, i64> = client
        .query(
            "SELECT content_hash, id FROM lextral_clauses WHERE split = $1",
            &[&BENCH_SPLIT],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::with_capacity(texts.total);
    for row in 0..texts.total {
        let hash = content_hash(BENCH_SPLIT, &texts.get(row));
        let id = *by_hash.get(&hash).with_context(|| {
            format!("row {row} is missing from the bench table; rerun without --reuse")
        })?;
        ids.push(seen.insert(id).then_some(id));
    }
    anyhow::ensure!(
        seen.len() == by_hash.len(),
        "the bench table holds {} rows, this data set {}; rerun without --reuse",
        by_hash.len(),
        seen.len()
    );
    Ok(ids)
}

/// Exact top-k ids per query by cosine (vectors are unit length), in
/// blocks of rows small enough to stay in cache while every query passes.
fn exact_top_k(
    vectors: &[f32],
    dim: usize,
    ids: &[Option<i64>],
    queries: &[Vec<f32>],
    k: usize,
) -> Vec<Vec<i64>> {
    const ROWS_PER_BLOCK: usize = 2048;
    let queries: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| {
            let mut q = q.clone();
            normalize(&mut q);
            q
        })
        .collect();
    let partial: Vec<Vec<TopK>> = vectors
        .par_chunks(ROWS_PER_BLOCK * dim)
        .enumerate()
        .map(|(block, rows)| {
            let first = block * ROWS_PER_BLOCK;
            queries
                .iter()
                .map(|query| {
                    let mut top = TopK::new(k);
                    for (offset, row) in rows.chunks_exact(dim).enumerate() {
                        let Some(id) = ids[first + offset] else {
                            continue;
                        };
                        top.offer(dot(query, row), id, first + offset);
                    }
                    top
                })
                .collect()
        })
        .collect();
    let mut per_query: Vec<TopK> = (0..queries.len()).map(|_| TopK::new(k)).collect();
    for block in partial {
        for (top, part) in per_query.iter_mut().zip(block) {
            *top = std::mem::replace(top, TopK::new(0)).merge(part);
        }
    }
    per_query.into_iter().map(TopK::into_ids).collect()
}

/// One query per call, as the kNN strategy sends them, at each `ef_search`.
async fn sweep(
    store: &Store,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
    args: &RetrieverArgs,
) -> anyhow::Result<Vec<SweepPoint>> {
    let search = |ef: u32, query: Vec<f32>| async move {
        let params = SearchParams {
            k: args.k,
            ef_search: Some(ef),
            ..Default::default()
        };
        let started = Instant::now();
        let hits = store.search(vec![query], &params).await?;
        anyhow::Ok((started.elapsed().as_secs_f64() * 1000.0, hits))
    };
    // Warm-up: the first pass reads the index from disk into memory.
    let warm_ef = args
        .ef_search
        .iter()
        .copied()
        .max()
        .unwrap_or(DEFAULT_EF_SEARCH);
    for query in queries {
        search(warm_ef, query.clone()).await?;
    }
    let mut points = Vec::new();
    for &ef in &args.ef_search {
        let mut latencies = Vec::with_capacity(queries.len());
        let mut recalls = Vec::with_capacity(queries.len());
        for (query, expected) in queries.iter().zip(truth) {
            let (ms, hits) = search(ef, query.clone()).await?;
            latencies.push(ms);
            let found = hits[0]
                .iter()
                .filter(|hit| expected.contains(&hit.id))
                .count();
            recalls.push(found as f64 / expected.len().max(1) as f64);
        }
        latencies.sort_by(f64::total_cmp);
        points.push(SweepPoint {
            ef_search: ef,
            recall_at_k: recalls.iter().sum::<f64>() / recalls.len() as f64,
            min_recall_at_k: recalls.iter().copied().fold(f64::INFINITY, f64::min),
            p50_ms: percentile(&latencies, 50.0),
            p95_ms: percentile(&latencies, 95.0),
            p99_ms: percentile(&latencies, 99.0),
        });
    }
    Ok(points)
}

/// Server settings that shape the figures.
async fn server_settings(client: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "shared_buffers",
        "effective_cache_size",
        "max_wal_size",
    ] {
        let row = client.query_one(&format!("SHOW {name}"), &[]).await?;
        settings.push((name.to_owned(), row.get(0)));
    }
    let row = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .await?;
    settings.push(("pgvector".to_owned(), row.get(0)));
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_real_rows_exclude_themselves() {
        let mut unit = vec![1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -1.0, 0.0];
        for row in unit.chunks_mut(2) {
            normalize(row);
        }
        let near = nearest_real(&unit, 2, 2);
        assert_eq!(near, vec![vec![1, 2], vec![0, 2], vec![1, 0], vec![2, 1]]);
    }

    #[test]
    fn exact_search_matches_a_full_sort_and_skips_duplicates() {
        let base: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                (0..16)
                    .map(|d| ((i * 7 + d * 3) % 11) as f32 - 5.0)
                    .collect()
            })
            .collect();
        let vectors = synthesize(&base, 5000, 1, Synthetic::Spread);
        let dim = 16;
        let mut ids: Vec<Option<i64>> = (0..5000).map(|i| Some(i as i64 + 100)).collect();
        ids[4000] = None;
        let queries = vec![vectors[4000 * dim..4001 * dim].to_vec(), base[3].clone()];
        let truth = exact_top_k(&vectors, dim, &ids, &queries, 10);
        for (query, got) in queries.iter().zip(&truth) {
            let mut q = query.clone();
            normalize(&mut q);
            let mut all: Vec<(f32, i64)> = vectors
                .chunks(dim)
                .zip(&ids)
                .filter_map(|(row, id)| id.map(|id| (dot(&q, row), id)))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<i64> = all.iter().take(10).map(|h| h.1).collect();
            assert_eq!(got, &want);
        }
        assert!(
            !truth[0].contains(&4100),
            "a duplicate row is not a neighbour"
        );
    }

    #[test]
    fn synthetic_vectors_are_unit_length_deterministic_with_real_rows_first() {
        let base: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                (0..32)
                    .map(|d| ((i * 13 + d * 5) % 17) as f32 - 8.0)
                    .collect()
            })
            .collect();
        let a = synthesize(&base, 10_000, 9, Synthetic::Neighbours);
        let b = synthesize(&base, 10_000, 9, Synthetic::Neighbours);
        assert_eq!(a, b);
        assert_ne!(a, synthesize(&base, 10_000, 10, Synthetic::Neighbours));
        assert_ne!(a, synthesize(&base, 10_000, 9, Synthetic::Spread));
        for row in a.chunks(32) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        // The real rows come first, normalised.
        let mut first = base[0].clone();
        normalize(&mut first);
        assert_eq!(&a[..32], first.as_slice());
    }
}
