//! `lextral index` against an orchestrator of the test's own that fails on
//! purpose: passing failures are retried, and a run that gave up resumes
//! from its checkpoint without sending acknowledged batches again.

use std::process::Command;
use std::sync::{Arc, Mutex};

use lextral_proto::v1::orchestrator_service_server::{
    OrchestratorService, OrchestratorServiceServer,
};
use lextral_proto::v1::{
    ClassifyRequest, ClassifyResponse, IngestRequest, IngestResponse, LabelsRequest,
    LabelsResponse, OrchestratorServiceInfoRequest, OrchestratorServiceInfoResponse,
};
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_lextral");

#[derive(Default)]
struct Script {
    /// Calls still to fail with UNAVAILABLE.
    fail_next: usize,
    /// A batch holding this text is refused (RESOURCE_EXHAUSTED) every time.
    refuse: Option<String>,
    /// First text of every batch acknowledged.
    acknowledged: Vec<String>,
    calls: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Script>>);

#[tonic::async_trait]
impl OrchestratorService for Fake {
    async fn classify(
        &self,
        _: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn labels(&self, _: Request<LabelsRequest>) -> Result<Response<LabelsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn ingest(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let items = request.into_inner().items;
        let mut script = self.0.lock().unwrap();
        script.calls += 1;
        if script.fail_next > 0 {
            script.fail_next -= 1;
            return Err(Status::unavailable("restarting"));
        }
        if let Some(text) = &script.refuse {
            if items.iter().any(|item| &item.text == text) {
                return Err(Status::resource_exhausted("busy"));
            }
        }
        script.acknowledged.push(items[0].text.clone());
        Ok(Response::new(IngestResponse {
            inserted: items.len() as u32,
            ..Default::default()
        }))
    }

    async fn info(
        &self,
        _: Request<OrchestratorServiceInfoRequest>,
    ) -> Result<Response<OrchestratorServiceInfoResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

async fn serve(fake: Fake) -> String {
    let port = lextral_integration_tests::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrchestratorServiceServer::new(fake))
            .serve(addr),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    format!("http://{addr}")
}

/// A data directory of the first `n` training clauses.
fn data(n: usize) -> (tempfile::TempDir, Vec<String>) {
    let shared = lextral_integration_tests::shared_data().join("ledgar");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shared.join("labels.txt"), dir.path().join("labels.txt")).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(shared.join("train.jsonl"))
        .unwrap()
        .lines()
        .take(n)
        .map(str::to_owned)
        .collect();
    std::fs::write(dir.path().join("train.jsonl"), lines.join("\n")).unwrap();
    let texts = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    (dir, texts)
}

async fn index(dir: &std::path::Path, server: &str, extra: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(["index", "--data"])
        .arg(dir)
        .args(["--batch-size", "4", "--server", server])
        .args(extra)
        .env_remove("LEXTRAL_API_KEY")
        // Default checkpoints go under the test's own directory.
        .env("LEXTRAL_HOME", dir);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn passing_failures_are_retried_with_back_off() {
    let (dir, _) = data(40);
    let fake = Fake::default();
    fake.0.lock().unwrap().fail_next = 2;
    let server = serve(fake.clone()).await;
    let checkpoint = dir.path().join("run.checkpoint");
    let out = index(
        dir.path(),
        &server,
        &["--checkpoint", checkpoint.to_str().unwrap()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Unavailable: restarting; retry 1/8"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("indexed 40 clauses"));
    let script = fake.0.lock().unwrap();
    assert_eq!(script.acknowledged.len(), 10);
    assert_eq!(script.calls, 12);
    assert!(!checkpoint.exists(), "a finished run leaves no checkpoint");
}

#[tokio::test]
async fn a_run_that_gave_up_resumes_where_it_stopped() {
    let (dir, texts) = data(40);
    let fake = Fake::default();
    // Batch 5 (clauses 20..24) is refused every time.
    fake.0.lock().unwrap().refuse = Some(texts[21].clone());
    let server = serve(fake.clone()).await;
    let checkpoint = dir.path().join("run.checkpoint");
    let args = [
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--max-retries",
        "1",
    ];
    let out = index(dir.path(), &server, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("batch 5 failed after 2 attempts") && stderr.contains("resume"),
        "{stderr}"
    );
    let acknowledged = fake.0.lock().unwrap().acknowledged.clone();
    assert!(!acknowledged.is_empty() && acknowledged.len() < 10);
    assert!(!acknowledged.contains(&texts[20]));
    assert!(checkpoint.exists());

    // The server recovers; the same command sends only what is missing.
    {
        let mut script = fake.0.lock().unwrap();
        script.refuse = None;
        script.acknowledged.clear();
    }
    let out = index(dir.path(), &server, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming: {} of 10 batches already acknowledged",
            acknowledged.len()
        )),
        "{stderr}"
    );
    let resent = fake.0.lock().unwrap().acknowledged.clone();
    assert_eq!(resent.len(), 10 - acknowledged.len());
    assert!(resent.contains(&texts[20]));
    assert!(resent.iter().all(|t| !acknowledged.contains(t)));
    assert!(!checkpoint.exists());

    // --no-resume sends everything again.
    fake.0.lock().unwrap().acknowledged.clear();
    let out = index(dir.path(), &server, &["--no-resume"]).await;
    assert!(out.status.success());
    assert_eq!(fake.0.lock().unwrap().acknowledged.len(), 10);
}
