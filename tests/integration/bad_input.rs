//! Bad input gets a clear error (gRPC status with a message, HTTP 4xx with a
//! JSON body) and never changes stored data.

use lextral_integration_tests::{
    fresh_database, fresh_embedded_store, post_classify as post, start_stack, with_hnsw, Stack,
};
use lextral_proto::v1::embedder_service_client::EmbedderServiceClient;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::retriever_service_client::RetrieverServiceClient;
use lextral_proto::v1::{
    ClassifyRequest, DeleteRequest, EmbedRequest, KnnOptions, QueryVector, SearchRequest,
    StatsRequest, Strategy, UpsertRecord, UpsertRequest,
};
use serde_json::{json, Value};
use tonic::Code;

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rest_rejects_bad_requests_with_json_errors() {
    let database = fresh_database().await;
    let stack = start_stack(&database, |_| {}).await;
    let clause = "This Agreement shall be governed by the laws of New York.";

    let (status, body) = post(&stack, json!({ "texts": [] })).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(message(&body).contains("texts must not be empty"), "{body}");

    let (status, body) = post(&stack, json!({ "texts": [clause, "  "] })).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("text 1 is empty"), "{body}");

    let huge = "a".repeat(1024 * 1024);
    let (status, body) = post(&stack, json!({ "texts": [huge] })).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("1048576 bytes"), "{body}");

    for k in [0, 1000] {
        let (status, body) =
            post(&stack, json!({ "texts": [clause], "options": { "k": k } })).await;
        assert_eq!(status, 400, "k={k}");
        assert!(message(&body).contains("k must be in 1..=100"), "{body}");
    }

    let (status, body) = post(
        &stack,
        json!({ "texts": [clause], "strategy": "telepathy" }),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("unknown strategy"), "{body}");

    let (status, body) = post(
        &stack,
        json!({ "texts": [clause], "options": { "vote": "loudest" } }),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("unknown vote"), "{body}");

    let (status, body) = post(&stack, json!({ "texts": [clause], "options": { "kk": 3 } })).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("unknown field"), "{body}");

    let (status, body) = post(
        &stack,
        json!({ "texts": [clause], "strategy": "zero-shot" }),
    )
    .await;
    // Nothing is indexed, so there is no label set to prompt with.
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "failed_precondition");
    assert!(message(&body).contains("index is empty"), "{body}");

    let response = reqwest::Client::new()
        .post(stack.rest("/v1/classify"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let response = reqwest::Client::new()
        .get(stack.rest("/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    stack.shutdown().await;
}

#[tokio::test]
async fn grpc_rejects_bad_requests_and_keeps_data_intact_pgvector() {
    grpc_rejects_bad_requests_and_keeps_data_intact(&fresh_database().await).await;
}

#[tokio::test]
async fn grpc_rejects_bad_requests_and_keeps_data_intact_pgvector_hnsw() {
    grpc_rejects_bad_requests_and_keeps_data_intact(&with_hnsw(&fresh_database().await)).await;
}

#[tokio::test]
async fn grpc_rejects_bad_requests_and_keeps_data_intact_embedded() {
    grpc_rejects_bad_requests_and_keeps_data_intact(&fresh_embedded_store()).await;
}

async fn grpc_rejects_bad_requests_and_keeps_data_intact(store: &str) {
    let stack = start_stack(store, |_| {}).await;
    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let mut retriever = RetrieverServiceClient::connect(Stack::url(stack.retriever))
        .await
        .unwrap();
    let mut embedder = EmbedderServiceClient::connect(Stack::url(stack.embedder))
        .await
        .unwrap();

    let classify = |texts: Vec<String>, strategy: Strategy, k: Option<u32>| ClassifyRequest {
        texts,
        strategy: strategy as i32,
        knn: Some(KnnOptions {
            k,
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = orchestrator
        .classify(classify(vec![], Strategy::Knn, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = orchestrator
        .classify(classify(vec![String::new()], Strategy::Knn, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("text 0 is empty"));
    for k in [0, 1000] {
        let status = orchestrator
            .classify(classify(vec!["a clause".into()], Strategy::Knn, Some(k)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "k={k}");
    }
    let mut unknown = classify(vec!["a clause".into()], Strategy::Knn, None);
    unknown.strategy = 42;
    let status = orchestrator.classify(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("unknown strategy"));
    let status = orchestrator
        .classify(classify(
            vec!["a clause".into()],
            Strategy::Unspecified,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = orchestrator
        .classify(classify(vec!["a clause".into()], Strategy::Rag, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("index is empty"), "{status:?}");

    let status = embedder
        .embed(EmbedRequest {
            texts: vec!["x".repeat(1024 * 1024)],
            normalize: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("bytes; the limit is"),
        "{}",
        status.message()
    );
    let status = embedder
        .embed(EmbedRequest {
            texts: vec![],
            normalize: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Wrong dimensions name both numbers.
    let status = retriever
        .search(SearchRequest {
            queries: vec![QueryVector {
                values: vec![0.1; 3],
            }],
            k: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("dimension 3") && status.message().contains("384"),
        "{}",
        status.message()
    );

    let good = |text: &str| UpsertRecord {
        text: text.into(),
        label: "Notices".into(),
        split: "train".into(),
        embedding: vec![0.05; 384],
    };
    retriever
        .upsert(UpsertRequest {
            records: vec![good("kept clause")],
        })
        .await
        .unwrap();
    let before = retriever
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .total;
    assert_eq!(before, 1);

    let mut short = good("short vector");
    short.embedding.truncate(10);
    let status = retriever
        .upsert(UpsertRequest {
            records: vec![good("first"), short],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("record 1 has dimension 10"),
        "{}",
        status.message()
    );

    // A bad record late in the batch (NUL, which PostgreSQL text cannot
    // hold): the batch's earlier rows must not survive.
    let status = retriever
        .upsert(UpsertRequest {
            records: vec![good("second"), good("third"), good("bad\0text")],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let after = retriever
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .total;
    assert_eq!(after, before, "a failed batch left rows behind");

    let status = retriever
        .search(SearchRequest {
            queries: vec![QueryVector {
                values: vec![0.1; 384],
            }],
            k: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = retriever
        .delete(DeleteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = retriever
        .delete(DeleteRequest {
            ids: vec!["not-a-number".into()],
            splits: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        retriever
            .stats(StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .total,
        1
    );
    stack.shutdown().await;
}
