//! `lextral eval --out RUN_DIR` against a live stack: the run folder for
//! knn, finetuned and cascade, Ctrl-C and `--resume`, a torn predictions
//! line, refusals (existing run, changed options, bad data), `eval compare`.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use lextral_integration_tests::{fresh_database, ledgar, start_stack_with_model, Stack};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lextral");

async fn lextral(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .unwrap()
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn failed_with(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected a failure");
    assert!(stderr.contains(needle), "wanted {needle:?} in: {stderr}");
}

fn write_split(dir: &Path, labels: &[String], splits: &[(&str, &[(String, String)])]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("labels.txt"), labels.join("\n") + "\n").unwrap();
    for (name, rows) in splits {
        let lines: Vec<String> = rows
            .iter()
            .map(|(text, label)| serde_json::json!({ "text": text, "label": label }).to_string())
            .collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_writes_a_run_folder_survives_ctrl_c_resumes_and_compares() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let train = ledgar("train", 300);
    let validation = ledgar("validation", 120);
    let mut labels: Vec<String> = train
        .iter()
        .chain(&validation)
        .map(|(_, l)| l.clone())
        .collect();
    labels.sort();
    labels.dedup();
    write_split(
        &data,
        &labels,
        &[("train", &train), ("validation", &validation)],
    );
    let data_dir = data.to_str().unwrap();
    let model = work.path().join("model");
    succeeded(
        &lextral(&[
            "train",
            "--data",
            data_dir,
            "--out",
            model.to_str().unwrap(),
            "--method",
            "lexical",
            // Evaluated on validation below: keep it out of the final fit.
            "--no-refit",
        ])
        .await,
    );
    let database = fresh_database().await;
    let stack = start_stack_with_model(&database, Some(model), |_| {}).await;
    let server = Stack::url(stack.orchestrator);
    succeeded(
        &lextral(&[
            "index", "--data", data_dir, "--splits", "train", "--server", &server,
        ])
        .await,
    );

    // Interrupt a run with Ctrl-C (SIGINT) once some answers are journalled.
    let run = work.path().join("run");
    let run_dir = run.to_str().unwrap();
    let eval_args = [
        "eval",
        "--data",
        data_dir,
        "--split",
        "validation",
        "--strategy",
        "knn,finetuned,cascade",
        "--out",
        run_dir,
        "--server",
        &server,
    ];
    let child = tokio::process::Command::new(BIN)
        .args(eval_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let knn_file = run.join("predictions").join("knn.jsonl");
    let started = Instant::now();
    loop {
        let done = std::fs::read_to_string(&knn_file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 10 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().await.unwrap();
    failed_with(&output, "--resume");
    let meta = read_json(&run.join("run.json"));
    assert_eq!(meta["status"], "interrupted", "{meta}");
    let partial = read_json(&run.join("report.json"));
    assert_eq!(partial["complete"], false);
    let done = lines(&knn_file).len();
    assert!((10..120).contains(&done), "{done} answers before Ctrl-C");
    assert!(std::fs::read_to_string(run.join("report.md"))
        .unwrap()
        .contains("Partial run"));

    // Without --resume the folder is not overwritten; with it, the run ends.
    failed_with(&lextral(&eval_args).await, "already holds a run");
    let mut resume = eval_args.to_vec();
    resume.push("--resume");
    let stdout = succeeded(&lextral(&resume).await);
    assert!(stdout.contains("report.html"), "{stdout}");

    let meta = read_json(&run.join("run.json"));
    assert_eq!(meta["status"], "complete");
    assert_eq!(meta["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(meta["git_commit"].as_str().unwrap().len(), 40, "{meta}");
    assert_eq!(meta["data"]["split_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(meta["data"]["clauses"], 120);
    assert_eq!(meta["stack"]["index"]["total"], 300, "{meta}");
    assert_eq!(meta["stack"]["finetuned"]["method"], "lexical");
    assert!(meta["stack"]["finetuned"]["manifest"]["content_hash"].is_string());
    assert!(meta["stack"]["embedder"]["model_id"].is_string());
    assert!(meta["stack"]["defaults"]["knn"]["k"].is_number());

    // Every clause once per strategy; the first session's answers kept.
    for strategy in ["knn", "finetuned", "cascade"] {
        let predictions = lines(&run.join("predictions").join(format!("{strategy}.jsonl")));
        let mut indexes: Vec<u64> = predictions
            .iter()
            .map(|p| p["index"].as_u64().unwrap())
            .collect();
        indexes.sort();
        indexes.dedup();
        assert_eq!(indexes.len(), 120, "{strategy}");
        for p in &predictions {
            for key in ["text_sha256", "gold", "strategy", "latency_ms", "cost_usd"] {
                assert!(!p[key].is_null(), "{strategy}: {key} missing in {p}");
            }
        }
        if strategy == "knn" {
            assert_eq!(
                predictions.iter().filter(|p| p["session"] == 0).count(),
                done
            );
        }
        if strategy == "cascade" {
            assert!(predictions.iter().all(|p| p["answered_by"].is_string()));
        }
    }
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["complete"], true);
    let strategies = report["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 3);
    for s in strategies {
        assert_eq!(s["n"], 120);
        // Train and validation are different clauses: a real, imperfect score.
        let macro_f1 = s["macro_f1"].as_f64().unwrap();
        assert!(macro_f1 > 0.1 && macro_f1 < 1.0, "{}", s["strategy"]);
        assert!(
            s["calibration"]["ece"].as_f64().is_some(),
            "{}",
            s["strategy"]
        );
        assert!(s["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(s["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(s["monthly_cost"]["total_usd"].as_f64().unwrap() > 0.0);
        assert!(!s["top_confusions"].as_array().unwrap().is_empty());
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.matches("data:image/png;base64,").count() >= 10);
    assert!(run.join("plots").join("confusion_cascade.png").is_file());

    // A crash mid-line: the torn tail is dropped on resume, nothing redone.
    let mut torn = std::fs::read_to_string(&knn_file).unwrap();
    torn.push_str("{\"index\":3,\"text_sh");
    std::fs::write(&knn_file, torn).unwrap();
    succeeded(&lextral(&resume).await);
    assert_eq!(lines(&knn_file).len(), 120);

    // Resuming with other options would mix two experiments.
    let mut other = resume.clone();
    other.extend(["--k", "3"]);
    failed_with(&lextral(&other).await, "ran with options");

    // The overview across runs.
    let stdout = succeeded(&lextral(&["eval", "compare", run_dir]).await);
    for strategy in ["| knn |", "| finetuned |", "| cascade |", "macro-F1"] {
        assert!(stdout.contains(strategy), "{stdout}");
    }
    let nope = work.path().join("nope");
    failed_with(
        &lextral(&["eval", "compare", nope.to_str().unwrap()]).await,
        "no such run folder",
    );
    std::fs::create_dir(&nope).unwrap();
    failed_with(
        &lextral(&["eval", "compare", nope.to_str().unwrap()]).await,
        "no report",
    );

    // Bad data: clear messages naming file and line, and no run folder.
    let bad = work.path().join("bad");
    let good_line = serde_json::json!({ "text": "x", "label": labels[0] }).to_string();
    for (content, needle) in [
        (format!("{good_line}\n{{not json\n"), "validation.jsonl:2"),
        (
            format!(
                "{good_line}\n{}\n",
                serde_json::json!({"text": "y", "label": "No Such Label"})
            ),
            "validation.jsonl:2: unknown label",
        ),
        (String::new(), "has no examples"),
    ] {
        write_split(&bad, &labels, &[]);
        std::fs::write(bad.join("validation.jsonl"), content).unwrap();
        let out = work.path().join("bad-run");
        let output = lextral(&[
            "eval",
            "--data",
            bad.to_str().unwrap(),
            "--split",
            "validation",
            "--strategy",
            "knn",
            "--out",
            out.to_str().unwrap(),
            "--server",
            &server,
        ])
        .await;
        failed_with(&output, needle);
        assert!(!out.exists(), "a failed start left {}", out.display());
    }
    // No server: a clear message, and still no folder.
    let out = work.path().join("no-server-run");
    let output = lextral(&[
        "eval",
        "--data",
        data_dir,
        "--split",
        "validation",
        "--out",
        out.to_str().unwrap(),
        "--server",
        "http://127.0.0.1:1",
    ])
    .await;
    failed_with(&output, "cannot reach the orchestrator");
    assert!(!out.exists());
    stack.shutdown().await;
}
