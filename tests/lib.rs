//! Test harness: a real PostgreSQL + pgvector (started by
//! `scripts/dev-db.sh` unless `LEXTRAL_TEST_DATABASE_URL` names one), a fresh
//! database per test, the real model, and the services on ephemeral ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use lextral_common::server::{serve_grpc, GrpcRoutes};
use lextral_common::Access;
use lextral_embedder::EmbedderConfig;
use lextral_finetuned_classifier::FinetunedConfig;
use lextral_orchestrator::OrchestratorConfig;
use lextral_prompt_classifier::PromptConfig;
use lextral_retriever::RetrieverConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared/data` beside the repository (or `LEXTRAL_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    std::env::var_os("LEXTRAL_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("..").join("shared").join("data"))
}

fn last_line_of(script: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = Command::new(repo_root().join("scripts").join(script))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|err| panic!("running scripts/{script}: {err}"));
    assert!(
        output.status.success(),
        "scripts/{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The server every test shares; each test then makes its own database.
pub fn admin_database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("LEXTRAL_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => last_line_of("dev-db.sh", &["start"], &[]),
    })
    .clone()
}

/// The model directory (`LEXTRAL_EMBED_MODEL`, else the set-up script's cache).
pub fn model_dir() -> String {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var("LEXTRAL_EMBED_MODEL") {
        Ok(dir) if Path::new(&dir).is_dir() => dir,
        _ => last_line_of("setup-model.sh", &[], &[]),
    })
    .clone()
}

/// The local LLM file (`LEXTRAL_LLM_MODEL`, else the set-up script's cache).
pub fn llm_model() -> String {
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| match std::env::var("LEXTRAL_LLM_MODEL") {
        Ok(file) if Path::new(&file).is_file() => file,
        _ => last_line_of("setup-llm.sh", &[], &[]),
    })
    .clone()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// A child process (say, `lextral serve all`) killed when the test ends,
/// pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Waits until GET `url` answers 200 through `client`; panics (with
    /// `log`'s contents when given) if the process exits first or `limit`
    /// passes.
    pub async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        limit: Duration,
        log: Option<&Path>,
    ) {
        let started = std::time::Instant::now();
        let log = || {
            log.and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        loop {
            if let Ok(response) = client.get(url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) before {url} was ready:\n{}",
                    log()
                );
            }
            assert!(started.elapsed() < limit, "{url} never ready:\n{}", log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the gRPC server at `url` reports its overall health SERVING
/// within one second.
pub async fn grpc_serving(url: &str) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect()
            .await
            .ok()?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status == ServingStatus::Serving as i32)
    };
    tokio::time::timeout(Duration::from_secs(1), check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Creates an empty database on the server at `admin_url` and returns its URL.
pub async fn fresh_database_on(admin_url: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "lextral_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    let (base, _) = admin_url.rsplit_once('/').expect("URL has a database name");
    format!("{base}/{name}")
}

/// A fresh database on the shared test server.
pub async fn fresh_database() -> String {
    fresh_database_on(&admin_database_url()).await
}

/// A store target for [`start_stack`] naming a new, empty embedded store
/// directory (`embedded:<dir>`) under the system temp folder.
pub fn fresh_embedded_store() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir()
        .join("lextral-test-stores")
        .join(format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    format!("embedded:{}", dir.display())
}

/// The same database searched through pgvector's HNSW index alone
/// (`--pg-search hnsw`; a plain URL gets the default, the in-memory
/// mirror): a store target for [`start_stack`].
pub fn with_hnsw(database_url: &str) -> String {
    format!("hnsw:{database_url}")
}

/// The retriever settings for a store target: a PostgreSQL URL,
/// `hnsw:<URL>` from [`with_hnsw`], or `embedded:<dir>` from
/// [`fresh_embedded_store`].
pub fn retriever_config(store: &str) -> RetrieverConfig {
    if let Some(dir) = store.strip_prefix("embedded:") {
        return RetrieverConfig::embedded(dir);
    }
    if let Some(url) = store.strip_prefix("hnsw:") {
        return RetrieverConfig {
            pg_search: lextral_retriever::PgSearch::Hnsw,
            ..RetrieverConfig::with_database_url(url)
        };
    }
    RetrieverConfig::with_database_url(store)
}

/// A second, disposable PostgreSQL server this test may stop and start.
pub struct DisposableServer {
    dir: tempfile::TempDir,
    /// Its connection URL.
    pub url: String,
}

impl DisposableServer {
    /// Starts a server with its own data directory.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lextral-pg-")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir");
        // The unprivileged database user must be able to enter it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mut server = Self {
            dir,
            url: String::new(),
        };
        server.url = server.run("start");
        server
    }

    fn run(&self, action: &str) -> String {
        let data = self.dir.path().join("pg");
        last_line_of(
            "dev-db.sh",
            &[action],
            &[("LEXTRAL_DEV_DB_DIR", data.to_str().unwrap())],
        )
    }

    /// Stops it (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// SIGKILLs the postmaster and its backends: no shutdown at all, as a
    /// crashed machine or the OOM killer would.
    pub fn kill(&self) {
        let pid_file = self
            .dir
            .path()
            .join("pg")
            .join("data")
            .join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|err| panic!("{}: {err}", pid_file.display()));
        let pid = pid.lines().next().unwrap_or_default().trim().to_owned();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(killed.success(), "kill -KILL {pid} failed");
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) -> String {
        self.run("start")
    }
}

impl Drop for DisposableServer {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts").join("dev-db.sh"))
            .arg("stop")
            .env("LEXTRAL_DEV_DB_DIR", self.dir.path().join("pg"))
            .output();
    }
}

/// Addresses of a running stack.
pub struct Stack {
    /// Embedder gRPC.
    pub embedder: SocketAddr,
    /// Retriever gRPC.
    pub retriever: SocketAddr,
    /// Finetuned-classifier gRPC.
    pub finetuned: SocketAddr,
    /// Prompt-classifier gRPC, when the stack has one.
    pub prompt: Option<SocketAddr>,
    /// Orchestrator gRPC.
    pub orchestrator: SocketAddr,
    /// REST gateway.
    pub http: SocketAddr,
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// gRPC URL of an address.
    pub fn url(addr: SocketAddr) -> String {
        format!("http://{addr}")
    }

    /// REST URL of a path.
    pub fn rest(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Stops every server and waits for them to finish draining.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s after shutdown")
                .expect("server task did not panic");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn ephemeral() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0")
}

fn spawn_grpc(
    routes: GrpcRoutes,
    listener: TcpListener,
    token: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let token = token.clone();
    tokio::spawn(async move {
        serve_grpc(
            listener,
            routes,
            // Generous: tests run in parallel on 2 cores, some of them training.
            Duration::from_secs(180),
            async move { token.cancelled().await },
        )
        .await
        .expect("gRPC server failed");
    })
}

/// Starts embedder, retriever and orchestrator (with the REST gateway) as
/// separate servers, as on Kubernetes, against `database_url`.
pub async fn start_stack(database_url: &str, tweak: impl FnOnce(&mut OrchestratorConfig)) -> Stack {
    start_stack_with_model(database_url, None, tweak).await
}

/// [`start_stack`] plus a finetuned-classifier serving `model` (none: it
/// runs NOT_SERVING).
pub async fn start_stack_with_model(
    database_url: &str,
    model: Option<PathBuf>,
    tweak: impl FnOnce(&mut OrchestratorConfig),
) -> Stack {
    start_stack_with(database_url, model, None, tweak).await
}

/// [`start_stack_with_model`] plus a prompt-classifier with `prompt`
/// settings (none: no prompt-classifier runs, prompt strategies fail
/// UNAVAILABLE).
pub async fn start_stack_with(
    database_url: &str,
    model: Option<PathBuf>,
    prompt: Option<PromptConfig>,
    tweak: impl FnOnce(&mut OrchestratorConfig),
) -> Stack {
    start_stack_guarded(
        database_url,
        model,
        prompt,
        Access::open(),
        Access::open(),
        tweak,
    )
    .await
}

/// [`start_stack_with`] with the internal services admitting calls by
/// `internal` and the orchestrator (gRPC and REST) by `public`, whose peer
/// key it sends downstream.
pub async fn start_stack_guarded(
    database_url: &str,
    model: Option<PathBuf>,
    prompt: Option<PromptConfig>,
    internal: Access,
    public: Access,
    tweak: impl FnOnce(&mut OrchestratorConfig),
) -> Stack {
    lextral_common::telemetry::init_tracing(false);
    lextral_common::metrics::prometheus_handle();
    let token = CancellationToken::new();
    let mut tasks = Vec::new();

    let mut routes = GrpcRoutes::with_access(internal.clone());
    lextral_embedder::add_to(&EmbedderConfig::with_model(model_dir()), &mut routes)
        .await
        .expect("embedder starts");
    let listener = ephemeral().await;
    let embedder = listener.local_addr().unwrap();
    tasks.push(spawn_grpc(routes, listener, &token));

    let mut routes = GrpcRoutes::with_access(internal.clone());
    let mut retriever_config = retriever_config(database_url);
    retriever_config.health_interval_s = 1;
    retriever_config.connect_timeout_s = 2;
    lextral_retriever::add_to(&retriever_config, &mut routes)
        .await
        .expect("retriever starts");
    let listener = ephemeral().await;
    let retriever = listener.local_addr().unwrap();
    tasks.push(spawn_grpc(routes, listener, &token));

    let mut routes = GrpcRoutes::with_access(internal.clone());
    let mut finetuned_config = FinetunedConfig::with_model(model);
    finetuned_config.embedder_url = Stack::url(embedder);
    finetuned_config.retriever_url = Some(Stack::url(retriever));
    lextral_finetuned_classifier::add_to(&finetuned_config, &mut routes)
        .await
        .expect("finetuned-classifier starts");
    let listener = ephemeral().await;
    let finetuned = listener.local_addr().unwrap();
    tasks.push(spawn_grpc(routes, listener, &token));

    let prompt = match prompt {
        Some(mut prompt_config) => {
            prompt_config.embedder_url = Some(Stack::url(embedder));
            let mut routes = GrpcRoutes::with_access(internal.clone());
            lextral_prompt_classifier::add_to(&prompt_config, &mut routes)
                .await
                .expect("prompt-classifier starts");
            let listener = ephemeral().await;
            let addr = listener.local_addr().unwrap();
            tasks.push(spawn_grpc(routes, listener, &token));
            Some(addr)
        }
        None => None,
    };

    let mut config = OrchestratorConfig::with_urls(Stack::url(embedder), Stack::url(retriever));
    config.finetuned_url = Stack::url(finetuned);
    if let Some(addr) = prompt {
        config.prompt_url = Stack::url(addr);
    }
    config.request_timeout_s = 180;
    tweak(&mut config);
    let mut routes = GrpcRoutes::with_access(public);
    let orchestrator_service = lextral_orchestrator::add_to(&config, &mut routes)
        .await
        .expect("orchestrator starts");
    let listener = ephemeral().await;
    let orchestrator = listener.local_addr().unwrap();
    tasks.push(spawn_grpc(routes, listener, &token));

    let listener = ephemeral().await;
    let http = listener.local_addr().unwrap();
    let http_token = token.clone();
    tasks.push(tokio::spawn(async move {
        lextral_orchestrator::http::serve(listener, orchestrator_service, async move {
            http_token.cancelled().await
        })
        .await
        .expect("REST gateway failed");
    }));

    Stack {
        embedder,
        retriever,
        finetuned,
        prompt,
        orchestrator,
        http,
        token,
        tasks,
    }
}

/// The first `limit` clauses of `split`, labelled, ready to ingest.
pub fn ledgar_items(split: &str, limit: usize) -> Vec<lextral_proto::v1::LabeledText> {
    ledgar(split, limit)
        .into_iter()
        .map(|(text, label)| lextral_proto::v1::LabeledText {
            text,
            label,
            split: split.to_owned(),
        })
        .collect()
}

/// A CA and a certificate for localhost / 127.0.0.1 signed by it, as PEM
/// files in `dir`: (ca, cert, key).
pub fn certificates(dir: &Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = ["ca.pem", "server.pem", "server.key"].map(|n| dir.join(n));
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let [a, b, c] = paths.map(|p| p.to_str().unwrap().to_owned());
    (a, b, c)
}

/// A log file a child process appends its output to.
pub fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// LEDGAR-lite examples from `../shared/data/ledgar/<split>.jsonl`.
pub fn ledgar(split: &str, limit: usize) -> Vec<(String, String)> {
    let path = shared_data().join("ledgar").join(format!("{split}.jsonl"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines()
        .take(limit)
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["text"].as_str().unwrap().to_owned(),
                value["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// POSTs `body` to the stack's `/v1/classify`; returns the HTTP status and
/// the JSON body (error bodies are JSON too).
pub async fn post_classify(stack: &Stack, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(stack.rest("/v1/classify"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.expect("error bodies are JSON");
    (status, body)
}

/// A connected gRPC channel to `url`.
pub async fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url)
        .expect("valid URL")
        .connect()
        .await
        .expect("connecting")
}
