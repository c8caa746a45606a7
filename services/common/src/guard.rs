//! The door of every server: credentials, load shedding and panic catching,
//! as one tower layer for gRPC and one axum middleware for REST, both driven
//! by the same [`Access`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use tonic::metadata::MetadataValue;
use tonic::Status;
use tower::{Layer, Service};

use crate::access::{Access, Busy, RETRY_AFTER_S};
use crate::admission::OVERLOADED_HEADER;
use crate::auth::{grpc_scope, AuthError, Scope};
use crate::quota::OverQuota;

/// gRPC status for a refused credential.
pub fn auth_status(err: &AuthError) -> Status {
    if err.is_forbidden() {
        Status::permission_denied(err.to_string())
    } else {
        Status::unauthenticated(err.to_string())
    }
}

/// gRPC status for a call over its quota, with `retry-after` metadata.
pub fn quota_status(over: &OverQuota) -> Status {
    let mut status = Status::resource_exhausted(over.to_string());
    status
        .metadata_mut()
        .insert("retry-after", MetadataValue::from(over.retry_after_s));
    status
}

/// The REST answer for a call over its quota: 429 with `Retry-After`.
pub fn quota_response(over: &OverQuota) -> Response {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "resource_exhausted",
        &over.to_string(),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(over.retry_after_s));
    response
}

/// gRPC status for a shed call, with the `retry-after` the caller should honour.
pub fn busy_status(busy: &Busy) -> Status {
    let mut status = Status::resource_exhausted(busy.to_string());
    status
        .metadata_mut()
        .insert("retry-after", MetadataValue::from(RETRY_AFTER_S));
    status
}

/// Refusals are counted by reason, not logged at info: a key-guessing
/// client must not flood the log.
fn count_refusal(err: &AuthError) {
    let reason = match err {
        AuthError::Missing => "missing",
        AuthError::Malformed => "malformed",
        AuthError::Unknown => "unknown",
        AuthError::Expired(_) => "expired",
        AuthError::Revoked(_) => "revoked",
        AuthError::Forbidden { .. } => "scope",
    };
    metrics::counter!("lextral_auth_refused_total", "reason" => reason).increment(1);
}

/// The message a panic carried (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned())
}

/// The gRPC side of the door, applied once in [`crate::server::serve_grpc`].
#[derive(Debug, Clone)]
pub struct GrpcGuardLayer {
    access: Access,
}

impl GrpcGuardLayer {
    /// A layer admitting calls by `access`.
    pub fn new(access: Access) -> Self {
        Self { access }
    }
}

impl<S> Layer<S> for GrpcGuardLayer {
    type Service = GrpcGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcGuard {
            inner,
            access: self.access.clone(),
        }
    }
}

/// The service produced by [`GrpcGuardLayer`].
#[derive(Debug, Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    access: Access,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for GrpcGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        let required = grpc_scope(&path);
        let caller = match self.access.authorize(header, required) {
            Ok(caller) => caller,
            Err(err) => {
                count_refusal(&err);
                tracing::debug!(%path, error = %err, "call refused");
                let response = auth_status(&err).into_http();
                return Box::pin(async move { Ok(response) });
            }
        };
        if required.is_some() {
            let peer = request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr());
            if let Some(who) = self.access.who(caller.as_ref(), peer) {
                if let Err(over) = self.access.charge(&who, None) {
                    let response = quota_status(&over).into_http();
                    return Box::pin(async move { Ok(response) });
                }
                request.extensions_mut().insert(who);
            }
        }
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let permit = match self.access.admit(service) {
            Ok(permit) => permit,
            Err(busy) => {
                let response = busy_status(&busy).into_http();
                return Box::pin(async move { Ok(response) });
            }
        };
        // The ready clone answers this call; `self` keeps a fresh one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let outcome = AssertUnwindSafe(inner.call(request)).catch_unwind().await;
            if let (Some(slot), Ok(Ok(response))) = (permit, &outcome) {
                slot.done(response.headers().contains_key(OVERLOADED_HEADER));
            }
            match outcome {
                Ok(result) => result,
                Err(panic) => {
                    tracing::error!(%path, panic = %panic_message(&*panic), "handler panicked");
                    metrics::counter!("lextral_panics_total").increment(1);
                    Ok(Status::internal("internal error").into_http())
                }
            }
        })
    }
}

/// A JSON error answer in the gateway's shape: `{"error": {code, message}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// The REST side of the door: routes under `/v1/` need the scope
/// [`rest_scope`] names; the rest of the gateway stays open. Calls count
/// against `service`'s concurrency budget, shared with its gRPC side.
pub async fn http_guard(
    State((access, service)): State<(Access, &'static str)>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let required = rest_scope(&path);
    match access.authorize(header, required) {
        Ok(caller) => {
            if required.is_some() {
                let peer = request
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|info| info.0);
                if let Some(who) = access.who(caller.as_ref(), peer) {
                    if let Err(over) = access.charge(&who, None) {
                        return quota_response(&over);
                    }
                    request.extensions_mut().insert(who);
                }
            }
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
        }
        Err(err) => {
            count_refusal(&err);
            tracing::debug!(%path, error = %err, "call refused");
            let status = if err.is_forbidden() {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut response = json_error(status, err.code(), &err.to_string());
            if !err.is_forbidden() {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
    }
    let slot = if rest_scope(&path).is_some() {
        match access.admit(service) {
            Ok(permit) => permit,
            Err(busy) => {
                let mut response = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "resource_exhausted",
                    &busy.to_string(),
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
                return response;
            }
        }
    } else {
        None
    };
    let response = next.run(request).await;
    if let Some(slot) = slot {
        slot.done(response.headers().contains_key(OVERLOADED_HEADER));
    }
    response
}

/// The scope a REST route needs; `None` for the open pages (`/`, `/docs`,
/// `/openapi.json`, `/healthz`, `/readyz`) and unknown paths, which 404.
pub fn rest_scope(path: &str) -> Option<Scope> {
    match path {
        "/v1/classify" | "/v1/labels" | "/v1/info" => Some(Scope::Classify),
        "/v1/ingest" => Some(Scope::Ingest),
        _ if path.starts_with("/v1/") => Some(Scope::Admin),
        _ => None,
    }
}

/// Answers a panic in a REST handler: a 500 in the usual JSON shape, the
/// panic in the log only (for tower-http's `CatchPanicLayer`).
pub fn http_panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(panic = %panic_message(&*panic), "handler panicked");
    metrics::counter!("lextral_panics_total").increment(1);
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;
    use crate::access::AccessConfig;

    fn limited(limit: usize) -> Access {
        let access = Access::new(&AccessConfig {
            max_concurrent_requests: limit,
            ..Default::default()
        })
        .unwrap();
        access.register("lextral.v1.Slow");
        access
    }

    fn grpc_request(path: &str) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    fn grpc_code(response: &http::Response<tonic::body::Body>) -> Option<String> {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn grpc_calls_past_the_limit_are_refused_at_once() {
        let release = Arc::new(Notify::new());
        let waiting = release.clone();
        let slow = tower::service_fn(move |_request: http::Request<tonic::body::Body>| {
            let waiting = waiting.clone();
            async move {
                waiting.notified().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let guard = GrpcGuardLayer::new(limited(1)).layer(slow);
        let request = || grpc_request("/lextral.v1.Slow/Call");
        let first = tokio::spawn(guard.clone().oneshot(request()));
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        let refused = guard.clone().oneshot(request()).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        assert_eq!(
            grpc_code(&refused).as_deref(),
            Some("8"),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
        // Health and other unregistered services are never shed.
        let health = grpc_request("/grpc.health.v1.Health/Check");
        let pending = tokio::spawn(guard.clone().oneshot(health));
        tokio::task::yield_now().await;
        release.notify_waiters();
        assert_eq!(grpc_code(&first.await.unwrap().unwrap()), None);
        assert_eq!(grpc_code(&pending.await.unwrap().unwrap()), None);
        release.notify_one();
        let again = guard.oneshot(request()).await.unwrap();
        assert_eq!(grpc_code(&again), None, "the slot came back");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_server_goes_on() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let flaky = tower::service_fn(move |_request: http::Request<tonic::body::Body>| {
            let first = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    panic!("boom");
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let guard = GrpcGuardLayer::new(limited(1)).layer(flaky);
        let request = || grpc_request("/lextral.v1.Slow/Call");
        let answer = guard.clone().oneshot(request()).await.unwrap();
        assert_eq!(grpc_code(&answer).as_deref(), Some("13"), "INTERNAL");
        let answer = guard.oneshot(request()).await.unwrap();
        assert_eq!(grpc_code(&answer), None, "the slot was freed by the panic");
    }

    #[tokio::test]
    async fn rest_calls_past_the_limit_get_429_with_retry_after() {
        let release = Arc::new(Notify::new());
        let waiting = release.clone();
        let access = limited(1);
        let app = axum::Router::new()
            .route(
                "/v1/labels",
                get(move || {
                    let waiting = waiting.clone();
                    async move {
                        waiting.notified().await;
                        "ok"
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                (access, "lextral.v1.Slow"),
                http_guard,
            ));
        let get = |path: &str| {
            http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let first = tokio::spawn(app.clone().oneshot(get("/v1/labels")));
        tokio::task::yield_now().await;
        let refused = app.clone().oneshot(get("/v1/labels")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers().get(RETRY_AFTER).unwrap(), "1");
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "resource_exhausted");
        let open = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "open pages are not counted");
        release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn rest_routes_map_to_scopes() {
        assert_eq!(rest_scope("/v1/classify"), Some(Scope::Classify));
        assert_eq!(rest_scope("/v1/ingest"), Some(Scope::Ingest));
        assert_eq!(rest_scope("/v1/anything-new"), Some(Scope::Admin));
        assert_eq!(rest_scope("/readyz"), None);
        assert_eq!(rest_scope("/openapi.json"), None);
    }
}
