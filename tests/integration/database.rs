//! The retriever: search semantics and delete, on pgvector and on the
//! embedded store alike; recovery when PostgreSQL goes away mid-run.

use std::time::Duration;

use lextral_integration_tests::{
    certificates, fresh_database, fresh_database_on, fresh_embedded_store, retriever_config,
    start_stack, with_hnsw, DisposableServer, Stack,
};
use lextral_proto::v1::retriever_service_client::RetrieverServiceClient;
use lextral_proto::v1::{
    DeleteRequest, QueryVector, SearchRequest, StatsRequest, UpsertRecord, UpsertRequest,
};
use lextral_retriever::Store;
use lextral_retriever::{content_hash, NewClause, SearchParams};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn unit(seed: usize) -> Vec<f32> {
    // Deterministic, distinct unit vectors.
    let mut v: Vec<f32> = (0..384)
        .map(|i| (((i * 31 + seed * 17) % 97) as f32 - 48.0) / 48.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn record(seed: usize, label: &str, split: &str) -> UpsertRecord {
    UpsertRecord {
        text: format!("clause {seed}"),
        label: label.into(),
        split: split.into(),
        embedding: unit(seed),
    }
}

#[tokio::test]
async fn pgvector_search_filters_thresholds_and_deletes() {
    search_filters_thresholds_and_deletes(&fresh_database().await).await;
}

#[tokio::test]
async fn pgvector_hnsw_search_filters_thresholds_and_deletes() {
    search_filters_thresholds_and_deletes(&with_hnsw(&fresh_database().await)).await;
}

#[tokio::test]
async fn embedded_search_filters_thresholds_and_deletes() {
    search_filters_thresholds_and_deletes(&fresh_embedded_store()).await;
}

/// The retriever suite, run against each store.
async fn search_filters_thresholds_and_deletes(store: &str) {
    let stack = start_stack(store, |_| {}).await;
    let mut retriever = RetrieverServiceClient::connect(Stack::url(stack.retriever))
        .await
        .unwrap();
    let records: Vec<UpsertRecord> = (0..30)
        .map(|i| {
            record(
                i,
                if i % 2 == 0 { "Even" } else { "Odd" },
                if i < 20 { "train" } else { "validation" },
            )
        })
        .collect();
    let upserted = retriever
        .upsert(UpsertRequest { records })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.inserted, 30);
    assert_eq!(upserted.ids.len(), 30);

    // Relabelling counts as an update; the id stays.
    let relabelled = retriever
        .upsert(UpsertRequest {
            records: vec![record(0, "Odd", "train")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((relabelled.inserted, relabelled.updated), (0, 1));
    assert_eq!(relabelled.ids[0], upserted.ids[0]);

    let query = |k: u32| SearchRequest {
        queries: vec![
            QueryVector { values: unit(4) },
            QueryVector { values: unit(25) },
        ],
        k,
        ..Default::default()
    };
    let results = retriever
        .search(query(5))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].neighbors.len(), 5);
    assert_eq!(results[0].neighbors[0].text, "clause 4");
    assert!(results[0].neighbors[0].similarity > 0.999);
    assert_eq!(results[1].neighbors[0].text, "clause 25");
    let sims: Vec<f32> = results[0].neighbors.iter().map(|n| n.similarity).collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "{sims:?}");

    let mut filtered = query(10);
    filtered.splits = vec!["validation".into()];
    filtered.labels = vec!["Odd".into()];
    let results = retriever
        .search(filtered)
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        results[0].neighbors.len(),
        5,
        "5 odd validation clauses exist"
    );
    assert!(results[0]
        .neighbors
        .iter()
        .all(|n| n.split == "validation" && n.label == "Odd"));

    let mut thresholded = query(10);
    thresholded.min_similarity = Some(0.999);
    let results = retriever
        .search(thresholded)
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].neighbors.len(), 1);

    let deleted = retriever
        .delete(DeleteRequest {
            ids: vec![upserted.ids[1].clone()],
            splits: vec!["validation".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 11);
    let stats = retriever.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.total, 19);
    assert_eq!(stats.dimension, 384);
    assert!(stats.labels.iter().all(|c| c.split == "train"));
    stack.shutdown().await;
}

fn clause(seed: usize, label: &str, split: &str) -> NewClause {
    NewClause {
        text: format!("clause {seed}"),
        label: label.into(),
        split: split.into(),
        embedding: unit(seed),
    }
}

/// The nearest clause's (text, label) for `unit(seed)` within `labels`.
async fn nearest(store: &Store, seed: usize, labels: &[&str]) -> Option<(String, String)> {
    let params = SearchParams {
        k: 3,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    };
    let hits = store.search(vec![unit(seed)], &params).await.unwrap();
    hits[0].first().map(|hit| {
        assert!(hit.similarity <= 1.0 + 1e-5);
        (hit.text.clone(), hit.label.clone())
    })
}

/// The store id of the clause nearest to `unit(seed)`.
async fn nearest_id(store: &Store, seed: usize) -> i64 {
    let params = SearchParams {
        k: 1,
        ..Default::default()
    };
    store.search(vec![unit(seed)], &params).await.unwrap()[0][0].id
}

/// `--pg-search codes` (the default): a replica's mirror sees, at its next search, every
/// write committed before it — through another replica or plain SQL,
/// including relabels, deletes and a TRUNCATE.
#[tokio::test]
async fn codes_mirror_follows_writes_from_any_writer() {
    let database = fresh_database().await;
    let writer = Store::connect(&retriever_config(&with_hnsw(&database))).unwrap();
    writer.ensure_ready().await.unwrap();
    writer
        .upsert((0..20).map(|i| clause(i, "A", "train")).collect())
        .await
        .unwrap();
    let reader = Store::connect(&retriever_config(&database)).unwrap();
    reader.ensure_ready().await.unwrap();
    let Store::Postgres(pg) = &reader else {
        panic!("codes runs on PostgreSQL")
    };
    assert_eq!(pg.mirror().expect("codes keeps a mirror").len(), 20);
    let found = |text: &str, label: &str| Some((text.to_owned(), label.to_owned()));
    assert_eq!(nearest(&reader, 4, &[]).await, found("clause 4", "A"));

    // Another replica's insert, relabel and deletes.
    writer
        .upsert(vec![clause(25, "B", "train"), clause(3, "C", "train")])
        .await
        .unwrap();
    assert_eq!(nearest(&reader, 25, &[]).await, found("clause 25", "B"));
    assert_eq!(nearest(&reader, 3, &["C"]).await, found("clause 3", "C"));
    // Concurrent searches share checks of the table, but none that began
    // before a write it must see.
    for round in 0..3 {
        let seed = 50 + round;
        writer
            .upsert(vec![clause(seed, "G", "train")])
            .await
            .unwrap();
        let searches = (0..16).map(|_| nearest(&reader, seed, &[]));
        for answer in futures::future::join_all(searches).await {
            assert_eq!(answer, found(&format!("clause {seed}"), "G"));
        }
    }
    writer
        .delete(&[], &[])
        .await
        .expect_err("a delete naming nothing is refused");
    let stats = writer.stats().await.unwrap();
    assert_eq!(stats.total, 24);
    for seed in 50..53 {
        let id = nearest_id(&reader, seed).await;
        writer.delete(&[id.to_string()], &[]).await.unwrap();
    }
    let stats = writer.stats().await.unwrap();
    assert_eq!(stats.total, 21);
    let id_of_4 = nearest_id(&reader, 4).await;
    writer.delete(&[id_of_4.to_string()], &[]).await.unwrap();
    assert_ne!(nearest(&reader, 4, &[]).await, found("clause 4", "A"));
    assert_eq!(pg.mirror().unwrap().len(), 20);

    // Plain SQL, outside the retriever.
    let (sql, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    sql.execute(
        "INSERT INTO lextral_clauses (split, label, text, content_hash, embedding)
         VALUES ('train', 'D', 'clause 40', $1, $2)",
        &[
            &content_hash("train", "clause 40"),
            &pgvector::Vector::from(unit(40)),
        ],
    )
    .await
    .unwrap();
    sql.execute(
        "UPDATE lextral_clauses SET label = 'E' WHERE text = 'clause 7'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(nearest(&reader, 40, &[]).await, found("clause 40", "D"));
    assert_eq!(nearest(&reader, 7, &["E"]).await, found("clause 7", "E"));
    assert_ne!(
        nearest(&reader, 7, &["A"]).await.map(|f| f.0),
        Some("clause 7".into())
    );
    sql.execute("DELETE FROM lextral_clauses WHERE label = 'A'", &[])
        .await
        .unwrap();
    assert_eq!(pg.mirror().unwrap().len(), 21);
    assert_eq!(nearest(&reader, 10, &["A"]).await, None);
    assert_eq!(pg.mirror().unwrap().len(), 4);

    // A delete by split through the other replica.
    writer
        .upsert(vec![clause(60, "H", "validation")])
        .await
        .unwrap();
    assert_eq!(nearest(&reader, 60, &[]).await, found("clause 60", "H"));
    let deleted = writer.delete(&[], &["validation".into()]).await.unwrap();
    assert_eq!(deleted, 1);
    assert_ne!(nearest(&reader, 60, &[]).await, found("clause 60", "H"));
    assert_eq!(pg.mirror().unwrap().len(), 4);

    sql.batch_execute("TRUNCATE lextral_clauses").await.unwrap();
    assert_eq!(nearest(&reader, 25, &[]).await, None);
    writer.upsert(vec![clause(30, "F", "train")]).await.unwrap();
    assert_eq!(nearest(&reader, 30, &[]).await, found("clause 30", "F"));
    assert_eq!(pg.mirror().unwrap().len(), 1);
}

async fn health(url: String) -> ServingStatus {
    let mut client = HealthClient::new(lextral_integration_tests::channel(url).await);
    client
        .check(HealthCheckRequest {
            service: "lextral.v1.RetrieverService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test]
async fn database_stopped_mid_run_is_unavailable_then_recovers() {
    let server = tokio::task::spawn_blocking(DisposableServer::start)
        .await
        .unwrap();
    let database = fresh_database_on(&server.url).await;
    let stack = start_stack(&database, |_| {}).await;
    let url = Stack::url(stack.retriever);
    let mut retriever = RetrieverServiceClient::connect(url.clone()).await.unwrap();
    retriever
        .upsert(UpsertRequest {
            records: (0..5).map(|i| record(i, "A", "train")).collect(),
        })
        .await
        .unwrap();
    let search = || SearchRequest {
        queries: vec![QueryVector { values: unit(1) }],
        k: 3,
        ..Default::default()
    };
    retriever.search(search()).await.unwrap();

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let status = retriever.search(search()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database unavailable"),
        "{}",
        status.message()
    );
    let mut went_down = false;
    for _ in 0..50 {
        if health(url.clone()).await == ServingStatus::NotServing {
            went_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(went_down, "health never reported NOT_SERVING");

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        match retriever.search(search()).await {
            Ok(response) => {
                recovered = Some(response.into_inner());
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = recovered.expect("search never recovered after the database returned");
    assert_eq!(
        recovered.results[0].neighbors.len(),
        3,
        "data survived the restart"
    );
    for _ in 0..50 {
        if health(url.clone()).await == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(url).await, ServingStatus::Serving);
    stack.shutdown().await;
    drop(server);
}

/// PostgreSQL's TLS front door, as a server with `ssl=on` has it (the
/// PostgreSQL build the tests run has no TLS): answers the client's
/// SSLRequest with `S`, completes the TLS handshake with `cert`/`key`, then
/// relays the decrypted session to the real server at `upstream`.
async fn tls_front(cert: &str, key: &str, upstream: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = lextral_common::tls::TlsFiles {
        cert: cert.into(),
        key: key.into(),
        client_ca: None,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(files.rustls().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                client.read_exact(&mut request).await?;
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "not an SSLRequest");
                client.write_all(b"S").await?;
                let mut tls = acceptor.accept(client).await?;
                let mut server = tokio::net::TcpStream::connect(upstream).await?;
                tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
                std::io::Result::Ok(())
            });
        }
    });
    port
}

/// `sslmode=require`: the retriever speaks TLS to PostgreSQL and checks the
/// server's certificate against `--database-ca` (or libpq's `sslrootcert`,
/// with libpq's `verify-full`); a certificate the CA did not sign, and a
/// server without TLS, are refused.
#[tokio::test]
async fn sslmode_require_connects_over_verified_tls() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(pki.path());
    let database = fresh_database().await;
    let require = |url: &str| {
        let joiner = if url.contains('?') { '&' } else { '?' };
        format!("{url}{joiner}sslmode=require")
    };
    // postgres://user@HOST:PORT/db → the front door's port instead.
    let (user, rest) = database.split_once('@').unwrap();
    let (host_port, db) = rest.split_once('/').unwrap();
    let port = tls_front(&cert, &key, host_port.parse().unwrap()).await;
    let through_tls = require(&format!("{user}@127.0.0.1:{port}/{db}"));

    let mut config = retriever_config(&through_tls);
    config.database_ca = Some(ca.clone().into());
    let store = Store::connect(&config).unwrap();
    store.ensure_ready().await.expect("TLS with the right CA");
    store
        .upsert(vec![NewClause {
            text: "Governed by the laws of New York.".into(),
            label: "Governing Laws".into(),
            split: "train".into(),
            embedding: unit(1),
        }])
        .await
        .unwrap();
    assert_eq!(store.stats().await.unwrap().total, 1);

    // libpq's spelling: verify-full with the CA as sslrootcert in the URL.
    let libpq_url = format!(
        "{user}@127.0.0.1:{port}/{db}?sslmode=verify-full&sslrootcert={}",
        ca.replace('/', "%2F")
    );
    let store = Store::connect(&retriever_config(&libpq_url)).unwrap();
    store
        .ensure_ready()
        .await
        .expect("verify-full with sslrootcert");
    assert_eq!(store.stats().await.unwrap().total, 1);

    // Why a store on `url`, trusting `ca`, cannot start.
    let refusal = |url: String, ca: Option<String>| async move {
        let mut config = retriever_config(&url);
        config.database_ca = ca.map(Into::into);
        config.connect_timeout_s = 3;
        Store::connect(&config)
            .unwrap()
            .ensure_ready()
            .await
            .unwrap_err()
            .to_string()
    };
    // The webpki roots do not know the test's CA.
    let err = refusal(through_tls.clone(), None).await;
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );

    // A server without TLS is refused rather than spoken to in plaintext.
    let err = refusal(require(&database), Some(ca.clone())).await;
    assert!(err.to_lowercase().contains("tls"), "{err}");

    // A CA file that is not PEM stops the start, naming it.
    let mut config = retriever_config(&through_tls);
    config.database_ca = Some(key.into());
    let err = Store::connect(&config).err().unwrap().to_string();
    assert!(err.contains("database TLS"), "{err}");
}
