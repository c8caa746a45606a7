//! The search both in-memory indexes share, the embedded store and the
//! pgvector search mirror: candidates picked by one-bit codes (or every row
//! of a small index), scored exactly in parallel, the best kept.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::quantized;

/// Rows scored per parallel task in an exact search.
const ROWS_PER_TASK: usize = 4096;
/// Candidates re-scored per parallel task in a search by codes.
const RERANK_ROWS_PER_TASK: usize = 256;

/// How an in-memory index searches.
#[derive(Debug, Clone, Copy)]
pub struct SearchTuning {
    /// Search breadth when a request names none: large stores re-score
    /// `ef_search × RERANK_PER_EF_SEARCH` candidates exactly.
    pub ef_search: u32,
    /// Stores up to this many clauses are searched exactly.
    pub exact_max_rows: usize,
}

/// Candidates re-scored per unit of `ef_search` in a large store (the
/// recall and latency this gives are in the docs' performance chapter).
pub const RERANK_PER_EF_SEARCH: usize = 30;

impl SearchTuning {
    /// How many candidates the codes pick for a request of `k` neighbours
    /// over `rows` rows; `None` when every row is scored instead (a store up
    /// to `exact_max_rows`, or candidates that would cover it).
    pub(crate) fn candidates(
        &self,
        ef_search: Option<u32>,
        k: usize,
        rows: usize,
    ) -> Option<usize> {
        let ef_search = ef_search.unwrap_or(self.ef_search) as usize;
        let candidates = (ef_search * RERANK_PER_EF_SEARCH).max(k);
        (rows > self.exact_max_rows && candidates < rows).then_some(candidates)
    }
}

/// The search both in-memory indexes share (this store and the pgvector
/// search mirror): the `keep` best `(score, row)` among the `rows` that
/// `wanted` accepts, best first. With `candidates` (see
/// [`SearchTuning::candidates`]) only the rows whose codes are nearest the
/// query's are scored; otherwise every row. `score` gives a row's similarity
/// and its id (ties go to the lower id).
pub(crate) fn best_rows(
    codes: &[u64],
    rows: usize,
    query: &[f32],
    candidates: Option<usize>,
    keep: usize,
    wanted: quantized::RowFilter<'_>,
    score: impl Fn(usize) -> (f32, i64) + Sync,
) -> Vec<(f32, usize)> {
    let offer = |top: &mut TopK, row: usize| {
        let (similarity, id) = score(row);
        top.offer(similarity, id, row);
    };
    let best = match candidates {
        Some(candidates) => {
            quantized::nearest_rows(codes, &quantized::code(query), candidates, wanted)
                .par_chunks(RERANK_ROWS_PER_TASK)
                .map(|chunk| {
                    let mut top = TopK::new(keep);
                    chunk.iter().for_each(|&row| offer(&mut top, row));
                    top
                })
                .reduce(|| TopK::new(keep), TopK::merge)
        }
        None => (0..rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .map(|task| {
                let mut top = TopK::new(keep);
                let first = task * ROWS_PER_TASK;
                for row in first..(first + ROWS_PER_TASK).min(rows) {
                    if wanted.is_none_or(|wanted| wanted(row)) {
                        offer(&mut top, row);
                    }
                }
                top
            })
            .reduce(|| TopK::new(keep), TopK::merge),
    };
    best.into_sorted()
}

impl Default for SearchTuning {
    fn default() -> Self {
        Self {
            ef_search: crate::config::DEFAULT_EF_SEARCH,
            exact_max_rows: crate::config::DEFAULT_EXACT_MAX_ROWS,
        }
    }
}

/// Removes row `row` of a row-major array of `width`-wide rows the way
/// `Vec::swap_remove` removes an element: the last row moves into its place.
pub(crate) fn swap_remove_row<T: Copy>(data: &mut Vec<T>, row: usize, width: usize) {
    if width == 0 {
        return;
    }
    let last = data.len() / width - 1;
    if row != last {
        data.copy_within(last * width..(last + 1) * width, row * width);
    }
    data.truncate(last * width);
}

/// Dot product in eight independent lanes, which the compiler vectorises
/// (a plain `sum()` adds in order, one element at a time). `b`
/// is f32 (the embedded store, the exact search of `lextral bench retriever`)
/// or the search mirror's int8.
pub fn dot<T: Copy + Into<f32>>(a: &[f32], b: &[T]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * (*y).into())
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i].into();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The k best (similarity, row) pairs; ties go to the lower id, so results
/// do not depend on how rows were split across tasks.
pub struct TopK {
    k: usize,
    // Min-heap on (similarity, -id): the root is the worst kept.
    heap: BinaryHeap<std::cmp::Reverse<Ranked>>,
}

#[derive(PartialEq)]
struct Ranked {
    similarity: f32,
    id: i64,
    row: usize,
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.similarity
            .total_cmp(&other.similarity)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl TopK {
    /// Keeps the best `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers one scored row.
    pub fn offer(&mut self, similarity: f32, id: i64, row: usize) {
        let candidate = Ranked {
            similarity,
            id,
            row,
        };
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(candidate));
        } else if self.heap.peek().is_some_and(|worst| candidate > worst.0) {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(candidate));
        }
    }

    /// The best `k` of both.
    pub fn merge(mut self, other: Self) -> Self {
        for std::cmp::Reverse(r) in other.heap {
            self.offer(r.similarity, r.id, r.row);
        }
        self
    }

    /// `(similarity, row)`, best first.
    pub fn into_sorted(self) -> Vec<(f32, usize)> {
        self.into_ranked().map(|r| (r.similarity, r.row)).collect()
    }

    /// The kept ids, best first.
    pub fn into_ids(self) -> Vec<i64> {
        self.into_ranked().map(|r| r.id).collect()
    }

    fn into_ranked(self) -> impl Iterator<Item = Ranked> {
        let mut all: Vec<Ranked> = self.heap.into_iter().map(|r| r.0).collect();
        all.sort_by(|a, b| b.cmp(a));
        all.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_by_id_whatever_the_split() {
        let mut a = TopK::new(2);
        a.offer(0.5, 7, 0);
        a.offer(0.9, 3, 1);
        let mut b = TopK::new(2);
        b.offer(0.5, 2, 2);
        b.offer(0.1, 1, 3);
        assert_eq!(a.merge(b).into_sorted(), vec![(0.9, 1), (0.5, 2)]);
        assert!((dot(&[1.0; 19], &[2.0; 19]) - 38.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_best_with_ties_to_lower_id() {
        let mut top = TopK::new(3);
        for (row, (similarity, id)) in [(0.5, 4), (0.9, 7), (0.5, 2), (0.1, 1), (0.9, 3)]
            .into_iter()
            .enumerate()
        {
            top.offer(similarity, id, row);
        }
        assert_eq!(top.into_ids(), vec![3, 7, 2]);
    }
}
