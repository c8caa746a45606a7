//! TLS with rustls (ring): server certificates for gRPC and the REST
//! gateway, optional client certificates (mTLS), and the client side for
//! `https://` peers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a server's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA whose certificates clients must present; none: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the {what} {} is not PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the {what} {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

impl TlsFiles {
    /// tonic's server configuration, checked now (bad files stop the start).
    pub fn grpc(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        // Parsed here too so errors name the file, which tonic's do not.
        self.rustls()?;
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "certificate")?,
            read(&self.key, "private key")?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "client CA",
            )?));
        }
        Ok(config)
    }

    /// rustls's server configuration (the REST gateway), HTTP/1.1 and h2.
    pub fn rustls(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = certificates(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "private key")?)
            .with_context(|| format!("the private key {} is not PEM", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, "client CA")? {
                    roots.add(cert).context("client CA certificate")?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the certificate and the private key do not match")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// How this process talks to `https://` peers: the CA to trust (else the
/// webpki roots) and the certificate to present when they ask for one.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// PEM CA of the peers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (this server's own, for mTLS peers).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl PeerTls {
    /// tonic's client configuration for a peer at `url`.
    pub fn grpc(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => {
                config.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "CA")?))
            }
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert, "certificate")?,
                read(key, "private key")?,
            ));
        }
        Ok(config)
    }
}

/// Serves `app` over HTTPS on `listener` until `shutdown` resolves, then
/// lets open connections finish. Each request carries the peer address as
/// `ConnectInfo` (quotas of callers without a key), as `axum::serve` does.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;

    /// A client that opens a connection but never finishes the handshake
    /// must not hold a task for ever.
    const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(request)
                },
            );
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A TLS client configuration trusting `ca` (PEM) or else the webpki
/// roots: for connections tonic does not make (PostgreSQL).
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in certificates(ca, "CA")? {
                roots.add(cert).context("CA certificate")?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::access::{Access, AccessConfig};
    use crate::server::{serve_grpc, GrpcRoutes};

    /// A CA, a server certificate for localhost / 127.0.0.1 and a client
    /// certificate, written as PEM files.
    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            for (name, sans) in [
                (
                    "server",
                    vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
                ),
                ("client", vec!["orchestrator".to_owned()]),
            ] {
                let key = rcgen::KeyPair::generate().unwrap();
                let cert = rcgen::CertificateParams::new(sans)
                    .unwrap()
                    .signed_by(&key, &ca, &ca_key)
                    .unwrap();
                std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                    .unwrap();
            }
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn server(&self, client_ca: bool) -> TlsFiles {
            TlsFiles {
                cert: self.path("server.pem"),
                key: self.path("server.key"),
                client_ca: client_ca.then(|| self.path("ca.pem")),
            }
        }
    }

    async fn health_server(access: Access) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = GrpcRoutes::with_access(access);
        tokio::spawn(serve_grpc(
            listener,
            routes,
            Duration::from_secs(5),
            std::future::pending(),
        ));
        addr
    }

    async fn check(url: String, tls: Option<tonic::transport::ClientTlsConfig>) -> bool {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        let Ok(channel) = endpoint.connect().await else {
            return false;
        };
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn grpc_speaks_tls_only_and_mtls_wants_a_client_certificate() {
        let pki = Pki::new();
        let tls_access = |client_ca: bool| {
            Access::new(&AccessConfig {
                tls: Some(pki.server(client_ca)),
                ..Default::default()
            })
            .unwrap()
        };
        let trust = PeerTls {
            ca: Some(pki.path("ca.pem")),
            identity: None,
        };
        let addr = health_server(tls_access(false)).await;
        assert!(
            check(
                format!("https://localhost:{}", addr.port()),
                Some(trust.grpc().unwrap())
            )
            .await
        );
        assert!(
            !check(format!("http://127.0.0.1:{}", addr.port()), None).await,
            "plaintext refused"
        );
        let strangers = PeerTls::default().grpc().unwrap();
        assert!(
            !check(
                format!("https://localhost:{}", addr.port()),
                Some(strangers)
            )
            .await,
            "a certificate from an unknown CA is refused"
        );

        let addr = health_server(tls_access(true)).await;
        let url = format!("https://localhost:{}", addr.port());
        assert!(
            !check(url.clone(), Some(trust.grpc().unwrap())).await,
            "no client certificate"
        );
        let with_identity = PeerTls {
            ca: Some(pki.path("ca.pem")),
            identity: Some((pki.path("client.pem"), pki.path("client.key"))),
        };
        assert!(check(url, Some(with_identity.grpc().unwrap())).await);
    }

    #[tokio::test]
    async fn the_gateway_serves_https_and_mtls() {
        let pki = Pki::new();
        let app = || axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let serve = |client_ca: bool| {
            let config = pki.server(client_ca).rustls().unwrap();
            let app = app();
            async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                tokio::spawn(serve_https(listener, app, config, std::future::pending()));
                port
            }
        };
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
        let port = serve(false).await;
        let client = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .build()
            .unwrap();
        let body = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        assert!(reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err());

        let port = serve(true).await;
        let url = format!("https://localhost:{port}/healthz");
        assert!(
            client.get(&url).send().await.is_err(),
            "no client certificate"
        );
        let mut pem = std::fs::read(pki.path("client.pem")).unwrap();
        pem.extend(std::fs::read(pki.path("client.key")).unwrap());
        let with_identity = reqwest::Client::builder()
            .add_root_certificate(ca)
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        assert_eq!(with_identity.get(&url).send().await.unwrap().status(), 200);
    }

    #[test]
    fn bad_files_are_named() {
        let pki = Pki::new();
        let mut files = pki.server(false);
        files.key = pki.path("client.key");
        let err = files.rustls().unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
        files.cert = pki.path("missing.pem");
        let err = files.rustls().unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
