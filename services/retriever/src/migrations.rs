//! Versioned schema migrations, applied at start-up under an advisory lock so
//! several retriever replicas can start at once.

use deadpool_postgres::Client;

use crate::config::RetrieverConfig;
use crate::error::StoreError;

/// (version, name, SQL template).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "clauses", include_str!("../migrations/0001_clauses.sql")),
    (2, "hnsw", include_str!("../migrations/0002_hnsw.sql")),
    (
        3,
        "plain_vectors",
        include_str!("../migrations/0003_plain_vectors.sql"),
    ),
    (
        4,
        "change_feed",
        include_str!("../migrations/0004_change_feed.sql"),
    ),
];

/// Arbitrary key shared by every retriever for `pg_advisory_xact_lock`.
const LOCK_KEY: i64 = 0x006c_6578_7472_616c;

fn render(template: &str, config: &RetrieverConfig) -> String {
    template
        .replace("{dimension}", &config.dimension.to_string())
        .replace("{hnsw_m}", &config.hnsw_m.to_string())
        .replace(
            "{hnsw_ef_construction}",
            &config.hnsw_ef_construction.to_string(),
        )
}

/// The statement that creates the HNSW index (migration 2), for rebuilding it
/// after a bulk load.
pub(crate) fn hnsw_index_sql(config: &RetrieverConfig) -> String {
    render(MIGRATIONS[1].2, config)
}

/// Applies the migrations not yet recorded, in one transaction.
pub async fn migrate(client: &mut Client, config: &RetrieverConfig) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Building an index over a large table outlasts the per-query limit.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS lextral_schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM lextral_schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for &(version, name, template) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        tx.batch_execute(&render(template, config)).await.map_err(
            |err| match StoreError::from(err) {
                StoreError::Unavailable(reason) => StoreError::Unavailable(reason),
                other => StoreError::Migration {
                    version,
                    reason: other.to_string(),
                },
            },
        )?;
        tx.execute(
            "INSERT INTO lextral_schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tracing::info!(version, name, "migration applied");
    }
    tx.commit().await?;
    Ok(())
}

/// The vector dimension of the stored embedding column.
pub async fn stored_dimension(client: &Client) -> Result<usize, StoreError> {
    let row = client
        .query_one(
            "SELECT atttypmod FROM pg_attribute
             WHERE attrelid = 'lextral_clauses'::regclass AND attname = 'embedding'",
            &[],
        )
        .await?;
    let typmod: i32 = row.get(0);
    Ok(typmod.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled() {
        let config = RetrieverConfig::with_database_url("postgres://x");
        for (_, _, template) in MIGRATIONS {
            let sql = render(template, &config);
            assert!(!sql.contains('{'), "unfilled placeholder in {sql}");
        }
        assert!(render(MIGRATIONS[0].2, &config).contains("vector(384)"));
        assert!(render(MIGRATIONS[1].2, &config).contains("m = 16"));
    }
}
