//! The in-memory search mirror of the pgvector store (`--pg-search codes`).
//!
//! pgvector's HNSW graph loses recall on large, clustered collections (the
//! docs' performance chapter, `bench/run.sh retriever`), while a scan of
//! one-bit codes does not. Each retriever replica therefore
//! keeps, per clause, its id, split, label, one-bit code and an int8 copy of
//! its vector (PostgreSQL stays the only source of truth). A search ranks the codes ([`crate::quantized`]),
//! re-scores the best `ef_search × 30` with the int8 vectors, and asks
//! PostgreSQL for the exact similarities and texts of the best few — so the
//! answer's similarities are exact and only the candidate choice is
//! approximate.
//!
//! The mirror follows the table through its change feed (migration 4): each
//! inserted or updated row carries a version, each delete is logged with one,
//! and writers draw versions in commit order. Before every search the mirror
//! applies what changed since the version it last saw (usually nothing: one
//! indexed `max()` query, shared by searches that queue behind it), so a
//! replica answers with every write committed
//! before the search began, whichever replica or tool made it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::{pin_mut, TryStreamExt};
use pgvector::Vector;
use tokio_postgres::IsolationLevel;

use crate::error::StoreError;
use crate::quantized;
use crate::search::{best_rows, dot, swap_remove_row, SearchTuning};

/// The highest version the table and its deletion log have handed out.
const LATEST_SQL: &str = "SELECT greatest(
        coalesce((SELECT max(version) FROM lextral_clauses), 0),
        coalesce((SELECT max(version) FROM lextral_clause_deletions), 0))";
/// Rows applied per write-lock hold while following a large change.
const APPLY_CHUNK: usize = 8192;

/// Rows PostgreSQL re-ranks exactly for `k` neighbours: int8 similarities
/// differ from exact ones by a few thousandths at most, so a margin past k
/// keeps the true top k among them.
pub fn exact_pool(k: usize) -> usize {
    (4 * k).max(k + 40)
}

/// Split and label names, interned so that a row keeps two integers.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: HashMap<String, u32>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }

    /// The ids of `names` that exist; `None` when the filter is empty.
    fn filter(&self, names: &[String]) -> Option<Vec<u32>> {
        (!names.is_empty()).then(|| {
            names
                .iter()
                .filter_map(|name| self.index.get(name).copied())
                .collect()
        })
    }
}

/// Parallel arrays, so the codes stay one contiguous scan.
#[derive(Default)]
struct State {
    /// Last version applied; `None` before the first load.
    version: Option<i64>,
    ids: Vec<i64>,
    splits: Vec<u32>,
    labels: Vec<u32>,
    /// Cosine denominator of the original f32 vector.
    norms: Vec<f32>,
    /// int8 vector = round(vector / scale).
    scales: Vec<f32>,
    vectors: Vec<i8>,
    codes: Vec<u64>,
    by_id: HashMap<i64, usize>,
    names: Names,
}

impl State {
    fn reserve(&mut self, rows: usize, dim: usize) {
        self.ids.reserve(rows);
        self.splits.reserve(rows);
        self.labels.reserve(rows);
        self.norms.reserve(rows);
        self.scales.reserve(rows);
        self.vectors.reserve(rows * dim);
        self.codes.reserve(rows * quantized::words(dim));
        self.by_id.reserve(rows);
    }

    /// After a load: the row estimate can be stale, and growth doubles.
    fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.splits.shrink_to_fit();
        self.labels.shrink_to_fit();
        self.norms.shrink_to_fit();
        self.scales.shrink_to_fit();
        self.vectors.shrink_to_fit();
        self.codes.shrink_to_fit();
    }

    fn put(&mut self, id: i64, split: &str, label: &str, vector: &[f32]) {
        let dim = vector.len();
        let split = self.names.intern(split);
        let label = self.names.intern(label);
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        let largest = vector.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 { largest / 127.0 } else { 0.0 };
        let quantize = |v: f32| {
            if scale > 0.0 {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        };
        if let Some(&row) = self.by_id.get(&id) {
            let words = quantized::words(dim);
            self.splits[row] = split;
            self.labels[row] = label;
            self.norms[row] = norm;
            self.scales[row] = scale;
            for (slot, v) in self.vectors[row * dim..(row + 1) * dim]
                .iter_mut()
                .zip(vector)
            {
                *slot = quantize(*v);
            }
            self.codes[row * words..(row + 1) * words].copy_from_slice(&quantized::code(vector));
            return;
        }
        self.by_id.insert(id, self.ids.len());
        self.ids.push(id);
        self.splits.push(split);
        self.labels.push(label);
        self.norms.push(norm);
        self.scales.push(scale);
        self.vectors.extend(vector.iter().map(|v| quantize(*v)));
        quantized::push_code(vector, &mut self.codes);
    }

    fn delete(&mut self, id: i64, dim: usize) {
        let Some(row) = self.by_id.remove(&id) else {
            return;
        };
        self.ids.swap_remove(row);
        self.splits.swap_remove(row);
        self.labels.swap_remove(row);
        self.norms.swap_remove(row);
        self.scales.swap_remove(row);
        swap_remove_row(&mut self.vectors, row, dim);
        swap_remove_row(&mut self.codes, row, quantized::words(dim));
        if let Some(&moved) = self.ids.get(row) {
            self.by_id.insert(moved, row);
        }
    }

    /// Approximate cosine of `query` (norm `query_norm`) with `row`.
    fn similarity(&self, query: &[f32], query_norm: f32, row: usize) -> f32 {
        let dim = query.len();
        let dot = dot(query, &self.vectors[row * dim..(row + 1) * dim]);
        let denominator = query_norm * self.norms[row];
        if denominator > 0.0 {
            dot * self.scales[row] / denominator
        } else {
            0.0
        }
    }
}

/// One changed row read from the feed.
struct Changed {
    id: i64,
    split: String,
    label: String,
    vector: Vector,
}

/// The mirror (see the module docs).
pub struct Mirror {
    dimension: usize,
    tuning: SearchTuning,
    state: RwLock<State>,
    /// One follower at a time. Holds when the last successful check of the
    /// table began: a search that waited while a check which began after
    /// the search arrived ran has nothing left to apply and skips its own.
    following: tokio::sync::Mutex<Option<Instant>>,
}

impl Mirror {
    /// An empty mirror; [`Mirror::follow`] loads it.
    pub fn new(dimension: usize, tuning: SearchTuning) -> Arc<Self> {
        Arc::new(Self {
            dimension,
            tuning,
            state: RwLock::new(State::default()),
            following: tokio::sync::Mutex::new(None),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Clauses held.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    /// Bytes held by the mirror's arrays and id map (capacity, not length).
    pub fn memory_bytes(&self) -> usize {
        let state = self.read();
        let size = std::mem::size_of::<i64>() * 2 + std::mem::size_of::<usize>();
        state.ids.capacity() * 8
            + (state.splits.capacity() + state.labels.capacity()) * 4
            + (state.norms.capacity() + state.scales.capacity()) * 4
            + state.vectors.capacity()
            + state.codes.capacity() * 8
            // hashbrown: one control byte per bucket; buckets ≥ capacity.
            + state.by_id.capacity() * (size + 1)
    }

    /// Whether no clause is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies every change committed since the last call: the whole table on
    /// the first call or after a TRUNCATE, else the changed rows and the
    /// deleted ids.
    pub async fn follow(&self, client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
        let asked = Instant::now();
        let mut last_check = self.following.lock().await;
        if last_check.is_some_and(|began| began >= asked) {
            return Ok(());
        }
        let began = Instant::now();
        let known = self.read().version;
        // Prepared once per pooled connection: planning this query each time
        // cost more than running it.
        let latest_statement = client.prepare_cached(LATEST_SQL).await?;
        let latest: i64 = client.query_one(&latest_statement, &[]).await?.get(0);
        if known == Some(latest) {
            *last_check = Some(began);
            return Ok(());
        }
        // One snapshot for the version and the rows, so none is seen twice
        // or missed.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let latest: i64 = tx.query_one(LATEST_SQL, &[]).await?.get(0);
        let reload = match known {
            None => true,
            Some(since) => tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM lextral_clause_deletions
                                    WHERE version > $1 AND id IS NULL)",
                    &[&since],
                )
                .await?
                .get(0),
        };
        let since = if reload { -1 } else { known.unwrap_or(-1) };
        // Ids are never reused, so a deleted id is not among the live rows
        // read below: deletes and puts commute, no ordering needed.
        let deleted: Vec<i64> = if reload {
            Vec::new()
        } else {
            tx.query(
                "SELECT id FROM lextral_clause_deletions WHERE version > $1 AND id IS NOT NULL",
                &[&since],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect()
        };
        let mut fresh = State::default();
        if reload {
            let estimate: f32 = tx
                .query_one(
                    "SELECT reltuples FROM pg_class WHERE oid = 'lextral_clauses'::regclass",
                    &[],
                )
                .await?
                .get(0);
            fresh.reserve(estimate.max(0.0) as usize, self.dimension);
        }
        let rows = tx
            .query_raw(
                "SELECT id, split, label, embedding FROM lextral_clauses WHERE version > $1",
                [since],
            )
            .await?;
        pin_mut!(rows);
        let mut batch: Vec<Changed> = Vec::with_capacity(APPLY_CHUNK);
        let mut changed = 0usize;
        while let Some(row) = rows.try_next().await? {
            batch.push(Changed {
                id: row.get(0),
                split: row.get(1),
                label: row.get(2),
                vector: row.get(3),
            });
            if batch.len() == APPLY_CHUNK {
                changed += batch.len();
                if reload {
                    self.apply(&mut fresh, &mut batch);
                } else {
                    self.apply(&mut self.write(), &mut batch);
                }
            }
        }
        changed += batch.len();
        tx.commit().await?;
        let held = if reload {
            self.apply(&mut fresh, &mut batch);
            fresh.shrink_to_fit();
            fresh.version = Some(latest);
            // The previous state served searches until now.
            let mut state = self.write();
            *state = fresh;
            state.ids.len()
        } else {
            let mut state = self.write();
            self.apply(&mut state, &mut batch);
            for id in &deleted {
                state.delete(*id, self.dimension);
            }
            state.version = Some(latest);
            state.ids.len()
        };
        *last_check = Some(began);
        metrics::gauge!("lextral_retriever_mirror_clauses").set(held as f64);
        if reload || changed > APPLY_CHUNK {
            tracing::info!(
                reload,
                changed,
                deleted = deleted.len(),
                held,
                version = latest,
                seconds = began.elapsed().as_secs_f64(),
                "search mirror followed the clause table"
            );
        }
        Ok(())
    }

    fn apply(&self, state: &mut State, batch: &mut Vec<Changed>) {
        for row in batch.drain(..) {
            state.put(row.id, &row.split, &row.label, row.vector.as_slice());
        }
    }

    /// The ids PostgreSQL should re-rank for `query`: the best
    /// [`exact_pool`]`(k)` clauses by int8 similarity among the candidates
    /// the codes pick (`ef_search × 30`), or among all clauses passing the
    /// filters when the mirror holds at most `exact_max_rows`.
    pub fn candidates(
        &self,
        query: &[f32],
        k: usize,
        ef_search: Option<u32>,
        splits: &[String],
        labels: &[String],
    ) -> Vec<i64> {
        let state = self.read();
        let split_ids = state.names.filter(splits);
        let label_ids = state.names.filter(labels);
        let wanted = |row: usize| {
            split_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&state.splits[row]))
                && label_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&state.labels[row]))
        };
        let filtered = split_ids.is_some() || label_ids.is_some();
        let filter: quantized::RowFilter<'_> = if filtered { Some(&wanted) } else { None };
        let rows = state.ids.len();
        let candidates = self.tuning.candidates(ef_search, k, rows);
        let query_norm = query.iter().map(|v| v * v).sum::<f32>().sqrt();
        best_rows(
            &state.codes,
            rows,
            query,
            candidates,
            exact_pool(k),
            filter,
            |row| (state.similarity(query, query_norm, row), state.ids[row]),
        )
        .into_iter()
        .map(|(_, row)| state.ids[row])
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(seed: u64, dim: usize) -> Vec<f32> {
        // xorshift: deterministic, no dependency.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn int8_similarities_stay_close_to_exact() {
        let dim = 384;
        let mut state = State::default();
        let vectors: Vec<Vec<f32>> = (0..200).map(|i| vector(i, dim)).collect();
        for (i, v) in vectors.iter().enumerate() {
            state.put(i as i64, "train", "A", v);
        }
        let query = vector(10_000, dim);
        let norm = query.iter().map(|v| v * v).sum::<f32>().sqrt();
        for (row, v) in vectors.iter().enumerate() {
            let approx = state.similarity(&query, norm, row);
            assert!((approx - cosine(&query, v)).abs() < 0.005, "row {row}");
        }
        // A zero vector scores 0 rather than NaN.
        state.put(999, "train", "A", &vec![0.0; dim]);
        assert_eq!(state.similarity(&query, norm, 200), 0.0);
    }

    #[test]
    fn puts_and_deletes_keep_rows_aligned() {
        let dim = 64;
        let mirror = Mirror::new(
            dim,
            SearchTuning {
                ef_search: 10,
                exact_max_rows: 100,
            },
        );
        {
            let mut state = mirror.write();
            for i in 0..500 {
                let label = if i % 2 == 0 { "even" } else { "odd" };
                state.put(i, "train", label, &vector(i as u64, dim));
            }
            for i in (0..500).step_by(7) {
                state.delete(i, dim);
            }
            state.delete(12_345, dim); // unknown: no-op
                                       // Relabel one row in place with a new vector.
            state.put(1, "test", "odd", &vector(1_001, dim));
        }
        assert_eq!(mirror.len(), 500 - 72);
        // Every kept row finds itself first, by codes (500 > 100 rows).
        for i in (0..500).filter(|i| i % 7 != 0 && *i != 1) {
            let best = mirror.candidates(&vector(i as u64, dim), 1, None, &[], &[]);
            assert_eq!(best[0], i, "row {i}");
        }
        assert_eq!(
            mirror.candidates(&vector(1_001, dim), 1, None, &[], &[])[0],
            1
        );
        // Filters: labels, splits, and unknown names match nothing.
        let odd = mirror.candidates(&vector(2, dim), 10, None, &[], &["odd".into()]);
        assert_eq!(odd.len(), exact_pool(10));
        assert!(odd.iter().all(|id| id % 2 == 1));
        let test = mirror.candidates(&vector(2, dim), 10, None, &["test".into()], &[]);
        assert_eq!(test, vec![1]);
        assert!(mirror
            .candidates(&vector(2, dim), 10, None, &[], &["nope".into()])
            .is_empty());
    }
}
