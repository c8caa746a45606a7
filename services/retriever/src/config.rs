//! Retriever configuration: flags with `LEXTRAL_*` environment equivalents.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lextral_common::telemetry::redact_url;

// One place per default: the flags and the `with_*` constructors share them.
const DEFAULT_DIMENSION: usize = 384;
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
/// Default HNSW graph degree.
pub const DEFAULT_HNSW_M: u32 = 16;
/// Default HNSW build breadth.
pub const DEFAULT_HNSW_EF_CONSTRUCTION: u32 = 64;
/// Default HNSW search breadth.
pub const DEFAULT_EF_SEARCH: u32 = 100;
const DEFAULT_HEALTH_INTERVAL_S: u64 = 2;
const DEFAULT_TIMEOUT_S: u64 = 60;
/// Largest embedded store searched exactly; larger ones search by codes.
pub const DEFAULT_EXACT_MAX_ROWS: usize = 50_000;

/// Which store holds the clauses.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// PostgreSQL when a database URL is given, else embedded.
    Auto,
    /// PostgreSQL with pgvector (clusters; needs `--database-url`).
    Postgres,
    /// A local directory, no server (`--store-path`).
    Embedded,
}

/// How the pgvector store finds neighbours.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSearch {
    /// pgvector's HNSW index (`hnsw.ef_search`); nothing held in memory.
    Hnsw,
    /// An in-memory mirror of one-bit codes and int8 vectors, kept in step
    /// through the table's change feed, picks candidates; PostgreSQL
    /// re-ranks the best exactly. Memory per clause per replica and recall
    /// against HNSW are in the docs (`bench/run.sh retriever-codes`).
    Codes,
}

/// Retriever settings.
#[derive(clap::Args, Clone)]
pub struct RetrieverConfig {
    /// Where clauses are stored: `embedded` keeps them in a local directory
    /// (no database server; the single-machine default), `postgres` in
    /// PostgreSQL with pgvector; `auto` picks postgres when a database URL
    /// is set.
    #[arg(
        id = "store",
        long = "store",
        env = "LEXTRAL_STORE",
        value_enum,
        default_value_t = StoreKind::Auto
    )]
    pub store: StoreKind,

    /// PostgreSQL connection URL (the database needs the pgvector extension
    /// available; `scripts/dev-db.sh start` prints one for a local server).
    #[arg(
        id = "database-url",
        long = "database-url",
        env = "LEXTRAL_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Directory of the embedded store [default: $XDG_DATA_HOME/lextral/store,
    /// else ~/.local/share/lextral/store].
    #[arg(id = "store-path", long = "store-path", env = "LEXTRAL_STORE_PATH")]
    pub store_path: Option<PathBuf>,

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

    /// PEM CA the database server's certificate must chain to, for
    /// `sslmode=require` (or libpq's `verify-ca` / `verify-full`) in the
    /// database URL (default: the URL's `sslrootcert`, else the webpki
    /// roots). The certificate's name must match the URL's host.
    #[arg(id = "database-ca", long = "database-ca", env = "LEXTRAL_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,

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

    /// Default search breadth; requests may override it. pgvector with
    /// `--pg-search hnsw`: its `hnsw.ef_search`. Embedded store and
    /// `--pg-search codes` above --exact-max-rows clauses: the number of
    /// candidates picked by codes and re-scored is 30 × this.
    #[arg(
        id = "ef-search",
        long = "ef-search",
        env = "LEXTRAL_EF_SEARCH",
        default_value_t = DEFAULT_EF_SEARCH
    )]
    pub ef_search: u32,

    /// pgvector store: search through an in-memory mirror of one-bit codes
    /// and int8 vectors, re-ranked exactly in PostgreSQL (about 450 bytes per
    /// clause per replica), or through pgvector's HNSW index alone (nothing
    /// held in memory; lower recall on large collections). See the README's
    /// Retriever section.
    #[arg(
        id = "pg-search",
        long = "pg-search",
        env = "LEXTRAL_PG_SEARCH",
        value_enum,
        default_value_t = PgSearch::Codes
    )]
    pub pg_search: PgSearch,

    /// Embedded store and `--pg-search codes`: up to this many clauses every
    /// clause is scored (embedded: exactly, recall 1); larger stores pick
    /// candidates by one-bit codes, then re-score them.
    #[arg(
        id = "exact-max-rows",
        long = "exact-max-rows",
        env = "LEXTRAL_EXACT_MAX_ROWS",
        default_value_t = DEFAULT_EXACT_MAX_ROWS
    )]
    pub exact_max_rows: usize,

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
            store: StoreKind::Postgres,
            database_url: Some(database_url.into()),
            store_path: None,
            dimension: DEFAULT_DIMENSION,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            database_ca: None,
            hnsw_m: DEFAULT_HNSW_M,
            hnsw_ef_construction: DEFAULT_HNSW_EF_CONSTRUCTION,
            ef_search: DEFAULT_EF_SEARCH,
            exact_max_rows: DEFAULT_EXACT_MAX_ROWS,
            pg_search: PgSearch::Codes,
            health_interval_s: DEFAULT_HEALTH_INTERVAL_S,
            timeout_s: DEFAULT_TIMEOUT_S,
        }
    }

    /// Defaults for an embedded store in `dir`, for tests and tools.
    pub fn embedded(dir: impl Into<PathBuf>) -> Self {
        Self {
            store: StoreKind::Embedded,
            database_url: None,
            store_path: Some(dir.into()),
            ..Self::with_database_url("")
        }
    }

    /// The store to open: `auto` resolved, and postgres only with a URL.
    pub fn store_kind(&self) -> Result<StoreKind, crate::StoreError> {
        match (self.store, &self.database_url) {
            (StoreKind::Postgres, None) => Err(crate::StoreError::InvalidArgument(
                "--store postgres needs --database-url (or LEXTRAL_DATABASE_URL)".to_owned(),
            )),
            (StoreKind::Auto, Some(_)) => Ok(StoreKind::Postgres),
            (StoreKind::Auto, None) => Ok(StoreKind::Embedded),
            (kind, _) => Ok(kind),
        }
    }

    /// The database URL (empty when none is configured).
    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or_default()
    }

    /// The embedded store's directory.
    pub fn store_path(&self) -> PathBuf {
        self.store_path
            .clone()
            .unwrap_or_else(crate::store::default_store_path)
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
            .field("store", &self.store)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("store_path", &self.store_path)
            .field("dimension", &self.dimension)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("database_ca", &self.database_ca)
            .field("hnsw_m", &self.hnsw_m)
            .field("hnsw_ef_construction", &self.hnsw_ef_construction)
            .field("ef_search", &self.ef_search)
            .field("exact_max_rows", &self.exact_max_rows)
            .field("pg_search", &self.pg_search)
            .field("health_interval_s", &self.health_interval_s)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}
