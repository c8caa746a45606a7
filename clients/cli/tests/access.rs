//! Keys as an operator uses them: `lextral keys create|list|revoke`, `serve
//! all --keys-file` picking up a revoke without a restart, clients sending
//! `--api-key`, no key in the server's log, and no open server off loopback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lextral_integration_tests::{
    certificates, free_port, ledgar, llm_model, model_dir, KillOnDrop,
};

const BIN: &str = env!("CARGO_BIN_EXE_lextral");

fn lextral(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn create_key(file: &Path, scope: &str, name: &str) -> String {
    let stdout = ok(&lextral(&[
        "keys",
        "create",
        "--keys-file",
        file.to_str().unwrap(),
        "--scope",
        scope,
        "--name",
        name,
    ]));
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("lx_") && key.len() > 40, "{stdout}");
    key
}

#[test]
fn keys_are_created_listed_and_revoked_and_the_file_holds_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let reader = create_key(&file, "classify", "reader");
    let admin = create_key(&file, "admin", "ops");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&reader) && !text.contains(&admin));
    assert!(text.contains("sha256"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the keys file is private");
    }

    let path = file.to_str().unwrap();
    let again = lextral(&[
        "keys",
        "create",
        "--keys-file",
        path,
        "--scope",
        "admin",
        "--name",
        "ops",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = lextral(&["keys", "create", "--keys-file", path, "--scope", "root"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
    let expiring = ok(&lextral(&[
        "keys",
        "create",
        "--keys-file",
        path,
        "--scope",
        "classify",
        "--expires-in",
        "90d",
    ]));
    assert!(expiring.lines().last().unwrap().starts_with("lx_"));

    ok(&lextral(&["keys", "revoke", "reader", "--keys-file", path]));
    let list = ok(&lextral(&["keys", "list", "--keys-file", path]));
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
            .to_owned()
    };
    assert!(line("reader ").contains("revoked"), "{list}");
    assert!(line("ops ").contains("admin") && line("ops ").contains("active"));
    assert!(line("key-3 ").contains("classify"), "{list}");
    assert!(!list.contains(&admin));
    let twice = lextral(&["keys", "revoke", "reader", "--keys-file", path]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("revoked already"));
}

#[test]
fn a_public_address_without_keys_is_refused() {
    let output = Command::new(BIN)
        .args(["serve", "embedder", "--metrics", ""])
        .args(["--grpc", &format!("0.0.0.0:{}", free_port())])
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env_remove("LEXTRAL_KEYS_FILE")
        .env_remove("LEXTRAL_INSECURE_NO_AUTH")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve") && stderr.contains("--keys-file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_all_with_keys_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let reader = create_key(&file, "classify", "reader");
    let writer = create_key(&file, "ingest", "writer");
    let log = dir.path().join("server.log");
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "all", "--metrics", ""])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--keys-file", file.to_str().unwrap()])
        .args(["--store", "embedded", "--store-path"])
        .arg(dir.path().join("store"))
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env("LEXTRAL_LLM_MODEL", llm_model())
        .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{http}");
    server
        .wait_ready(
            &reqwest::Client::new(),
            &format!("{base}/healthz"),
            Duration::from_secs(60),
            Some(&log),
        )
        .await;

    let data = tempfile::tempdir().unwrap();
    let train = ledgar("train", 40);
    let lines: Vec<String> = train
        .iter()
        .map(|(t, l)| serde_json::json!({ "text": t, "label": l }).to_string())
        .collect();
    std::fs::write(data.path().join("train.jsonl"), lines.join("\n") + "\n").unwrap();
    let server_url = format!("http://127.0.0.1:{grpc}");
    let index = |key: &str| {
        lextral(&[
            "index",
            "--data",
            data.path().to_str().unwrap(),
            "--server",
            &server_url,
            "--api-key",
            key,
        ])
    };
    let refused = index(&reader);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs ingest"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(ok(&index(&writer)).contains("indexed 40 clauses"));

    let classify = ok(&lextral(&[
        "classify",
        "--json",
        "--k",
        "1",
        "--server",
        &server_url,
        "--api-key",
        &reader,
        &train[5].0,
    ]));
    let reply: serde_json::Value = serde_json::from_str(&classify).unwrap();
    assert_eq!(reply["results"][0]["label"], train[5].1.as_str());

    let http_client = reqwest::Client::new();
    let labels = |key: Option<&str>| {
        let mut request = http_client.get(format!("{base}/v1/labels"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(labels(None).await.unwrap().status(), 401);
    assert_eq!(labels(Some(&reader)).await.unwrap().status(), 200);

    ok(&lextral(&[
        "keys",
        "revoke",
        "reader",
        "--keys-file",
        file.to_str().unwrap(),
    ]));
    let started = Instant::now();
    while labels(Some(&reader)).await.unwrap().status() != 401 {
        assert!(started.elapsed() < Duration::from_secs(5), "revoke ignored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("call refused"), "debug logs were captured");
    for key in [&reader, &writer] {
        assert!(!log.contains(key.as_str()), "a key reached the log");
    }
}

#[tokio::test]
async fn serve_all_over_tls_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "all", "--metrics", ""])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .args(["--store", "embedded", "--store-path"])
        .arg(dir.path().join("store"))
        .env("LEXTRAL_EMBED_MODEL", model_dir())
        .env("LEXTRAL_HOME", dir.path().join("home"))
        .env_remove("LEXTRAL_LLM_MODEL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{http}");
    server
        .wait_ready(
            &https,
            &format!("{base}/readyz"),
            Duration::from_secs(60),
            None,
        )
        .await;
    assert!(
        reqwest::get(format!("http://127.0.0.1:{http}/healthz"))
            .await
            .is_err(),
        "plaintext REST refused"
    );

    // gRPC over TLS from the CLI; the services reach each other inside.
    let data = tempfile::tempdir().unwrap();
    let train = ledgar("train", 20);
    let lines: Vec<String> = train
        .iter()
        .map(|(t, l)| serde_json::json!({ "text": t, "label": l }).to_string())
        .collect();
    std::fs::write(data.path().join("train.jsonl"), lines.join("\n") + "\n").unwrap();
    let server_url = format!("https://localhost:{grpc}");
    let indexed = ok(&lextral(&[
        "index",
        "--data",
        data.path().to_str().unwrap(),
        "--server",
        &server_url,
        "--tls-ca",
        &ca,
    ]));
    assert!(indexed.contains("indexed 20 clauses"), "{indexed}");
    let plain = lextral(&[
        "classify",
        "--server",
        &format!("http://127.0.0.1:{grpc}"),
        &train[2].0,
    ]);
    assert!(!plain.status.success(), "plaintext gRPC refused");
    let reply: serde_json::Value = https
        .post(format!("{base}/v1/classify"))
        .json(
            &serde_json::json!({ "texts": [train[2].0], "strategy": "knn", "options": { "k": 1 } }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["results"][0]["label"], train[2].1.as_str(), "{reply}");
}
