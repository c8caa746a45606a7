//! The scikit-learn fixture's predictions, shared by the eval tests.

use lextral_eval::Prediction;

/// `fixtures/sklearn_predictions.jsonl` as predictions of `strategy`, with
/// made-up latencies (20–56 ms) and one clause finished every 30 ms.
pub fn fixture_predictions(strategy: &str) -> Vec<Prediction> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sklearn_predictions.jsonl"
    ))
    .unwrap();
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            Prediction {
                index,
                text_sha256: String::new(),
                gold: row["gold"].as_str().unwrap().to_owned(),
                predicted: row["predicted"].as_str().map(str::to_owned),
                confidence: row["confidence"].as_f64(),
                strategy: strategy.to_owned(),
                answered_by: None,
                latency_ms: 20.0 + (index % 37) as f64,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
                session: 0,
                finished_ms: 30.0 * (index + 1) as f64,
            }
        })
        .collect()
}
