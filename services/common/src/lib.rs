//! What every Lextral service shares: one error-code table for gRPC and HTTP,
//! tracing set-up, Prometheus metrics, shutdown signals and gRPC bootstrap.

pub mod error;
pub mod fs;
pub mod labels;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use error::{into_status, ServiceError, ServiceErrorCode};

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
