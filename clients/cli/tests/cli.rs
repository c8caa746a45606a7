//! The `lextral` binary as users and our checks call it: `serve all`,
//! `index`, `classify --json`, `eval --report`, and shutdown on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lextral_integration_tests::{
    admin_database_url, free_port, fresh_database, ledgar, llm_model, model_dir, KillOnDrop,
};

const BIN: &str = env!("CARGO_BIN_EXE_lextral");

fn write_data(dir: &Path, train: &[(String, String)], validation: &[(String, String)]) {
    let mut labels: Vec<&str> = train
        .iter()
        .chain(validation)
        .map(|(_, l)| l.as_str())
        .collect();
    labels.sort();
    labels.dedup();
    std::fs::write(dir.join("labels.txt"), labels.join("\n") + "\n").unwrap();
    for (name, rows) in [("train", train), ("validation", validation)] {
        let lines: Vec<String> = rows
            .iter()
            .map(|(text, label)| serde_json::json!({ "text": text, "label": label }).to_string())
            .collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
}

fn lextral(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[tokio::test]
async fn serve_index_classify_eval_and_stop() {
    let _ = admin_database_url();
    let database = fresh_database().await;
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "all", "--metrics", ""])
        .args([
            "--http",
            &format!("127.0.0.1:{http}"),
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
        ])
        .env("LEXTRAL_DATABASE_URL", &database)
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env("LEXTRAL_LLM_MODEL", llm_model())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    let ready = format!("http://127.0.0.1:{http}/readyz");
    let started = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(&ready).await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve all never became ready"
        );
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "serve all exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let data = tempfile::tempdir().unwrap();
    let train = ledgar("train", 120);
    let validation: Vec<(String, String)> = train[..12].to_vec();
    write_data(data.path(), &train, &validation);
    let server_url = format!("http://127.0.0.1:{grpc}");
    let data_dir = data.path().to_str().unwrap();

    let output = lextral(&[
        "index",
        "--data",
        data_dir,
        "--splits",
        "train",
        "--server",
        &server_url,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("indexed 120 clauses") && stdout.contains("120 new"),
        "{stdout}"
    );

    let output = lextral(&[
        "classify",
        "--json",
        "--k",
        "1",
        "--server",
        &server_url,
        &train[3].0,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["strategy"], "knn");
    assert_eq!(reply["results"][0]["label"], train[3].1.as_str());

    // RAG through the local LLM (scripts/test.sh sets LEXTRAL_LLM_MODEL); it
    // loads in the background, so retry while it says FailedPrecondition.
    let started = Instant::now();
    let output = loop {
        let output = lextral(&[
            "classify",
            "--json",
            "--strategy",
            "rag",
            "--rag-k",
            "2",
            "--server",
            &server_url,
            &train[3].0,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success()
            || !stderr.contains("FailedPrecondition")
            || started.elapsed() > Duration::from_secs(90)
        {
            break output;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["results"][0]["answered_by"], "rag");
    let label = reply["results"][0]["label"].as_str().unwrap();
    assert!(train.iter().any(|(_, l)| l == label), "{reply}");

    let report = data.path().join("report.json");
    let output = lextral(&[
        "eval",
        "--data",
        data_dir,
        "--split",
        "validation",
        "--strategy",
        "knn",
        "--k",
        "1",
        "--server",
        &server_url,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["strategy"], "knn");
    assert_eq!(report["n"], 12);
    // Stored clauses find themselves: a perfect score.
    assert_eq!(report["accuracy"], 1.0);
    assert_eq!(report["micro_f1"], 1.0);
    assert_eq!(report["macro_f1"], 1.0);
    for key in ["p50", "p95", "p99"] {
        assert!(report["latency_ms"][key].as_f64().unwrap() > 0.0);
    }
    assert!(report["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["per_label"].as_object().unwrap().len() >= 2);

    let output = lextral(&[
        "eval",
        "--data",
        data_dir,
        "--split",
        "test",
        "--server",
        &server_url,
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("split \"test\" not found"));

    // SIGTERM drains and exits cleanly.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve all ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn unknown_strategy_and_missing_database_url_are_clear_errors() {
    let output = lextral(&["classify", "--strategy", "telepathy", "x"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown strategy"));

    let output = Command::new(BIN)
        .args(["serve", "retriever", "--store", "postgres"])
        .env_remove("LEXTRAL_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--database-url"));

    // An unwritable --report is refused before any clause is classified
    // (no server is needed to get this far).
    let data = lextral_integration_tests::shared_data().join("ledgar");
    let output = lextral(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "validation",
        "--report",
        "/nonexistent/dir/r.json",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--report: folder /nonexistent/dir does not exist"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_idempotently_and_waits_then_fails_clearly() {
    let _ = admin_database_url();
    let database = fresh_database().await;
    for _ in 0..2 {
        let output = lextral(&["migrate", "--database-url", &database, "--wait-s", "5"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("schema ready (dimension 384)"));
    }
    // The retriever finds the schema the Job made.
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT to_regclass('public.lextral_clauses')::text", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("lextral_clauses")
    );

    // Bulk load: drop the HNSW index, then build it again.
    let hnsw = "SELECT to_regclass('public.lextral_clauses_embedding_hnsw') IS NOT NULL";
    assert!(client.query_one(hnsw, &[]).await.unwrap().get::<_, bool>(0));
    let output = lextral(&["migrate", "--database-url", &database, "--drop-index"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("HNSW index dropped"));
    assert!(!client.query_one(hnsw, &[]).await.unwrap().get::<_, bool>(0));
    let output = lextral(&[
        "migrate",
        "--database-url",
        &database,
        "--build-index",
        "--maintenance-work-mem-mb",
        "64",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("HNSW index ready"));
    let definition: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'lextral_clauses_embedding_hnsw'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        definition.contains("hnsw") && definition.contains("m='16'"),
        "{definition}"
    );
    // Both at once make no sense.
    let output = lextral(&[
        "migrate",
        "--database-url",
        &database,
        "--drop-index",
        "--build-index",
    ]);
    assert!(!output.status.success());

    // Nothing listens: it retries for --wait-s, then says why.
    let started = Instant::now();
    let output = lextral(&[
        "migrate",
        "--database-url",
        "postgres://lextral@127.0.0.1:1/lextral",
        "--wait-s",
        "3",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("retrying") && stderr.contains("migrate failed: database unavailable"),
        "{stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[test]
fn eval_score_parses_and_scores_external_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "Governing Laws\nNotices\nConfidentiality\n").unwrap();
    let predictions = dir.path().join("predictions.jsonl");
    let lines = [
        r#"{"label": "Governing Laws", "prediction": "The most appropriate option is: Governing Laws."}"#,
        r#"{"label": "Governing Laws", "prediction": "governing law"}"#,
        r#"{"label": "Notices", "prediction": "[Notices]"}"#,
        r#"{"label": "Notices", "prediction": "Confidentiality and Non-Disclosure"}"#,
        r#"{"label": "Confidentiality", "prediction": "I cannot tell."}"#,
    ];
    std::fs::write(&predictions, lines.join("\n") + "\n").unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(BIN)
        .args(["eval", "score", "--labels"])
        .arg(&labels)
        .arg("--predictions")
        .arg(&predictions)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // 3 of 5 right; one wrong (Confidentiality for Notices); one abstained.
    assert_eq!(report["n"], 5);
    assert_eq!(report["abstained"], 1);
    assert!((report["accuracy"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    // Micro: precision 3/4, recall 3/5 → F1 2/3.
    assert!((report["micro_f1"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Per label F1: Governing Laws 1, Notices 2/3, Confidentiality 0.
    assert!((report["macro_f1"].as_f64().unwrap() - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-9);
    for key in [
        "strategy",
        "latency_ms",
        "per_label",
        "micro_f1",
        "macro_f1",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    assert_eq!(report["parse_methods"]["normalized"], 2);
    assert_eq!(report["parse_methods"]["edit_distance"], 1);
    assert_eq!(report["parse_methods"]["contained"], 1);
    assert_eq!(report["parse_methods"]["none"], 1);

    // A gold label outside the label set names the file and line.
    std::fs::write(
        &predictions,
        lines[0].to_owned() + "\n" + r#"{"label": "Nope", "prediction": "x"}"# + "\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["eval", "score", "--labels"])
        .arg(&labels)
        .arg("--predictions")
        .arg(&predictions)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("Nope"),
        "{stderr}"
    );
}
