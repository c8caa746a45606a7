//! Prometheus metrics: one global recorder, a scrape endpoint on its own port,
//! and a tower layer timing every gRPC call by method and status code.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::{routing::get, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower::{Layer, Service};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once and returns its handle.
pub fn prometheus_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test
            // harness); ours still renders what reaches it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves `GET /metrics` in Prometheus text format until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = prometheus_handle();
    let app = Router::new().route(
        "/metrics",
        get(move || async move {
            record_process_memory();
            handle.render()
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Sets `process_resident_memory_bytes` (the Prometheus client convention)
/// and `lextral_process_peak_resident_memory_bytes` from `/proc/self/status`
/// at scrape time, so each service reports its own memory (Linux only).
fn record_process_memory() {
    for (field, gauge) in [
        ("VmRSS", "process_resident_memory_bytes"),
        ("VmHWM", "lextral_process_peak_resident_memory_bytes"),
    ] {
        if let Some(bytes) = crate::process_memory_bytes(field) {
            metrics::gauge!(gauge).set(bytes);
        }
    }
}

/// Records `lextral_grpc_requests_total` and
/// `lextral_grpc_request_duration_seconds`, labelled by service, rpc and code.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service produced by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, rpc) = metric_labels(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            // Unary errors travel as trailers-only responses, so the status is
            // in the headers; its absence means OK (trailers not inspected).
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map(|value| format!("{:?}", tonic::Code::from_i32(value)))
                    .unwrap_or_else(|| "Ok".to_owned()),
                Err(_) => "TransportError".to_owned(),
            };
            let labels = [("service", service), ("rpc", rpc), ("code", code)];
            metrics::counter!("lextral_grpc_requests_total", &labels).increment(1);
            metrics::histogram!("lextral_grpc_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Paths a label may name: the Lextral methods, health and reflection.
fn known_paths() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: HashSet<String> = lextral_proto::method_paths().into_iter().collect();
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            known.insert(path.to_owned());
        }
        known
    })
}

/// Service and rpc labels; any path no proto defines is one `unknown`
/// series, so random paths cannot grow the metrics without bound.
fn metric_labels(path: &str) -> (String, String) {
    if known_paths().contains(path) {
        split_grpc_path(path)
    } else {
        ("unknown".to_owned(), "unknown".to_owned())
    }
}

fn split_grpc_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, rpc)) => (service.to_owned(), rpc.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::{metric_labels, split_grpc_path};

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            metric_labels("/lextral.v1.RetrieverService/Delete"),
            (
                "lextral.v1.RetrieverService".to_owned(),
                "Delete".to_owned()
            )
        );
        assert_eq!(
            metric_labels("/x9f3/random"),
            ("unknown".to_owned(), "unknown".to_owned())
        );
    }

    #[test]
    fn splits_service_and_method() {
        assert_eq!(
            split_grpc_path("/lextral.v1.EmbedderService/Embed"),
            ("lextral.v1.EmbedderService".to_owned(), "Embed".to_owned())
        );
    }
}
