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

use std::path::Path;

use anyhow::Context;
use lextral_common::fs::write_atomically;

pub use predictions::{read_predictions, Journal, Prediction};
pub use report::{Load, ReportContext, RunReport, StrategyReport};

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
    write_atomically(&dir.join(files::REPORT_JSON), |file| {
        serde_json::to_writer_pretty(&mut *file, report)?;
        Ok(())
    })?;
    let relative: Vec<(String, String)> = plots
        .iter()
        .map(|p| (p.title.clone(), format!("{}/{}", files::PLOTS, p.file)))
        .collect();
    let markdown = report.markdown(&run_name, &relative);
    write_atomically(&dir.join(files::REPORT_MD), |file| {
        use std::io::Write;
        file.write_all(markdown.as_bytes())?;
        Ok(())
    })?;
    let page = html::render(report, &run_name, &plots)?;
    write_atomically(&dir.join(files::REPORT_HTML), |file| {
        use std::io::Write;
        file.write_all(page.as_bytes())?;
        Ok(())
    })?;
    Ok(())
}
