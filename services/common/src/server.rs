//! gRPC server bootstrap: health, reflection, metrics and tracing layers, and
//! graceful shutdown, the same for every service and for `serve all`.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;

use crate::access::Access;
use crate::guard::GrpcGuardLayer;
use crate::metrics::GrpcMetricsLayer;

/// Routes under construction, the health reporter the services flip, and
/// the admission policy the server applies to them.
#[derive(Clone)]
pub struct GrpcRoutes {
    builder: RoutesBuilder,
    health: HealthReporter,
    access: Access,
}

impl Default for GrpcRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcRoutes {
    /// Starts with gRPC health and reflection (v1 and v1alpha, for older
    /// grpcurl), open to every caller and without a concurrency limit.
    pub fn new() -> Self {
        Self::with_access(Access::open())
    }

    /// [`GrpcRoutes::new`] admitting calls by `access`.
    pub fn with_access(access: Access) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut builder = RoutesBuilder::default();
        builder.add_service(health_service);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(lextral_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("embedded descriptor sets are valid");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(lextral_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("embedded descriptor sets are valid");
        builder.add_service(reflection_v1);
        builder.add_service(reflection_v1alpha);
        Self {
            builder,
            health,
            access,
        }
    }

    /// The admission policy: its peer key is what this server's own clients send.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The health reporter; services start NOT_SERVING and flip when ready.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Adds a service.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.access.register(S::NAME);
        self.builder.add_service(service);
        self
    }

    /// Serves these routes alone on `listener` (a service run by itself)
    /// until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        request_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        serve_grpc(listener, self, request_timeout, shutdown).await?;
        Ok(())
    }
}

/// Serves `routes` on `listener` until `shutdown` resolves, then drains
/// in-flight calls. Every call passes the routes' [`Access`] first.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: GrpcRoutes,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let tls = routes.access.grpc_tls();
    serve(listener, routes, request_timeout, shutdown, tls).await
}

/// [`serve_grpc`] without TLS on a loopback `listener`: `serve all`'s own
/// calls between its services when its public port speaks TLS (keys are
/// still checked).
pub async fn serve_grpc_loopback(
    listener: TcpListener,
    routes: GrpcRoutes,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    serve(listener, routes, request_timeout, shutdown, None).await?;
    Ok(())
}

async fn serve(
    listener: TcpListener,
    routes: GrpcRoutes,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), tonic::transport::Error> {
    // Without TCP_NODELAY small responses wait on Nagle + delayed ACK.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let GrpcRoutes {
        builder, access, ..
    } = routes;
    let routes: Routes = builder.routes();
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .timeout(request_timeout)
        .layer(GrpcMetricsLayer)
        .layer(GrpcGuardLayer::new(access))
        .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Binds a TCP listener with a message naming the address on failure.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))
}
