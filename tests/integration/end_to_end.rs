//! Health, reflection, ingest and classification through the real path.

use std::time::Duration;

use lextral_integration_tests::{fresh_database, ledgar, start_stack, Stack};
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::{ClassifyRequest, IngestRequest, KnnOptions, LabeledText, Strategy};
use serde_json::{json, Value};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn wait_serving(url: String, service: &str) {
    let mut client = HealthClient::new(lextral_integration_tests::channel(url).await);
    for _ in 0..100 {
        let status = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} never became SERVING");
}

async fn list_services(url: String) -> Vec<String> {
    let mut client = ServerReflectionClient::new(lextral_integration_tests::channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::iter(vec![item])
}

/// GET `url` and parse the JSON body.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn services_report_health_and_reflection() {
    let database = fresh_database().await;
    let stack = start_stack(&database, |_| {}).await;
    wait_serving(Stack::url(stack.embedder), "lextral.v1.EmbedderService").await;
    wait_serving(Stack::url(stack.retriever), "lextral.v1.RetrieverService").await;
    wait_serving(
        Stack::url(stack.orchestrator),
        "lextral.v1.OrchestratorService",
    )
    .await;

    for (addr, service) in [
        (stack.embedder, "lextral.v1.EmbedderService"),
        (stack.retriever, "lextral.v1.RetrieverService"),
        (stack.orchestrator, "lextral.v1.OrchestratorService"),
    ] {
        let services = list_services(Stack::url(addr)).await;
        assert!(services.iter().any(|s| s == service), "{services:?}");
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "{services:?}"
        );
    }

    let http = reqwest::Client::new();
    let ready: Value = get_json(&http, &stack.rest("/readyz")).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    // Per strategy: kNN answers; no prompt-classifier runs here, so the
    // prompt strategies name it.
    assert_eq!(ready["strategies"]["knn"], "ready", "{ready}");
    let zero_shot = ready["strategies"]["zero-shot"].as_str().unwrap();
    assert!(
        zero_shot.starts_with("unavailable: prompt-classifier"),
        "{ready}"
    );
    wait_serving(
        Stack::url(stack.orchestrator),
        "lextral.v1.OrchestratorService.knn",
    )
    .await;
    let health = http.get(stack.rest("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let spec: Value = get_json(&http, &stack.rest("/openapi.json")).await;
    assert!(spec["paths"]["/v1/classify"]["post"].is_object(), "{spec}");
    for page in ["/", "/docs"] {
        let response = http.get(stack.rest(page)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("<html"));
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn ingest_then_classify_end_to_end() {
    let database = fresh_database().await;
    let stack = start_stack(&database, |_| {}).await;
    let mut client = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();

    let train = ledgar("train", 240);
    let items: Vec<LabeledText> = train
        .iter()
        .map(|(text, label)| LabeledText {
            text: text.clone(),
            label: label.clone(),
            split: "train".into(),
        })
        .collect();
    let mut inserted = 0;
    for batch in items.chunks(80) {
        let response = client
            .ingest(IngestRequest {
                items: batch.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        inserted += response.inserted;
    }
    assert_eq!(inserted, 240);
    // Ingesting the same clauses again changes nothing.
    let again = client
        .ingest(IngestRequest {
            items: items[..80].to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.inserted, again.updated, again.unchanged), (0, 0, 80));

    // A stored clause finds itself as nearest neighbour (k = 1 through gRPC).
    let response = client
        .classify(ClassifyRequest {
            texts: train[..20].iter().map(|(t, _)| t.clone()).collect(),
            strategy: Strategy::Knn as i32,
            knn: Some(KnnOptions {
                k: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 20);
    for (result, (_, gold)) in response.results.iter().zip(&train) {
        assert_eq!(&result.label, gold);
        assert!(result.neighbors[0].similarity > 0.999);
    }
    let stages: Vec<&str> = response
        .latencies
        .iter()
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(stages, ["embed", "search", "vote", "total"]);

    // Unseen clauses through REST: the answer carries evidence and a ranking.
    let validation = ledgar("validation", 10);
    let http = reqwest::Client::new();
    let reply: Value = http
        .post(stack.rest("/v1/classify"))
        .json(&json!({
            "texts": validation.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            "strategy": "knn",
            "options": { "k": 10, "vote": "softmax", "temperature": 0.05 }
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results.len(), 10, "{reply}");
    let known: Vec<&str> = train.iter().map(|(_, l)| l.as_str()).collect();
    for result in results {
        assert!(
            known.contains(&result["label"].as_str().unwrap()),
            "{result}"
        );
        assert_eq!(result["neighbors"].as_array().unwrap().len(), 10);
        let confidence = result["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence));
        assert_eq!(result["alternatives"][0]["label"], result["label"]);
        assert_eq!(result["answered_by"], "knn");
    }
    assert!(reply["latency_ms"]["total"].as_f64().unwrap() > 0.0);

    // Abstention: an impossible confidence floor.
    let reply: Value = http
        .post(stack.rest("/v1/classify"))
        .json(&json!({ "texts": [validation[0].0], "options": { "min_confidence": 1.0, "k": 20 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = &reply["results"][0];
    if result["confidence"].as_f64().unwrap() < 1.0 {
        assert_eq!(result["abstained"], true, "{reply}");
        assert_eq!(result["label"], "");
        assert!(result["abstain_reason"]
            .as_str()
            .unwrap()
            .contains("min_confidence"));
    }

    // Labels come from the index.
    let labels: Value = get_json(&http, &stack.rest("/v1/labels")).await;
    let mut expected: Vec<&str> = known.clone();
    expected.sort();
    expected.dedup();
    let got: Vec<&str> = labels["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(got, expected);

    // The stack describes itself; no prompt-classifier runs here, so it is
    // named in `errors`.
    let info: Value = get_json(&http, &stack.rest("/v1/info")).await;
    assert_eq!(info["index"]["total"], 240, "{info}");
    assert_eq!(info["index"]["dimension"], 384);
    assert_eq!(info["embedder"]["dimension"], 384);
    assert_eq!(info["defaults"]["knn"]["k"], 20);
    assert_eq!(info["defaults"]["cascade"]["min_confidence"], 0.2);
    assert!(info["errors"]["prompt-classifier"].is_string(), "{info}");

    // The Prometheus recorder saw the calls.
    let rendered = lextral_common::metrics::prometheus_handle().render();
    assert!(
        rendered.contains("lextral_grpc_requests_total"),
        "{rendered}"
    );
    assert!(rendered.contains("lextral_http_requests_total"));
    stack.shutdown().await;
}
