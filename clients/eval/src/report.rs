//! Reports: per-strategy metrics, cost and the run's overview, as JSON and
//! Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::{
    calibration, percentile, score, top_confusions, Calibration, Confusion, Scores,
};
use crate::predictions::{wall_seconds, Prediction};

/// Hours in an average month (8,760 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;
/// Reliability-diagram bins.
pub const CALIBRATION_BINS: usize = 10;
/// Confusions listed per strategy.
pub const TOP_CONFUSIONS: usize = 30;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of `values` (any order).
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            mean: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// The load a monthly cost is estimated for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Load {
    /// Clauses classified per day.
    pub requests_per_day: f64,
    /// Price of one serving machine like the one measured, per hour.
    pub infra_usd_per_hour: f64,
}

/// Estimated monthly cost at a [`Load`]:
/// `instances = max(1, ceil(requests_per_day / 86,400 / throughput_per_s))`,
/// `infra = instances × infra_usd_per_hour × 730`,
/// `llm = requests_per_day × 730 / 24 × cost_per_1000_usd / 1000`,
/// `total = infra + llm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MonthlyCost {
    /// The load assumed.
    pub load: Load,
    /// Machines needed at the measured throughput.
    pub instances: u64,
    /// Machines × price × hours.
    pub infra_usd: f64,
    /// LLM tokens at the price table.
    pub llm_usd: f64,
    /// Both.
    pub total_usd: f64,
}

impl MonthlyCost {
    /// The estimate for a strategy measured at `throughput_per_s` and
    /// `cost_per_1000_usd`.
    pub fn estimate(load: Load, throughput_per_s: f64, cost_per_1000_usd: f64) -> Self {
        let per_second = load.requests_per_day / 86_400.0;
        let instances = if throughput_per_s > 0.0 {
            ((per_second / throughput_per_s).ceil() as u64).max(1)
        } else {
            1
        };
        let infra_usd = instances as f64 * load.infra_usd_per_hour * HOURS_PER_MONTH;
        let llm_usd = load.requests_per_day * HOURS_PER_MONTH / 24.0 * cost_per_1000_usd / 1000.0;
        Self {
            load,
            instances,
            infra_usd,
            llm_usd,
            total_usd: infra_usd + llm_usd,
        }
    }
}

/// The monthly cost formula in words, with the run's load.
pub fn cost_formula(load: &Load) -> String {
    format!(
        "Monthly cost at {:.0} clauses/day with machines at ${:.3}/h: \
         machines = max(1, ⌈clauses/day ÷ 86,400 ÷ measured clauses/s⌉); \
         $/month = machines × $/h × 730 + clauses/day × 730/24 × ($/1,000 ÷ 1,000).",
        load.requests_per_day, load.infra_usd_per_hour
    )
}

/// Everything measured for one strategy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StrategyReport {
    /// Strategy name (knn, finetuned, cascade, rag, zero-shot, external).
    pub strategy: String,
    /// Split evaluated.
    pub split: String,
    /// Data directory or predictions file.
    pub data: String,
    /// Whether every clause of the split was classified.
    pub complete: bool,
    /// Clauses in the split.
    pub total: usize,
    /// Accuracy, micro/macro/weighted precision, recall and F1, abstention,
    /// per label (flattened: the keys sit at the top level, `n` included).
    #[serde(flatten)]
    pub scores: Scores,
    /// Reliability of the confidences; absent when the strategy gives none.
    pub calibration: Option<Calibration>,
    /// Per-clause end-to-end latency.
    pub latency_ms: Latency,
    /// Clauses per second over the wall time.
    pub throughput_per_s: f64,
    /// Wall seconds (summed over resumed sessions).
    pub wall_s: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// LLM prompt tokens.
    pub input_tokens: u64,
    /// LLM generated tokens.
    pub output_tokens: u64,
    /// Estimated LLM cost.
    pub cost_usd: f64,
    /// Estimated LLM cost per 1,000 clauses.
    pub cost_per_1000_usd: f64,
    /// Estimated monthly cost at the run's load.
    pub monthly_cost: Option<MonthlyCost>,
    /// Which strategy answered, counted (cascade).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answered_by: BTreeMap<String, usize>,
    /// How answers were mapped to labels (`eval score`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parse_methods: BTreeMap<String, usize>,
    /// The strategy options sent with each request (absent = server default).
    #[serde(default)]
    pub options: serde_json::Value,
    /// The most frequent confusions.
    pub top_confusions: Vec<Confusion>,
}

/// What a strategy report is built from besides the predictions.
pub struct ReportContext<'a> {
    /// Strategy name.
    pub strategy: &'a str,
    /// Split name.
    pub split: &'a str,
    /// Data directory or file.
    pub data: &'a str,
    /// Clauses in the split.
    pub total: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Load for the monthly cost; none skips it.
    pub load: Option<Load>,
    /// Strategy options.
    pub options: serde_json::Value,
}

impl StrategyReport {
    /// Scores `predictions` (one strategy's).
    pub fn build(context: ReportContext<'_>, predictions: &[Prediction]) -> Self {
        let pairs: Vec<(String, Option<String>)> = predictions
            .iter()
            .map(|p| (p.gold.clone(), p.predicted.clone()))
            .collect();
        let scores = score(&pairs);
        // Strategies that give no confidence (free-text LLM answers) report 0
        // for every answer; a reliability diagram of those would be noise.
        let answers: Vec<(f64, bool)> = predictions
            .iter()
            .filter(|p| p.predicted.is_some())
            .filter_map(|p| p.confidence.map(|c| (c, p.correct())))
            .collect();
        let calibration = if answers.iter().any(|(c, _)| *c > 0.0) {
            calibration(&answers, CALIBRATION_BINS)
        } else {
            None
        };
        let latencies: Vec<f64> = predictions.iter().map(|p| p.latency_ms).collect();
        let wall_s = wall_seconds(predictions);
        let throughput_per_s = if wall_s > 0.0 {
            predictions.len() as f64 / wall_s
        } else {
            0.0
        };
        let cost_usd: f64 = predictions.iter().map(|p| p.cost_usd).sum();
        let cost_per_1000_usd = cost_usd * 1000.0 / predictions.len().max(1) as f64;
        let mut answered_by = BTreeMap::new();
        for p in predictions {
            if let Some(by) = &p.answered_by {
                *answered_by.entry(by.clone()).or_default() += 1;
            }
        }
        Self {
            strategy: context.strategy.to_owned(),
            split: context.split.to_owned(),
            data: context.data.to_owned(),
            complete: predictions.len() == context.total,
            total: context.total,
            calibration,
            latency_ms: Latency::of(&latencies),
            throughput_per_s,
            wall_s,
            concurrency: context.concurrency,
            input_tokens: predictions.iter().map(|p| p.input_tokens).sum(),
            output_tokens: predictions.iter().map(|p| p.output_tokens).sum(),
            cost_usd,
            cost_per_1000_usd,
            monthly_cost: context
                .load
                .map(|load| MonthlyCost::estimate(load, throughput_per_s, cost_per_1000_usd)),
            answered_by,
            parse_methods: BTreeMap::new(),
            options: context.options,
            top_confusions: top_confusions(&pairs, TOP_CONFUSIONS),
            scores,
        }
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} on {} ({} clauses{}): accuracy {:.4}  micro-F1 {:.4}  macro-F1 {:.4}  weighted-F1 {:.4}  abstained {}",
            self.strategy,
            self.split,
            self.scores.n,
            if self.complete { "" } else { ", PARTIAL" },
            self.scores.accuracy,
            self.scores.micro_f1,
            self.scores.macro_f1,
            self.scores.weighted_f1,
            self.scores.abstained,
        );
        if self.latency_ms.p50 > 0.0 {
            let _ = write!(
                out,
                "\nlatency p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  throughput {:.1}/s",
                self.latency_ms.p50,
                self.latency_ms.p95,
                self.latency_ms.p99,
                self.throughput_per_s
            );
        }
        if let Some(cal) = &self.calibration {
            let _ = write!(out, "\ncalibration ECE {:.4}", cal.ece);
        }
        if self.input_tokens > 0 {
            let _ = write!(
                out,
                "\nLLM tokens in {} / out {}  cost ${:.4} (${:.4} per 1,000 clauses)",
                self.input_tokens, self.output_tokens, self.cost_usd, self.cost_per_1000_usd
            );
        }
        if let Some(monthly) = &self.monthly_cost {
            let _ = write!(
                out,
                "\nmonthly at {:.0} clauses/day: ${:.2} ({} machine(s) ${:.2} + LLM ${:.2})",
                monthly.load.requests_per_day,
                monthly.total_usd,
                monthly.instances,
                monthly.infra_usd,
                monthly.llm_usd
            );
        }
        if !self.answered_by.is_empty() {
            let _ = write!(out, "\nanswered by: {:?}", self.answered_by);
        }
        if !self.parse_methods.is_empty() {
            let _ = write!(out, "\nanswers parsed: {:?}", self.parse_methods);
        }
        out
    }
}

/// A whole run: metadata and one report per strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Whether every strategy classified every clause.
    pub complete: bool,
    /// The run's metadata (`run.json`).
    pub run: crate::run::RunRecord,
    /// One per strategy, in the order asked for.
    pub strategies: Vec<StrategyReport>,
}

/// One row of an overview table.
pub struct OverviewRow<'a> {
    /// Where the row comes from (run folder name).
    pub run: &'a str,
    /// The strategy's report.
    pub report: &'a StrategyReport,
}

fn options_text(options: &serde_json::Value) -> String {
    match options {
        serde_json::Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "defaults".to_owned(),
    }
}

/// The overview table (Markdown): configuration, latency, cost, F1.
pub fn overview_markdown(rows: &[OverviewRow<'_>]) -> String {
    let mut out = String::from(
        "| run | strategy | options | n | p50 ms | p95 ms | clauses/s | $ / 1,000 | $ / month | macro-F1 | micro-F1 | weighted-F1 | abstained | ECE |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let r = row.report;
        let monthly = r
            .monthly_cost
            .as_ref()
            .map(|m| format!("{:.2}", m.total_usd))
            .unwrap_or_else(|| "–".into());
        let ece = r
            .calibration
            .as_ref()
            .map(|c| format!("{:.3}", c.ece))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}{} | {:.1} | {:.1} | {:.1} | {:.4} | {} | {:.4} | {:.4} | {:.4} | {:.1}% | {} |",
            row.run,
            r.strategy,
            options_text(&r.options),
            r.scores.n,
            if r.complete { "" } else { " (partial)" },
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.throughput_per_s,
            r.cost_per_1000_usd,
            monthly,
            r.scores.macro_f1,
            r.scores.micro_f1,
            r.scores.weighted_f1,
            r.scores.abstention_rate * 100.0,
            ece,
        );
    }
    out
}

impl RunReport {
    /// `report.md`: overview, cost formula, confusions, plots.
    pub fn markdown(&self, run_name: &str, plots: &[(String, String)]) -> String {
        let mut out = format!("# Lextral evaluation: {run_name}\n\n");
        if !self.complete {
            out.push_str(
                "**Partial run**: not every clause was classified; continue it with `lextral eval … --out <this folder> --resume`.\n\n",
            );
        }
        let rows: Vec<OverviewRow<'_>> = self
            .strategies
            .iter()
            .map(|report| OverviewRow {
                run: run_name,
                report,
            })
            .collect();
        out.push_str("## Overview\n\n");
        out.push_str(&overview_markdown(&rows));
        if let Some(monthly) = self.strategies.iter().find_map(|r| r.monthly_cost.as_ref()) {
            let _ = writeln!(out, "\n{}", cost_formula(&monthly.load));
        }
        for report in &self.strategies {
            let _ = write!(
                out,
                "\n## {}\n\naccuracy {:.4} · answered accuracy {:.4} · macro P/R {:.4}/{:.4} · micro P/R {:.4}/{:.4}",
                report.strategy,
                report.scores.accuracy,
                report.scores.answered_accuracy,
                report.scores.macro_precision,
                report.scores.macro_recall,
                report.scores.micro_precision,
                report.scores.micro_recall,
            );
            if let Some(cal) = &report.calibration {
                let _ = write!(out, " · ECE {:.4}", cal.ece);
            }
            if report.input_tokens > 0 {
                let _ = write!(
                    out,
                    " · tokens in/out {}/{}",
                    report.input_tokens, report.output_tokens
                );
            }
            out.push_str("\n\nTop confusions:\n\n| gold | predicted | count | share of gold |\n|---|---|---:|---:|\n");
            for c in report.top_confusions.iter().take(10) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1}% |",
                    c.gold,
                    c.predicted,
                    c.count,
                    c.share_of_gold * 100.0
                );
            }
        }
        if !plots.is_empty() {
            out.push_str("\n## Plots\n\n");
            for (title, file) in plots {
                let _ = writeln!(out, "![{title}]({file})\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_cost_follows_the_documented_formula() {
        let load = Load {
            requests_per_day: 172_800.0, // 2 per second
            infra_usd_per_hour: 0.1,
        };
        let cost = MonthlyCost::estimate(load, 0.5, 0.2);
        assert_eq!(cost.instances, 4);
        assert!((cost.infra_usd - 4.0 * 0.1 * 730.0).abs() < 1e-9);
        assert!((cost.llm_usd - 172_800.0 * 730.0 / 24.0 * 0.0002).abs() < 1e-6);
        // A fast strategy still needs one machine.
        assert_eq!(MonthlyCost::estimate(load, 1000.0, 0.0).instances, 1);
    }
}
