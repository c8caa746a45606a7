//! `lextral migrate`: create or upgrade the pgvector schema and exit, for a
//! Kubernetes migration Job (the retriever also migrates at start-up).

use std::time::{Duration, Instant};

use clap::Args;
use lextral_retriever::{RetrieverConfig, Store, StoreKind};

/// `lextral migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    /// Keep retrying this long while the database is not reachable yet (a
    /// fresh cluster starts the database and the Job together).
    #[arg(long = "wait-s", env = "LEXTRAL_MIGRATE_WAIT_S", default_value_t = 300)]
    wait_s: u64,
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
    let store = Store::connect(&args.config)?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    loop {
        match store.ensure_ready().await {
            Ok(()) => {
                println!(
                    "migrate: schema ready (dimension {})",
                    args.config.dimension
                );
                return Ok(());
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
}
