//! Client channels to other Lextral services, built the same way everywhere.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message a Lextral client accepts: answers carrying a batch
/// of embeddings or neighbours' texts outgrow tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a first connection may take before a call fails UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazy channel to `url` with a per-call `timeout`: services may start in
/// any order, and calls fail UNAVAILABLE until the peer is up. `what` names
/// the peer in the error for a malformed URL.
pub fn lazy_channel(what: &str, url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|err| anyhow::anyhow!("bad {what} URL {url:?}: {err}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_name_the_peer() {
        let err = lazy_channel("embedder", "not a url", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("bad embedder URL"), "{err}");
        assert!(lazy_channel("embedder", "http://127.0.0.1:1", Duration::from_secs(1)).is_ok());
    }
}
