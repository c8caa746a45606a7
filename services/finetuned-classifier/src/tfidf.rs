//! TF-IDF features, word and character n-grams, the LexGLUE TF-IDF recipe:
//! sublinear term frequency, smoothed IDF, each block L2-normalised, the
//! blocks concatenated. Tokenisation follows scikit-learn's defaults
//! (lower-cased, tokens of two or more word characters; `char_wb` n-grams
//! padded with one space on each side of a word) so figures compare.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How one block of n-gram features is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analyzer {
    /// Word n-grams.
    Word,
    /// Character n-grams inside word boundaries.
    CharWb,
}

/// Settings of one feature block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockConfig {
    /// Word or character n-grams.
    pub analyzer: Analyzer,
    /// Smallest n.
    pub min_n: usize,
    /// Largest n.
    pub max_n: usize,
    /// Terms seen in fewer training documents are dropped.
    pub min_df: usize,
}

/// A fitted block: its vocabulary (term index = position) and IDF weights.
#[derive(Debug, Clone)]
pub struct Block {
    /// How terms are produced.
    pub config: BlockConfig,
    /// Terms in feature order.
    pub terms: Vec<String>,
    /// Term to feature index.
    index: HashMap<String, u32>,
    /// IDF per feature.
    pub idf: Vec<f32>,
}

/// A sparse row: feature indices (ascending) and values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRow {
    /// Feature indices, ascending.
    pub indices: Vec<u32>,
    /// Values, same length.
    pub values: Vec<f32>,
}

fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().nth(1).is_some())
        .map(str::to_owned)
        .collect()
}

fn for_each_term(config: &BlockConfig, text: &str, mut emit: impl FnMut(&str)) {
    match config.analyzer {
        Analyzer::Word => {
            let tokens = words(text);
            let mut gram = String::new();
            for n in config.min_n..=config.max_n {
                for window in tokens.windows(n) {
                    gram.clear();
                    for (i, token) in window.iter().enumerate() {
                        if i > 0 {
                            gram.push(' ');
                        }
                        gram.push_str(token);
                    }
                    emit(&gram);
                }
            }
        }
        Analyzer::CharWb => {
            let lower = text.to_lowercase();
            let mut padded: Vec<char> = Vec::new();
            let mut gram = String::new();
            for word in lower.split_whitespace() {
                padded.clear();
                padded.push(' ');
                padded.extend(word.chars());
                padded.push(' ');
                for n in config.min_n..=config.max_n {
                    if padded.len() < n {
                        // A word shorter than n yields itself once.
                        gram.clear();
                        gram.extend(padded.iter());
                        emit(&gram);
                        continue;
                    }
                    for window in padded.windows(n) {
                        gram.clear();
                        gram.extend(window.iter());
                        emit(&gram);
                    }
                }
            }
        }
    }
}

impl Block {
    /// Learns the vocabulary and IDF from `texts`.
    pub fn fit(config: BlockConfig, texts: &[String]) -> Self {
        let mut df: HashMap<String, usize> = HashMap::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        for text in texts {
            seen.clear();
            for_each_term(&config, text, |term| {
                if !seen.contains_key(term) {
                    seen.insert(term.to_owned(), ());
                }
            });
            for term in seen.keys() {
                *df.entry(term.clone()).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, usize)> = df
            .into_iter()
            .filter(|(_, count)| *count >= config.min_df.max(1))
            .collect();
        // Sorted so the feature order (and so the weights) is deterministic.
        kept.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let n = texts.len() as f32;
        let idf = kept
            .iter()
            .map(|(_, count)| ((1.0 + n) / (1.0 + *count as f32)).ln() + 1.0)
            .collect();
        let terms: Vec<String> = kept.into_iter().map(|(term, _)| term).collect();
        Self::from_parts(config, terms, idf)
    }

    /// Rebuilds a fitted block from its saved vocabulary and IDF.
    pub fn from_parts(config: BlockConfig, terms: Vec<String>, idf: Vec<f32>) -> Self {
        let index = terms
            .iter()
            .enumerate()
            .map(|(i, term)| (term.clone(), i as u32))
            .collect();
        Self {
            config,
            terms,
            index,
            idf,
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The L2-normalised TF-IDF row of `text`, indices offset by `offset`.
    pub fn transform_into(&self, text: &str, offset: u32, row: &mut SparseRow) {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for_each_term(&self.config, text, |term| {
            if let Some(&i) = self.index.get(term) {
                *counts.entry(i).or_default() += 1.0;
            }
        });
        let mut entries: Vec<(u32, f32)> = counts
            .into_iter()
            .map(|(i, tf)| (i, (1.0 + tf.ln()) * self.idf[i as usize]))
            .collect();
        entries.sort_unstable_by_key(|(i, _)| *i);
        let norm = entries.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        for (i, v) in entries {
            row.indices.push(i + offset);
            row.values.push(if norm > 0.0 { v / norm } else { v });
        }
    }
}

/// Several blocks side by side.
#[derive(Debug, Clone)]
pub struct Vectorizer {
    /// The blocks, in feature order.
    pub blocks: Vec<Block>,
}

impl Vectorizer {
    /// The LexGLUE-style default: word 1–2-grams and `char_wb` 2–5-grams.
    pub fn default_configs() -> Vec<BlockConfig> {
        vec![
            BlockConfig {
                analyzer: Analyzer::Word,
                min_n: 1,
                max_n: 2,
                min_df: 1,
            },
            BlockConfig {
                analyzer: Analyzer::CharWb,
                min_n: 2,
                max_n: 5,
                min_df: 2,
            },
        ]
    }

    /// Fits every block on `texts`.
    pub fn fit(configs: &[BlockConfig], texts: &[String]) -> Self {
        Self {
            blocks: configs
                .iter()
                .map(|config| Block::fit(config.clone(), texts))
                .collect(),
        }
    }

    /// Total number of features.
    pub fn dimension(&self) -> usize {
        self.blocks.iter().map(Block::len).sum()
    }

    /// The feature row of one text.
    pub fn transform(&self, text: &str) -> SparseRow {
        let mut row = SparseRow::default();
        let mut offset = 0u32;
        for block in &self.blocks {
            block.transform_into(text, offset, &mut row);
            offset += block.len() as u32;
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(min_n: usize, max_n: usize) -> BlockConfig {
        BlockConfig {
            analyzer: Analyzer::Word,
            min_n,
            max_n,
            min_df: 1,
        }
    }

    #[test]
    fn word_ngrams_follow_scikit_learn_tokens() {
        let mut terms = Vec::new();
        for_each_term(&word(1, 2), "The Laws of New-York, a State.", |t| {
            terms.push(t.to_owned())
        });
        assert_eq!(
            terms,
            [
                "the",
                "laws",
                "of",
                "new",
                "york",
                "state",
                "the laws",
                "laws of",
                "of new",
                "new york",
                "york state"
            ]
        );
    }

    #[test]
    fn char_wb_pads_words_and_keeps_short_ones_whole() {
        let config = BlockConfig {
            analyzer: Analyzer::CharWb,
            min_n: 3,
            max_n: 3,
            min_df: 1,
        };
        let mut terms = Vec::new();
        for_each_term(&config, "Ab c", |t| terms.push(t.to_owned()));
        assert_eq!(terms, [" ab", "ab ", " c "]);
    }

    #[test]
    fn idf_and_sublinear_tf_match_the_smoothed_formula() {
        let texts = vec!["law law".to_owned(), "law notice".to_owned()];
        let block = Block::fit(word(1, 1), &texts);
        assert_eq!(block.terms, ["law", "notice"]);
        let idf_notice = (3.0f32 / 2.0).ln() + 1.0;
        assert!((block.idf[0] - 1.0).abs() < 1e-6);
        assert!((block.idf[1] - idf_notice).abs() < 1e-6);
        let mut row = SparseRow::default();
        block.transform_into("law law notice unseen", 0, &mut row);
        let (a, b) = (1.0 + 2f32.ln(), idf_notice);
        let norm = (a * a + b * b).sqrt();
        assert_eq!(row.indices, [0, 1]);
        assert!((row.values[0] - a / norm).abs() < 1e-6);
        assert!((row.values[1] - b / norm).abs() < 1e-6);
    }

    #[test]
    fn min_df_drops_rare_terms_and_blocks_are_offset() {
        let texts = vec!["alpha beta".to_owned(), "alpha gamma".to_owned()];
        let mut rare_dropped = word(1, 1);
        rare_dropped.min_df = 2;
        let vectorizer = Vectorizer::fit(&[word(1, 1), rare_dropped], &texts);
        assert_eq!(vectorizer.blocks[1].terms, ["alpha"]);
        assert_eq!(vectorizer.dimension(), 4);
        let row = vectorizer.transform("alpha");
        assert_eq!(row.indices, [0, 3]);
        assert!(row.values.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }
}
