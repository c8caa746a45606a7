//! `report.html`: one self-contained page (plots embedded as data URLs) that
//! opens anywhere, mailed or archived, without the run folder beside it.

use std::fmt::Write as _;

use anyhow::Context;
use base64::Engine;

use crate::plots::Plot;
use crate::report::{cost_formula, overview_markdown, OverviewRow, RunReport};

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Turns the Markdown table [`overview_markdown`] makes into an HTML table,
/// so both reports show the same figures.
fn markdown_table_to_html(markdown: &str) -> String {
    let mut out = String::from("<table>\n");
    for (i, line) in markdown.lines().enumerate() {
        if i == 1 || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for cell in cells {
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}\
th{background:#f3f3f3}td:first-child,td:nth-child(2),td:nth-child(3),th{text-align:left}\
img{max-width:100%;border:1px solid #ddd;margin:.5rem 0}figure{margin:1.5rem 0}figcaption{font-weight:600}\
.partial{background:#fff3cd;border:1px solid #e0c060;padding:.6rem 1rem}pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.8rem}\
#image-status{color:#666;font-size:.85rem}";

/// Marks on the page how many plots the browser decoded, for people (a
/// broken image is easy to miss in a long page) and for the render test.
const IMAGE_CHECK: &str = "<script>\
window.addEventListener('load',function(){var imgs=document.querySelectorAll('img');var ok=0;\
imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++;}});\
document.body.setAttribute('data-images-loaded',ok+'/'+imgs.length);\
document.getElementById('image-status').textContent=ok+' of '+imgs.length+' plots loaded';});\
</script>";

/// Renders the page.
pub fn render(report: &RunReport, run_name: &str, plots: &[Plot]) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Lextral evaluation: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Lextral evaluation: {name}</h1>\n<p id=\"image-status\"></p>\n",
        name = escape(run_name)
    );
    if !report.complete {
        out.push_str("<p class=\"partial\"><strong>Partial run:</strong> not every clause was classified; continue it with <code>lextral eval … --resume</code>.</p>\n");
    }
    let rows: Vec<OverviewRow<'_>> = report
        .strategies
        .iter()
        .map(|r| OverviewRow {
            run: run_name,
            report: r,
        })
        .collect();
    out.push_str("<h2>Overview</h2>\n");
    out.push_str(&markdown_table_to_html(&overview_markdown(&rows)));
    if let Some(monthly) = report
        .strategies
        .iter()
        .find_map(|r| r.monthly_cost.as_ref())
    {
        let _ = writeln!(out, "<p>{}</p>", escape(&cost_formula(&monthly.load)));
    }
    out.push_str("<h2>Plots</h2>\n");
    for plot in plots {
        let bytes = std::fs::read(&plot.path)
            .with_context(|| format!("cannot read {}", plot.path.display()))?;
        let _ = writeln!(
            out,
            "<figure><figcaption>{}</figcaption><img alt=\"{}\" src=\"data:image/png;base64,{}\"></figure>",
            escape(&plot.title),
            escape(&plot.title),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    }
    for r in &report.strategies {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&r.strategy));
        let _ = writeln!(
            out,
            "<p>accuracy {:.4} · answered accuracy {:.4} · abstained {} ({:.1}%) · macro P/R/F1 {:.4}/{:.4}/{:.4} · micro P/R/F1 {:.4}/{:.4}/{:.4} · weighted F1 {:.4}{}</p>",
            r.scores.accuracy,
            r.scores.answered_accuracy,
            r.scores.abstained,
            r.scores.abstention_rate * 100.0,
            r.scores.macro_precision,
            r.scores.macro_recall,
            r.scores.macro_f1,
            r.scores.micro_precision,
            r.scores.micro_recall,
            r.scores.micro_f1,
            r.scores.weighted_f1,
            r.calibration
                .as_ref()
                .map(|c| format!(" · ECE {:.4}", c.ece))
                .unwrap_or_default()
        );
        out.push_str("<h3>Top confusions</h3>\n<table><tr><th>gold</th><th>predicted</th><th>count</th><th>share of gold</th></tr>\n");
        for c in &r.top_confusions {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
                escape(&c.gold),
                escape(&c.predicted),
                c.count,
                c.share_of_gold * 100.0
            );
        }
        out.push_str("</table>\n<details><summary>Per-label precision, recall, F1</summary>\n<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>\n");
        for (label, m) in &r.scores.per_label {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                escape(label),
                m.precision,
                m.recall,
                m.f1,
                m.support
            );
        }
        out.push_str("</table></details>\n");
    }
    let _ = write!(
        out,
        "<h2>Run</h2>\n<details><summary>Metadata: commit, models, index, options, data hashes</summary><pre>{}</pre></details>\n",
        escape(&serde_json::to_string_pretty(&report.run)?)
    );
    out.push_str(IMAGE_CHECK);
    out.push_str("\n</body></html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn markdown_tables_become_html_rows() {
        let html = markdown_table_to_html("| a | b |\n|---|---|\n| 1 | <2> |\n");
        assert!(html.contains("<tr><th>a</th><th>b</th></tr>"));
        assert!(html.contains("<td>&lt;2&gt;</td>"));
        assert!(!html.contains("---"));
    }
}
