//! ZERO_SHOT and RAG end to end: orchestrator → retriever → prompt
//! classifier → an LLM. The chat backend talks to a local server of this
//! test's own that speaks the OpenAI/Mistral chat-completions format; the
//! local backend runs the real Gemma 3 270M.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lextral_integration_tests::{
    fresh_database, ledgar, llm_model, post_classify as post, start_stack_with, Stack,
};
use lextral_prompt_classifier::PromptConfig;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::prompt_classifier_service_client::PromptClassifierServiceClient;
use lextral_proto::v1::{
    ClassifyRequest, IngestRequest, LabeledText, PromptClassifierServiceInfoRequest, PromptOptions,
    Strategy,
};
use serde_json::{json, Value};

/// Prompts the fake LLM received.
type Seen = Arc<Mutex<Vec<String>>>;

/// A chat-completions server that answers like a chatty model: few-shot
/// prompts get the nearest example's label in a sentence, zero-shot prompts
/// get "governing law" (which only fuzzy parsing maps to "Governing Laws").
async fn fake_llm() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = state.clone();
            async move {
                let prompt = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(prompt.clone());
                if prompt.contains("UNAUTHORIZED-TEST") {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"message": "Unauthorized"})),
                    );
                }
                let answer = if prompt.contains("PARAPHRASE-TEST") {
                    "which state law governs".to_owned()
                } else {
                    // The example right before the query: the nearest one
                    // (examples are ordered nearest-last by default).
                    match prompt.split("\nCategory: ").skip(1).last() {
                        Some(rest) => format!(
                            "The most appropriate option is: {}.",
                            rest.lines().next().unwrap_or_default()
                        ),
                    None => "governing law".to_owned(),
                    }
                };
                (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1000, "completion_tokens": 5, "total_tokens": 1005}
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

/// Train clauses with distinct labels, one of them "Governing Laws".
fn distinct_clauses(count: usize) -> Vec<(String, String)> {
    let mut picked: Vec<(String, String)> = Vec::new();
    let train = ledgar("train", 2108);
    if let Some(law) = train.iter().find(|(_, l)| l == "Governing Laws") {
        picked.push(law.clone());
    }
    for (text, label) in train {
        if picked.len() >= count {
            break;
        }
        if !picked.iter().any(|(_, l)| *l == label) {
            picked.push((text, label));
        }
    }
    picked
}

async fn index(stack: &Stack, clauses: &[(String, String)]) {
    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let items = clauses
        .iter()
        .map(|(text, label)| LabeledText {
            text: text.clone(),
            label: label.clone(),
            split: "train".into(),
        })
        .collect();
    orchestrator.ingest(IngestRequest { items }).await.unwrap();
}

#[tokio::test]
async fn zero_shot_and_rag_through_a_chat_api() {
    let (url, seen) = fake_llm().await;
    let prompt = PromptConfig {
        backend: "openai".into(),
        model: Some("mistral-small-latest".into()),
        url: Some(url),
        ..PromptConfig::default()
    };
    let database = fresh_database().await;
    let stack = start_stack_with(&database, None, Some(prompt), |_| {}).await;
    let clauses = distinct_clauses(12);
    index(&stack, &clauses).await;
    let mut indexed: Vec<String> = clauses.iter().map(|(_, l)| l.clone()).collect();
    indexed.sort();

    let query = "This Agreement shall be governed by the laws of the State of New York.";
    let (status, reply) = post(&stack, json!({"texts": [query], "strategy": "zero-shot"})).await;
    assert_eq!(status, 200, "{reply}");
    let result = &reply["results"][0];
    assert_eq!(result["label"], "Governing Laws", "{reply}");
    assert_eq!(result["raw_output"], "governing law");
    assert_eq!(result["answered_by"], "zero-shot");
    assert_eq!(result["usage"]["input_tokens"], 1000);
    // mistral-small-latest's built-in price: $0.1 in / $0.3 out per million.
    let cost = result["usage"]["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (1000.0 * 0.1 + 5.0 * 0.3) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    // The label list in the prompt is the index's label set.
    let zero_shot_prompt = seen.lock().unwrap().last().unwrap().clone();
    let listed: Vec<&str> = zero_shot_prompt
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .collect();
    assert_eq!(
        listed,
        indexed.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(zero_shot_prompt.contains(query));

    // No label name in the answer: the embedder finds the nearest label.
    let (status, reply) = post(
        &stack,
        json!({"texts": ["PARAPHRASE-TEST clause"], "strategy": "zero-shot"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"][0]["label"], "Governing Laws", "{reply}");
    assert_eq!(reply["results"][0]["raw_output"], "which state law governs");

    // RAG on an indexed clause: its nearest example is itself.
    let (text, label) = &clauses[3];
    let (status, reply) = post(&stack, json!({"texts": [text], "strategy": "rag"})).await;
    assert_eq!(status, 200, "{reply}");
    let result = &reply["results"][0];
    assert_eq!(&result["label"], label.as_str(), "{reply}");
    assert_eq!(result["answered_by"], "rag");
    assert_eq!(
        result["neighbors"].as_array().unwrap().len(),
        4,
        "default rag_k"
    );
    assert_eq!(&result["neighbors"][0]["label"], label.as_str());
    let latencies = &reply["latency_ms"];
    for stage in ["embed", "search", "llm", "total"] {
        assert!(
            latencies[stage].as_f64().is_some(),
            "{stage} in {latencies}"
        );
    }
    let rag_prompt = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        rag_prompt.matches("\nCategory: ").count(),
        4,
        "{rag_prompt}"
    );

    // gRPC with k = 2 examples.
    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let response = orchestrator
        .classify(ClassifyRequest {
            texts: vec![clauses[5].0.clone()],
            strategy: Strategy::Rag as i32,
            prompt: Some(PromptOptions {
                k: Some(2),
                max_output_tokens: Some(8),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].label, clauses[5].1);
    assert_eq!(response.results[0].neighbors.len(), 2);

    // Bad options and provider errors are clear.
    let (status, reply) = post(
        &stack,
        json!({"texts": [query], "strategy": "rag", "options": {"k": 0}}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(
        &stack,
        json!({"texts": [query], "strategy": "zero-shot", "options": {"max_output_tokens": 0}}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(
        &stack,
        json!({"texts": ["UNAUTHORIZED-TEST clause"], "strategy": "zero-shot"}),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{reply}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn zero_shot_and_rag_with_the_local_model() {
    let prompt = PromptConfig {
        model: Some(llm_model()),
        ..PromptConfig::default()
    };
    let database = fresh_database().await;
    let stack = start_stack_with(&database, None, Some(prompt), |_| {}).await;
    let mut info_client = PromptClassifierServiceClient::connect(Stack::url(stack.prompt.unwrap()))
        .await
        .unwrap();
    // The model loads in the background; wait for it (bounded).
    let mut ready = false;
    for _ in 0..120 {
        let info = info_client
            .info(PromptClassifierServiceInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        if info.ready {
            assert_eq!(info.backend, "local-gguf");
            assert!(info.constrained);
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ready, "the local model did not load within 60 s");
    let clauses = distinct_clauses(10);
    index(&stack, &clauses).await;
    let labels: Vec<&str> = clauses.iter().map(|(_, l)| l.as_str()).collect();

    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let query = "This Agreement shall be governed by and construed in accordance with the laws of the State of Delaware.";
    for strategy in [Strategy::ZeroShot, Strategy::Rag] {
        let response = orchestrator
            .classify(ClassifyRequest {
                texts: vec![query.to_owned()],
                strategy: strategy as i32,
                prompt: Some(PromptOptions {
                    k: Some(2),
                    max_output_tokens: None,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let result = &response.results[0];
        // Constrained decoding: the answer is always one of the labels.
        assert!(labels.contains(&result.label.as_str()), "{result:?}");
        assert_eq!(result.raw_output, result.label);
        assert!(!result.abstained);
        assert!(result.confidence > 0.0 && result.confidence <= 1.0);
        assert!(result.input_tokens > 50 && result.output_tokens >= 1);
        assert_eq!(result.cost_usd, 0.0);
        assert_eq!(result.answered_by, strategy as i32);
    }
    stack.shutdown().await;
}
