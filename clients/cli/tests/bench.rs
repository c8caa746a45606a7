//! `lextral bench retriever` and `lextral bench load` at test scale: real
//! PostgreSQL with pgvector, the real model, a real `serve all`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lextral_integration_tests::{free_port, fresh_database, ledgar, model_dir, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_lextral");

fn write_jsonl(path: &Path, rows: &[(String, String)]) {
    let lines: Vec<String> = rows
        .iter()
        .map(|(text, label)| serde_json::json!({ "text": text, "label": label }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(BIN)
        .args(args)
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lextral {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "lextral {args:?} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn bench_retriever_loads_indexes_and_measures_recall_in_its_own_database() {
    let database = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.jsonl");
    let queries = dir.path().join("queries.jsonl");
    write_jsonl(&base, &ledgar("train", 40));
    write_jsonl(&queries, &ledgar("validation", 12));
    let out = dir.path().join("out");
    // Named like the test databases so `dev-db.sh drop-test-databases` clears it.
    let bench_db = format!("lextral_test_bench_{}", std::process::id());
    let args = |reuse: bool, search: &[&str]| {
        let mut args = vec![
            "bench",
            "retriever",
            "--database-url",
            database.as_str(),
            "--bench-database",
            bench_db.as_str(),
            "--base",
            base.to_str().unwrap(),
            "--query-data",
            queries.to_str().unwrap(),
            "--vectors",
            "3000",
            "--queries",
            "12",
            "--batch",
            "700",
            "--maintenance-work-mem-mb",
            "64",
            "--vectors-cache",
            dir.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]
        .into_iter()
        .chain(search.iter().copied())
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if reuse {
            args.push("--reuse".into());
        }
        args
    };
    let hnsw = ["--pg-search", "hnsw", "--ef-search", "10,40,400"];
    let first_args = args(false, &hnsw);
    let first = run_json(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first["vectors"], 3000);
    assert_eq!(first["real_vectors"], 40);
    assert_eq!(first["dimension"], 384);
    assert_eq!(first["queries"], 12);
    assert_eq!(first["reused"], false);
    assert_eq!(first["load"]["rows"], 3000);
    assert!(first["load"]["rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(first["build"]["seconds"].as_f64().unwrap() > 0.0);
    assert!(first["build"]["index_mib"].as_f64().unwrap() > 1.0);
    let sweep = first["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 3);
    let recall = |i: usize| sweep[i]["recall_at_k"].as_f64().unwrap();
    // At ef_search 400 the graph search over 3,000 vectors is near exact.
    assert!(recall(2) >= 0.95, "recall at ef 400: {}", recall(2));
    assert!(recall(2) >= recall(0), "{sweep:?}");
    for point in sweep {
        let p50 = point["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= point["p99_ms"].as_f64().unwrap());
    }
    assert!(first["at_default"].is_null(), "100 was not swept");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("retriever.json")).unwrap()).unwrap();
    assert_eq!(saved["load"], first["load"]);
    let png = std::fs::read(out.join("recall_vs_ef_search.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);

    // --reuse keeps the loaded table and its recorded load and build.
    let second_args = args(true, &hnsw);
    let second = run_json(&second_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(second["reused"], true);
    assert_eq!(second["load"], first["load"]);
    assert_eq!(second["build"], first["build"]);

    // The same table through the search mirror (the service's default):
    // no index build, the mirror's load timed, codes past --exact-max-rows.
    let codes = [
        "--pg-search",
        "codes",
        "--exact-max-rows",
        "1000",
        "--ef-search",
        "1,40,100",
    ];
    let third_args = args(true, &codes);
    let third = run_json(&third_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(third["pg_search"], "codes");
    assert_eq!(third["reused"], true);
    assert!(third["build"].is_null(), "codes builds no index");
    assert!(third["mirror_load_seconds"].as_f64().unwrap() > 0.0);
    // 3,000 rows × (384 int8 + 48 code bytes + ids): about 1.3 MiB.
    let mirror_mib = third["mirror_mib"].as_f64().unwrap();
    assert!((1.0..4.0).contains(&mirror_mib), "{mirror_mib}");
    let sweep = third["sweep"].as_array().unwrap();
    let recall = |i: usize| sweep[i]["recall_at_k"].as_f64().unwrap();
    // 30 candidates out of 3,000 miss neighbours; 1,200 find nearly all,
    // and 3,000 (every row) are re-ranked exactly.
    assert!(recall(1) >= 0.9, "recall at ef 40: {sweep:?}");
    assert!(recall(1) >= recall(0), "{sweep:?}");
    assert_eq!(recall(2), 1.0, "{sweep:?}");
    assert_eq!(third["at_default"]["ef_search"], 100);

    // The database the URL names was not touched.
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT to_regclass('lextral_clauses') IS NULL", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the user's database got a table");
    client
        .batch_execute(&format!("DROP DATABASE {bench_db} WITH (FORCE)"))
        .await
        .unwrap();

    // Bad input: a bench database name that is not a plain identifier.
    let output = Command::new(BIN)
        .args(["bench", "retriever", "--database-url", &database])
        .args(["--bench-database", "x; DROP TABLE y"])
        .args(["--base", base.to_str().unwrap()])
        .args(["--query-data", queries.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("letters, digits and _ only"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The embedded store at test scale, past its exact-search limit so the
/// one-bit codes pick the candidates: its own directory, recall, reuse, and
/// a file beside the store left alone.
#[tokio::test]
async fn bench_retriever_measures_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.jsonl");
    let queries = dir.path().join("queries.jsonl");
    write_jsonl(&base, &ledgar("train", 40));
    write_jsonl(&queries, &ledgar("validation", 12));
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("notes.txt"), "mine").unwrap();
    let args = |reuse: bool| {
        let mut args = vec![
            "bench",
            "retriever",
            "--store",
            "embedded",
            "--store-path",
            store.to_str().unwrap(),
            "--exact-max-rows",
            "1000",
            "--base",
            base.to_str().unwrap(),
            "--query-data",
            queries.to_str().unwrap(),
            "--vectors",
            "3000",
            "--queries",
            "12",
            "--ef-search",
            "1,10,50,100",
            "--vectors-cache",
            dir.path().join("cache").to_str().unwrap(),
            "--json",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if reuse {
            args.push("--reuse".into());
        }
        args
    };
    let first_args = args(false);
    let first = run_json(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first["store"], "embedded");
    assert_eq!(first["load"]["rows"], 3000);
    assert!(
        first["build"].is_null(),
        "the embedded store builds no index"
    );
    assert!(first["reopen_seconds"].as_f64().unwrap() > 0.0);
    assert!(first["store_mib"].as_f64().unwrap() > 4.0);
    assert!(first["peak_rss_mib"].as_f64().unwrap() > 0.0);
    let sweep = first["sweep"].as_array().unwrap();
    let recall = |i: usize| sweep[i]["recall_at_k"].as_f64().unwrap();
    // ef_search 50 re-scores 1,500 of the 3,000 rows, ef 1 only 30; at 100
    // the candidates would cover the store, so it is searched exactly.
    assert!(recall(2) >= 0.9, "recall at ef 50: {}", recall(2));
    assert!(recall(2) >= recall(0), "{sweep:?}");
    assert_eq!(recall(3), 1.0, "{sweep:?}");
    assert_eq!(first["at_default"]["ef_search"], 100);

    let second_args = args(true);
    let second = run_json(&second_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(second["reused"], true);
    assert_eq!(second["load"], first["load"]);
    assert_eq!(
        std::fs::read_to_string(store.join("notes.txt")).unwrap(),
        "mine"
    );

    // The store's log lost (its record left): --reuse loads again and says so.
    std::fs::remove_file(store.join("clauses.log")).unwrap();
    let third = run_json(&second_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(third["reused"], false);
    assert_eq!(third["load"]["rows"], 3000);
    assert_ne!(third["load"], first["load"]);

    // Bad input: postgres without a URL.
    let output = Command::new(BIN)
        .args(["bench", "retriever", "--store", "postgres"])
        .args(["--base", base.to_str().unwrap()])
        .args(["--query-data", queries.to_str().unwrap()])
        .env_remove("LEXTRAL_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("needs --database-url"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn bench_load_measures_each_level_over_rest_and_grpc() {
    let store = tempfile::tempdir().unwrap();
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "all", "--store", "embedded"])
        .args(["--store-path", store.path().join("s").to_str().unwrap()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        // This checks the load tool's counting, not shedding: a debug
        // build embeds a clause in hundreds of milliseconds, so four
        // clients would already wait past the embedder's default bound.
        .args(["--embed-max-queue-delay-ms", "0"])
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env_remove("LEXTRAL_FINETUNED_MODEL")
        .env_remove("LEXTRAL_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    let started = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        assert!(server.0.try_wait().unwrap().is_none(), "serve all exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = tempfile::tempdir().unwrap();
    let train = ledgar("train", 60);
    write_jsonl(&data.path().join("train.jsonl"), &train);
    std::fs::write(data.path().join("labels.txt"), {
        let mut labels: Vec<&str> = train.iter().map(|(_, l)| l.as_str()).collect();
        labels.sort();
        labels.dedup();
        labels.join("\n") + "\n"
    })
    .unwrap();
    let server_url = format!("http://127.0.0.1:{grpc}");
    let http_url = format!("http://127.0.0.1:{http}");
    let output = Command::new(BIN)
        .args(["index", "--data", data.path().to_str().unwrap()])
        .args(["--splits", "train", "--server", &server_url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let queries = data.path().join("train.jsonl");
    let out = data.path().join("load.json");
    let metrics_spec = format!("all=http://127.0.0.1:{metrics}");
    let report = run_json(&[
        "bench",
        "load",
        "--data",
        queries.to_str().unwrap(),
        "--strategies",
        "knn",
        "--concurrency",
        "1,4",
        "--requests",
        "20",
        "--server",
        &server_url,
        "--http",
        &http_url,
        "--service-metrics",
        &metrics_spec,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let levels = report["levels"].as_array().unwrap();
    let shape: Vec<(String, u64, u64)> = levels
        .iter()
        .map(|l| {
            (
                l["protocol"].as_str().unwrap().to_owned(),
                l["concurrency"].as_u64().unwrap(),
                l["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    // At least 10 requests per client: 4 clients send 40.
    assert_eq!(
        shape,
        vec![
            ("rest".into(), 1, 20),
            ("rest".into(), 4, 40),
            ("grpc".into(), 1, 20),
            ("grpc".into(), 4, 40)
        ]
    );
    for level in levels {
        assert_eq!(level["errors"], 0);
        // Every answer is counted by status: all of them successes here.
        let ok = if level["protocol"] == "rest" {
            "200"
        } else {
            "Ok"
        };
        assert_eq!(level["statuses"][ok], level["requests"], "{level}");
        assert_eq!(level["refused"], 0);
        assert!(level["throughput_per_s"].as_f64().unwrap() > 0.0);
        let (p50, p99) = (
            level["p50_ms"].as_f64().unwrap(),
            level["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{level}");
    }
    let saturation = report["saturation"].as_array().unwrap();
    assert_eq!(saturation.len(), 2);
    for s in saturation {
        let best = levels
            .iter()
            .filter(|l| l["protocol"] == s["protocol"])
            .map(|l| l["throughput_per_s"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(s["throughput_per_s"].as_f64().unwrap(), best);
    }
    let memory = &report["memory"][0];
    assert_eq!(memory["service"], "all");
    let resident = memory["resident_mib"].as_f64().unwrap();
    assert!(resident > 20.0 && resident <= memory["peak_resident_mib"].as_f64().unwrap());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved["levels"], report["levels"]);

    // --duration: clients run for the time given, however many that is.
    let timed = run_json(&[
        "bench",
        "load",
        "--data",
        queries.to_str().unwrap(),
        "--strategies",
        "knn",
        "--concurrency",
        "2",
        "--protocols",
        "rest",
        "--duration",
        "1",
        "--server",
        &server_url,
        "--http",
        &http_url,
        "--json",
    ]);
    let level = &timed["levels"][0];
    let seconds = level["seconds"].as_f64().unwrap();
    assert!((1.0..5.0).contains(&seconds), "{level}");
    assert!(level["requests"].as_u64().unwrap() >= 2, "{level}");

    // No fine-tuned model: a clear error, not a hang or a zero.
    let output = Command::new(BIN)
        .args(["bench", "load", "--data", queries.to_str().unwrap()])
        .args(["--strategies", "finetuned", "--concurrency", "1"])
        .args(["--server", &server_url, "--http", &http_url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LEXTRAL_FINETUNED_MODEL"), "{stderr}");
    // Unknown strategy and malformed --service-metrics.
    for extra in [
        vec!["--strategies", "psychic"],
        vec!["--service-metrics", "no-equals-sign"],
    ] {
        let output = Command::new(BIN)
            .args(["bench", "load", "--data", queries.to_str().unwrap()])
            .args([
                "--requests",
                "1",
                "--concurrency",
                "1",
                "--protocols",
                "grpc",
            ])
            .args(["--server", &server_url, "--http", &http_url])
            .args(&extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{extra:?}");
        assert!(!output.stderr.is_empty());
    }
}
