//! Client channels to other Lextral services, built the same way everywhere.

use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};

use crate::access::Access;
use crate::secrets::ApiKey;

/// Largest gRPC message a Lextral client or internal server accepts: answers
/// and upserts carrying a batch of embeddings outgrow tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a first connection may take before a call fails UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel to a peer service that sends this server's service key (when
/// there is one) as `authorization: Bearer KEY` on every call.
#[derive(Clone, Debug)]
pub struct PeerChannel {
    channel: Channel,
    bearer: Option<HeaderValue>,
}

impl PeerChannel {
    /// `channel`, sending `key` on every call.
    pub fn new(channel: Channel, key: Option<&ApiKey>) -> anyhow::Result<Self> {
        let bearer = key
            .map(|key| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| anyhow::anyhow!("the API key holds characters a header cannot"))?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        Ok(Self { channel, bearer })
    }

    /// The plain channel, for health checks.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

impl tower::Service<http::Request<Body>> for PeerChannel {
    type Response = <Channel as tower::Service<http::Request<Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<Body>>>::Error;
    type Future = <Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(bearer) = &self.bearer {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
        }
        tower::Service::call(&mut self.channel, request)
    }
}

/// A lazy channel to `url` with a per-call `timeout`, sending `access`'s
/// peer key (and, for `https://`, its peer TLS settings): services may start
/// in any order, and calls fail UNAVAILABLE until the peer is up. `what`
/// names the peer in the error for a malformed URL.
pub fn lazy_channel(
    what: &str,
    url: &str,
    timeout: Duration,
    access: &Access,
) -> anyhow::Result<PeerChannel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| anyhow::anyhow!("bad {what} URL {url:?}: {err}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .tcp_nodelay(true)
        // Dead peers are noticed between calls, not at the next timeout.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(access.peer_tls().clone())
            .map_err(|err| anyhow::anyhow!("TLS for {what} URL {url:?}: {err}"))?;
    }
    PeerChannel::new(endpoint.connect_lazy(), access.peer_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_name_the_peer() {
        let open = Access::open();
        let err = lazy_channel("embedder", "not a url", Duration::from_secs(1), &open).unwrap_err();
        assert!(err.to_string().contains("bad embedder URL"), "{err}");
        assert!(lazy_channel(
            "embedder",
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            &open
        )
        .is_ok());
        assert!(lazy_channel(
            "embedder",
            "https://127.0.0.1:1",
            Duration::from_secs(1),
            &open
        )
        .is_ok());
    }
}
