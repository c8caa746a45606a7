//! The embedded store's log codec: the file header, put and delete frames,
//! and the replay that rebuilds the in-memory state from them.
//!
//! Format 2 (written since): each frame is `[length u32][crc32 of length
//! u32][crc32 of length and payload u32][payload]`, so a damaged length is
//! caught before it is trusted. Format 1 (`[length][crc32 of payload]`) is
//! still read, and rewritten as format 2 at open.

use std::io::Read;
use std::path::Path;

use super::{clause, storage, Clause, State};
use crate::error::StoreError;
use crate::quantized;

const MAGIC_PREFIX: &[u8; 15] = b"lextral-store\n\0";
/// The format [`header`] and [`frame`] write.
pub(super) const FORMAT: u8 = 2;
/// The magic bytes (the last one the format) and the dimension.
pub(super) const HEADER_LEN: u64 = 16 + 4;
pub(super) const FRAME_PUT: u8 = 1;
const FRAME_DELETE: u8 = 2;

/// The file header of a log of `dimension`-wide vectors.
pub(super) fn header(dimension: usize) -> Vec<u8> {
    let mut header = MAGIC_PREFIX.to_vec();
    header.push(FORMAT);
    header.extend_from_slice(&(dimension as u32).to_le_bytes());
    header
}

/// `payload` framed as format 2: `[length][crc(length)][crc(length ++ payload)][payload]`.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_le_bytes();
    let mut whole = crc32fast::Hasher::new();
    whole.update(&length);
    whole.update(payload);
    let mut frame = Vec::with_capacity(payload.len() + 12);
    frame.extend_from_slice(&length);
    frame.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
    frame.extend_from_slice(&whole.finalize().to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// How a log ended: where its intact prefix stops and in which format it
/// was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Bytes of intact frames (less than the file when its end was torn).
    pub good_len: u64,
    /// The file's format (1 is rewritten at open).
    pub format: u8,
}

/// The payload of a frame deleting `ids`.
pub(super) fn encode_deletes(ids: &[i64]) -> Vec<u8> {
    let mut payload = vec![FRAME_DELETE];
    payload.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        payload.extend_from_slice(&id.to_le_bytes());
    }
    payload
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The payload of a frame storing `puts`.
pub(super) fn encode_puts<'a>(
    puts: impl ExactSizeIterator<Item = (&'a Clause, &'a [f32])>,
) -> Vec<u8> {
    let mut out = vec![FRAME_PUT];
    out.extend_from_slice(&(puts.len() as u32).to_le_bytes());
    for (clause, vector) in puts {
        out.extend_from_slice(&clause.id.to_le_bytes());
        put_str(&mut out, &clause.split);
        put_str(&mut out, &clause.label);
        put_str(&mut out, &clause.text);
        out.extend_from_slice(&clause.hash);
        for v in vector {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A cursor over a frame's payload; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

fn corrupt(path: &Path, offset: u64, what: &str) -> StoreError {
    storage(
        path,
        format!(
            "is corrupt at byte {offset} ({what} before the end of the log); nothing was \
             truncated: restore it from a backup, or move it away and re-index"
        ),
    )
}

/// Rebuilds the state from the log, frame by frame (streamed: the file is as
/// large as the store, and holding it whole beside the state doubled the
/// memory a start needed). Only a frame torn at the very end is dropped
/// (the returned `good_len` is then shorter than the file); any other
/// damage is an error naming the offset.
pub(super) fn replay(
    path: &Path,
    file: impl Read,
    len: u64,
    dimension: usize,
) -> Result<(State, Replayed), StoreError> {
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN
        || input.read_exact(&mut header).is_err()
        || &header[..15] != MAGIC_PREFIX
        || !matches!(header[15], 1 | 2)
    {
        return Err(storage(path, "is not a Lextral store log (bad header)"));
    }
    let format = header[15];
    let frame_header: u64 = if format == 1 { 8 } else { 12 };
    let stored = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    if stored != dimension {
        return Err(StoreError::DimensionMismatchInIndex {
            stored,
            configured: dimension,
        });
    }
    let mut state = State::default();
    // Room for every record the file could hold, reserved once instead of
    // growing by doubling (copies of gigabytes at 1M vectors). Untouched
    // capacity costs no resident memory.
    let most = usize::try_from(len).unwrap_or(usize::MAX) / (dimension * 4 + 52).max(1);
    state.vectors.reserve_exact(most * dimension);
    state
        .codes
        .reserve_exact(most * quantized::words(dimension));
    state.norms.reserve_exact(most);
    state.clauses.reserve_exact(most);
    state.by_hash.reserve(most);
    state.by_id.reserve(most);
    let read_error = |err: std::io::Error| storage(path, err);
    let mut offset = HEADER_LEN;
    let mut payload = Vec::new();
    let mut vector = vec![0f32; dimension];
    while offset < len {
        let rest = len - offset;
        if rest < frame_header {
            break; // torn frame header at the end
        }
        let mut frame = [0u8; 12];
        let frame = &mut frame[..frame_header as usize];
        input.read_exact(frame).map_err(read_error)?;
        let length_bytes: [u8; 4] = frame[..4].try_into().expect("4 bytes");
        let frame_len = u64::from(u32::from_le_bytes(length_bytes));
        let word = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
        if format == 2 && crc32fast::hash(&length_bytes) != word(4) {
            // A header that does not check out is only a torn write when
            // nothing but the zeros a crash can leave follows it.
            if rest_is_zeros(&mut input, frame).map_err(read_error)? {
                break;
            }
            return Err(corrupt(path, offset, "a frame header fails its checksum"));
        }
        if rest < frame_header + frame_len {
            // Format 2's length is checked, so this is a body torn at the
            // end; format 1 cannot tell that from a damaged length.
            break;
        }
        payload.resize(frame_len as usize, 0);
        input.read_exact(&mut payload).map_err(read_error)?;
        let last = offset + frame_header + frame_len == len;
        let intact = if format == 1 {
            crc32fast::hash(&payload) == word(4)
        } else {
            let mut whole = crc32fast::Hasher::new();
            whole.update(&length_bytes);
            whole.update(&payload);
            whole.finalize() == word(8)
        };
        if !intact {
            if last {
                break; // torn while being written
            }
            return Err(corrupt(path, offset, "a frame fails its checksum"));
        }
        let malformed = || storage(path, format!("has a malformed record at byte {offset}"));
        let mut reader = Reader { bytes: &payload };
        let kind = reader.take(1).ok_or_else(malformed)?[0];
        let count = reader.u32().ok_or_else(malformed)?;
        for _ in 0..count {
            match kind {
                FRAME_PUT => {
                    let id = reader.i64().ok_or_else(malformed)?;
                    let split = reader.string().ok_or_else(malformed)?;
                    let label = reader.string().ok_or_else(malformed)?;
                    let text = reader.string().ok_or_else(malformed)?;
                    let hash: [u8; 32] = reader
                        .take(32)
                        .and_then(|h| h.try_into().ok())
                        .ok_or_else(malformed)?;
                    let raw = reader.take(dimension * 4).ok_or_else(malformed)?;
                    for (v, b) in vector.iter_mut().zip(raw.chunks_exact(4)) {
                        *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                    }
                    state.put(clause(id, split, label, text, hash), &vector);
                }
                FRAME_DELETE => {
                    let id = reader.i64().ok_or_else(malformed)?;
                    state.delete(id, dimension);
                }
                _ => return Err(malformed()),
            }
        }
        offset += frame_header + frame_len;
    }
    Ok((
        state,
        Replayed {
            good_len: offset,
            format,
        },
    ))
}

/// Whether `first` and everything after it in `input` are zero bytes.
fn rest_is_zeros(input: &mut impl Read, first: &[u8]) -> std::io::Result<bool> {
    if first.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    let mut buffer = [0u8; 8192];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            return Ok(true);
        }
        if buffer[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    const DIM: usize = 4;

    /// A log of `frames` put frames (two clauses each) and, for every
    /// prefix of frames, the clauses it holds.
    /// Clauses by (id, text).
    type Held = Vec<(i64, String)>;

    fn log_of(frames: usize) -> (Vec<u8>, Vec<usize>, Vec<Held>) {
        let mut bytes = header(DIM);
        let mut ends = Vec::new();
        let mut prefixes = vec![Vec::new()];
        for f in 0..frames {
            let clauses: Vec<Clause> = (0..2)
                .map(|c| {
                    let id = (f * 2 + c) as i64 + 1;
                    clause(
                        id,
                        "train".into(),
                        format!("L{f}"),
                        format!("text {id}"),
                        [f as u8; 32],
                    )
                })
                .collect();
            let vector = [0.5f32; DIM];
            let payload = encode_puts(clauses.iter().map(|c| (c, &vector[..])));
            bytes.extend_from_slice(&frame(&payload));
            ends.push(bytes.len());
            let mut held = prefixes.last().unwrap().clone();
            held.extend(clauses.iter().map(|c| (c.id, c.text.clone())));
            prefixes.push(held);
        }
        (bytes, ends, prefixes)
    }

    fn replay_bytes(bytes: &[u8]) -> Result<(Held, Replayed), StoreError> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        use std::io::Seek;
        file.rewind().unwrap();
        let (state, replayed) = replay(Path::new("clauses.log"), &file, bytes.len() as u64, DIM)?;
        let held = state
            .clauses
            .iter()
            .map(|c| (c.id, c.text.clone()))
            .collect();
        Ok((held, replayed))
    }

    #[test]
    fn a_damaged_length_mid_log_stops_the_start_instead_of_truncating() {
        let (mut bytes, ends, _) = log_of(3);
        // The second frame's length, made to point past the end of the file.
        let second = ends[0];
        bytes[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = replay_bytes(&bytes).unwrap_err().to_string();
        assert!(
            err.contains(&format!("corrupt at byte {second}")) && err.contains("header"),
            "{err}"
        );
    }

    #[test]
    fn zeros_after_the_last_frame_are_a_torn_write() {
        let (mut bytes, ends, prefixes) = log_of(2);
        bytes.extend_from_slice(&[0u8; 100]);
        let (held, replayed) = replay_bytes(&bytes).unwrap();
        assert_eq!(held, prefixes[2]);
        assert_eq!(replayed.good_len, ends[1] as u64);
    }

    #[test]
    fn format_one_logs_are_still_read() {
        let mut bytes = MAGIC_PREFIX.to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&(DIM as u32).to_le_bytes());
        let c = clause(7, "train".into(), "L".into(), "old".into(), [1; 32]);
        let payload = encode_puts(std::iter::once((&c, &[0.5f32; DIM][..])));
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let (held, replayed) = replay_bytes(&bytes).unwrap();
        assert_eq!(held, vec![(7, "old".to_owned())]);
        assert_eq!(replayed.format, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A cut anywhere keeps exactly the frames wholly before it.
        #[test]
        fn truncation_keeps_the_whole_frames_before_the_cut(frames in 1usize..6, cut in 0usize..2000) {
            let (bytes, ends, prefixes) = log_of(frames);
            let cut = cut % (bytes.len() + 1);
            match replay_bytes(&bytes[..cut]) {
                Ok((held, replayed)) => {
                    let whole = ends.iter().filter(|&&end| end <= cut).count();
                    prop_assert_eq!(&held, &prefixes[whole]);
                    prop_assert_eq!(replayed.good_len, if whole == 0 { HEADER_LEN } else { ends[whole - 1] as u64 });
                }
                Err(_) => prop_assert!(cut < HEADER_LEN as usize, "a cut at {} refused", cut),
            }
        }

        /// A flipped bit is never accepted as data: a damaged last frame is
        /// dropped as torn or refused, any earlier damage refuses the start.
        #[test]
        fn bit_flips_are_caught(frames in 1usize..6, at in 0usize..4000, bit in 0u8..8) {
            let (mut bytes, ends, prefixes) = log_of(frames);
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let frame = ends.iter().position(|&end| at < end);
            if let Ok((held, _)) = replay_bytes(&bytes) {
                prop_assert!(at >= HEADER_LEN as usize);
                prop_assert_eq!(frame, Some(frames - 1), "damage in an earlier frame accepted");
                prop_assert_eq!(&held, &prefixes[frames - 1]);
            }
        }

        /// Arbitrary bytes after a valid header never panic.
        #[test]
        fn garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = header(DIM);
            bytes.extend_from_slice(&tail);
            if let Ok((_, replayed)) = replay_bytes(&bytes) {
                prop_assert!(replayed.good_len <= bytes.len() as u64);
            }
        }
    }
}
