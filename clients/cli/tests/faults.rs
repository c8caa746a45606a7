//! Faults with the services as separate processes, as on Kubernetes: under
//! a kNN classify load, SIGKILL the embedder, the retriever and PostgreSQL
//! in turn. Callers get 503 fast (no hang to the timeout), the
//! orchestrator's readiness flips, and answers resume soon after the
//! dependency is back, without restarting the orchestrator.
//! `bench/run.sh faults` runs it on the release build and prints the figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lextral_integration_tests::{
    append_log, free_port, grpc_serving, ledgar, ledgar_items, model_dir, DisposableServer,
    KillOnDrop,
};
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::IngestRequest;

const BIN: &str = env!("CARGO_BIN_EXE_lextral");
/// Failed calls must end within this: 1 s on the release build (`bench/run.sh
/// faults`). A debug build embeds a clause in hundreds of milliseconds on a
/// 2-core machine running the rest of the suite, before the call reaches the
/// dead retriever, so it gets 3 s.
const FAIL_FAST: Duration = Duration::from_secs(if cfg!(debug_assertions) { 3 } else { 1 });
/// Answers must resume within this of the dependency's return (debug: 10 s).
const RECOVER: Duration = Duration::from_secs(if cfg!(debug_assertions) { 10 } else { 5 });

fn spawn(args: &[&str], log: &Path, home: &Path) -> KillOnDrop {
    let child = Command::new(BIN)
        .args(args)
        .args(["--metrics", ""])
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env("LEXTRAL_HOME", home)
        .env_remove("LEXTRAL_API_KEY")
        .env_remove("LEXTRAL_KEYS_FILE")
        .stdout(Stdio::null())
        .stderr(append_log(log))
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// One classify call as the load sees it.
#[derive(Clone, Copy)]
struct Call {
    started: Instant,
    took: Duration,
    status: u16,
}

async fn wait_until(what: &str, limit: Duration, mut ready: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if ready().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Services {
    dir: PathBuf,
    embedder_port: u16,
    retriever_port: u16,
    database_url: String,
}

impl Services {
    fn embedder(&self) -> KillOnDrop {
        spawn(
            &[
                "serve",
                "embedder",
                "--grpc",
                &format!("127.0.0.1:{}", self.embedder_port),
            ],
            &self.dir.join("embedder.log"),
            &self.dir.join("home"),
        )
    }

    fn retriever(&self) -> KillOnDrop {
        spawn(
            &[
                "serve",
                "retriever",
                "--grpc",
                &format!("127.0.0.1:{}", self.retriever_port),
                "--store",
                "postgres",
                "--database-url",
                &self.database_url,
                "--db-health-interval-s",
                "1",
            ],
            &self.dir.join("retriever.log"),
            &self.dir.join("home"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dependencies_fail_fast_and_recover_without_restarting_the_orchestrator() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(DisposableServer::start)
            .await
            .unwrap(),
    );
    let work = tempfile::tempdir().unwrap();
    let services = Services {
        dir: work.path().to_owned(),
        embedder_port: free_port(),
        retriever_port: free_port(),
        database_url: pg.url.clone(),
    };
    let embedder_url = format!("http://127.0.0.1:{}", services.embedder_port);
    let retriever_url = format!("http://127.0.0.1:{}", services.retriever_port);
    let mut embedder = Some(services.embedder());
    let mut retriever = Some(services.retriever());
    let (grpc, http) = (free_port(), free_port());
    let mut orchestrator = spawn(
        &[
            "serve",
            "orchestrator",
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &format!("127.0.0.1:{http}"),
            "--embedder-url",
            &embedder_url,
            "--retriever-url",
            &retriever_url,
        ],
        &work.path().join("orchestrator.log"),
        &work.path().join("home"),
    );
    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    orchestrator
        .wait_ready(
            &client,
            &readyz,
            Duration::from_secs(90),
            Some(&work.path().join("orchestrator.log")),
        )
        .await;
    let mut ingest = OrchestratorServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let items = ledgar_items("train", 20);
    ingest.ingest(IngestRequest { items }).await.unwrap();

    // The load: two clients classifying one after another, all recorded.
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let clause = ledgar("validation", 1)[0].0.clone();
    let mut load = Vec::new();
    for _ in 0..2 {
        let (client, calls, stop, clause) =
            (client.clone(), calls.clone(), stop.clone(), clause.clone());
        let url = format!("http://127.0.0.1:{http}/v1/classify");
        load.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let started = Instant::now();
                let status = client
                    .post(&url)
                    .timeout(Duration::from_secs(30))
                    .json(&serde_json::json!({"texts": [clause], "strategy": "knn"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                calls.lock().unwrap().push(Call {
                    started,
                    took: started.elapsed(),
                    status,
                });
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ready = |client: reqwest::Client, url: String| async move {
        matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
    };
    for dependency in ["embedder", "retriever", "postgresql"] {
        let killed = Instant::now();
        match dependency {
            // Dropping the handle SIGKILLs the process.
            "embedder" => drop(embedder.take()),
            "retriever" => drop(retriever.take()),
            _ => pg.kill(),
        }
        let flipped = wait_until(
            &format!("/readyz not ready after the {dependency} died"),
            RECOVER,
            async || !ready(client.clone(), readyz.clone()).await,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Back: restarted on the same port (or the same data).
        let restarted = Instant::now();
        match dependency {
            "embedder" => {
                embedder = Some(services.embedder());
                wait_until("the embedder back", Duration::from_secs(60), async || {
                    grpc_serving(&embedder_url).await
                })
                .await;
            }
            "retriever" => {
                retriever = Some(services.retriever());
                wait_until("the retriever back", Duration::from_secs(60), async || {
                    grpc_serving(&retriever_url).await
                })
                .await;
            }
            _ => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || pg.restart())
                    .await
                    .unwrap();
            }
        }
        let back = Instant::now();
        let resumed = wait_until(
            &format!("answers after the {dependency} came back"),
            RECOVER,
            async || {
                calls
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|c| c.started >= back && c.status == 200)
            },
        )
        .await;
        let during: Vec<Call> = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.started >= killed + Duration::from_millis(100) && c.started < restarted)
            .copied()
            .collect();
        let failed: Vec<&Call> = during.iter().filter(|c| c.status != 200).collect();
        assert!(
            !failed.is_empty(),
            "no call failed while the {dependency} was dead"
        );
        let slowest = failed.iter().map(|c| c.took).max().unwrap();
        let statuses: std::collections::BTreeSet<u16> = failed.iter().map(|c| c.status).collect();
        eprintln!(
            "{dependency}: {} calls failed while it was dead (statuses {statuses:?}), slowest failure {:.0} ms; \
             /readyz flipped after {:.0} ms; answers resumed {:.0} ms after it was back",
            failed.len(),
            slowest.as_secs_f64() * 1000.0,
            flipped.as_secs_f64() * 1000.0,
            resumed.as_secs_f64() * 1000.0
        );
        assert_eq!(statuses, [503].into(), "{dependency}: failures must be 503");
        assert!(
            slowest < FAIL_FAST,
            "{dependency}: a failure took {slowest:?}"
        );
        assert!(
            ready(client.clone(), readyz.clone()).await
                || wait_until("/readyz ready again", RECOVER, async || {
                    ready(client.clone(), readyz.clone()).await
                })
                .await
                    < RECOVER
        );
    }
    stop.cancel();
    for task in load {
        task.await.unwrap();
    }
    assert!(
        orchestrator.0.try_wait().unwrap().is_none(),
        "the orchestrator kept running throughout"
    );
}
