//! Who may call what: every RPC of every service and every REST route, with
//! every kind of credential, against the services run apart (as on
//! Kubernetes) with keys on and a service key between them.

use std::time::{Duration, SystemTime};

use lextral_common::auth::{grpc_scope, KeysFile, Scope};
use lextral_common::{Access, AccessConfig, ApiKey};
use lextral_integration_tests::{fresh_database, ledgar, ledgar_items, start_stack_guarded, Stack};
use lextral_prompt_classifier::PromptConfig;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::IngestRequest;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

/// A credential to try and what it is.
struct Credential {
    what: &'static str,
    header: Option<String>,
    /// The scope it carries when it is a live key.
    scope: Option<Scope>,
}

fn bearer(key: &ApiKey) -> Option<String> {
    Some(format!("Bearer {}", key.expose()))
}

struct Keys {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    credentials: Vec<Credential>,
    classify: ApiKey,
    ingest: ApiKey,
}

fn make_keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let now = SystemTime::now();
    let mut file = KeysFile::default();
    let classify = file.create("reader", Scope::Classify, None, now).unwrap();
    let ingest = file.create("writer", Scope::Ingest, None, now).unwrap();
    let admin = file.create("admin", Scope::Admin, None, now).unwrap();
    let revoked = file.create("revoked", Scope::Admin, None, now).unwrap();
    file.revoke("revoked", now).unwrap();
    let expired = file
        .create(
            "expired",
            Scope::Admin,
            Some(Duration::from_secs(1)),
            now - Duration::from_secs(60),
        )
        .unwrap();
    file.write(&path).unwrap();
    let credentials = vec![
        Credential {
            what: "no key",
            header: None,
            scope: None,
        },
        Credential {
            what: "malformed",
            header: Some("Token abc".to_owned()),
            scope: None,
        },
        Credential {
            what: "unknown",
            header: Some(format!("Bearer lx_{}", "0".repeat(64))),
            scope: None,
        },
        Credential {
            what: "revoked",
            header: bearer(&revoked),
            scope: None,
        },
        Credential {
            what: "expired",
            header: bearer(&expired),
            scope: None,
        },
        Credential {
            what: "classify",
            header: bearer(&classify),
            scope: Some(Scope::Classify),
        },
        Credential {
            what: "ingest",
            header: bearer(&ingest),
            scope: Some(Scope::Ingest),
        },
        Credential {
            what: "admin",
            header: bearer(&admin),
            scope: Some(Scope::Admin),
        },
    ];
    Keys {
        _dir: dir,
        path,
        credentials,
        classify,
        ingest,
    }
}

/// A unary call with an empty request message to `path`, decoding nothing:
/// what matters is whether the door lets it through.
async fn raw_call(addr: std::net::SocketAddr, path: &str, header: Option<&str>) -> Code {
    let channel = lextral_integration_tests::channel(Stack::url(addr)).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(header) = header {
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc
        .unary(request, PathAndQuery::try_from(path).unwrap(), codec)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn every_call_needs_the_right_key() {
    let keys = make_keys();
    let service_key = ApiKey::new("lx_service_key_for_this_test");
    let access = || {
        Access::new(&AccessConfig {
            keys_file: Some(keys.path.clone()),
            service_key: Some(service_key.clone()),
            ..Default::default()
        })
        .unwrap()
    };
    let database = fresh_database().await;
    let stack = start_stack_guarded(
        &database,
        None,
        Some(PromptConfig::default()),
        access(),
        access(),
        |_| {},
    )
    .await;

    let servers = [
        ("lextral.v1.EmbedderService", stack.embedder),
        ("lextral.v1.RetrieverService", stack.retriever),
        ("lextral.v1.FinetunedClassifierService", stack.finetuned),
        ("lextral.v1.PromptClassifierService", stack.prompt.unwrap()),
        ("lextral.v1.OrchestratorService", stack.orchestrator),
    ];
    let paths = lextral_proto::method_paths();
    assert!(paths.len() >= 15, "{paths:?}");
    let mut checked = 0;
    for path in &paths {
        let service = path.trim_start_matches('/').split('/').next().unwrap();
        let addr = servers
            .iter()
            .find(|(name, _)| *name == service)
            .unwrap_or_else(|| panic!("no server for {path}"))
            .1;
        let required = grpc_scope(path).expect("Lextral calls are guarded");
        for credential in &keys.credentials {
            let code = raw_call(addr, path, credential.header.as_deref()).await;
            match credential.scope {
                None => assert_eq!(
                    code,
                    Code::Unauthenticated,
                    "{path} with {}",
                    credential.what
                ),
                Some(scope) if scope.allows(required) => assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{path} with {}: {code:?}",
                    credential.what
                ),
                Some(_) => assert_eq!(
                    code,
                    Code::PermissionDenied,
                    "{path} with {}",
                    credential.what
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, paths.len() * keys.credentials.len());

    // Health and reflection stay open.
    for (_, addr) in servers {
        assert_eq!(
            raw_call(addr, "/grpc.health.v1.Health/Check", None).await,
            Code::Ok
        );
    }

    // The orchestrator's own calls carry the service key: an ingest key
    // stores clauses, a classify key classifies them over REST.
    let channel = lextral_integration_tests::channel(Stack::url(stack.orchestrator)).await;
    let key_header: tonic::metadata::MetadataValue<_> =
        bearer(&keys.ingest).unwrap().parse().unwrap();
    let mut client = OrchestratorServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", key_header.clone());
            Ok(request)
        },
    );
    let items = ledgar_items("train", 30);
    let ingested = client
        .ingest(IngestRequest { items })
        .await
        .expect("ingest with an ingest key")
        .into_inner();
    assert_eq!(ingested.inserted, 30);

    let http = reqwest::Client::new();
    let (text, _) = &ledgar("train", 1)[0];
    let body = serde_json::json!({ "texts": [text], "strategy": "knn" });
    let rest_routes: [(&str, &str); 3] = [
        ("POST", "/v1/classify"),
        ("GET", "/v1/labels"),
        ("GET", "/v1/info"),
    ];
    for (method, route) in rest_routes {
        for credential in &keys.credentials {
            let mut request = match method {
                "POST" => http.post(stack.rest(route)).json(&body),
                _ => http.get(stack.rest(route)),
            };
            if let Some(header) = &credential.header {
                request = request.header("authorization", header);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let www = response.headers().get("www-authenticate").cloned();
            let json: serde_json::Value = response.json().await.expect("JSON bodies");
            match credential.scope {
                None => {
                    assert_eq!(status, 401, "{route} with {}: {json}", credential.what);
                    assert_eq!(json["error"]["code"], "unauthenticated");
                    assert_eq!(www.unwrap(), "Bearer");
                }
                Some(_) => assert_eq!(status, 200, "{route} with {}: {json}", credential.what),
            }
        }
    }
    for page in ["/", "/docs", "/openapi.json", "/healthz"] {
        let status = http.get(stack.rest(page)).send().await.unwrap().status();
        assert_eq!(status, 200, "{page} stays open");
    }
    let ready = http
        .get(stack.rest("/readyz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(ready, 401, "/readyz stays open");

    // A classify key classifies; the answer came through the service key.
    let reply: serde_json::Value = http
        .post(stack.rest("/v1/classify"))
        .bearer_auth(keys.classify.expose())
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(reply["results"][0]["label"].is_string(), "{reply}");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_without_a_restart() {
    let keys = make_keys();
    let access = Access::new(&AccessConfig {
        keys_file: Some(keys.path.clone()),
        ..Default::default()
    })
    .unwrap();
    let database = fresh_database().await;
    let stack = start_stack_guarded(&database, None, None, Access::open(), access, |_| {}).await;
    let http = reqwest::Client::new();
    let labels = |key: &ApiKey| {
        http.get(stack.rest("/v1/labels"))
            .bearer_auth(key.expose())
            .send()
    };
    assert_eq!(labels(&keys.classify).await.unwrap().status(), 200);

    let mut file = KeysFile::read(&keys.path).unwrap();
    file.revoke("reader", SystemTime::now()).unwrap();
    let fresh = file
        .create("newcomer", Scope::Classify, None, SystemTime::now())
        .unwrap();
    file.write(&keys.path).unwrap();
    let started = std::time::Instant::now();
    loop {
        let status = labels(&keys.classify).await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(labels(&fresh).await.unwrap().status(), 200);
    stack.shutdown().await;
}

#[tokio::test]
async fn quotas_refuse_a_burst_with_retry_after_per_caller() {
    let keys = make_keys();
    let access = Access::new(&AccessConfig {
        keys_file: Some(keys.path.clone()),
        quotas: "classify=3/m,ingest=100/m,llm=1/m".parse().unwrap(),
        ..Default::default()
    })
    .unwrap();
    let database = fresh_database().await;
    let stack = start_stack_guarded(&database, None, None, Access::open(), access, |_| {}).await;
    let http = reqwest::Client::new();
    let labels = |key: &ApiKey| {
        http.get(stack.rest("/v1/labels"))
            .bearer_auth(key.expose())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(labels(&keys.classify).await.unwrap().status(), 200);
    }
    let over = labels(&keys.classify).await.unwrap();
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    let body: serde_json::Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");
    // Another key has its own bucket, and its scope's allowance.
    assert_eq!(labels(&keys.ingest).await.unwrap().status(), 200);

    // The prompt strategies draw on a tighter bucket of their own (charged
    // when the request is accepted, whatever the LLM then answers).
    let zero_shot = |key: &ApiKey| {
        http.post(stack.rest("/v1/classify"))
            .bearer_auth(key.expose())
            .json(&serde_json::json!({ "texts": ["Governing law."], "strategy": "zero-shot" }))
            .send()
    };
    assert_ne!(zero_shot(&keys.ingest).await.unwrap().status(), 429);
    let over = zero_shot(&keys.ingest).await.unwrap();
    assert_eq!(over.status(), 429);
    assert!(over.headers().get("retry-after").is_some());
    stack.shutdown().await;
}

#[tokio::test]
async fn without_keys_the_quota_is_per_client_address() {
    let access = Access::new(&AccessConfig {
        quotas: "anonymous=2/m".parse().unwrap(),
        ..Default::default()
    })
    .unwrap();
    let database = fresh_database().await;
    let stack = start_stack_guarded(&database, None, None, Access::open(), access, |_| {}).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let status = http
            .get(stack.rest("/v1/labels"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let status = http
        .get(stack.rest("/v1/labels"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 429);
    // Open pages are never charged.
    let status = http
        .get(stack.rest("/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    stack.shutdown().await;
}
