//! `lextral train` models served by the finetuned-classifier, through the
//! FINETUNED and CASCADE strategies, Reload, and bad model directories.

use std::path::Path;

use lextral_finetuned_classifier::{Classifier, Method};
use lextral_integration_tests::{
    fresh_database, ledgar, ledgar_items, model_dir, post_classify as classify,
    start_stack_with_model, Stack,
};
use lextral_proto::v1::finetuned_classifier_service_client::FinetunedClassifierServiceClient;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::{
    FinetunedClassifierServiceClassifyRequest, FinetunedClassifierServiceInfoRequest,
    IngestRequest, ReloadRequest,
};
use lextral_training::{TrainData, TrainOptions};
use serde_json::{json, Value};

/// Labelled data from the shared LEDGAR files, labels as indices.
fn data(train_limit: usize, validation_limit: usize) -> TrainData {
    let train = ledgar("train", train_limit);
    let validation = ledgar("validation", validation_limit);
    let mut labels: Vec<String> = train.iter().map(|(_, l)| l.clone()).collect();
    labels.extend(validation.iter().map(|(_, l)| l.clone()));
    labels.sort();
    labels.dedup();
    let index = |l: &String| labels.iter().position(|x| x == l).unwrap();
    TrainData {
        train: train.iter().map(|(t, l)| (t.clone(), index(l))).collect(),
        validation: validation
            .iter()
            .map(|(t, l)| (t.clone(), index(l)))
            .collect(),
        labels: labels.clone(),
        data_sha256: "test".into(),
    }
}

/// [`data`] without the clauses of one label (a model that cannot produce it).
fn data_without(train_limit: usize, validation_limit: usize, label: &str) -> TrainData {
    let full = data(train_limit, validation_limit);
    let keep = |rows: &[(String, usize)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(t, i)| (t.clone(), full.labels[*i].clone()))
            .filter(|(_, l)| l != label)
            .collect()
    };
    let (train, validation) = (keep(&full.train), keep(&full.validation));
    let mut labels: Vec<String> = train
        .iter()
        .chain(&validation)
        .map(|(_, l)| l.clone())
        .collect();
    labels.sort();
    labels.dedup();
    let index = |rows: Vec<(String, String)>| -> Vec<(String, usize)> {
        rows.into_iter()
            .map(|(t, l)| {
                let i = labels.iter().position(|x| *x == l).unwrap();
                (t, i)
            })
            .collect()
    };
    TrainData {
        train: index(train),
        validation: index(validation),
        labels: labels.clone(),
        data_sha256: "test".into(),
    }
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

fn options(method: Method) -> TrainOptions {
    let mut options = TrainOptions {
        method,
        embed_model: model_dir(),
        candidates: vec![lextral_training::Learner::Svm {
            c: 1.0,
            balanced: true,
        }],
        cv_folds: 3,
        progress: false,
        max_minutes: 10.0,
        ..TrainOptions::default()
    };
    options.finetune.epochs = 1;
    options.finetune.max_seq_length = 48;
    options.finetune.batch_size = 8;
    options
}

async fn train(
    data: &TrainData,
    method: Method,
    out: &Path,
) -> lextral_finetuned_classifier::Manifest {
    lextral_training::train(data, &options(method), out)
        .await
        .expect("training succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_model_serves_finetuned_and_cascade_and_reloads() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let lexical_data = data(1000, 366);
    let manifest = train(&lexical_data, Method::Lexical, &model).await;
    let validation = manifest.validation.as_ref().unwrap();
    // 1000 clauses, ~90 labels: far above chance (~0.06), a real model.
    assert!(validation.scores.micro_f1 > 0.6, "{validation:?}");
    assert!(validation.nll_calibrated <= validation.nll_uncalibrated + 1e-9);
    assert_eq!(manifest.labels, lexical_data.labels);
    // Chosen by 3-fold cross-validation over train + validation, then
    // refitted on both.
    let cv = manifest.cross_validation.as_ref().expect("cross-validated");
    assert_eq!((cv.folds, cv.examples), (3, 1366));
    assert_eq!(cv.chosen, "lexical svm C=1 balanced");
    let row = &cv.candidates[0];
    assert_eq!(row.folds.len(), 3);
    assert!(row.micro_f1_mean > 0.5 && row.micro_f1_sd >= 0.0, "{row:?}");
    assert!((manifest.training.fit_examples, manifest.training.refit) == (1366, true));
    // Same seed, same data: the same model.
    let small = data(200, 50);
    let first = train(&small, Method::Lexical, &work.path().join("a")).await;
    let second = train(&small, Method::Lexical, &work.path().join("b")).await;
    assert_eq!(first.content_hash, second.content_hash);

    let database = fresh_database().await;
    let stack = start_stack_with_model(&database, Some(model.clone()), |_| {}).await;
    let mut finetuned = FinetunedClassifierServiceClient::connect(Stack::url(stack.finetuned))
        .await
        .unwrap();
    let info = finetuned
        .info(FinetunedClassifierServiceInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.method, "lexical");
    assert_eq!(info.labels, lexical_data.labels);
    let served: Value = serde_json::from_str(&info.manifest_json).unwrap();
    assert_eq!(served["content_hash"], manifest.content_hash.as_str());

    // REST, strategy finetuned: labels, calibrated probabilities, top-k.
    let clauses = ledgar("validation", 40);
    let (_, reply) = classify(
        &stack,
        json!({
            "texts": clauses.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            "strategy": "finetuned",
            "options": { "top_k": 3 }
        }),
    )
    .await;
    let results = reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(results.len(), 40);
    let mut correct = 0;
    for (result, (_, gold)) in results.iter().zip(&clauses) {
        assert_eq!(result["answered_by"], "finetuned", "{result}");
        let confidence = result["confidence"].as_f64().unwrap();
        assert!(confidence > 0.0 && confidence <= 1.0);
        let alternatives = result["alternatives"].as_array().unwrap();
        assert_eq!(alternatives.len(), 3);
        assert_eq!(alternatives[0]["label"], result["label"]);
        correct += usize::from(result["label"] == gold.as_str());
    }
    assert!(correct >= 24, "{correct}/40 correct");

    // CASCADE: index some clauses, then force every answer to kNN (threshold
    // 1.0) or keep them all fine-tuned (threshold 0).
    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let items = ledgar_items("train", 30);
    orchestrator.ingest(IngestRequest { items }).await.unwrap();
    for (threshold, expected) in [(1.0, "knn"), (0.0, "finetuned")] {
        let (_, reply) = classify(
            &stack,
            json!({
                "texts": [clauses[0].0, clauses[1].0],
                "strategy": "cascade",
                "options": { "cascade_min_confidence": threshold }
            }),
        )
        .await;
        for result in reply["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"))
        {
            assert_eq!(result["answered_by"], expected, "{reply}");
        }
    }
    let (status, body) = classify(
        &stack,
        json!({"texts": ["x"], "strategy": "cascade", "options": {"cascade_min_confidence": 2.0}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("min_confidence"), "{body}");

    // Retrain into the same directory (a head on frozen embeddings), then
    // Reload: the new model answers, through the embedder service.
    let head_data = data(150, 40);
    let head_manifest = train(&head_data, Method::Head, &model).await;
    let reloaded = finetuned
        .reload(ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.content_hash, head_manifest.content_hash);
    let info = finetuned
        .info(FinetunedClassifierServiceInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.method, "head");
    let answer = finetuned
        .classify(FinetunedClassifierServiceClassifyRequest {
            texts: vec![clauses[0].0.clone()],
            top_k: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results[0].alternatives.len(), 5);
    assert!(head_data.labels.contains(&answer.results[0].label));

    // A broken directory fails Reload with a clear status; the old model
    // keeps serving.
    std::fs::write(model.join("model.safetensors"), b"garbage").unwrap();
    let status = finetuned.reload(ReloadRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("corrupt"), "{}", status.message());
    let still = finetuned
        .classify(FinetunedClassifierServiceClassifyRequest {
            texts: vec![clauses[0].0.clone()],
            top_k: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.results[0].label, answer.results[0].label);

    // A model trained on fewer labels than the index holds is refused at
    // Reload (cascade would mix label sets); the old model keeps serving.
    let dropped = ledgar("train", 1)[0].1.clone();
    let narrow = data_without(200, 50, &dropped);
    assert!(!narrow.labels.contains(&dropped));
    train(&narrow, Method::Lexical, &model).await;
    let status = finetuned.reload(ReloadRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("do not cover the index"),
        "{}",
        status.message()
    );
    let info = finetuned
        .info(FinetunedClassifierServiceInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.method, "head");
    let empty = finetuned
        .classify(FinetunedClassifierServiceClassifyRequest {
            texts: vec![],
            top_k: None,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_corrupt_model_is_a_clear_error() {
    // Configured but missing: a start-up error naming the directory.
    let work = tempfile::tempdir().unwrap();
    let mut routes = lextral_common::server::GrpcRoutes::new();
    let config =
        lextral_finetuned_classifier::FinetunedConfig::with_model(Some(work.path().join("absent")));
    let err = lextral_finetuned_classifier::add_to(&config, &mut routes)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("absent"), "{err}");

    // Not configured: the stack runs; the strategy answers 409 with a hint.
    let database = fresh_database().await;
    let stack = start_stack_with_model(&database, None, |_| {}).await;
    let (status, body) = classify(
        &stack,
        json!({"texts": ["Notices shall be in writing."], "strategy": "finetuned"}),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        error_message(&body).contains("LEXTRAL_FINETUNED_MODEL"),
        "{body}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finetune_and_hybrid_methods_train_and_load() {
    let work = tempfile::tempdir().unwrap();
    // End-to-end fine-tuning, kept tiny (one epoch, 48 tokens) for CI time.
    let small = data(48, 16);
    let out = work.path().join("finetuned");
    let manifest = train(&small, Method::Finetune, &out).await;
    assert_eq!(
        manifest.embedding.as_ref().unwrap().source,
        "bundled-encoder"
    );
    assert!(out.join("encoder").join("model.safetensors").is_file());
    // The encoder itself was trained (gradients reach every layer), while
    // the token-embedding table stays frozen.
    let base = candle_core::safetensors::load(
        Path::new(&model_dir()).join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let tuned = candle_core::safetensors::load(
        out.join("encoder").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let max_change = |name: &str| -> f32 {
        (&base[name] - &tuned[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    for name in [
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.5.output.dense.weight",
    ] {
        assert!(max_change(name) > 0.0, "{name} did not change");
    }
    assert_eq!(max_change("embeddings.word_embeddings.weight"), 0.0);
    let model = Classifier::load(&out).unwrap();
    assert!(!model.needs_external_embeddings());
    let p = model
        .predict(&[small.validation[0].0.clone()], None)
        .unwrap();
    assert_eq!(p[0].len(), small.labels.len());
    assert!((p[0].iter().sum::<f32>() - 1.0).abs() < 1e-4);

    // Hybrid cross-validates the candidates that need an embedding too and
    // records each one's paired gain over the best lexical one.
    let data = data(150, 40);
    let out = work.path().join("hybrid");
    let manifest = train(&data, Method::Hybrid, &out).await;
    let cv = manifest.cross_validation.as_ref().unwrap();
    let names: Vec<&str> = cv.candidates.iter().map(|c| c.name.as_str()).collect();
    for prefix in ["lexical svm", "lexical+dense svm", "dense only svm"] {
        assert!(names.iter().any(|n| n.starts_with(prefix)), "{names:?}");
    }
    assert!(names.iter().any(|n| n.contains("kNN vote")), "{names:?}");
    let dense_rows = cv.candidates.iter().filter(|c| c.dense).count();
    assert_eq!(cv.dense_gains.len(), dense_rows);
    assert!(cv.rule.contains("spread"), "{}", cv.rule);
    // Without a refit the saved model saw the train split only.
    let mut no_refit = options(Method::Lexical);
    no_refit.refit = false;
    let kept = lextral_training::train(&data, &no_refit, &work.path().join("no-refit"))
        .await
        .unwrap();
    assert_eq!(
        (kept.training.fit_examples, kept.training.refit),
        (150, false)
    );
    Classifier::load(&out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_answers_by_knn_while_the_finetuned_classifier_is_unavailable() {
    let database = fresh_database().await;
    let dead = format!(
        "http://127.0.0.1:{}",
        lextral_integration_tests::free_port()
    );
    let stack = start_stack_with_model(&database, None, |config| {
        config.finetuned_url = dead;
    })
    .await;
    let mut orchestrator = OrchestratorServiceClient::connect(Stack::url(stack.orchestrator))
        .await
        .unwrap();
    let items = ledgar_items("train", 30);
    orchestrator.ingest(IngestRequest { items }).await.unwrap();
    let clauses = ledgar("validation", 2);
    let (status, reply) = classify(
        &stack,
        json!({"texts": [clauses[0].0, clauses[1].0], "strategy": "cascade"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["strategy"], "cascade");
    let degraded = reply["degraded"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(
        degraded.contains("knn") && degraded.contains("finetuned"),
        "{degraded}"
    );
    for result in reply["results"].as_array().unwrap() {
        assert_eq!(result["answered_by"], "knn", "{reply}");
    }
    // The fine-tuned strategy itself says the dependency is down.
    let (status, body) = classify(
        &stack,
        json!({"texts": [clauses[0].0], "strategy": "finetuned"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // A healthy answer carries no `degraded`.
    let (status, reply) =
        classify(&stack, json!({"texts": [clauses[0].0], "strategy": "knn"})).await;
    assert_eq!(status, 200);
    assert!(reply.get("degraded").is_none(), "{reply}");
}
