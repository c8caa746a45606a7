//! The run folder of `lextral eval --out`: `run.json` (what the run is and
//! how far it got) and the per-strategy prediction journals, so a run can be
//! interrupted and resumed without mixing two experiments.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use lextral_common::fs::write_json_atomically;
use serde::{Deserialize, Serialize};

use crate::files;
use crate::predictions::{read_predictions, Prediction};

/// The data a run classifies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// The data directory.
    pub dir: String,
    /// The split.
    pub split: String,
    /// The split's file.
    pub split_file: String,
    /// SHA-256 of the split's file.
    pub split_sha256: String,
    /// SHA-256 of labels.txt, when there is one.
    #[serde(default)]
    pub labels_sha256: Option<String>,
    /// Clauses classified.
    pub clauses: usize,
    /// `--limit`, when given.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The load the cost estimate assumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLoad {
    /// Requests per day.
    pub requests_per_day: f64,
    /// Price of one serving machine per hour.
    pub infra_usd_per_hour: f64,
}

/// Where a run or one of its sessions stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Classifying.
    #[default]
    Running,
    /// Every strategy classified every clause.
    Complete,
    /// Stopped by an error.
    Failed,
    /// Stopped by the user (ctrl-c) before the end.
    Interrupted,
}

/// One invocation of `lextral eval` on the folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSession {
    /// Its number, from 0.
    pub session: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The command line.
    pub command: String,
    /// The commit of the binary.
    pub git_commit: String,
    /// The stack that answered (`/v1/info`).
    #[serde(default)]
    pub stack: serde_json::Value,
    /// How it ended.
    pub status: RunStatus,
}

/// `run.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The binary's version.
    pub lextral_version: String,
    /// The binary's commit.
    pub git_commit: String,
    /// Whether the checkout had uncommitted changes; `None` when unknown.
    #[serde(default)]
    pub git_dirty: Option<bool>,
    /// When the run (its first session) started.
    pub created_at: String,
    /// The data.
    pub data: RunData,
    /// The orchestrator's URL.
    pub server: String,
    /// Requests in flight.
    #[serde(default)]
    pub concurrency: usize,
    /// The load the cost estimate assumes.
    #[serde(default)]
    pub load: RunLoad,
    /// Each strategy's options, as its command line set them.
    pub strategies: BTreeMap<String, serde_json::Value>,
    /// The strategies in report order.
    pub strategy_order: Vec<String>,
    /// The stack that answered (`/v1/info`), or `{"error": ...}`.
    pub stack: serde_json::Value,
    /// Every session so far.
    #[serde(default)]
    pub sessions: Vec<RunSession>,
    /// Where the run stands.
    #[serde(default)]
    pub status: RunStatus,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A run folder being written.
pub struct RunFolder {
    dir: PathBuf,
    /// run.json of an earlier session, when resuming.
    previous: Option<RunRecord>,
}

impl RunFolder {
    /// Opens `dir`: new (absent or empty), or an earlier run with `resume`.
    pub fn open(dir: &Path, resume: bool) -> anyhow::Result<Self> {
        let run_file = dir.join(files::RUN);
        let previous = if run_file.is_file() {
            if !resume {
                anyhow::bail!(
                    "{} already holds a run; pass --resume to continue it, or choose another --out",
                    dir.display()
                );
            }
            let text = std::fs::read_to_string(&run_file)?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a run file", run_file.display()))?,
            )
        } else {
            if resume {
                anyhow::bail!("{}: nothing to resume (no {})", dir.display(), files::RUN);
            }
            if dir.is_dir() && std::fs::read_dir(dir)?.next().is_some() {
                anyhow::bail!(
                    "{} is not empty and holds no run; choose an empty or new folder",
                    dir.display()
                );
            }
            None
        };
        Ok(Self {
            dir: dir.to_owned(),
            previous,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record of the session being resumed, if any.
    pub fn previous(&self) -> Option<&RunRecord> {
        self.previous.as_ref()
    }

    /// Where a strategy's predictions are journalled.
    pub fn predictions_path(&self, strategy: &str) -> PathBuf {
        self.dir
            .join(files::PREDICTIONS)
            .join(format!("{strategy}.jsonl"))
    }

    /// Records this session (run by `command`) in run.json; refuses to
    /// resume with other data or options for `names`, which would mix two
    /// experiments in one report.
    pub fn begin(
        &self,
        mut record: RunRecord,
        names: &[String],
        command: String,
    ) -> anyhow::Result<u32> {
        let mut sessions = Vec::new();
        if let Some(previous) = &self.previous {
            let (was, is) = (json(&previous.data), json(&record.data));
            for key in ["split_sha256", "labels_sha256", "split", "clauses"] {
                let (before, now) = (&was[key], &is[key]);
                if before != now {
                    anyhow::bail!(
                        "cannot resume {}: the data differ ({key} was {before}, is {now})",
                        self.dir.display()
                    );
                }
            }
            for name in names {
                let (Some(before), Some(now)) =
                    (previous.strategies.get(name), record.strategies.get(name))
                else {
                    continue;
                };
                if !before.is_null() && before != now {
                    anyhow::bail!(
                        "cannot resume {}: {name} ran with options {before}, now {now}",
                        self.dir.display()
                    );
                }
            }
            record.created_at = previous.created_at.clone();
            sessions = previous.sessions.clone();
        }
        // Created only now, after the data and the server checked out, so a
        // failed start leaves no half-made folder behind.
        std::fs::create_dir_all(self.dir.join(files::PREDICTIONS))
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let session = sessions.len() as u32;
        sessions.push(RunSession {
            session,
            started_at: now(),
            ended_at: None,
            command,
            git_commit: record.git_commit.clone(),
            stack: record.stack.clone(),
            status: RunStatus::Running,
        });
        record.sessions = sessions;
        record.status = RunStatus::Running;
        self.write(&record)?;
        Ok(session)
    }

    /// Predictions of earlier sessions, checked against the clauses'
    /// `hashes`.
    pub fn earlier_predictions(
        &self,
        strategy: &str,
        hashes: &[String],
    ) -> anyhow::Result<Vec<Prediction>> {
        let path = self.predictions_path(strategy);
        let predictions = read_predictions(&path, true)?;
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for (line, p) in predictions.iter().enumerate() {
            if hashes.get(p.index) != Some(&p.text_sha256) {
                anyhow::bail!(
                    "{} line {}: clause {} does not match the split; was it made from other data?",
                    path.display(),
                    line + 1,
                    p.index
                );
            }
            if let Some(first) = seen.insert(p.index, line) {
                anyhow::bail!(
                    "{} lines {} and {}: clause {} answered twice",
                    path.display(),
                    first + 1,
                    line + 1,
                    p.index
                );
            }
        }
        Ok(predictions)
    }

    /// Marks the session's end in run.json and returns the record.
    pub fn finish(&self, session: u32, status: RunStatus) -> anyhow::Result<RunRecord> {
        let path = self.dir.join(files::RUN);
        let text = std::fs::read_to_string(&path)?;
        let mut record: RunRecord = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run file", path.display()))?;
        record.status = status;
        if let Some(entry) = record.sessions.get_mut(session as usize) {
            entry.status = status;
            entry.ended_at = Some(now());
        }
        self.write(&record)?;
        Ok(record)
    }

    fn write(&self, record: &RunRecord) -> anyhow::Result<()> {
        write_json_atomically(&self.dir.join(files::RUN), record)
    }
}

fn json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(clauses: usize) -> RunRecord {
        RunRecord {
            git_commit: "abc".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            data: RunData {
                split: "validation".into(),
                split_sha256: "00".into(),
                clauses,
                ..Default::default()
            },
            strategies: BTreeMap::from([("knn".to_owned(), serde_json::json!({"k": 5}))]),
            strategy_order: vec!["knn".into()],
            ..Default::default()
        }
    }

    #[test]
    fn sessions_accumulate_and_other_data_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let names = vec!["knn".to_owned()];
        let folder = RunFolder::open(&dir, false).unwrap();
        let first = folder.begin(record(10), &names, "eval".into()).unwrap();
        let done = folder.finish(first, RunStatus::Interrupted).unwrap();
        assert_eq!(done.status, RunStatus::Interrupted);
        assert!(done.sessions[0].ended_at.is_some());

        assert!(RunFolder::open(&dir, false)
            .err()
            .unwrap()
            .to_string()
            .contains("--resume"));
        let resumed = RunFolder::open(&dir, true).unwrap();
        assert_eq!(resumed.previous().unwrap().strategy_order, names);
        let err = resumed
            .begin(record(11), &names, "eval".into())
            .unwrap_err();
        assert!(err.to_string().contains("clauses was 10, is 11"), "{err}");
        let second = resumed.begin(record(10), &names, "eval".into()).unwrap();
        assert_eq!(second, 1);
        let done = resumed.finish(second, RunStatus::Complete).unwrap();
        assert_eq!(done.sessions.len(), 2);
        assert_eq!(done.created_at, "2026-01-01T00:00:00Z");
        // The file reads as the same JSON the report shows.
        let text = std::fs::read_to_string(dir.join(files::RUN)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status"], "complete");
        assert_eq!(value["data"]["clauses"], 10);
    }
}
