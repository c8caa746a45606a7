//! The embedded store: the single-machine default, with no database server.
//!
//! Clauses live in memory. Up to `exact_max_rows` clauses are searched
//! exactly (cosine over every stored vector that passes the filters: recall
//! is 1 by construction). Larger stores first pick `ef_search × 30`
//! candidates by one-bit codes (see [`crate::quantized`] and
//! [`crate::search`]) and re-score those exactly; the recall and latency
//! this gives are measured by `lextral bench retriever --store embedded`
//! (the docs' performance chapter). Durability comes from one append-only
//! file, `clauses.log`: a header, then one frame per write
//! (`[length u32][crc32 of the length][crc32 of length and payload][payload]`,
//! little-endian; see `log`), fsynced before the
//! write is applied in memory or acknowledged. A crash mid-write leaves a torn
//! last frame, which the next start drops, so each upsert or delete is
//! all-or-nothing. A bad checksum anywhere else is corruption and stops the
//! start with a clear error instead of serving partial data. Replaced and
//! deleted records are compacted away at start-up (new file, fsync, rename).
//! An exclusive lock on the file keeps a second process out.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

mod log;

/// Replays `bytes` as a store log of `dimension` (the cargo-fuzz target's
/// entry): an error or the clauses it holds, never a panic. An input whose
/// first byte is even gets a valid header instead of that byte, so the
/// fuzzer spends most of its time on frames rather than on the magic.
#[cfg(feature = "fuzzing")]
pub fn fuzz_replay(bytes: &[u8], dimension: usize) -> Result<usize, StoreError> {
    let bytes = match bytes.split_first() {
        Some((first, rest)) if first % 2 == 0 => {
            let mut framed = log::header(dimension);
            framed.extend_from_slice(rest);
            framed
        }
        _ => bytes.to_vec(),
    };
    let (state, replayed) = log::replay(
        Path::new("fuzz.log"),
        bytes.as_slice(),
        bytes.len() as u64,
        dimension,
    )?;
    assert!(
        replayed.good_len <= bytes.len() as u64,
        "good length past the end"
    );
    assert_eq!(state.vectors.len(), state.clauses.len() * dimension);
    Ok(state.clauses.len())
}

use crate::error::StoreError;
use crate::quantized;
use crate::search::{best_rows, dot, swap_remove_row, SearchTuning};
use crate::store::{
    content_hash, split_or_default, Hit, NewClause, SearchParams, Stats, UpsertOutcome,
};

struct Clause {
    id: i64,
    split: String,
    label: String,
    text: String,
    hash: [u8; 32],
}

/// In-memory state: parallel arrays, so the vectors stay one contiguous scan.
#[derive(Default)]
struct State {
    clauses: Vec<Clause>,
    vectors: Vec<f32>,
    norms: Vec<f32>,
    /// One-bit code per row ([`quantized::words`] words each).
    codes: Vec<u64>,
    by_hash: HashMap<[u8; 32], usize>,
    by_id: HashMap<i64, usize>,
    next_id: i64,
    /// Records in the log that a later frame replaced or deleted.
    superseded: usize,
}

impl State {
    fn put(&mut self, clause: Clause, vector: &[f32]) {
        self.next_id = self.next_id.max(clause.id + 1);
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if let Some(&row) = self.by_id.get(&clause.id) {
            let dim = vector.len();
            let words = quantized::words(dim);
            self.vectors[row * dim..(row + 1) * dim].copy_from_slice(vector);
            self.codes[row * words..(row + 1) * words].copy_from_slice(&quantized::code(vector));
            self.norms[row] = norm;
            self.clauses[row] = clause;
            self.superseded += 1;
            return;
        }
        let row = self.clauses.len();
        self.by_hash.insert(clause.hash, row);
        self.by_id.insert(clause.id, row);
        self.clauses.push(clause);
        self.vectors.extend_from_slice(vector);
        quantized::push_code(vector, &mut self.codes);
        self.norms.push(norm);
    }

    fn delete(&mut self, id: i64, dim: usize) -> bool {
        let Some(row) = self.by_id.remove(&id) else {
            return false;
        };
        let last = self.clauses.len() - 1;
        self.by_hash.remove(&self.clauses[row].hash);
        self.clauses.swap_remove(row);
        self.norms.swap_remove(row);
        swap_remove_row(&mut self.vectors, row, dim);
        swap_remove_row(&mut self.codes, row, quantized::words(dim));
        if row != last {
            let moved = &self.clauses[row];
            self.by_id.insert(moved.id, row);
            self.by_hash.insert(moved.hash, row);
        }
        // The put it removes and the delete record itself.
        self.superseded += 2;
        true
    }
}

struct Inner {
    dimension: usize,
    tuning: SearchTuning,
    path: PathBuf,
    state: RwLock<State>,
    /// The log, appended to under this lock (held with the state's write
    /// lock, so log order is apply order).
    log: Mutex<LogFile>,
}

/// The open log and, once a write or sync failed, why it takes no more.
struct LogFile {
    file: File,
    broken: Option<String>,
}

/// The embedded store (see the module docs).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

fn storage(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("{}: {what}", path.display()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, replaying and compacting its
    /// log, with the default search tuning.
    pub fn open(dir: &Path, dimension: usize) -> Result<Self, StoreError> {
        Self::open_with(dir, dimension, SearchTuning::default())
    }

    /// [`EmbeddedStore::open`] with the given search tuning.
    pub fn open_with(
        dir: &Path,
        dimension: usize,
        tuning: SearchTuning,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| storage(dir, err))?;
        let path = dir.join("clauses.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|err| storage(&path, err))?;
        file.try_lock().map_err(|err| {
            storage(
                &path,
                format!(
                    "is in use by another process ({err}); stop it or use another --store-path"
                ),
            )
        })?;
        let len = file.metadata().map_err(|err| storage(&path, err))?.len();
        let (state, replayed) = if len == 0 {
            file.write_all(&log::header(dimension))
                .and_then(|()| file.sync_all())
                .map_err(|err| storage(&path, err))?;
            sync_dir(dir)?;
            let fresh = log::Replayed {
                good_len: log::HEADER_LEN,
                format: log::FORMAT,
            };
            (State::default(), fresh)
        } else {
            log::replay(&path, &file, len, dimension)?
        };
        let good_len = replayed.good_len;
        if good_len < len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = len - good_len,
                "dropping a write torn by a crash"
            );
            file.set_len(good_len)
                .and_then(|()| file.sync_all())
                .map_err(|err| storage(&path, err))?;
        }
        let store = Self {
            inner: Arc::new(Inner {
                dimension,
                tuning,
                path,
                state: RwLock::new(state),
                log: Mutex::new(LogFile { file, broken: None }),
            }),
        };
        let current = log::FORMAT;
        if replayed.format != current {
            // Appending format-2 frames to a format-1 file would mix two
            // framings; rewrite it whole first.
            tracing::info!(
                from = replayed.format,
                to = current,
                "upgrading the store log format"
            );
            store.compact(true)?;
        } else {
            store.compact(false)?;
        }
        let state = store.read();
        tracing::info!(
            path = %store.inner.path.display(),
            clauses = state.clauses.len(),
            "embedded store open"
        );
        drop(state);
        Ok(store)
    }

    /// The stored vector dimension.
    pub fn dimension(&self) -> usize {
        self.inner.dimension
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in
        // a way searches care about (writes apply after the log is synced),
        // so a poisoned lock is still usable.
        self.inner
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one frame and fsyncs it. After a failed write or sync the
    /// writer stops: the kernel may have dropped the dirty pages, so later
    /// writes could not be trusted to be durable either (fsyncgate). Reads
    /// go on; a restart replays what reached the disk.
    fn append(&self, payload: &[u8]) -> Result<(), StoreError> {
        let frame = log::frame(payload);
        let mut log = self
            .inner
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reason) = &log.broken {
            return Err(storage(
                &self.inner.path,
                format!("stopped taking writes after an earlier failure ({reason}); restart the retriever"),
            ));
        }
        let file = &mut log.file;
        let start = file
            .seek(SeekFrom::End(0))
            .map_err(|err| storage(&self.inner.path, err))?;
        if let Err(err) = file.write_all(&frame).and_then(|()| file.sync_data()) {
            // Leave no half frame behind for a replay to misread.
            let _ = file.set_len(start).and_then(|()| file.sync_data());
            tracing::error!(path = %self.inner.path.display(), error = %err, "store log write failed; no more writes until restart");
            log.broken = Some(err.to_string());
            return Err(storage(&self.inner.path, err));
        }
        Ok(())
    }

    /// Whether the log still takes writes (false after a failed fsync).
    pub fn writable(&self) -> bool {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .broken
            .is_none()
    }

    /// Stores `records` atomically (one log frame).
    pub async fn upsert(&self, records: Vec<NewClause>) -> Result<UpsertOutcome, StoreError> {
        let store = self.clone();
        run_blocking(move || store.upsert_blocking(records)).await
    }

    fn upsert_blocking(&self, records: Vec<NewClause>) -> Result<UpsertOutcome, StoreError> {
        let mut state = self.write();
        let mut outcome = UpsertOutcome::default();
        // Records of this batch by hash: duplicates collapse to the first.
        let mut seen: HashMap<[u8; 32], i64> = HashMap::new();
        let mut puts: Vec<(Clause, Vec<f32>)> = Vec::new();
        let mut next_id = state.next_id.max(1);
        for record in records {
            let split = split_or_default(&record.split).to_owned();
            let hash: [u8; 32] = content_hash(&split, &record.text)
                .try_into()
                .expect("sha256 is 32 bytes");
            if let Some(&id) = seen.get(&hash) {
                outcome.ids.push(id);
                continue;
            }
            let id = match state.by_hash.get(&hash) {
                Some(&row) if state.clauses[row].label == record.label => {
                    outcome.unchanged += 1;
                    state.clauses[row].id
                }
                Some(&row) => {
                    outcome.updated += 1;
                    let id = state.clauses[row].id;
                    puts.push((
                        clause(id, split, record.label, record.text, hash),
                        record.embedding,
                    ));
                    id
                }
                None => {
                    outcome.inserted += 1;
                    let id = next_id;
                    next_id += 1;
                    puts.push((
                        clause(id, split, record.label, record.text, hash),
                        record.embedding,
                    ));
                    id
                }
            };
            seen.insert(hash, id);
            outcome.ids.push(id);
        }
        if !puts.is_empty() {
            self.append(&log::encode_puts(
                puts.iter().map(|(c, v)| (c, v.as_slice())),
            ))?;
            for (clause, vector) in puts {
                state.put(clause, &vector);
            }
        }
        Ok(outcome)
    }

    /// Finds the nearest clauses for each query, most similar first.
    pub async fn search(
        &self,
        queries: Vec<Vec<f32>>,
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>, StoreError> {
        let store = self.clone();
        let params = params.clone();
        run_blocking(move || Ok(store.search_blocking(&queries, &params))).await
    }

    fn search_blocking(&self, queries: &[Vec<f32>], params: &SearchParams) -> Vec<Vec<Hit>> {
        let state = self.read();
        let dim = self.inner.dimension;
        let k = params.k as usize;
        let filtered = !params.splits.is_empty() || !params.labels.is_empty();
        let wanted = |row: usize| {
            let clause = &state.clauses[row];
            (params.splits.is_empty() || params.splits.contains(&clause.split))
                && (params.labels.is_empty() || params.labels.contains(&clause.label))
        };
        let rows = state.clauses.len();
        let candidates = self.inner.tuning.candidates(params.ef_search, k, rows);
        let filter: quantized::RowFilter<'_> = if filtered { Some(&wanted) } else { None };
        queries
            .iter()
            .map(|query| {
                let query_norm = query.iter().map(|v| v * v).sum::<f32>().sqrt();
                let similarity = |row: usize| {
                    let denominator = query_norm * state.norms[row];
                    if denominator > 0.0 {
                        dot(query, &state.vectors[row * dim..(row + 1) * dim]) / denominator
                    } else {
                        0.0
                    }
                };
                let best = best_rows(&state.codes, rows, query, candidates, k, filter, |row| {
                    (similarity(row), state.clauses[row].id)
                });
                best.into_iter()
                    .filter(|&(similarity, _)| {
                        params.min_similarity.is_none_or(|min| similarity >= min)
                    })
                    .map(|(similarity, row)| {
                        let clause = &state.clauses[row];
                        Hit {
                            id: clause.id,
                            split: clause.split.clone(),
                            label: clause.label.clone(),
                            text: clause.text.clone(),
                            similarity,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Deletes by id and/or split.
    pub async fn delete(&self, ids: Vec<i64>, splits: Vec<String>) -> Result<u64, StoreError> {
        let store = self.clone();
        run_blocking(move || {
            let dim = store.inner.dimension;
            let ids: HashSet<i64> = ids.into_iter().collect();
            let splits: HashSet<String> = splits.into_iter().collect();
            let mut state = store.write();
            let doomed: Vec<i64> = state
                .clauses
                .iter()
                .filter(|c| ids.contains(&c.id) || splits.contains(&c.split))
                .map(|c| c.id)
                .collect();
            if doomed.is_empty() {
                return Ok(0);
            }
            store.append(&log::encode_deletes(&doomed))?;
            for id in &doomed {
                state.delete(*id, dim);
            }
            Ok(doomed.len() as u64)
        })
        .await
    }

    /// Counts per label and split.
    pub fn stats(&self) -> Stats {
        let state = self.read();
        let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
        for clause in &state.clauses {
            *counts.entry((&clause.label, &clause.split)).or_default() += 1;
        }
        let mut counts: Vec<(String, String, u64)> = counts
            .into_iter()
            .map(|((label, split), n)| (label.to_owned(), split.to_owned(), n))
            .collect();
        counts.sort();
        Stats {
            total: state.clauses.len() as u64,
            counts,
        }
    }

    /// Rewrites the log with live records only, when most of it is dead
    /// weight or `always`: written to a new file, synced, then renamed over
    /// the old one.
    fn compact(&self, always: bool) -> Result<(), StoreError> {
        let mut state = self.write();
        if !always && (state.superseded < 1000 || state.superseded < state.clauses.len()) {
            return Ok(());
        }
        let dim = self.inner.dimension;
        let path = &self.inner.path;
        let fresh = path.with_extension("log.compacting");
        let result = (|| -> std::io::Result<File> {
            let mut file = File::create(&fresh)?;
            file.write_all(&log::header(dim))?;
            let blocks = state
                .clauses
                .chunks(10_000)
                .zip(state.vectors.chunks(10_000 * dim));
            for (clauses, vectors) in blocks {
                let payload = log::encode_puts(clauses.iter().zip(vectors.chunks_exact(dim)));
                file.write_all(&log::frame(&payload))?;
            }
            file.sync_all()?;
            // The lock moves to the new file before it replaces the old one.
            file.try_lock().map_err(std::io::Error::other)?;
            std::fs::rename(&fresh, path)?;
            Ok(file)
        })();
        let file = match result {
            Ok(file) => file,
            Err(err) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(storage(path, format!("compaction failed: {err}")));
            }
        };
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        tracing::info!(dropped = state.superseded, "embedded store compacted");
        state.superseded = 0;
        *self
            .inner
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = LogFile { file, broken: None };
        Ok(())
    }
}

fn clause(id: i64, split: String, label: String, text: String, hash: [u8; 32]) -> Clause {
    Clause {
        id,
        split,
        label,
        text,
        hash,
    }
}

/// Runs store work off the async runtime (searches scan memory; writes fsync).
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Storage(format!("task failed: {err}")))?
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // A new or renamed file is durable once its directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| storage(dir, err))
}

#[cfg(test)]
mod tests {
    use super::log::{FRAME_PUT, HEADER_LEN};
    use super::*;

    /// A pseudo-random unit vector per seed (distinct for distinct seeds).
    fn unit(seed: usize, dim: usize) -> Vec<f32> {
        let mut state = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1;
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn record(seed: usize, label: &str) -> NewClause {
        NewClause {
            text: format!("clause {seed}"),
            label: label.into(),
            split: "train".into(),
            embedding: unit(seed, 8),
        }
    }

    fn params(k: u32) -> SearchParams {
        SearchParams {
            k,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn survives_restart_and_drops_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        let first = store
            .upsert((0..5).map(|i| record(i, "A")).collect())
            .await
            .unwrap();
        assert_eq!(first.inserted, 5);
        assert_eq!(store.delete(vec![first.ids[1]], vec![]).await.unwrap(), 1);
        let relabel = store.upsert(vec![record(0, "B")]).await.unwrap();
        assert_eq!((relabel.updated, relabel.ids[0]), (1, first.ids[0]));
        drop(store);

        // A crash in the middle of the next write: half a frame at the end.
        let log = dir.path().join("clauses.log");
        let intact = std::fs::metadata(&log).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, FRAME_PUT, 9])
            .unwrap();
        drop(file);

        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), intact);
        let stats = store.stats();
        assert_eq!(stats.total, 4);
        assert_eq!(
            stats.counts,
            vec![
                ("A".into(), "train".into(), 3),
                ("B".into(), "train".into(), 1)
            ]
        );
        let hits = store.search(vec![unit(0, 8)], &params(2)).await.unwrap();
        assert_eq!(
            (hits[0][0].id, hits[0][0].label.as_str()),
            (first.ids[0], "B")
        );
        // New ids continue after the highest ever given.
        let more = store.upsert(vec![record(9, "A")]).await.unwrap();
        assert_eq!(more.ids[0], first.ids[4] + 1);
    }

    #[tokio::test]
    async fn a_format_one_log_is_rewritten_as_format_two_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        store
            .upsert((0..3).map(|i| record(i, "A")).collect())
            .await
            .unwrap();
        drop(store);
        // Re-frame the log as format 1 wrote it: [length][crc32 of payload].
        let log = dir.path().join("clauses.log");
        let bytes = std::fs::read(&log).unwrap();
        let mut old = bytes[..HEADER_LEN as usize].to_vec();
        old[15] = 1;
        let mut at = HEADER_LEN as usize;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let payload = &bytes[at + 12..at + 12 + len];
            old.extend_from_slice(&(len as u32).to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            old.extend_from_slice(payload);
            at += 12 + len;
        }
        std::fs::write(&log, &old).unwrap();

        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        assert_eq!(store.stats().total, 3);
        assert_eq!(std::fs::read(&log).unwrap()[15], log::FORMAT);
        store.upsert(vec![record(5, "B")]).await.unwrap();
        drop(store);
        assert_eq!(EmbeddedStore::open(dir.path(), 8).unwrap().stats().total, 4);
    }

    #[tokio::test]
    async fn after_a_failed_sync_the_store_takes_no_more_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        store.upsert(vec![record(1, "A")]).await.unwrap();
        store.inner.log.lock().unwrap().broken = Some("EIO".into());
        assert!(!store.writable());
        let err = store.upsert(vec![record(2, "A")]).await.unwrap_err();
        assert!(err.to_string().contains("restart the retriever"), "{err}");
        // Reads go on.
        assert_eq!(store.stats().total, 1);
    }

    #[tokio::test]
    async fn corruption_before_the_end_is_an_error_not_data_loss() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        store.upsert(vec![record(1, "A")]).await.unwrap();
        store.upsert(vec![record(2, "A")]).await.unwrap();
        drop(store);
        let log = dir.path().join("clauses.log");
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[HEADER_LEN as usize + 20] ^= 0xff; // inside the first frame
        std::fs::write(&log, &bytes).unwrap();
        let err = EmbeddedStore::open(dir.path(), 8).err().unwrap();
        assert!(err.to_string().contains("corrupt at byte 20"), "{err}");
        // The file is left as it was for the user to inspect.
        assert_eq!(std::fs::read(&log).unwrap(), bytes);
    }

    #[tokio::test]
    async fn wrong_dimension_foreign_file_and_second_process_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        let err = EmbeddedStore::open(dir.path(), 8).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(store);
        let err = EmbeddedStore::open(dir.path(), 16).err().unwrap();
        assert!(matches!(
            err,
            StoreError::DimensionMismatchInIndex {
                stored: 8,
                configured: 16
            }
        ));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("clauses.log"), b"hello, not a store").unwrap();
        let err = EmbeddedStore::open(other.path(), 8).err().unwrap();
        assert!(err.to_string().contains("bad header"), "{err}");
    }

    #[tokio::test]
    async fn compaction_keeps_every_live_clause() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        store
            .upsert((0..600).map(|i| record(i, "A")).collect())
            .await
            .unwrap();
        // 600 relabels + 300 deletes: 1,200 superseded records > 300 live.
        store
            .upsert((0..600).map(|i| record(i, "B")).collect())
            .await
            .unwrap();
        let ids: Vec<i64> = (1..=300).collect();
        assert_eq!(store.delete(ids, vec![]).await.unwrap(), 300);
        let before = std::fs::metadata(store.path()).unwrap().len();
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 8).unwrap();
        let after = std::fs::metadata(store.path()).unwrap().len();
        assert!(after < before / 3, "{before} -> {after} bytes");
        assert_eq!(
            store.stats().counts,
            vec![("B".into(), "train".into(), 300)]
        );
        let hits = store.search(vec![unit(450, 8)], &params(1)).await.unwrap();
        assert_eq!(hits[0][0].text, "clause 450");
        drop(store);
        // The compacted file opens again.
        assert_eq!(
            EmbeddedStore::open(dir.path(), 8).unwrap().stats().total,
            300
        );
    }

    /// A large store searched by codes: the same answers as an exact search
    /// for most queries, every row still found by its own vector after
    /// deletes moved rows (codes stay aligned), filters applied.
    #[tokio::test]
    async fn search_by_codes_keeps_recall_and_alignment() {
        let dim = 128;
        let dir = tempfile::tempdir().unwrap();
        let tuning = SearchTuning {
            ef_search: 10,
            exact_max_rows: 1_000,
        };
        let store = EmbeddedStore::open_with(dir.path(), dim, tuning).unwrap();
        // 200 centres with 20 noisy copies each; queries are near centres too.
        let noisy = |centre: usize, seed: usize| -> Vec<f32> {
            let (c, n) = (unit(centre % 200, dim), unit(seed, dim));
            c.iter().zip(&n).map(|(c, n)| c + 0.6 * n).collect()
        };
        let records: Vec<NewClause> = (0..4_000)
            .map(|i| NewClause {
                text: format!("clause {i}"),
                label: if i % 2 == 0 { "even" } else { "odd" }.into(),
                split: "train".into(),
                embedding: noisy(i, 10_000 + i),
            })
            .collect();
        let ids = store.upsert(records.clone()).await.unwrap().ids;
        // Deletes move the last rows into the gaps.
        let gone: Vec<i64> = ids.iter().step_by(7).copied().collect();
        store.delete(gone.clone(), vec![]).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open_with(dir.path(), dim, tuning).unwrap();
        let exact_dir = tempfile::tempdir().unwrap();
        let exact = EmbeddedStore::open(exact_dir.path(), dim).unwrap();
        let kept: Vec<NewClause> = records
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !gone.contains(id))
            .map(|(r, _)| r.clone())
            .collect();
        exact.upsert(kept.clone()).await.unwrap();

        let queries: Vec<Vec<f32>> = (0..100).map(|i| noisy(i * 3, 30_000 + i)).collect();
        let got = store.search(queries.clone(), &params(10)).await.unwrap();
        let want = exact.search(queries, &params(10)).await.unwrap();
        let mut found = 0;
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got.len(), 10);
            // Similarities are exact: each hit's is its true cosine.
            for hit in got {
                let truth = want.iter().find(|w| w.text == hit.text);
                if let Some(truth) = truth {
                    assert!((truth.similarity - hit.similarity).abs() < 1e-6);
                    found += 1;
                }
            }
        }
        let recall = f64::from(found) / 1_000.0;
        assert!(recall >= 0.9, "recall {recall}");
        // Proof the codes decide: with 30 candidates, queries far from every
        // cluster lose some true neighbours that the exact search finds.
        let far: Vec<Vec<f32>> = (0..50).map(|i| unit(50_000 + i, dim)).collect();
        let narrow = SearchParams {
            k: 10,
            ef_search: Some(1),
            ..Default::default()
        };
        let got = store.search(far.clone(), &narrow).await.unwrap();
        let want_far = exact.search(far, &params(10)).await.unwrap();
        let same = got
            .iter()
            .zip(&want_far)
            .flat_map(|(g, w)| g.iter().filter(|h| w.iter().any(|w| w.text == h.text)))
            .count();
        assert!(same < 500, "{same} of 500");

        // Each kept row is its own nearest neighbour.
        let own: Vec<Vec<f32>> = kept
            .iter()
            .step_by(37)
            .map(|r| r.embedding.clone())
            .collect();
        let texts: Vec<&str> = kept.iter().step_by(37).map(|r| r.text.as_str()).collect();
        let hits = store.search(own, &params(1)).await.unwrap();
        for (hits, text) in hits.iter().zip(texts) {
            assert_eq!(hits[0].text, text);
            assert!(hits[0].similarity > 0.9999);
        }

        // A label filter: only that label, still k answers.
        let filtered = SearchParams {
            k: 5,
            labels: vec!["odd".into()],
            ..Default::default()
        };
        let hits = store.search(vec![unit(3, dim)], &filtered).await.unwrap();
        assert_eq!(hits[0].len(), 5);
        assert!(hits[0].iter().all(|h| h.label == "odd"));
        // A wider ef_search re-scores more candidates: recall cannot drop.
        let wide = SearchParams {
            k: 10,
            ef_search: Some(1_000),
            ..Default::default()
        };
        let queries: Vec<Vec<f32>> = (0..100).map(|i| noisy(i * 3, 30_000 + i)).collect();
        let texts = |hits: Vec<Vec<Hit>>| -> Vec<Vec<String>> {
            hits.into_iter()
                .map(|h| h.into_iter().map(|h| h.text).collect())
                .collect()
        };
        let all = store.search(queries, &wide).await.unwrap();
        // 30,000 candidates cover the whole store: the exact answer.
        assert_eq!(texts(all), texts(want));
    }
}
