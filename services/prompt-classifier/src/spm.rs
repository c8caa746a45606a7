//! SentencePiece-style tokenizer built from a GGUF file's metadata
//! (`tokenizer.ggml.model = "llama"`: pieces with scores, byte fallback).
//! Gemma GGUFs ship no tokenizer.json, so the vocabulary in the model file is
//! the only source of truth.
//!
//! Encoding follows llama.cpp's SPM tokenizer: user-defined pieces (Gemma's
//! newline and space runs) are matched in the raw text first; every other
//! fragment has its spaces replaced by `▁`, is split into characters, and the
//! adjacent pair whose concatenation is a piece with the highest score is
//! merged until no pair is a piece. Characters left outside the vocabulary
//! become `<0xXX>` byte pieces.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use candle_core::quantized::gguf_file;

const SPACE: char = '\u{2581}';

// GGUF token types (llama.cpp's llama_token_type).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// What can go wrong reading a tokenizer from GGUF metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A key is missing or has the wrong type.
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(String),
}

/// A SentencePiece (BPE-by-score) tokenizer.
#[derive(Debug, Clone)]
pub struct SpmTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// User-defined pieces grouped by first char, longest first.
    user_defined: HashMap<char, Vec<(String, u32)>>,
    unknown: u32,
    /// Beginning-of-sequence id.
    pub bos: u32,
    /// End-of-sequence id.
    pub eos: u32,
    add_bos: bool,
    add_space_prefix: bool,
}

fn metadata<'a>(
    content: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a gguf_file::Value, TokenizerError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| TokenizerError::Metadata(format!("{key} is missing")))
}

impl SpmTokenizer {
    /// Reads the vocabulary from GGUF metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let bad =
            |key: &str, err: candle_core::Error| TokenizerError::Metadata(format!("{key}: {err}"));
        let model = metadata(content, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| bad("tokenizer.ggml.model", e))?;
        if model != "llama" {
            return Err(TokenizerError::Metadata(format!(
                "tokenizer.ggml.model is {model:?}; only SentencePiece (\"llama\") vocabularies are supported"
            )));
        }
        let pieces: Vec<String> = metadata(content, "tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| bad("tokenizer.ggml.tokens", e))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("tokenizer.ggml.tokens", e))?;
        let scores: Vec<f32> = metadata(content, "tokenizer.ggml.scores")?
            .to_vec()
            .map_err(|e| bad("tokenizer.ggml.scores", e))?
            .iter()
            .map(|v| v.to_f32())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("tokenizer.ggml.scores", e))?;
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .map_err(|e| bad("tokenizer.ggml.token_type", e))?
                .iter()
                .map(|v| v.to_i32())
                .collect::<Result<_, _>>()
                .map_err(|e| bad("tokenizer.ggml.token_type", e))?,
            None => vec![1; pieces.len()],
        };
        if scores.len() != pieces.len() || types.len() != pieces.len() {
            return Err(TokenizerError::Metadata(format!(
                "{} tokens but {} scores and {} types",
                pieces.len(),
                scores.len(),
                types.len()
            )));
        }
        let id = |key: &str, default: u32| -> Result<u32, TokenizerError> {
            match content.metadata.get(key) {
                Some(v) => v.to_u32().map_err(|e| bad(key, e)),
                None => Ok(default),
            }
        };
        let flag = |key: &str, default: bool| -> bool {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(default)
        };
        let bos = id("tokenizer.ggml.bos_token_id", 1)?;
        let eos = id("tokenizer.ggml.eos_token_id", 2)?;
        let unknown = id("tokenizer.ggml.unknown_token_id", 0)?;
        Ok(Self::new(
            pieces,
            scores,
            types,
            Specials {
                bos,
                eos,
                unknown,
                add_bos: flag("tokenizer.ggml.add_bos_token", true),
                add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
            },
        ))
    }

    fn new(pieces: Vec<String>, scores: Vec<f32>, types: Vec<i32>, specials: Specials) -> Self {
        let mut ids = HashMap::with_capacity(pieces.len());
        let mut byte_ids = [None; 256];
        let mut user_defined: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (i, piece) in pieces.iter().enumerate() {
            let i = i as u32;
            match types[i as usize] {
                TYPE_BYTE => {
                    if let Some(byte) = piece
                        .strip_prefix("<0x")
                        .and_then(|p| p.strip_suffix('>'))
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    {
                        byte_ids[byte as usize] = Some(i);
                    }
                }
                TYPE_USER_DEFINED => {
                    if let Some(first) = piece.chars().next() {
                        user_defined
                            .entry(first)
                            .or_default()
                            .push((piece.clone(), i));
                    }
                }
                TYPE_CONTROL => continue,
                _ => {}
            }
            ids.entry(piece.clone()).or_insert(i);
        }
        for candidates in user_defined.values_mut() {
            candidates.sort_by_key(|c| std::cmp::Reverse(c.0.len()));
        }
        Self {
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            user_defined,
            unknown: specials.unknown,
            bos: specials.bos,
            eos: specials.eos,
            add_bos: specials.add_bos,
            add_space_prefix: specials.add_space_prefix,
        }
    }

    /// Vocabulary size.
    #[cfg(test)]
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id of `piece`, if it is in the vocabulary (control pieces included).
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied().or_else(|| {
            self.pieces
                .iter()
                .position(|p| p == piece)
                .map(|i| i as u32)
        })
    }

    /// Token ids of `text`, with BOS first when the model wants it.
    pub fn encode_with_bos(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.push(self.bos);
        }
        ids.extend(self.encode(text));
        ids
    }

    /// Token ids of `text` (no BOS). Control pieces in the text are treated
    /// as plain text, so user input cannot inject `<start_of_turn>` etc.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut fragment_start = 0;
        let mut pos = 0;
        let mut first_fragment = true;
        while pos < text.len() {
            let ch = text[pos..].chars().next().expect("char boundary");
            let matched = self.user_defined.get(&ch).and_then(|candidates| {
                candidates
                    .iter()
                    .find(|(piece, _)| text[pos..].starts_with(piece.as_str()))
            });
            match matched {
                Some((piece, id)) => {
                    if fragment_start < pos {
                        self.encode_fragment(&text[fragment_start..pos], first_fragment, &mut ids);
                    }
                    first_fragment = false;
                    ids.push(*id);
                    pos += piece.len();
                    fragment_start = pos;
                }
                None => pos += ch.len_utf8(),
            }
        }
        if fragment_start < text.len() {
            self.encode_fragment(&text[fragment_start..], first_fragment, &mut ids);
        }
        ids
    }

    fn encode_fragment(&self, fragment: &str, first: bool, out: &mut Vec<u32>) {
        let mut normalized = String::with_capacity(fragment.len() + 3);
        if first && self.add_space_prefix {
            normalized.push(SPACE);
        }
        normalized.extend(fragment.chars().map(|c| if c == ' ' { SPACE } else { c }));

        // Symbols as byte ranges into `normalized`, in a doubly linked list.
        let mut symbols: Vec<Symbol> = Vec::new();
        for (start, ch) in normalized.char_indices() {
            let index = symbols.len();
            symbols.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: index.checked_sub(1),
                next: Some(index + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let mut queue = BinaryHeap::new();
        for left in 0..symbols.len().saturating_sub(1) {
            self.push_pair(&normalized, &symbols, left, left + 1, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (left, right) = (pair.left, pair.right);
            // Skip pairs made stale by an earlier merge.
            if symbols[left].len == 0
                || symbols[right].len == 0
                || symbols[left].next != Some(right)
                || symbols[left].len + symbols[right].len != pair.len
            {
                continue;
            }
            symbols[left].len += symbols[right].len;
            symbols[right].len = 0;
            symbols[left].next = symbols[right].next;
            if let Some(next) = symbols[right].next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = symbols[left].prev {
                self.push_pair(&normalized, &symbols, prev, left, &mut queue);
            }
            if let Some(next) = symbols[left].next {
                self.push_pair(&normalized, &symbols, left, next, &mut queue);
            }
        }
        let mut index = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = index {
            let symbol = &symbols[i];
            let piece = &normalized[symbol.start..symbol.start + symbol.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        out.push(self.byte_ids[byte as usize].unwrap_or(self.unknown));
                    }
                }
            }
            index = symbol.next;
        }
    }

    fn push_pair(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(&id) = self.ids.get(&text[start..start + len]) {
            if self.types[id as usize] == TYPE_USER_DEFINED {
                return;
            }
            queue.push(Pair {
                score: self.scores[id as usize],
                left,
                right,
                len,
            });
        }
    }

    /// Text of `ids`: `▁` back to spaces, byte pieces reassembled, control
    /// pieces dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                TYPE_CONTROL => {}
                TYPE_BYTE => {
                    if let Some(byte) = piece
                        .strip_prefix("<0x")
                        .and_then(|p| p.strip_suffix('>'))
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    {
                        bytes.push(byte);
                    }
                }
                _ => {
                    let mut buf = [0u8; 4];
                    for ch in piece.chars() {
                        let ch = if ch == SPACE { ' ' } else { ch };
                        bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.add_space_prefix {
            text.strip_prefix(' ').map(str::to_owned).unwrap_or(text)
        } else {
            text
        }
    }
}

struct Specials {
    bos: u32,
    eos: u32,
    unknown: u32,
    add_bos: bool,
    add_space_prefix: bool,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    // Highest score first; on ties the leftmost pair, as SentencePiece does.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmTokenizer {
        let pieces = [
            "<pad>", "<eos>", "<bos>", "<unk>", "<0x41>", "<0xC3>", "<0xA9>", "\n", "▁", "a", "b",
            "c", "ab", "▁ab", "bc", "zz",
        ];
        let scores = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -1.5, -7.0,
        ];
        let types = [3, 3, 3, 3, 6, 6, 6, 4, 1, 1, 1, 1, 1, 1, 1, 1];
        SpmTokenizer::new(
            pieces.iter().map(|s| s.to_string()).collect(),
            scores.to_vec(),
            types.to_vec(),
            Specials {
                bos: 2,
                eos: 1,
                unknown: 3,
                add_bos: true,
                add_space_prefix: false,
            },
        )
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        // "bc" (-1.5) outranks "ab" (-5): a + bc, never ab + c.
        assert_eq!(t.encode("abc"), vec![9, 14]);
        // A space becomes ▁ and merges with "ab".
        assert_eq!(t.encode(" ab"), vec![13]);
        // Newline is user-defined: matched whole, never merged.
        assert_eq!(t.encode("a\nb"), vec![9, 7, 10]);
        // Unknown chars become byte pieces; unknown bytes the unknown id.
        assert_eq!(t.encode("é"), vec![5, 6]);
        assert_eq!(t.encode("A"), vec![4]);
        assert_eq!(t.encode("z"), vec![3]);
        assert_eq!(t.encode_with_bos("a"), vec![2, 9]);
    }

    #[test]
    fn decode_inverts_encode() {
        let t = toy();
        for text in ["abc", " ab\nc", "é a", "A bc"] {
            assert_eq!(t.decode(&t.encode(text)), text);
        }
        // Control pieces are dropped.
        assert_eq!(t.decode(&[2, 9, 1]), "a");
    }
}
