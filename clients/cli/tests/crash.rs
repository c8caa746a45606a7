//! Crash loop (qdrant style): `serve all` ingests batches through the
//! orchestrator while it is SIGKILLed at random moments; after every
//! restart each acknowledged batch is there whole, no batch is there in
//! part, and the store opens. On the embedded store and on PostgreSQL.
//! `LEXTRAL_CRASH_CYCLES` sets the cycles (CI: 4 per store; `bench/run.sh
//! crash`: 25).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lextral_integration_tests::{
    admin_database_url, append_log, free_port, fresh_database, model_dir, KillOnDrop,
};
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::{IngestRequest, LabeledText, LabelsRequest};

const BIN: &str = env!("CARGO_BIN_EXE_lextral");
const BATCH: usize = 8;

fn cycles() -> usize {
    std::env::var("LEXTRAL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

struct Server {
    child: KillOnDrop,
    grpc: String,
}

async fn start(store: &[String], log: &std::path::Path, home: &std::path::Path) -> Server {
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "all", "--metrics", ""])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .args(store)
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        // No local LLM (its default path under an empty LEXTRAL_HOME is
        // missing): nothing here prompts, and loading it slows each start.
        .env("LEXTRAL_HOME", home)
        .env_remove("LEXTRAL_LLM_MODEL")
        .env_remove("LEXTRAL_LLM_BACKEND")
        .env_remove("LEXTRAL_FINETUNED_MODEL")
        .stdout(Stdio::null())
        .stderr(append_log(log))
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    child
        .wait_ready(
            &reqwest::Client::new(),
            &format!("http://127.0.0.1:{http}/readyz"),
            Duration::from_secs(60),
            Some(log),
        )
        .await;
    Server {
        child,
        grpc: format!("http://127.0.0.1:{grpc}"),
    }
}

/// Clauses per label as the server reports them.
async fn counts(grpc: &str) -> BTreeMap<String, u64> {
    let mut client = OrchestratorServiceClient::connect(grpc.to_owned())
        .await
        .unwrap();
    let labels = client.labels(LabelsRequest {}).await.unwrap().into_inner();
    let mut counts = BTreeMap::new();
    for count in labels.counts {
        *counts.entry(count.label).or_default() += count.count;
    }
    counts
}

fn batch(cycle: usize, number: usize) -> (String, Vec<LabeledText>) {
    let label = format!("crash-{cycle}-{number}");
    let items = (0..BATCH)
        .map(|i| LabeledText {
            text: format!(
                "Clause {i} of batch {number} in cycle {cycle}: the parties agree to term {i}."
            ),
            label: label.clone(),
            split: "train".into(),
        })
        .collect();
    (label, items)
}

async fn crash_loop(store: Vec<String>) {
    let kind = store[1].clone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let home = dir.path().join("home");
    let mut server = start(&store, &log, &home).await;
    for cycle in 0..cycles() {
        // Ingest batches one after another until the kill.
        let grpc = server.grpc.clone();
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = acked.clone();
        let writer = tokio::spawn(async move {
            let mut done = Vec::new();
            let Ok(mut client) = OrchestratorServiceClient::connect(grpc).await else {
                return done;
            };
            for number in 0.. {
                let (label, items) = batch(cycle, number);
                match client.ingest(IngestRequest { items }).await {
                    Ok(_) => {
                        done.push(label);
                        progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            done
        });
        // Kill at a random moment once writes are flowing, so most kills
        // land in the middle of a batch.
        let waited = Instant::now();
        while acked.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "no batch acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pause = Duration::from_millis(rand_ms(cycle) % 700);
        tokio::time::sleep(pause).await;
        server.child.0.kill().unwrap(); // SIGKILL
        server.child.0.wait().unwrap();
        acknowledged.extend(writer.await.unwrap());

        server = start(&store, &log, &home).await;
        let counts = counts(&server.grpc).await;
        for label in &acknowledged {
            assert_eq!(
                counts.get(label).copied(),
                Some(BATCH as u64),
                "cycle {cycle}: acknowledged batch {label} lost or partial"
            );
        }
        for (label, count) in &counts {
            assert_eq!(
                *count, BATCH as u64,
                "cycle {cycle}: batch {label} stored in part"
            );
        }
    }
    eprintln!(
        "crash loop ({kind} store): {} SIGKILLs, {} acknowledged batches of {BATCH}, all whole after every restart",
        cycles(),
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= cycles(),
        "too few batches were acknowledged to test anything: {}",
        acknowledged.len()
    );
}

/// A spread of pauses without a random-number dependency.
fn rand_ms(seed: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(seed as u64)
        >> 33
}

#[tokio::test]
async fn acknowledged_batches_survive_sigkill_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store").to_str().unwrap().to_owned();
    crash_loop(vec![
        "--store".into(),
        "embedded".into(),
        "--store-path".into(),
        path,
    ])
    .await;
}

#[tokio::test]
async fn acknowledged_batches_survive_sigkill_on_postgres() {
    let _ = admin_database_url();
    let database = fresh_database().await;
    crash_loop(vec![
        "--store".into(),
        "postgres".into(),
        "--database-url".into(),
        database,
    ])
    .await;
}
