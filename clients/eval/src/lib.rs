//! Lextral evaluation reports: metrics that match scikit-learn's,
//! calibration, latency and cost, PNG plots and an HTML page, and the
//! overview across runs. `lextral eval` (clients/cli) runs the clauses
//! through a live stack and hands the predictions to this crate.

pub mod compare;
pub mod html;
pub mod metrics;
pub mod plots;
pub mod predictions;
pub mod report;
pub mod run;

use std::path::Path;

use anyhow::Context;
use lextral_common::fs::{write_json_atomically, write_text_atomically};

pub use predictions::{read_predictions, Journal, Prediction};
pub use report::{Load, ReportContext, RunReport, StrategyReport};
pub use run::{RunData, RunFolder, RunLoad, RunRecord, RunSession, RunStatus};

/// File names inside a run folder.
pub mod files {
    /// Run metadata (commit, models, index, options, data hashes, progress).
    pub const RUN: &str = "run.json";
    /// All strategies' metrics.
    pub const REPORT_JSON: &str = "report.json";
    /// The overview for people and pull requests.
    pub const REPORT_MD: &str = "report.md";
    /// The self-contained page with plots.
    pub const REPORT_HTML: &str = "report.html";
    /// PNG plots.
    pub const PLOTS: &str = "plots";
    /// Per-strategy predictions: `predictions/<strategy>.jsonl`.
    pub const PREDICTIONS: &str = "predictions";
}

/// Writes `report.json`, `report.md`, `report.html` and `plots/` into
/// `dir`, each file atomically. `predictions` holds one list per report.
pub fn write_run_reports(
    dir: &Path,
    report: &RunReport,
    predictions: &[Vec<Prediction>],
    labels: &[String],
) -> anyhow::Result<()> {
    let run_name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let plots = plots::draw_all(
        &dir.join(files::PLOTS),
        &report.strategies,
        predictions,
        labels,
    )
    .context("drawing the plots")?;
    write_json_atomically(&dir.join(files::REPORT_JSON), report)?;
    let relative: Vec<(String, String)> = plots
        .iter()
        .map(|p| (p.title.clone(), format!("{}/{}", files::PLOTS, p.file)))
        .collect();
    let markdown = report.markdown(&run_name, &relative);
    write_text_atomically(&dir.join(files::REPORT_MD), &markdown)?;
    let page = html::render(report, &run_name, &plots)?;
    write_text_atomically(&dir.join(files::REPORT_HTML), &page)?;
    Ok(())
}
