//! `report.html` opens in headless Chromium with every plot decoded. The
//! page marks `data-images-loaded="<decoded>/<total>"` on <body> once the
//! browser has loaded it; the test reads that from Chromium's DOM dump.
//!
//! Chromium comes from Debian's `chromium` package (scripts/test.sh installs
//! it and sets LEXTRAL_REQUIRE_CHROMIUM=1, so CI cannot skip this test);
//! `LEXTRAL_CHROMIUM` names another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use lextral_eval::report::{Load, ReportContext, RunReport, StrategyReport};
use lextral_eval::{files, write_run_reports, Prediction};

mod common;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LEXTRAL_CHROMIUM") {
        return Some(path.into());
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Two strategies from the scikit-learn fixture: the fixture itself and a
/// copy that abstains on low confidence and is slower, so every plot has
/// two series.
fn run_reports() -> (Vec<StrategyReport>, Vec<Vec<Prediction>>, Vec<String>) {
    let first = common::fixture_predictions("knn");
    let second: Vec<Prediction> = first
        .iter()
        .map(|p| Prediction {
            strategy: "rag".into(),
            predicted: p
                .predicted
                .clone()
                .filter(|_| p.confidence.unwrap_or(0.0) > 0.3),
            latency_ms: p.latency_ms * 40.0,
            input_tokens: 500,
            output_tokens: 4,
            cost_usd: 0.0001,
            finished_ms: p.finished_ms * 40.0,
            ..p.clone()
        })
        .collect();
    let mut labels: Vec<String> = first.iter().map(|p| p.gold.clone()).collect();
    labels.sort();
    labels.dedup();
    let load = Load {
        requests_per_day: 100_000.0,
        infra_usd_per_hour: 0.1,
    };
    let reports = [&first, &second]
        .iter()
        .map(|predictions| {
            StrategyReport::build(
                ReportContext {
                    strategy: &predictions[0].strategy,
                    split: "fixture",
                    data: "fixture",
                    total: predictions.len(),
                    concurrency: 1,
                    load: Some(load),
                    options: serde_json::json!({}),
                },
                predictions,
            )
        })
        .collect();
    (reports, vec![first, second], labels)
}

fn write(dir: &Path) -> usize {
    let (strategies, predictions, labels) = run_reports();
    let report = RunReport {
        complete: true,
        run: lextral_eval::RunRecord {
            git_commit: "test".into(),
            ..Default::default()
        },
        strategies,
    };
    write_run_reports(dir, &report, &predictions, &labels).unwrap();
    std::fs::read_dir(dir.join(files::PLOTS)).unwrap().count()
}

#[test]
fn run_folder_has_reports_and_png_plots() {
    let dir = tempfile::tempdir().unwrap();
    let plots = write(dir.path());
    // f1, precision/recall, latency, reliability + per-label F1 and
    // confusion matrix per strategy.
    assert_eq!(plots, 8);
    for entry in std::fs::read_dir(dir.path().join(files::PLOTS)).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
    let markdown = std::fs::read_to_string(dir.path().join(files::REPORT_MD)).unwrap();
    assert!(
        markdown.contains("| knn |") && markdown.contains("| rag |"),
        "{markdown}"
    );
    assert!(markdown.contains("![F1 per strategy](plots/f1.png)"));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(files::REPORT_JSON)).unwrap(),
    )
    .unwrap();
    assert_eq!(report["strategies"].as_array().unwrap().len(), 2);
    let html = std::fs::read_to_string(dir.path().join(files::REPORT_HTML)).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), plots);
}

#[test]
fn report_html_renders_in_headless_chromium_with_every_plot() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("LEXTRAL_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "Chromium is required (LEXTRAL_REQUIRE_CHROMIUM=1) but was not found"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plots = write(dir.path());
    let page = dir.path().join(files::REPORT_HTML);
    let profile = tempfile::tempdir().unwrap();
    let screenshot = dir.path().join("screenshot.png");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
    ];
    let output = Command::new(&chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains(&format!("data-images-loaded=\"{plots}/{plots}\"")),
        "Chromium did not decode every plot; status {:?}, stderr {}, body tag {:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        dom.find("<body").map(|i| &dom[i..(i + 120).min(dom.len())])
    );
    // A screenshot as a second look: the page paints (a PNG that is not blank).
    let output = Command::new(&chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--window-size=1280,2400")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let bytes = std::fs::read(&screenshot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    if let Ok(keep) = std::env::var("LEXTRAL_KEEP_RENDER") {
        std::fs::copy(&screenshot, Path::new(&keep).join("screenshot.png")).unwrap();
        std::fs::copy(&page, Path::new(&keep).join("report.html")).unwrap();
        for entry in std::fs::read_dir(dir.path().join(files::PLOTS)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
        }
    }
}
