//! `lextral eval compare`: one overview table across run folders.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::files;
use crate::report::{overview_markdown, OverviewRow, RunReport};

/// A run folder's report.
pub struct LoadedRun {
    /// The folder's name, as the table shows it.
    pub name: String,
    /// Its `report.json`.
    pub report: RunReport,
}

/// Reads `report.json` from each folder (or a `report.json` path given
/// directly); errors name the folder.
pub fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<LoadedRun>> {
    dirs.iter()
        .map(|dir| {
            if !dir.exists() {
                anyhow::bail!("{}: no such run folder", dir.display());
            }
            let path = if dir.is_dir() {
                dir.join(files::REPORT_JSON)
            } else {
                dir.clone()
            };
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: no report ({} missing; was the run finished or interrupted before its first report?)",
                    dir.display(),
                    path.display()
                )
            })?;
            let report: RunReport = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a lextral eval report", path.display()))?;
            Ok(LoadedRun {
                name: run_name(dir),
                report,
            })
        })
        .collect()
}

fn run_name(dir: &Path) -> String {
    let dir = if dir.is_dir() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// The overview table (Markdown) across `runs`, best macro-F1 first.
pub fn overview(runs: &[LoadedRun]) -> String {
    let mut rows: Vec<OverviewRow<'_>> = runs
        .iter()
        .flat_map(|run| {
            run.report.strategies.iter().map(|report| OverviewRow {
                run: &run.name,
                report,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.report
            .scores
            .macro_f1
            .total_cmp(&a.report.scores.macro_f1)
    });
    overview_markdown(&rows)
}
