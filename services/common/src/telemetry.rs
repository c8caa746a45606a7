//! Tracing set-up shared by every binary.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), and
/// `json` switches to one JSON object per line for log shippers. Calling it
/// twice is harmless, so tests and `serve all` can both use it.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}

/// Hides the password of a `postgres://user:pass@host/db` URL for logging.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://lex:s3cret@localhost:5432/db"),
            "postgres://lex:***@localhost:5432/db"
        );
        assert_eq!(
            redact_url("postgres://lex@localhost/db"),
            "postgres://lex@localhost/db"
        );
        assert_eq!(redact_url("host=/tmp user=x"), "host=/tmp user=x");
    }
}
