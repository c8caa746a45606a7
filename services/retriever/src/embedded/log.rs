//! The embedded store's log codec: the file header, put and delete frames,
//! and the replay that rebuilds the in-memory state from them.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{clause, storage, Clause, State};
use crate::error::StoreError;
use crate::quantized;

const MAGIC: &[u8; 16] = b"lextral-store\n\0\x01";
/// The magic bytes and the dimension.
pub(super) const HEADER_LEN: u64 = 16 + 4;
pub(super) const FRAME_PUT: u8 = 1;
const FRAME_DELETE: u8 = 2;

/// The file header of a log of `dimension`-wide vectors.
pub(super) fn header(dimension: usize) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&(dimension as u32).to_le_bytes());
    header
}

/// `payload` framed as `[length u32][crc32 u32][payload]`.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
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

/// Rebuilds the state from the log, frame by frame (streamed: the file is as
/// large as the store, and holding it whole beside the state doubled the
/// memory a start needed). Returns the state and the length of the intact
/// prefix (shorter than the file when the last frame was torn).
pub(super) fn replay(
    path: &Path,
    file: &File,
    len: u64,
    dimension: usize,
) -> Result<(State, u64), StoreError> {
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN || input.read_exact(&mut header).is_err() || &header[..16] != MAGIC {
        return Err(storage(path, "is not a Lextral store log (bad header)"));
    }
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
        if rest < 8 {
            break; // torn frame header
        }
        let mut frame = [0u8; 8];
        input.read_exact(&mut frame).map_err(read_error)?;
        let frame_len = u64::from(u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")));
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if rest < 8 + frame_len {
            break; // torn frame body
        }
        payload.resize(frame_len as usize, 0);
        input.read_exact(&mut payload).map_err(read_error)?;
        let last = offset + 8 + frame_len == len;
        if crc32fast::hash(&payload) != crc {
            if last {
                break; // torn while being written
            }
            return Err(storage(
                path,
                format!(
                    "is corrupt at byte {offset} (checksum mismatch before the end of the \
                     log); restore it from a backup or remove it and re-index"
                ),
            ));
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
        offset += 8 + frame_len;
    }
    Ok((state, offset))
}
