//! Retriever configuration: flags with `LEXTRAL_*` environment equivalents.

use std::fmt;
use std::time::Duration;

use lextral_common::telemetry::redact_url;

// One place per default: the flags and the `with_*` constructors share them.
const DEFAULT_DIMENSION: usize = 384;
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
const DEFAULT_HNSW_M: u32 = 16;
const DEFAULT_HNSW_EF_CONSTRUCTION: u32 = 64;
const DEFAULT_EF_SEARCH: u32 = 100;
const DEFAULT_HEALTH_INTERVAL_S: u64 = 2;
const DEFAULT_TIMEOUT_S: u64 = 60;

/// Retriever settings.
#[derive(clap::Args, Clone)]
pub struct RetrieverConfig {
    /// PostgreSQL connection URL (the database needs the pgvector extension
    /// available; `scripts/dev-db.sh start` prints one for a local server).
    #[arg(
        id = "database-url",
        long = "database-url",
        env = "LEXTRAL_DATABASE_URL"
    )]
    pub database_url: String,

    /// Embedding dimension stored; must match the embedder's model.
    #[arg(
        id = "dimension",
        long = "dimension",
        env = "LEXTRAL_DIMENSION",
        default_value_t = DEFAULT_DIMENSION
    )]
    pub dimension: usize,

    /// Maximum pooled database connections.
    #[arg(
        id = "db-pool-size",
        long = "db-pool-size",
        env = "LEXTRAL_DB_POOL_SIZE",
        default_value_t = DEFAULT_POOL_SIZE
    )]
    pub pool_size: usize,

    /// Seconds to wait for a connection before answering UNAVAILABLE.
    #[arg(
        id = "db-connect-timeout-s",
        long = "db-connect-timeout-s",
        env = "LEXTRAL_DB_CONNECT_TIMEOUT_S",
        default_value_t = DEFAULT_CONNECT_TIMEOUT_S
    )]
    pub connect_timeout_s: u64,

    /// HNSW graph degree (pgvector `m`), used when the index is created.
    #[arg(
        id = "hnsw-m",
        long = "hnsw-m",
        env = "LEXTRAL_HNSW_M",
        default_value_t = DEFAULT_HNSW_M
    )]
    pub hnsw_m: u32,

    /// HNSW build breadth (pgvector `ef_construction`), used when the index is created.
    #[arg(
        id = "hnsw-ef-construction",
        long = "hnsw-ef-construction",
        env = "LEXTRAL_HNSW_EF_CONSTRUCTION",
        default_value_t = DEFAULT_HNSW_EF_CONSTRUCTION
    )]
    pub hnsw_ef_construction: u32,

    /// Default HNSW search breadth (`hnsw.ef_search`); requests may override it.
    #[arg(
        id = "ef-search",
        long = "ef-search",
        env = "LEXTRAL_EF_SEARCH",
        default_value_t = DEFAULT_EF_SEARCH
    )]
    pub ef_search: u32,

    /// Seconds between database health checks.
    #[arg(
        id = "db-health-interval-s",
        long = "db-health-interval-s",
        env = "LEXTRAL_DB_HEALTH_INTERVAL_S",
        default_value_t = DEFAULT_HEALTH_INTERVAL_S
    )]
    pub health_interval_s: u64,

    /// Per-call deadline in seconds.
    #[arg(
        id = "retriever-timeout-s",
        long = "retriever-timeout-s",
        env = "LEXTRAL_RETRIEVER_TIMEOUT_S",
        default_value_t = DEFAULT_TIMEOUT_S
    )]
    pub timeout_s: u64,
}

impl RetrieverConfig {
    /// Defaults for `database_url`, for tests and tools.
    pub fn with_database_url(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            dimension: DEFAULT_DIMENSION,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            hnsw_m: DEFAULT_HNSW_M,
            hnsw_ef_construction: DEFAULT_HNSW_EF_CONSTRUCTION,
            ef_search: DEFAULT_EF_SEARCH,
            health_interval_s: DEFAULT_HEALTH_INTERVAL_S,
            timeout_s: DEFAULT_TIMEOUT_S,
        }
    }

    /// Connection wait bound.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s.max(1))
    }
}

// Hand-written so the database password never reaches the logs.
impl fmt::Debug for RetrieverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrieverConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("dimension", &self.dimension)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("hnsw_m", &self.hnsw_m)
            .field("hnsw_ef_construction", &self.hnsw_ef_construction)
            .field("ef_search", &self.ef_search)
            .field("health_interval_s", &self.health_interval_s)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}
