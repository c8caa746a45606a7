//! The embedder reproduces sentence-transformers.

use lextral_embedding::{resolve_model_dir, SentenceEmbedder};
use lextral_integration_tests::{model_dir, shared_data};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The fixture: texts with vectors from sentence-transformers (made by
/// scripts/make_reference_vectors.py; kept in ../shared/data/reference).
fn fixture() -> Vec<serde_json::Value> {
    let path = shared_data()
        .join("reference")
        .join("all-MiniLM-L6-v2.vectors.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn vectors_match_sentence_transformers() {
    let dir = resolve_model_dir(&model_dir()).await.unwrap();
    let embedder = SentenceEmbedder::load(&dir, "all-MiniLM-L6-v2").unwrap();
    assert_eq!(embedder.info().dimension, 384);
    assert_eq!(embedder.info().max_seq_len, 256);
    assert!(embedder.info().normalize);

    let cases = fixture();
    assert!(cases.len() >= 20, "fixture has {} texts", cases.len());
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    // All at once (padded, length-bucketed batches) and one by one must agree
    // with the reference.
    let batched = embedder.embed(&texts, true, 8192).unwrap();
    let mut worst = f64::MAX;
    for (case, got) in cases.iter().zip(&batched) {
        let expected: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let similarity = cosine(&got.values, &expected);
        worst = worst.min(similarity);
        let preview: String = case["text"].as_str().unwrap().chars().take(40).collect();
        assert!(similarity >= 0.999, "cosine {similarity} for {preview:?}");
        assert_eq!(
            got.token_count as u64,
            case["tokens_untruncated"].as_u64().unwrap(),
            "token count for {preview:?}"
        );
        assert_eq!(
            got.truncated,
            case["truncated"].as_bool().unwrap(),
            "truncation for {preview:?}"
        );
        let norm: f32 = got.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    for (text, batched) in texts.iter().zip(&batched).take(5) {
        let single = embedder
            .embed(std::slice::from_ref(text), true, 8192)
            .unwrap();
        assert!(cosine(&single[0].values, &batched.values) > 0.99999);
    }
    eprintln!("worst cosine to sentence-transformers: {worst:.6}");
}

#[tokio::test]
async fn a_full_queue_answers_resource_exhausted() {
    use lextral_embedder::{EmbedQueue, EmbedderError, QueueLimits};

    let dir = resolve_model_dir(&model_dir()).await.unwrap();
    let embedder = SentenceEmbedder::load(&dir, "all-MiniLM-L6-v2").unwrap();
    let queue = std::sync::Arc::new(EmbedQueue::start(embedder, QueueLimits::requests(1, 8192)));
    let long = "The Company shall indemnify the Executive to the fullest extent. ".repeat(30);
    let calls = (0..12).map(|_| {
        let queue = queue.clone();
        let text = long.clone();
        tokio::spawn(async move { queue.embed(vec![text; 8], None).await })
    });
    let results = futures::future::join_all(calls).await;
    let rejected = results
        .iter()
        .filter(|r| {
            matches!(
                r.as_ref().unwrap(),
                Err(EmbedderError::QueueFull { capacity: 1 })
            )
        })
        .count();
    let served = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert!(rejected > 0, "no call was rejected");
    assert!(served > 0, "no call was served");
    assert_eq!(rejected + served, 12);
}
