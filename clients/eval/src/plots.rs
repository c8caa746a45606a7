//! PNG plots of a run, drawn with plotters. Fonts are embedded (DejaVu Sans)
//! so the images look the same on machines without system fonts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

use crate::predictions::Prediction;
use crate::report::StrategyReport;

const FONT: &str = "sans-serif";

/// Tableau 10: distinct, colour-blind-friendly series colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The embedded fonts are valid TrueType; failure here is a build bug.
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("embedded DejaVu Sans does not parse"));
        register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .unwrap_or_else(|_| panic!("embedded DejaVu Sans Bold does not parse"));
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn text_style(size: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, v))
}

fn shorten(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// The series legend, the same on every chart.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}

/// A plot written to the run folder.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Human title.
    pub title: String,
    /// File name inside the plots folder.
    pub file: String,
    /// Full path.
    pub path: PathBuf,
}

/// Draws every plot of a run into `dir`; `labels` is the label set (for the
/// confusion matrix axes), `predictions` one list per report.
pub fn draw_all(
    dir: &Path,
    reports: &[StrategyReport],
    predictions: &[Vec<Prediction>],
    labels: &[String],
) -> anyhow::Result<Vec<Plot>> {
    register_fonts();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut plots = Vec::new();
    let mut add = |title: String, file: String| -> PathBuf {
        let path = dir.join(&file);
        plots.push(Plot {
            title,
            file,
            path: path.clone(),
        });
        path
    };
    let names: Vec<&str> = reports.iter().map(|r| r.strategy.as_str()).collect();
    grouped_bars(
        &add("F1 per strategy".into(), "f1.png".into()),
        "F1 per strategy",
        &names,
        &[
            (
                "micro-F1",
                reports.iter().map(|r| r.scores.micro_f1).collect(),
            ),
            (
                "macro-F1",
                reports.iter().map(|r| r.scores.macro_f1).collect(),
            ),
            (
                "weighted-F1",
                reports.iter().map(|r| r.scores.weighted_f1).collect(),
            ),
            (
                "accuracy",
                reports.iter().map(|r| r.scores.accuracy).collect(),
            ),
        ],
    )?;
    grouped_bars(
        &add(
            "Precision and recall per strategy".into(),
            "precision_recall.png".into(),
        ),
        "Precision and recall per strategy",
        &names,
        &[
            (
                "macro precision",
                reports.iter().map(|r| r.scores.macro_precision).collect(),
            ),
            (
                "macro recall",
                reports.iter().map(|r| r.scores.macro_recall).collect(),
            ),
            (
                "micro precision",
                reports.iter().map(|r| r.scores.micro_precision).collect(),
            ),
            (
                "micro recall",
                reports.iter().map(|r| r.scores.micro_recall).collect(),
            ),
        ],
    )?;
    latency_cdf(
        &add("Latency distribution".into(), "latency.png".into()),
        &names,
        predictions,
    )?;
    if reports.iter().any(|r| r.calibration.is_some()) {
        reliability(
            &add("Reliability diagram".into(), "reliability.png".into()),
            reports,
        )?;
    }
    for (report, preds) in reports.iter().zip(predictions) {
        let name = &report.strategy;
        per_label_f1(
            &add(
                format!("Per-label F1, {name}"),
                format!("per_label_f1_{name}.png"),
            ),
            report,
        )?;
        confusion_matrix(
            &add(
                format!("Confusion matrix, {name}"),
                format!("confusion_{name}.png"),
            ),
            name,
            preds,
            labels,
        )?;
    }
    Ok(plots)
}

/// Bars grouped by strategy, one colour per series, values printed on top.
fn grouped_bars(
    path: &Path,
    title: &str,
    groups: &[&str],
    series: &[(&str, Vec<f64>)],
) -> anyhow::Result<()> {
    let width = (260 + 200 * groups.len() as u32).max(900);
    let root = BitMapBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_desc("score")
        .y_label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let slot = 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let c = colour(s);
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                let x0 = g as f64 + 0.1 + s as f64 * slot;
                Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, v)], c.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        for (g, &v) in values.iter().enumerate() {
            let x = g as f64 + 0.1 + (s as f64 + 0.45) * slot;
            let at = chart.backend_coord(&(x, v));
            root.draw(&Text::new(
                format!("{v:.3}"),
                (at.0, at.1 - 4),
                text_style(12.0, HPos::Center, VPos::Bottom),
            ))?;
        }
    }
    for (g, name) in groups.iter().enumerate() {
        let at = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.to_string(),
            (at.0, at.1 + 10),
            text_style(17.0, HPos::Center, VPos::Top),
        ))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Cumulative share of clauses answered within x ms, log x axis.
fn latency_cdf(path: &Path, names: &[&str], predictions: &[Vec<Prediction>]) -> anyhow::Result<()> {
    let mut all: Vec<f64> = predictions
        .iter()
        .flatten()
        .map(|p| p.latency_ms.max(0.01))
        .collect();
    all.sort_by(f64::total_cmp);
    let lo = all.first().copied().unwrap_or(1.0) * 0.8;
    // A decade of room on the right keeps the legend off the curves.
    let hi = all.last().copied().unwrap_or(10.0).max(lo * 10.0) * 10.0;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency per clause (cumulative)", (FONT, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_labels(16)
        .x_desc("milliseconds (log scale)")
        .y_desc("share of clauses answered")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .x_label_formatter(&|v| {
            if *v >= 100.0 {
                format!("{v:.0}")
            } else if *v >= 1.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    for (i, (name, preds)) in names.iter().zip(predictions).enumerate() {
        let mut values: Vec<f64> = preds.iter().map(|p| p.latency_ms.max(0.01)).collect();
        values.sort_by(f64::total_cmp);
        let n = values.len() as f64;
        let c = colour(i);
        let p50 = crate::metrics::percentile(&values, 50.0);
        chart
            .draw_series(LineSeries::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (v, (k + 1) as f64 / n)),
                c.stroke_width(3),
            ))?
            .label(format!("{name} (p50 {p50:.1} ms)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// One `ef_search` setting of an HNSW sweep.
#[derive(Debug, Clone, Copy)]
pub struct EfPoint {
    /// The setting.
    pub ef_search: u32,
    /// Mean recall@k against exact search.
    pub recall: f64,
    /// Median search latency, ms.
    pub p50_ms: f64,
    /// 95th-percentile search latency, ms.
    pub p95_ms: f64,
}

/// Recall@k and search latency against `ef_search`, side by side, one
/// evenly spaced tick per measured setting, the default marked larger.
pub fn recall_vs_ef_search(
    path: &Path,
    points: &[EfPoint],
    subtitle: &str,
    default_ef: u32,
) -> anyhow::Result<()> {
    register_fonts();
    anyhow::ensure!(!points.is_empty(), "no points to plot");
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(70);
    title.draw(&Text::new(
        "Recall and latency against ef_search",
        (700, 10),
        text_style(26.0, HPos::Center, VPos::Top),
    ))?;
    title.draw(&Text::new(
        subtitle.to_owned(),
        (700, 44),
        text_style(16.0, HPos::Center, VPos::Top),
    ))?;
    let (left, right) = body.split_horizontally(700);

    let settings: Vec<u32> = points.iter().map(|p| p.ef_search).collect();
    let min_recall = points.iter().map(|p| p.recall).fold(1.0, f64::min);
    let recall_lo = (min_recall - 0.03).clamp(0.0, 0.95);
    let mut chart = ef_panel(
        &left,
        &settings,
        recall_lo..1.0,
        "mean recall@k against exact search",
        (0.98, "target 0.98"),
    )?;
    let c = colour(0);
    let at = |i: usize| i as f64;
    chart
        .draw_series(LineSeries::new(
            points.iter().enumerate().map(|(i, p)| (at(i), p.recall)),
            c.stroke_width(3),
        ))?
        .label("recall@k")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    chart.draw_series(points.iter().enumerate().map(|(i, p)| {
        let marker = if p.ef_search == default_ef { 8 } else { 4 };
        Circle::new((at(i), p.recall), marker, c.filled())
    }))?;
    chart.draw_series(points.iter().enumerate().map(|(i, p)| {
        Text::new(
            format!("{:.3}", p.recall),
            (at(i), p.recall),
            text_style(14.0, HPos::Left, VPos::Top),
        )
    }))?;
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    let max_ms = points.iter().map(|p| p.p95_ms).fold(10.0, f64::max) * 1.15;
    let mut chart = ef_panel(
        &right,
        &settings,
        0.0..max_ms,
        "search latency, ms (one query per call)",
        (10.0, "target p95 10 ms"),
    )?;
    for (i, (name, value)) in [
        ("p50", (|p: &EfPoint| p.p50_ms) as fn(&EfPoint) -> f64),
        ("p95", |p: &EfPoint| p.p95_ms),
    ]
    .into_iter()
    .enumerate()
    {
        let c = colour(i + 1);
        chart
            .draw_series(LineSeries::new(
                points.iter().enumerate().map(|(j, p)| (at(j), value(p))),
                c.stroke_width(3),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(points.iter().enumerate().map(|(j, p)| {
            let marker = if p.ef_search == default_ef { 8 } else { 4 };
            Circle::new((at(j), value(p)), marker, c.filled())
        }))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

type EfChart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One panel of [`recall_vs_ef_search`]: x is the index of the setting (a
/// log axis would crowd its own labels between the measured settings), with
/// a dashed target line.
fn ef_panel<'a>(
    area: &Area<'a>,
    settings: &[u32],
    y: std::ops::Range<f64>,
    y_desc: &str,
    (target_y, target_label): (f64, &str),
) -> anyhow::Result<EfChart<'a>> {
    let n = settings.len();
    let xs = -0.5..(n as f64 - 0.5);
    let label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            settings[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(xs.clone(), y)?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .x_desc("ef_search")
        .y_desc(y_desc)
        .light_line_style(WHITE)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(DashedLineSeries::new(
            [(xs.start, target_y), (xs.end, target_y)],
            8,
            6,
            red.stroke_width(2),
        ))?
        .label(target_label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    Ok(chart)
}

/// Accuracy against mean confidence per bin, one line per strategy.
fn reliability(path: &Path, reports: &[StrategyReport]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (800, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Reliability diagram", (FONT, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1.0, 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("confidence (bin mean)")
        .y_desc("accuracy in bin")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            8,
            6,
            BLACK.mix(0.5).stroke_width(2),
        ))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    for (i, report) in reports.iter().enumerate() {
        let Some(cal) = &report.calibration else {
            continue;
        };
        let c = colour(i);
        let points: Vec<(f64, f64)> = cal
            .bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.mean_confidence, b.accuracy))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(format!("{} (ECE {:.3})", report.strategy, cal.ece))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        // Marker area grows with the bin's share of answers.
        let total = cal.answered.max(1) as f64;
        chart.draw_series(cal.bins.iter().filter(|b| b.count > 0).map(|b| {
            let radius = 3.0 + 12.0 * (b.count as f64 / total).sqrt();
            Circle::new((b.mean_confidence, b.accuracy), radius as i32, c.filled())
        }))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.draw(&Text::new(
        "marker area ∝ answers in the bin",
        (780, 740),
        text_style(13.0, HPos::Right, VPos::Bottom),
    ))?;
    root.present()?;
    Ok(())
}

/// Horizontal bars of F1 per label, best first, with the support.
fn per_label_f1(path: &Path, report: &StrategyReport) -> anyhow::Result<()> {
    let mut rows: Vec<(&String, f64, usize)> = report
        .scores
        .per_label
        .iter()
        .map(|(label, m)| (label, m.f1, m.support))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    let row_h = 18u32;
    let left = 360u32;
    let height = 140 + row_h * rows.len().max(1) as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Per-label F1, {} (macro-F1 {:.3})",
                report.strategy, report.scores.macro_f1
            ),
            (FONT, 24),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(left)
        .build_cartesian_2d(0f64..1.0, 0f64..rows.len().max(1) as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .y_label_formatter(&|_| String::new())
        .x_desc("F1")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    let n = rows.len() as f64;
    let c = colour(0);
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, f1, _))| {
        // Best label at the top.
        let top = n - i as f64;
        Rectangle::new([(0.0, top - 0.85), (*f1, top - 0.15)], c.filled())
    }))?;
    for (i, (label, f1, support)) in rows.iter().enumerate() {
        let y = n - i as f64 - 0.5;
        let at = chart.backend_coord(&(0.0, y));
        root.draw(&Text::new(
            format!("{} (n={support})", shorten(label, 38)),
            (at.0 - 8, at.1),
            text_style(13.0, HPos::Right, VPos::Center),
        ))?;
        let end = chart.backend_coord(&(*f1, y));
        root.draw(&Text::new(
            format!("{f1:.2}"),
            (end.0 + 4, end.1),
            text_style(11.0, HPos::Left, VPos::Center),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// Gold × predicted heat map, rows normalised by support, counts printed in
/// the cells; the last column counts abstentions.
fn confusion_matrix(
    path: &Path,
    strategy: &str,
    predictions: &[Prediction],
    labels: &[String],
) -> anyhow::Result<()> {
    // Labels the data or the answers use that the label file lacks still get a row.
    let mut axis: Vec<String> = labels.to_vec();
    let mut known: std::collections::HashSet<String> = axis.iter().cloned().collect();
    for p in predictions {
        for label in std::iter::once(&p.gold).chain(p.predicted.as_ref()) {
            if known.insert(label.clone()) {
                axis.push(label.clone());
            }
        }
    }
    let position: BTreeMap<&str, usize> = axis
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let n = axis.len();
    let abstain_col = n;
    let mut counts = vec![vec![0usize; n + 1]; n];
    for p in predictions {
        let row = position[p.gold.as_str()];
        let col = p
            .predicted
            .as_deref()
            .map(|l| position[l])
            .unwrap_or(abstain_col);
        counts[row][col] += 1;
    }
    let cell = 18i32;
    let left = 330i32;
    let top = 330i32;
    let width = (left + cell * (n as i32 + 1) + 120) as u32;
    let height = (top + cell * n as i32 + 80) as u32;
    let root: Area<'_> = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        format!("Confusion matrix, {strategy}: rows gold, columns predicted, shade = share of the gold label"),
        (20, 20),
        TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Left, VPos::Top)),
    ))?;
    let base = RGBColor(8, 48, 107);
    for (r, row) in counts.iter().enumerate() {
        let support: usize = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let x = left + c as i32 * cell;
            let y = top + r as i32 * cell;
            let share = if support == 0 {
                0.0
            } else {
                count as f64 / support as f64
            };
            let fill = if count == 0 {
                if r == c {
                    RGBColor(235, 235, 235)
                } else {
                    WHITE
                }
            } else {
                // White to dark blue; at least a visible tint for one clause.
                let t = 0.12 + 0.88 * share;
                RGBColor(
                    (255.0 - t * (255.0 - base.0 as f64)) as u8,
                    (255.0 - t * (255.0 - base.1 as f64)) as u8,
                    (255.0 - t * (255.0 - base.2 as f64)) as u8,
                )
            };
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                fill.filled(),
            ))?;
            if count > 0 {
                let ink = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x + cell / 2, y + cell / 2),
                    TextStyle::from((FONT, 10).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }
    }
    // Grid lines every ten labels to follow rows and columns by eye.
    let grid = BLACK.mix(0.25);
    for k in (0..=n).step_by(10).chain(std::iter::once(n)) {
        let offset = k as i32 * cell;
        root.draw(&PathElement::new(
            vec![
                (left, top + offset),
                (left + cell * (n as i32 + 1), top + offset),
            ],
            grid,
        ))?;
        root.draw(&PathElement::new(
            vec![(left + offset, top), (left + offset, top + cell * n as i32)],
            grid,
        ))?;
    }
    let label_style =
        TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let column_style = TextStyle::from((FONT, 12).into_font().transform(FontTransform::Rotate270))
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, label) in axis
        .iter()
        .chain(std::iter::once(&"(abstained)".to_owned()))
        .enumerate()
    {
        let text = shorten(label, 40);
        if i < n {
            root.draw(&Text::new(
                text.clone(),
                (left - 6, top + i as i32 * cell + cell / 2),
                label_style.clone(),
            ))?;
        }
        root.draw(&Text::new(
            text,
            (left + i as i32 * cell + cell / 2, top - 6),
            column_style.clone(),
        ))?;
    }
    root.present()?;
    Ok(())
}
