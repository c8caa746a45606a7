//! The stack description (`OrchestratorService.Info`) as JSON.

use std::collections::BTreeMap;

use lextral_proto::v1::OrchestratorServiceInfoResponse;

/// The Info as JSON (REST `GET /v1/info`, eval's run.json): the defaults
/// and the fine-tuned manifest parsed, the index summarised per split.
pub fn to_json(info: OrchestratorServiceInfoResponse) -> serde_json::Value {
    let defaults: serde_json::Value =
        serde_json::from_str(&info.defaults_json).unwrap_or(serde_json::Value::Null);
    let embedder = info.embedder.map(|e| {
        serde_json::json!({
            "model_id": e.model_id, "dimension": e.dimension,
            "max_sequence_length": e.max_sequence_length, "pooling": e.pooling,
            "normalize": e.normalize,
        })
    });
    let index = info.index.map(|s| {
        let mut per_split: BTreeMap<String, u64> = BTreeMap::new();
        for count in &s.labels {
            *per_split.entry(count.split.clone()).or_default() += count.count;
        }
        let labels: std::collections::BTreeSet<&str> =
            s.labels.iter().map(|c| c.label.as_str()).collect();
        serde_json::json!({
            "total": s.total, "dimension": s.dimension,
            "labels": labels.len(), "per_split": per_split,
        })
    });
    let finetuned = info.finetuned.map(|f| {
        let mut manifest: serde_json::Value =
            serde_json::from_str(&f.manifest_json).unwrap_or(serde_json::Value::Null);
        // The label list is long and already in labels.txt's hash.
        if let Some(object) = manifest.as_object_mut() {
            object.remove("labels");
        }
        serde_json::json!({ "method": f.method, "labels": f.labels.len(), "manifest": manifest })
    });
    let prompt = info.prompt.map(|p| {
        serde_json::json!({
            "backend": p.backend, "model": p.model, "ready": p.ready,
            "constrained": p.constrained,
            "input_price_per_million": p.input_price_per_million,
            "output_price_per_million": p.output_price_per_million,
        })
    });
    serde_json::json!({
        "version": info.version,
        "defaults": defaults,
        "embedder": embedder,
        "index": index,
        "finetuned": finetuned,
        "prompt": prompt,
        "errors": info.errors.into_iter().collect::<BTreeMap<_, _>>(),
    })
}
