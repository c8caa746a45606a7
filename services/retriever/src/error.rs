//! Store errors and their place in the shared code table.

use lextral_common::{ServiceError, ServiceErrorCode};

/// What can go wrong in the retriever.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A vector of the wrong length.
    #[error("{what} has dimension {got}; the index stores dimension {expected}")]
    DimensionMismatch {
        what: String,
        got: usize,
        expected: usize,
    },
    /// The database holds vectors of another dimension than configured.
    #[error(
        "the database stores {stored}-dimensional vectors but the retriever is configured \
         for {configured}; use another database or set --dimension {stored}"
    )]
    DimensionMismatchInIndex { stored: usize, configured: usize },
    /// PostgreSQL cannot be reached (or is restarting).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed.
    #[error("migration {version} failed: {reason}")]
    Migration { version: i32, reason: String },
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// The embedded store's files could not be read or written.
    #[error("embedded store {0}")]
    Storage(String),
}

impl ServiceError for StoreError {
    fn error_code(&self) -> ServiceErrorCode {
        match self {
            Self::InvalidArgument(_) | Self::DimensionMismatch { .. } => {
                ServiceErrorCode::BadRequest
            }
            Self::DimensionMismatchInIndex { .. } => ServiceErrorCode::FailedPrecondition,
            Self::Unavailable(_) => ServiceErrorCode::Unavailable,
            Self::Migration { .. } | Self::Database(_) | Self::Storage(_) => {
                ServiceErrorCode::Internal
            }
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No server error code: the connection broke or never opened.
            // The causes say why (a refused port, a certificate not trusted).
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    message = format!("{message}: {cause_text}");
                }
                source = cause.source();
            }
            return Self::Unavailable(message);
        };
        let code = db.code().code();
        // 08: connection exception, 53: insufficient resources,
        // 57P: operator intervention (shutdown, crash recovery).
        if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
            Self::Unavailable(db.message().to_owned())
        } else if code.starts_with("22") {
            Self::InvalidArgument(db.message().to_owned())
        } else {
            Self::Database(format!("{} ({code})", db.message()))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => err.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
