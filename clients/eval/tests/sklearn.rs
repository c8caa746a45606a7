//! The report's metrics equal scikit-learn's on the same predictions, to 4
//! decimals. The expected values were computed once by
//! `fixtures/make_sklearn_fixture.py` (scikit-learn) and committed.

use lextral_eval::report::{ReportContext, StrategyReport};
use serde_json::Value;

mod common;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn expected() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/sklearn_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[track_caller]
fn close(what: &str, ours: f64, sklearn: &Value) {
    let sklearn = sklearn
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no value"));
    assert!(
        (ours - sklearn).abs() < 5e-5,
        "{what}: ours {ours:.6}, scikit-learn {sklearn:.6}"
    );
}

#[test]
fn report_metrics_match_scikit_learn() {
    let predictions = common::fixture_predictions("fixture");
    let expected = expected();
    let report = StrategyReport::build(
        ReportContext {
            strategy: "fixture",
            split: "fixture",
            data: FIXTURES,
            total: predictions.len(),
            concurrency: 1,
            load: None,
            options: Value::Null,
        },
        &predictions,
    );
    assert_eq!(report.scores.n as u64, expected["n"].as_u64().unwrap());
    close("accuracy", report.scores.accuracy, &expected["accuracy"]);
    close(
        "micro precision",
        report.scores.micro_precision,
        &expected["micro_precision"],
    );
    close(
        "micro recall",
        report.scores.micro_recall,
        &expected["micro_recall"],
    );
    close("micro F1", report.scores.micro_f1, &expected["micro_f1"]);
    close(
        "macro precision",
        report.scores.macro_precision,
        &expected["macro_precision"],
    );
    close(
        "macro recall",
        report.scores.macro_recall,
        &expected["macro_recall"],
    );
    close("macro F1", report.scores.macro_f1, &expected["macro_f1"]);
    close(
        "macro F1 over gold labels",
        report.scores.macro_f1_gold_labels,
        &expected["macro_f1_gold_labels"],
    );
    close(
        "weighted precision",
        report.scores.weighted_precision,
        &expected["weighted_precision"],
    );
    close(
        "weighted recall",
        report.scores.weighted_recall,
        &expected["weighted_recall"],
    );
    close(
        "weighted F1",
        report.scores.weighted_f1,
        &expected["weighted_f1"],
    );

    let per_label = expected["per_label"].as_object().unwrap();
    assert_eq!(report.scores.per_label.len(), per_label.len());
    for (label, want) in per_label {
        let ours = &report.scores.per_label[label];
        close(
            &format!("{label} precision"),
            ours.precision,
            &want["precision"],
        );
        close(&format!("{label} recall"), ours.recall, &want["recall"]);
        close(&format!("{label} F1"), ours.f1, &want["f1"]);
        assert_eq!(
            ours.support as u64,
            want["support"].as_u64().unwrap(),
            "{label}"
        );
    }

    let calibration = report.calibration.as_ref().expect("confidences given");
    let want = &expected["calibration"];
    close("ECE", calibration.ece, &want["ece"]);
    let counts: Vec<u64> = calibration.bins.iter().map(|b| b.count as u64).collect();
    let want_counts: Vec<u64> = want["bin_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts, want_counts, "reliability bin counts");
    let nonempty: Vec<_> = calibration.bins.iter().filter(|b| b.count > 0).collect();
    for (i, bin) in nonempty.iter().enumerate() {
        close(
            &format!("bin {i} accuracy"),
            bin.accuracy,
            &want["bin_accuracy"][i],
        );
        close(
            &format!("bin {i} mean confidence"),
            bin.mean_confidence,
            &want["bin_mean_confidence"][i],
        );
    }

    for (i, want) in expected["top_confusions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ours = &report.top_confusions[i];
        assert_eq!(
            (
                ours.gold.as_str(),
                ours.predicted.as_str(),
                ours.count as u64
            ),
            (
                want["gold"].as_str().unwrap(),
                want["predicted"].as_str().unwrap(),
                want["count"].as_u64().unwrap()
            ),
            "confusion {i}"
        );
    }
}
