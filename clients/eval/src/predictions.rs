//! Per-clause predictions: one JSON line each, appended and synced so that
//! a crash or Ctrl-C loses at most the line being written, which the
//! reader then drops.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One classified clause.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    /// Position of the clause in the split (0-based, blank lines skipped).
    pub index: usize,
    /// SHA-256 of the clause text, hex.
    pub text_sha256: String,
    /// The gold label.
    pub gold: String,
    /// The predicted label; `null` when the strategy abstained.
    pub predicted: Option<String>,
    /// The strategy's confidence in its answer, when it gives one.
    pub confidence: Option<f64>,
    /// The strategy asked for.
    pub strategy: String,
    /// Which strategy answered (differs for cascade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// End-to-end milliseconds for this clause, as the client saw them.
    pub latency_ms: f64,
    /// LLM prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// LLM generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Estimated LLM cost in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// Which `lextral eval` session made it (0 first, +1 per `--resume`).
    #[serde(default)]
    pub session: u32,
    /// Milliseconds from the session's start to this answer; the largest
    /// per session is that session's wall time.
    #[serde(default)]
    pub finished_ms: f64,
}

impl Prediction {
    /// Whether the answer is the gold label.
    pub fn correct(&self) -> bool {
        self.predicted.as_deref() == Some(self.gold.as_str())
    }
}

/// Reads a predictions file. A last line cut short by a crash (no newline)
/// is dropped and the file truncated to the last whole
/// line, so that appending resumes cleanly; any other bad line is an error
/// naming the file and line.
pub fn read_predictions(path: &Path, repair: bool) -> anyhow::Result<Vec<Prediction>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut predictions = Vec::new();
    let mut good_bytes = 0u64;
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        let whole = line.ends_with('\n');
        if line.trim().is_empty() {
            good_bytes += read as u64;
            continue;
        }
        if !whole {
            // Only the last line can lack its newline: the last write did not
            // finish. Drop it (even if it parses) and redo that clause.
            if repair {
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(good_bytes)?;
                file.sync_all()?;
            }
            break;
        }
        let prediction = serde_json::from_str::<Prediction>(line.trim_end()).map_err(|err| {
            anyhow::anyhow!("{} line {number}: not a prediction: {err}", path.display())
        })?;
        predictions.push(prediction);
        good_bytes += read as u64;
    }
    Ok(predictions)
}

/// Appends predictions to a file, one write call per line, synced to disk
/// at most every `sync_every` (and on [`Journal::sync`] / drop).
pub struct Journal {
    path: PathBuf,
    file: File,
    last_sync: Instant,
    sync_every: Duration,
    dirty: bool,
}

impl Journal {
    /// Opens `path` for appending (created if absent).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            last_sync: Instant::now(),
            sync_every: Duration::from_millis(500),
            dirty: false,
        })
    }

    /// Appends one prediction as a single write, so a crash tears at most
    /// this line.
    pub fn append(&mut self, prediction: &Prediction) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(prediction)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.dirty = true;
        if self.last_sync.elapsed() >= self.sync_every {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces the appended lines to disk.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Wall seconds per session: the latest `finished_ms` of each, summed.
pub fn wall_seconds(predictions: &[Prediction]) -> f64 {
    let mut sessions: BTreeMap<u32, f64> = BTreeMap::new();
    for p in predictions {
        let wall = sessions.entry(p.session).or_default();
        *wall = wall.max(p.finished_ms);
    }
    sessions.values().sum::<f64>() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(index: usize) -> Prediction {
        Prediction {
            index,
            text_sha256: "ab".into(),
            gold: "a".into(),
            predicted: Some("a".into()),
            confidence: Some(0.9),
            strategy: "knn".into(),
            answered_by: None,
            latency_ms: 3.0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            session: 0,
            finished_ms: 10.0 * index as f64,
        }
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        {
            let mut journal = Journal::open(&path).unwrap();
            journal.append(&prediction(0)).unwrap();
            journal.append(&prediction(1)).unwrap();
        }
        // Simulate a crash in the middle of the third write.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"index":2,"text_sha"#).unwrap();
        drop(file);
        assert_eq!(read_predictions(&path, false).unwrap().len(), 2);
        let read = read_predictions(&path, true).unwrap();
        assert_eq!(read, vec![prediction(0), prediction(1)]);
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&prediction(2)).unwrap();
        drop(journal);
        let read = read_predictions(&path, false).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2], prediction(2));
    }

    #[test]
    fn a_bad_whole_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let good = serde_json::to_string(&prediction(0)).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_predictions(&path, true).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        // Nothing was cut.
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn wall_time_sums_sessions() {
        let mut a = prediction(3);
        a.finished_ms = 2000.0;
        let mut b = prediction(4);
        b.session = 1;
        b.finished_ms = 500.0;
        assert!((wall_seconds(&[prediction(1), a, b]) - 2.5).abs() < 1e-9);
    }
}
