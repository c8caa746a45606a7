//! Maps a model's free-text answer to one label of the label set. Steps, in
//! order, each tried only when the previous found nothing (steps 2 and 3 look
//! at the answer's first line before the whole answer, since chatty models
//! answer first and explain after, often naming other labels):
//! 1. `exact`: the trimmed answer is a label;
//! 2. `normalized`: equal after lower-casing, dropping punctuation and
//!    answer prefixes such as "Category:" or "The answer is";
//! 3. `contained`: label names appearing as whole words in the answer,
//!    the longest winning ("Confidentiality and Non-Disclosure" →
//!    "Confidentiality" only when no longer label matches);
//! 4. `edit_distance`: the label closest to the answer's first line by
//!    Levenshtein distance on normalized text, within 30% of its length;
//! 5. `embedding` (in the service, when an embedder is configured):
//!    the label most similar to the answer by sentence-embedding cosine;
//! 6. `none`: the answer is kept, the clause abstains.

/// How an answer was mapped to a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMethod {
    /// The answer is a label.
    Exact,
    /// Equal after normalisation.
    Normalized,
    /// A label name occurs in the answer.
    Contained,
    /// Closest label by edit distance.
    EditDistance,
    /// Closest label by embedding similarity.
    Embedding,
    /// No label found.
    None,
}

impl ParseMethod {
    /// The name used in responses and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Normalized => "normalized",
            Self::Contained => "contained",
            Self::EditDistance => "edit_distance",
            Self::Embedding => "embedding",
            Self::None => "none",
        }
    }
}

/// Largest edit distance accepted, as a share of the label's length.
const MAX_EDIT_RATIO: f64 = 0.3;

/// Phrases models put before the answer.
const ANSWER_PREFIXES: &[&str] = &[
    "the most appropriate option is",
    "the most appropriate category is",
    "the most appropriate label is",
    "the correct category is",
    "the correct label is",
    "the category is",
    "the label is",
    "the answer is",
    "this clause is",
    "category",
    "label",
    "answer",
    "type",
];

/// Lower case, punctuation to spaces, whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_alphanumeric() {
            out.push(ch);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn strip_answer_prefix(normalized: &str) -> &str {
    let mut text = normalized;
    loop {
        let before = text;
        for prefix in ANSWER_PREFIXES {
            if let Some(rest) = text.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with(' ') {
                    text = rest.trim_start();
                }
            }
        }
        if text == before {
            return text;
        }
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A label set prepared for parsing.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    labels: Vec<String>,
    normalized: Vec<String>,
}

impl LabelMatcher {
    /// Prepares `labels`.
    pub fn new(labels: &[String]) -> Self {
        Self {
            labels: labels.to_vec(),
            normalized: labels.iter().map(|l| normalize(l)).collect(),
        }
    }

    /// The labels.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Maps `answer` to a label by the text-only steps (1–4).
    pub fn parse(&self, answer: &str) -> (Option<&str>, ParseMethod) {
        let trimmed = answer.trim();
        if let Some(label) = self.labels.iter().find(|l| l.as_str() == trimmed) {
            return (Some(label), ParseMethod::Exact);
        }
        // The first line alone first: chatty models put the answer there and
        // an explanation (naming other labels) after it.
        let first_line = answer.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let whole = normalize(answer);
        let first = normalize(first_line);
        for text in [&first, &whole] {
            let stripped = strip_answer_prefix(text);
            if stripped.is_empty() {
                continue;
            }
            if let Some(i) = self.normalized.iter().position(|l| l == stripped) {
                return (Some(&self.labels[i]), ParseMethod::Normalized);
            }
        }
        for text in [&first, &whole] {
            let padded = format!(" {text} ");
            let contained = self
                .normalized
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_empty() && padded.contains(&format!(" {l} ")))
                .max_by_key(|(_, l)| l.len());
            if let Some((i, _)) = contained {
                return (Some(&self.labels[i]), ParseMethod::Contained);
            }
        }
        // Only the first line: models tend to add an explanation after it.
        let first = strip_answer_prefix(&first);
        let best = self
            .normalized
            .iter()
            .enumerate()
            .map(|(i, l)| (i, edit_distance(first, l), l.chars().count()))
            .min_by_key(|&(_, distance, _)| distance);
        if let Some((i, distance, len)) = best {
            if (distance as f64) <= MAX_EDIT_RATIO * len as f64 {
                return (Some(&self.labels[i]), ParseMethod::EditDistance);
            }
        }
        (None, ParseMethod::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledgar() -> LabelMatcher {
        let labels: Vec<String> = [
            "Governing Laws",
            "Notices",
            "Confidentiality",
            "Disclosures",
            "Applicable Laws",
            "Compliance With Laws",
            "Non-Disparagement",
            "Terminations",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        LabelMatcher::new(&labels)
    }

    #[test]
    fn realistic_answers() {
        let m = ledgar();
        let cases = [
            ("Governing Laws", "Governing Laws", ParseMethod::Exact),
            (
                "The most appropriate option is: Governing Laws.",
                "Governing Laws",
                ParseMethod::Normalized,
            ),
            ("governing law", "Governing Laws", ParseMethod::EditDistance),
            ("[Notices]", "Notices", ParseMethod::Normalized),
            (
                "Confidentiality and Non-Disclosure",
                "Confidentiality",
                ParseMethod::Contained,
            ),
            ("Category: notices\n", "Notices", ParseMethod::Normalized),
            (
                "This clause concerns compliance with laws and applicable laws.",
                "Compliance With Laws",
                ParseMethod::Contained,
            ),
            (
                "Termination\nBecause the clause ends the agreement.",
                "Terminations",
                ParseMethod::EditDistance,
            ),
            (
                "**Notices**\nIt is not about Compliance With Laws.",
                "Notices",
                ParseMethod::Normalized,
            ),
            (
                "I would say Notices.\nCompliance With Laws does not fit.",
                "Notices",
                ParseMethod::Contained,
            ),
        ];
        for (answer, label, method) in cases {
            assert_eq!(m.parse(answer), (Some(label), method), "answer {answer:?}");
        }
    }

    #[test]
    fn abstains_on_unrelated_or_empty_answers() {
        let m = ledgar();
        assert_eq!(m.parse("I am not sure."), (None, ParseMethod::None));
        assert_eq!(m.parse("   "), (None, ParseMethod::None));
        assert_eq!(m.parse("The answer is"), (None, ParseMethod::None));
    }

    #[test]
    fn edit_distance_counts_chars() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("é", "e"), 1);
    }
}
