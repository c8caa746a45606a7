//! What every Lextral service shares: one error-code table for gRPC and HTTP,
//! tracing set-up, Prometheus metrics, shutdown signals, gRPC bootstrap,
//! client channels, request limits and secrets, API keys and admission.

#[cfg(feature = "service")]
pub mod access;
#[cfg(feature = "service")]
pub mod admission;
#[cfg(feature = "service")]
pub mod auth;
pub mod breaker;
#[cfg(feature = "service")]
pub mod client;
pub mod error;
pub mod fs;
#[cfg(feature = "service")]
pub mod guard;
pub mod labels;
pub mod limits;
#[cfg(feature = "service")]
pub mod metrics;
pub mod provider;
#[cfg(feature = "service")]
pub mod quota;
pub mod secrets;
#[cfg(feature = "service")]
pub mod server;
#[cfg(feature = "service")]
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "service")]
pub mod tls;

#[cfg(feature = "service")]
pub use access::{Access, AccessConfig};
pub use breaker::{Breaker, BreakerPolicy, CircuitOpen};
#[cfg(feature = "service")]
pub use client::{lazy_channel, PeerChannel, MAX_MESSAGE_BYTES};
#[cfg(feature = "service")]
pub use error::into_status;
pub use error::{client_message, ServiceError, ServiceErrorCode};
pub use limits::{TextLimitError, TextLimits};
pub use secrets::{api_key_from_env, ApiKey, SecretError};

/// A memory field of this process from `/proc/self/status` (`"VmRSS"`,
/// `"VmHWM"`), in bytes; `None` off Linux.
pub fn process_memory_bytes(field: &str) -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib * 1024.0)
}

/// Lextral's cache directory: `$LEXTRAL_HOME`, else `$HOME/.cache/lextral`.
/// The set-up scripts put the model and the local database under it.
pub fn lextral_home() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("LEXTRAL_HOME") {
        return home.into();
    }
    let base = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::PathBuf::from(base)
        .join(".cache")
        .join("lextral")
}
