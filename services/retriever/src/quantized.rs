//! One-bit codes for the embedded store's large-scale search.
//!
//! Each stored vector also keeps the signs of its components, packed 64 to a
//! word (48 bytes for dimension 384, 1/32 of the vector). A search of a large
//! store first ranks every row by Hamming distance between its code and the
//! query's — a scan of 48 MB for 1M rows instead of 1.5 GB — keeps the best
//! `candidates`, and re-scores only those with the full vectors, so the
//! similarities returned are exact and only the choice of candidates is
//! approximate (how much recall that keeps is what `lextral bench retriever
//! --store embedded` measures). Sentence embeddings are close to zero-mean
//! per component, so raw signs (no centring) carry the angle well; centring
//! on the data's mean measured no better.

use rayon::prelude::*;

/// Words per code for vectors of `dimension`.
pub fn words(dimension: usize) -> usize {
    dimension.div_ceil(64)
}

/// Appends the code of `vector` (bit i set when component i > 0) to `out`.
pub fn push_code(vector: &[f32], out: &mut Vec<u64>) {
    for chunk in vector.chunks(64) {
        let mut word = 0u64;
        for (bit, value) in chunk.iter().enumerate() {
            word |= u64::from(*value > 0.0) << bit;
        }
        out.push(word);
    }
}

/// The code of `vector`.
pub fn code(vector: &[f32]) -> Vec<u64> {
    let mut out = Vec::with_capacity(words(vector.len()));
    push_code(vector, &mut out);
    out
}

/// Rows scanned per parallel task.
const ROWS_PER_TASK: usize = 16_384;

/// A filter on row numbers; `None` accepts every row.
pub type RowFilter<'a> = Option<&'a (dyn Fn(usize) -> bool + Sync)>;

/// The rows whose codes are nearest to `query` in Hamming distance, at most
/// `candidates` of them, among rows `wanted` accepts, in row order. Ties at
/// the cut go to the lower rows, so the answer is deterministic.
///
/// The pass over the codes is what costs (48 MB at 1M rows, read at memory
/// speed), so it keeps no per-row state: a distance cut estimated from a
/// sample lets through about twice `candidates` rows, which are then ranked
/// exactly. Every row at or under the cut passes, so when at least
/// `candidates` pass the answer is the exact best; when fewer pass (a sample
/// unlike the rest), the cut widens and the pass runs again.
pub fn nearest_rows(
    codes: &[u64],
    query: &[u64],
    candidates: usize,
    wanted: RowFilter<'_>,
) -> Vec<usize> {
    let words = query.len();
    if words == 0 || candidates == 0 || codes.is_empty() {
        return Vec::new();
    }
    let widest = words * 64;
    let mut cut = estimate_cut(codes, query, candidates, wanted);
    loop {
        let survivors: Vec<Vec<(u16, usize)>> = codes
            .par_chunks(ROWS_PER_TASK * words)
            .enumerate()
            .map(|(task, block)| {
                let mut out = Vec::new();
                scan_block(
                    block,
                    query,
                    task * ROWS_PER_TASK,
                    wanted,
                    cut as u16,
                    &mut out,
                );
                out
            })
            .collect();
        let passed: usize = survivors.iter().map(Vec::len).sum();
        if passed >= candidates || cut >= widest {
            return best_of(survivors.into_iter().flatten(), widest + 1, candidates);
        }
        cut = (cut + cut / 2 + 8).min(widest);
    }
}

/// Rows in each of the contiguous runs the cut is estimated from (runs,
/// not a stride: they read at streaming speed).
const SAMPLE_RUN: usize = 1024;
const SAMPLE_RUNS: usize = 16;

/// A distance under which about `2 × candidates` rows should fall, from the
/// distances of evenly spaced runs of rows.
fn estimate_cut(codes: &[u64], query: &[u64], candidates: usize, wanted: RowFilter<'_>) -> usize {
    let words = query.len();
    let rows = codes.len() / words;
    let widest = words * 64;
    if rows <= SAMPLE_RUN * SAMPLE_RUNS {
        return widest; // small enough to rank every row
    }
    let spacing = rows / SAMPLE_RUNS;
    let mut histogram = vec![0usize; widest + 1];
    let mut sample = Vec::with_capacity(SAMPLE_RUN);
    for run in 0..SAMPLE_RUNS {
        let first = run * spacing;
        let block = &codes[first * words..(first + SAMPLE_RUN) * words];
        // The scan itself, with no cut: every wanted row of the run.
        sample.clear();
        scan_block(block, query, first, wanted, widest as u16, &mut sample);
        for &(d, _) in &sample {
            histogram[usize::from(d)] += 1;
        }
    }
    // The sample is rows / (SAMPLE_RUN × SAMPLE_RUNS) times thinner.
    let sampled = (SAMPLE_RUN * SAMPLE_RUNS) as f64;
    let target = (2.0 * candidates as f64 * sampled / rows as f64).ceil() as usize + 4;
    let mut seen = 0;
    for (d, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= target {
            return d;
        }
    }
    widest
}

/// Pushes `(distance, row)` for each wanted row of `codes` within `cut`.
/// Uses the POPCNT instruction where the CPU has it: the portable
/// `count_ones` is several times slower and this is the whole scan.
#[allow(unsafe_code)]
fn scan_block(
    codes: &[u64],
    query: &[u64],
    first_row: usize,
    wanted: RowFilter<'_>,
    cut: u16,
    out: &mut Vec<(u16, usize)>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above).
        unsafe { scan_block_popcnt(codes, query, first_row, wanted, cut, out) };
        return;
    }
    scan_block_portable(codes, query, first_row, wanted, cut, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
#[allow(unsafe_code)]
unsafe fn scan_block_popcnt(
    codes: &[u64],
    query: &[u64],
    first_row: usize,
    wanted: RowFilter<'_>,
    cut: u16,
    out: &mut Vec<(u16, usize)>,
) {
    scan_block_portable(codes, query, first_row, wanted, cut, out);
}

#[inline(always)]
fn scan_block_portable(
    codes: &[u64],
    query: &[u64],
    first_row: usize,
    wanted: RowFilter<'_>,
    cut: u16,
    out: &mut Vec<(u16, usize)>,
) {
    for (offset, code) in codes.chunks_exact(query.len()).enumerate() {
        let d = distance(code, query);
        if d <= cut && wanted.is_none_or(|wanted| wanted(first_row + offset)) {
            out.push((d, first_row + offset));
        }
    }
}

#[inline(always)]
fn distance(code: &[u64], query: &[u64]) -> u16 {
    code.iter()
        .zip(query)
        .map(|(a, b)| (a ^ b).count_ones() as u16)
        .sum()
}

/// The best `candidates` of `(distance, row)` pairs given in row order
/// (smaller distance first, then lower row): their rows, in row order.
/// Counting sort: distances are small integers.
fn best_of(
    pairs: impl Iterator<Item = (u16, usize)> + Clone,
    bins: usize,
    candidates: usize,
) -> Vec<usize> {
    let mut histogram = vec![0usize; bins];
    for (d, _) in pairs.clone() {
        histogram[usize::from(d)] += 1;
    }
    // The cut: every pair closer than `cut`, then pairs at `cut` up to the count.
    let mut below = 0usize;
    let mut cut = 0usize;
    while cut < bins && below + histogram[cut] <= candidates {
        below += histogram[cut];
        cut += 1;
    }
    let mut at_cut = candidates - below;
    let mut out = Vec::with_capacity(candidates.min(below + at_cut));
    for (d, row) in pairs {
        let distance = usize::from(d);
        if distance < cut {
            out.push(row);
        } else if distance == cut && at_cut > 0 {
            out.push(row);
            at_cut -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(codes: &[u64], query: &[u64], candidates: usize) -> Vec<usize> {
        let words = query.len();
        let mut ranked: Vec<(u32, usize)> = codes
            .chunks(words)
            .enumerate()
            .map(|(row, c)| {
                let d = c.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum();
                (d, row)
            })
            .collect();
        ranked.sort();
        let mut rows: Vec<usize> = ranked
            .into_iter()
            .take(candidates)
            .map(|(_, r)| r)
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn codes_are_component_signs() {
        let mut v = vec![-1.0f32; 70];
        v[0] = 0.5;
        v[63] = 2.0;
        v[65] = 0.1;
        v[66] = 0.0; // zero counts as not positive
        assert_eq!(code(&v), vec![1 | 1 << 63, 1 << 1]);
        assert_eq!(words(384), 6);
        assert_eq!(words(385), 7);
    }

    #[test]
    fn nearest_rows_match_a_full_sort_and_respect_filters() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state
        };
        let words = 3;
        // Several blocks, so the parallel split and the histogram merge count.
        let codes: Vec<u64> = (0..40_000 * words).map(|_| next()).collect();
        let query: Vec<u64> = (0..words).map(|_| next()).collect();
        for candidates in [1, 10, 500, 39_999, 40_000, 50_000] {
            let got = nearest_rows(&codes, &query, candidates, None);
            assert_eq!(got, reference(&codes, &query, candidates), "{candidates}");
        }
        // Only even rows: the same as the reference over even rows.
        let got = nearest_rows(&codes, &query, 300, Some(&|row| row % 2 == 0));
        assert_eq!(got.len(), 300);
        assert!(got.iter().all(|row| row % 2 == 0));
        let even: Vec<u64> = codes.chunks(words).step_by(2).flatten().copied().collect();
        let expected: Vec<usize> = reference(&even, &query, 300)
            .iter()
            .map(|r| r * 2)
            .collect();
        assert_eq!(got, expected);
        // A sample unlike the rest (every sampled row equals the query): the
        // first cut lets too few through, the pass widens and stays exact.
        let mut skewed = codes.clone();
        let spacing = 40_000 / SAMPLE_RUNS;
        for run in 0..SAMPLE_RUNS {
            for row in run * spacing..run * spacing + SAMPLE_RUN {
                skewed[row * words..(row + 1) * words].copy_from_slice(&query);
            }
        }
        for candidates in [100, 17_000] {
            let got = nearest_rows(&skewed, &query, candidates, None);
            assert_eq!(got, reference(&skewed, &query, candidates), "{candidates}");
        }
        assert!(nearest_rows(&codes, &query, 10, Some(&|_| false)).is_empty());
        assert!(nearest_rows(&[], &query, 10, None).is_empty());
        assert!(nearest_rows(&codes, &query, 0, None).is_empty());
    }
}
