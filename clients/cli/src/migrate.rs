//! `lextral migrate`: create or upgrade the pgvector schema and exit, for a
//! Kubernetes migration Job (the retriever also migrates at start-up).

use std::time::{Duration, Instant};

use clap::Args;
use lextral_retriever::{PgSearch, RetrieverConfig, Store, StoreKind};

/// `lextral migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    /// Keep retrying this long while the database is not reachable yet (a
    /// fresh cluster starts the database and the Job together).
    #[arg(long = "wait-s", env = "LEXTRAL_MIGRATE_WAIT_S", default_value_t = 300)]
    wait_s: u64,
    /// Then drop the HNSW index, before a bulk load of many clauses, so the
    /// load does not grow the graph row by row; searches stay exact (and
    /// slow) until `--build-index`.
    #[arg(long, conflicts_with = "build_index")]
    drop_index: bool,
    /// Then build the HNSW index if it is missing (after a bulk load).
    #[arg(long)]
    build_index: bool,
    /// `maintenance_work_mem` for `--build-index`, MiB; the graph should
    /// fit (about 2 GB for 1M clauses of dimension 384).
    #[arg(long, default_value_t = 4096)]
    maintenance_work_mem_mb: u64,
    /// Parallel workers for `--build-index`, besides the leader.
    #[arg(long, default_value_t = 1)]
    build_workers: u32,
    #[command(flatten)]
    config: RetrieverConfig,
}

/// Runs `lextral migrate`.
pub async fn run(mut args: MigrateArgs) -> anyhow::Result<()> {
    // Only PostgreSQL has a schema; the embedded store needs no migration.
    if args.config.store == StoreKind::Embedded {
        anyhow::bail!("migrate is for the PostgreSQL store (--store postgres)");
    }
    args.config.store = StoreKind::Postgres;
    // Migrating needs no search mirror (it would load every clause).
    args.config.pg_search = PgSearch::Hnsw;
    let store = Store::connect(&args.config)?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    loop {
        match store.ensure_ready().await {
            Ok(()) => {
                println!(
                    "migrate: schema ready (dimension {})",
                    args.config.dimension
                );
                break;
            }
            // Only an unreachable database is worth waiting for; a wrong
            // dimension or a refused password will not fix itself.
            Err(err @ lextral_retriever::StoreError::Unavailable(_))
                if Instant::now() < deadline =>
            {
                eprintln!("migrate: database not ready ({err}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(err) => anyhow::bail!("migrate failed: {err}"),
        }
    }
    let Store::Postgres(pg) = &store else {
        unreachable!("the store was set to postgres above");
    };
    if args.drop_index {
        pg.drop_ann_index().await?;
        println!("migrate: HNSW index dropped; run `lextral migrate --build-index` after loading");
    }
    if args.build_index {
        let started = Instant::now();
        pg.build_ann_index(args.maintenance_work_mem_mb, args.build_workers)
            .await
            .map_err(|err| anyhow::anyhow!("building the HNSW index failed: {err}"))?;
        println!(
            "migrate: HNSW index ready ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
