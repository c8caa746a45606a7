//! The pgvector store: pooled connections, atomic batch upserts through binary
//! COPY, and filtered searches through the HNSW index or an in-memory mirror
//! (`--pg-search codes`, see [`crate::mirror`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::{pin_mut, TryFutureExt};
use pgvector::Vector;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use crate::config::{PgSearch, RetrieverConfig};
use crate::error::StoreError;
use crate::migrations;
use crate::mirror::Mirror;
use crate::search::SearchTuning;
use crate::store::{
    content_hash, split_or_default, Hit, NewClause, SearchParams, Stats, UpsertOutcome,
};

/// The pgvector store.
pub struct PgStore {
    pool: Pool,
    config: RetrieverConfig,
    ready: AtomicBool,
    /// Present with `--pg-search codes`.
    mirror: Option<Arc<Mirror>>,
}

impl PgStore {
    /// Builds the pool; no connection is made until first use.
    pub fn connect(config: &RetrieverConfig) -> Result<Self, StoreError> {
        let tls_params = crate::pgurl::libpq_tls(config.database_url())?;
        let mut pg_config = tokio_postgres::Config::from_str(&tls_params.url)
            .map_err(|err| StoreError::InvalidArgument(format!("bad database URL: {err}")))?;
        pg_config.connect_timeout(config.connect_timeout());
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("lextral-retriever");
        }
        // A query the server cannot finish in the call's time is cancelled
        // by PostgreSQL itself instead of holding a connection after the
        // caller has gone (migrations lift it for their transaction).
        let limit = format!(
            "-c statement_timeout={}",
            config.timeout_s.max(1).saturating_mul(1000)
        );
        let options = match pg_config.get_options() {
            Some(existing) if existing.contains("statement_timeout") => existing.to_owned(),
            Some(existing) => format!("{existing} {limit}"),
            None => limit,
        };
        pg_config.options(&options);
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // sslmode=require (and libpq's verify-ca / verify-full): TLS with the
        // server's certificate and name verified (stricter than libpq's
        // require). prefer (the default) and disable connect in plaintext, as
        // a loopback or in-cluster database is reached.
        let manager = if pg_config.get_ssl_mode() == SslMode::Require {
            let ca = config
                .database_ca
                .as_deref()
                .or(tls_params.root_cert.as_deref());
            let tls = lextral_common::tls::client_config(ca)
                .map_err(|err| StoreError::InvalidArgument(format!("database TLS: {err:#}")))?;
            Manager::from_config(
                pg_config,
                tokio_postgres_rustls::MakeRustlsConnect::new(Arc::unwrap_or_clone(tls)),
                manager_config(),
            )
        } else {
            Manager::from_config(pg_config, NoTls, manager_config())
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout()))
            .create_timeout(Some(config.connect_timeout()))
            .recycle_timeout(Some(config.connect_timeout()))
            .build()
            .map_err(|err| StoreError::Database(err.to_string()))?;
        let mirror = (config.pg_search == PgSearch::Codes).then(|| {
            Mirror::new(
                config.dimension,
                SearchTuning {
                    ef_search: config.ef_search,
                    exact_max_rows: config.exact_max_rows,
                },
            )
        });
        Ok(Self {
            pool,
            config: config.clone(),
            ready: AtomicBool::new(false),
            mirror,
        })
    }

    /// The configured vector dimension.
    pub fn dimension(&self) -> usize {
        self.config.dimension
    }

    /// The search mirror, with `--pg-search codes`.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_deref()
    }

    /// Migrates once, then checks the database answers (and brings the
    /// search mirror up to date, loading it the first time, so a replica
    /// reports serving only once it can search). Called at start and by the
    /// health loop.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        if !self.ready.load(Ordering::Acquire) {
            migrations::migrate(&mut client, &self.config).await?;
            let stored = migrations::stored_dimension(&client).await?;
            if stored != self.config.dimension {
                return Err(StoreError::DimensionMismatchInIndex {
                    stored,
                    configured: self.config.dimension,
                });
            }
            self.ready.store(true, Ordering::Release);
        } else if self.mirror.is_none() {
            // Following the feed below queries the database too.
            client.simple_query("SELECT 1").await?;
        }
        if let Some(mirror) = &self.mirror {
            mirror.follow(&mut client).await?;
        }
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.ready.load(Ordering::Acquire) {
            // Start-up could not migrate; try now so the first call after the
            // database appears succeeds.
            self.ensure_ready().await?;
        }
        Ok(self.pool.get().await?)
    }

    /// Stores validated `records` atomically: one transaction.
    pub async fn upsert(&self, records: Vec<NewClause>) -> Result<UpsertOutcome, StoreError> {
        let hashes: Vec<Vec<u8>> = records
            .iter()
            .map(|r| content_hash(split_or_default(&r.split), &r.text))
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE lextral_staging (
                 split text NOT NULL, label text NOT NULL, text text NOT NULL,
                 content_hash bytea NOT NULL, embedding vector({}) NOT NULL
             ) ON COMMIT DROP",
            self.config.dimension
        ))
        .await?;
        let vector_type = tx.prepare_cached("SELECT $1::vector").await?.params()[0].clone();
        let sink = tx
            .copy_in(
                "COPY lextral_staging (split, label, text, content_hash, embedding) \
                 FROM STDIN (FORMAT binary)",
            )
            .await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[Type::TEXT, Type::TEXT, Type::TEXT, Type::BYTEA, vector_type],
        );
        pin_mut!(writer);
        for (record, hash) in records.into_iter().zip(&hashes) {
            let split = split_or_default(&record.split);
            let vector = Vector::from(record.embedding);
            let row: [&(dyn ToSql + Sync); 5] =
                [&split, &record.label, &record.text, hash, &vector];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await?;

        // Duplicates inside one batch collapse to one row (ON CONFLICT cannot
        // touch a row twice); an existing clause changes only if its label does.
        let rows = tx
            .query(
                "INSERT INTO lextral_clauses (split, label, text, content_hash, embedding)
                 SELECT DISTINCT ON (content_hash) split, label, text, content_hash, embedding
                 FROM lextral_staging ORDER BY content_hash
                 ON CONFLICT (content_hash) DO UPDATE
                     SET label = EXCLUDED.label, embedding = EXCLUDED.embedding
                     WHERE lextral_clauses.label IS DISTINCT FROM EXCLUDED.label
                 RETURNING (xmax = 0) AS inserted",
                &[],
            )
            .await?;
        let inserted = rows.iter().filter(|row| row.get::<_, bool>(0)).count() as u32;
        let updated = rows.len() as u32 - inserted;
        let ids_by_hash: HashMap<Vec<u8>, i64> = tx
            .query(
                "SELECT content_hash, id FROM lextral_clauses WHERE content_hash = ANY($1)",
                &[&hashes],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        tx.commit().await?;

        let distinct = ids_by_hash.len() as u32;
        let ids = hashes
            .iter()
            .map(|hash| {
                ids_by_hash
                    .get(hash)
                    .copied()
                    .ok_or_else(|| StoreError::Database("upserted row not found".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UpsertOutcome {
            inserted,
            updated,
            unchanged: distinct.saturating_sub(inserted + updated),
            ids,
        })
    }

    /// Finds the nearest clauses for each validated query, most similar first.
    pub async fn search(
        &self,
        queries: Vec<Vec<f32>>,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>, StoreError> {
        if let Some(mirror) = &self.mirror {
            return self.search_by_mirror(mirror, queries, params).await;
        }
        let ef_search = params
            .ef_search
            .unwrap_or(self.config.ef_search)
            .clamp(params.k, 1000);

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut settings = format!("SET LOCAL hnsw.ef_search = {ef_search};");
        if !params.splits.is_empty() || !params.labels.is_empty() {
            // Filters drop candidates after the index scan; iterative scans
            // keep going until k rows pass (pgvector >= 0.8).
            settings.push_str("SET LOCAL hnsw.iterative_scan = strict_order;");
        }
        tx.batch_execute(&settings).await?;
        // Cached per pooled connection: saves a round trip on every search.
        let statement = tx
            .prepare_cached(
                "SELECT id, split, label, text, (1 - (embedding <=> $1))::real AS similarity
                 FROM lextral_clauses
                 WHERE (cardinality($2::text[]) = 0 OR split = ANY($2))
                   AND (cardinality($3::text[]) = 0 OR label = ANY($3))
                 ORDER BY embedding <=> $1
                 LIMIT $4",
            )
            .await?;
        let limit = i64::from(params.k);
        let vectors: Vec<Vector> = queries.into_iter().map(Vector::from).collect();
        // Queries on one connection are pipelined by tokio-postgres.
        let arguments: Vec<[&(dyn ToSql + Sync); 4]> = vectors
            .iter()
            .map(|vector| -> [&(dyn ToSql + Sync); 4] {
                [vector, &params.splits, &params.labels, &limit]
            })
            .collect();
        let results = futures::future::try_join_all(
            arguments
                .iter()
                .map(|args| tx.query(&statement, args).map_err(StoreError::from)),
        )
        .await?;
        tx.commit().await?;
        Ok(hits(results, params))
    }

    /// The mirror picks candidates (after catching up with the table);
    /// PostgreSQL re-ranks them exactly and returns their rows. A clause
    /// deleted in between is simply not returned.
    async fn search_by_mirror(
        &self,
        mirror: &Arc<Mirror>,
        queries: Vec<Vec<f32>>,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>, StoreError> {
        let mut client = self.client().await?;
        mirror.follow(&mut client).await?;
        let (mirror_ref, picked_params) = (Arc::clone(mirror), params.clone());
        let (vectors, picked) = tokio::task::spawn_blocking(move || {
            let picked: Vec<Vec<i64>> = queries
                .iter()
                .map(|query| {
                    mirror_ref.candidates(
                        query,
                        picked_params.k as usize,
                        picked_params.ef_search,
                        &picked_params.splits,
                        &picked_params.labels,
                    )
                })
                .collect();
            let vectors: Vec<Vector> = queries.into_iter().map(Vector::from).collect();
            (vectors, picked)
        })
        .await
        .map_err(|err| StoreError::Database(format!("search task failed: {err}")))?;
        let statement = client
            .prepare_cached(
                "SELECT id, split, label, text, (1 - (embedding <=> $1))::real AS similarity
                 FROM lextral_clauses
                 WHERE id = ANY($2)
                   AND (cardinality($3::text[]) = 0 OR split = ANY($3))
                   AND (cardinality($4::text[]) = 0 OR label = ANY($4))
                 ORDER BY embedding <=> $1, id
                 LIMIT $5",
            )
            .await?;
        let limit = i64::from(params.k);
        let arguments: Vec<[&(dyn ToSql + Sync); 5]> = vectors
            .iter()
            .zip(&picked)
            .map(|(vector, ids)| -> [&(dyn ToSql + Sync); 5] {
                [vector, ids, &params.splits, &params.labels, &limit]
            })
            .collect();
        let results = futures::future::try_join_all(
            arguments
                .iter()
                .map(|args| client.query(&statement, args).map_err(StoreError::from)),
        )
        .await?;
        Ok(hits(results, params))
    }

    /// Drops the HNSW index so that a large load writes only the table
    /// (pgvector's advice: build the index after the initial data); searches
    /// are exact scans until [`PgStore::build_ann_index`] runs.
    pub async fn drop_ann_index(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute("DROP INDEX IF EXISTS lextral_clauses_embedding_hnsw")
            .await?;
        Ok(())
    }

    /// Builds the HNSW index (if absent) with `maintenance_work_mem_mb` of
    /// memory and `parallel_workers` extra processes. The graph must fit in
    /// that memory for a fast build: 1,953 MiB for 1M rows of dimension 384
    /// at m = 16 (measured by `lextral bench retriever`).
    pub async fn build_ann_index(
        &self,
        maintenance_work_mem_mb: u64,
        parallel_workers: u32,
    ) -> Result<(), StoreError> {
        // In a transaction so SET LOCAL ends with it, and a failed build rolls
        // back instead of leaving an aborted transaction on a pooled connection.
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL maintenance_work_mem = '{maintenance_work_mem_mb}MB';
             SET LOCAL max_parallel_maintenance_workers = {parallel_workers};
             {}",
            migrations::hnsw_index_sql(&self.config)
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes by id and/or split.
    pub async fn delete(&self, ids: &[i64], splits: &[String]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM lextral_clauses WHERE id = ANY($1) OR split = ANY($2)",
                &[&ids, &splits],
            )
            .await?;
        Ok(deleted)
    }

    /// Counts per label and split.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT label, split, count(*) FROM lextral_clauses
                 GROUP BY label, split ORDER BY label, split",
                &[],
            )
            .await?;
        let counts: Vec<(String, String, u64)> = rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get::<_, i64>(2) as u64))
            .collect();
        Ok(Stats {
            total: counts.iter().map(|(_, _, n)| n).sum(),
            counts,
        })
    }
}

/// Result rows (id, split, label, text, similarity) as hits above the floor.
fn hits(results: Vec<Vec<tokio_postgres::Row>>, params: &SearchParams) -> Vec<Vec<Hit>> {
    results
        .into_iter()
        .map(|rows| {
            rows.iter()
                .map(|row| Hit {
                    id: row.get(0),
                    split: row.get(1),
                    label: row.get(2),
                    text: row.get(3),
                    similarity: row.get(4),
                })
                .filter(|hit| {
                    params
                        .min_similarity
                        .is_none_or(|min| hit.similarity >= min)
                })
                .collect()
        })
        .collect()
}
