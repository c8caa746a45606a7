//! The store behind `RetrieverService`: pgvector for clusters, or the
//! embedded single-machine store, chosen by `--store`. Both keep the same
//! semantics (content-hash idempotent upserts, relabel = update, k nearest by
//! cosine with split/label filters and a similarity floor), checked by the
//! same tests.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{RetrieverConfig, StoreKind};
use crate::embedded::EmbeddedStore;
use lextral_proto::MAX_SEARCH_K as MAX_K;

use crate::error::StoreError;
use crate::pg::PgStore;
use crate::search::SearchTuning;

/// The split used when a record names none.
pub const DEFAULT_SPLIT: &str = "train";

/// A clause to store.
#[derive(Debug, Clone)]
pub struct NewClause {
    /// Clause text.
    pub text: String,
    /// Its label.
    pub label: String,
    /// Its split.
    pub split: String,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// What an upsert did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// New clauses.
    pub inserted: u32,
    /// Existing clauses whose label changed.
    pub updated: u32,
    /// Existing clauses left as they were.
    pub unchanged: u32,
    /// Store id per record, in input order.
    pub ids: Vec<i64>,
}

/// Parameters shared by a batch of queries.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// Neighbours per query.
    pub k: u32,
    /// Similarity floor.
    pub min_similarity: Option<f32>,
    /// Split filter; empty means all.
    pub splits: Vec<String>,
    /// Label filter; empty means all.
    pub labels: Vec<String>,
    /// HNSW breadth; `None` uses the configured default.
    pub ef_search: Option<u32>,
}

/// One neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Store id.
    pub id: i64,
    /// Split.
    pub split: String,
    /// Label.
    pub label: String,
    /// Text.
    pub text: String,
    /// Cosine similarity.
    pub similarity: f32,
}

/// Stored clauses per (label, split).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// All clauses.
    pub total: u64,
    /// (label, split, count), sorted.
    pub counts: Vec<(String, String, u64)>,
}

/// The configured store.
pub enum Store {
    /// PostgreSQL with pgvector.
    Postgres(PgStore),
    /// The embedded store in a local directory.
    Embedded(EmbeddedStore),
}

/// Records one upsert may carry (the orchestrator sends batches of 64).
pub const MAX_RECORDS: usize = 10_000;
/// Query vectors one search may carry.
pub const MAX_QUERIES: usize = 1_024;
/// Ids one delete may name.
pub const MAX_IDS: usize = 100_000;
/// Split or label filters one call may give.
pub const MAX_FILTERS: usize = 1_024;
/// Bytes of one stored clause text.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Bytes of a label or split name.
pub const MAX_NAME_BYTES: usize = 256;

fn at_most(what: &str, count: usize, most: usize) -> Result<(), StoreError> {
    if count > most {
        return Err(StoreError::InvalidArgument(format!(
            "{what}: {count} is over the limit of {most}"
        )));
    }
    Ok(())
}

impl Store {
    /// Opens the store `config` selects. PostgreSQL is connected lazily; the
    /// embedded store is read from disk now.
    pub fn connect(config: &RetrieverConfig) -> Result<Self, StoreError> {
        match config.store_kind()? {
            StoreKind::Postgres => Ok(Self::Postgres(PgStore::connect(config)?)),
            StoreKind::Embedded => Ok(Self::Embedded(EmbeddedStore::open_with(
                &config.store_path(),
                config.dimension,
                SearchTuning {
                    ef_search: config.ef_search,
                    exact_max_rows: config.exact_max_rows,
                },
            )?)),
            StoreKind::Auto => unreachable!("store_kind resolves auto"),
        }
    }

    /// The configured vector dimension.
    pub fn dimension(&self) -> usize {
        match self {
            Self::Postgres(store) => store.dimension(),
            Self::Embedded(store) => store.dimension(),
        }
    }

    /// Readiness: PostgreSQL migrates once then answers a ping; the embedded
    /// store is ready once open.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(store) => store.ensure_ready().await,
            // Searches would still work, but a store that cannot write is
            // not one to route traffic to: health says so.
            Self::Embedded(store) if !store.writable() => Err(StoreError::Storage(format!(
                "{} takes no more writes after a failed write or sync; restart the retriever",
                store.path().display()
            ))),
            Self::Embedded(_) => Ok(()),
        }
    }

    /// Stores `records` atomically: a failure leaves nothing of the batch.
    pub async fn upsert(&self, records: Vec<NewClause>) -> Result<UpsertOutcome, StoreError> {
        if records.is_empty() {
            return Err(StoreError::InvalidArgument(
                "records must not be empty".into(),
            ));
        }
        at_most("records per upsert", records.len(), MAX_RECORDS)?;
        for (index, record) in records.iter().enumerate() {
            for (field, value, most) in [
                ("text", &record.text, MAX_TEXT_BYTES),
                ("label", &record.label, MAX_NAME_BYTES),
                ("split", &record.split, MAX_NAME_BYTES),
            ] {
                at_most(
                    &format!("record {index}'s {field} bytes"),
                    value.len(),
                    most,
                )?;
            }
            self.check_dimension(|| format!("record {index}"), record.embedding.len())?;
            if record.label.trim().is_empty() {
                return Err(StoreError::InvalidArgument(format!(
                    "record {index} has an empty label"
                )));
            }
            if record.embedding.iter().any(|v| !v.is_finite()) {
                return Err(StoreError::InvalidArgument(format!(
                    "record {index} has a non-finite embedding value"
                )));
            }
            // PostgreSQL text cannot hold NUL; refused for both stores alike.
            for (field, value) in [
                ("text", &record.text),
                ("label", &record.label),
                ("split", &record.split),
            ] {
                if value.contains('\0') {
                    return Err(StoreError::InvalidArgument(format!(
                        "record {index} has a NUL character in its {field}"
                    )));
                }
            }
        }
        let count = records.len();
        let outcome = match self {
            Self::Postgres(store) => store.upsert(records).await?,
            Self::Embedded(store) => store.upsert(records).await?,
        };
        metrics::counter!("lextral_retriever_upserted_total").increment(count as u64);
        Ok(outcome)
    }

    /// Finds the nearest clauses for each query, most similar first.
    pub async fn search(
        &self,
        queries: Vec<Vec<f32>>,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>, StoreError> {
        if queries.is_empty() {
            return Err(StoreError::InvalidArgument(
                "queries must not be empty".into(),
            ));
        }
        at_most("queries per search", queries.len(), MAX_QUERIES)?;
        at_most("split filters", params.splits.len(), MAX_FILTERS)?;
        at_most("label filters", params.labels.len(), MAX_FILTERS)?;
        if params.k == 0 || params.k > MAX_K {
            return Err(StoreError::InvalidArgument(format!(
                "k must be in 1..={MAX_K}, got {}",
                params.k
            )));
        }
        for (index, query) in queries.iter().enumerate() {
            self.check_dimension(|| format!("query vector {index}"), query.len())?;
            if query.iter().any(|v| !v.is_finite()) {
                return Err(StoreError::InvalidArgument(format!(
                    "query vector {index} has a non-finite value"
                )));
            }
        }
        match self {
            Self::Postgres(store) => store.search(queries, params).await,
            Self::Embedded(store) => store.search(queries, params).await,
        }
    }

    /// Deletes by id and/or split; at least one criterion is required.
    pub async fn delete(&self, ids: &[String], splits: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() && splits.is_empty() {
            return Err(StoreError::InvalidArgument(
                "give ids or splits to delete; nothing was deleted".into(),
            ));
        }
        at_most("ids per delete", ids.len(), MAX_IDS)?;
        at_most("splits per delete", splits.len(), MAX_FILTERS)?;
        let ids = ids
            .iter()
            .map(|id| {
                id.parse::<i64>().map_err(|_| {
                    StoreError::InvalidArgument(format!("id {id:?} is not a clause id"))
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        match self {
            Self::Postgres(store) => store.delete(&ids, splits).await,
            Self::Embedded(store) => store.delete(ids, splits.to_vec()).await,
        }
    }

    /// Counts per label and split.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        match self {
            Self::Postgres(store) => store.stats().await,
            Self::Embedded(store) => Ok(store.stats()),
        }
    }

    fn check_dimension(&self, what: impl FnOnce() -> String, got: usize) -> Result<(), StoreError> {
        let expected = self.dimension();
        if got != expected {
            return Err(StoreError::DimensionMismatch {
                what: what(),
                got,
                expected,
            });
        }
        Ok(())
    }
}

/// Where the embedded store lives when `--store-path` is not given.
pub fn default_store_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("lextral").join("store")
}

pub(crate) fn split_or_default(split: &str) -> &str {
    if split.trim().is_empty() {
        DEFAULT_SPLIT
    } else {
        split
    }
}

/// The idempotency key of a clause: sha256(split, 0x00, text).
pub fn content_hash(split: &str, text: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(split.as_bytes());
    hasher.update([0u8]);
    hasher.update(text.as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_separates_split_and_text() {
        assert_ne!(content_hash("ab", "c"), content_hash("a", "bc"));
        assert_eq!(content_hash("train", "x"), content_hash("train", "x"));
        assert_eq!(content_hash("train", "x").len(), 32);
    }

    #[tokio::test]
    async fn oversized_calls_are_refused_before_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Embedded(crate::embedded::EmbeddedStore::open(dir.path(), 2).unwrap());
        let record = |label: String| NewClause {
            text: "t".into(),
            label,
            split: "train".into(),
            embedding: vec![1.0, 0.0],
        };
        let err = store
            .upsert(vec![record("L".repeat(300))])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("label bytes: 300 is over the limit of 256"),
            "{err}"
        );
        let many: Vec<NewClause> = (0..MAX_RECORDS + 1).map(|_| record("L".into())).collect();
        let err = store.upsert(many).await.unwrap_err();
        assert!(err.to_string().contains("records per upsert"), "{err}");
        let queries = vec![vec![1.0, 0.0]; MAX_QUERIES + 1];
        let params = SearchParams {
            k: 1,
            ..Default::default()
        };
        let err = store.search(queries, &params).await.unwrap_err();
        assert!(err.to_string().contains("queries per search"), "{err}");
        let ids: Vec<String> = (0..MAX_IDS + 1).map(|i| i.to_string()).collect();
        let err = store.delete(&ids, &[]).await.unwrap_err();
        assert!(err.to_string().contains("ids per delete"), "{err}");
        assert_eq!(store.stats().await.unwrap().total, 0, "nothing was stored");
    }

    #[test]
    fn empty_split_means_train() {
        assert_eq!(split_or_default(" "), "train");
        assert_eq!(split_or_default("validation"), "validation");
    }
}
