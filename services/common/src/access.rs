//! Who may call a server and how many calls it takes at once: the keys it
//! accepts, the key it sends to its peers, and load shedding per service.
//! One [`Access`] serves the gRPC layer ([`crate::guard`]) and the REST
//! gateway alike, so both protocols share one admission budget.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::admission::{Limiter, Slot};

use crate::auth::{AuthError, Caller, KeyStore, Scope};
use crate::quota::{OverQuota, QuotaClass, QuotaSpec, Quotas};
use crate::secrets::ApiKey;
use crate::tls::{PeerTls, TlsFiles};

/// How a server admits calls.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Keys file (`lextral keys create`); re-read when it changes.
    pub keys_file: Option<PathBuf>,
    /// The key sent to peer services and accepted from them (scope admin).
    pub service_key: Option<ApiKey>,
    /// Serve without credentials even off loopback.
    pub insecure_no_auth: bool,
    /// Calls in flight per service before new ones are refused; 0: no limit.
    pub max_concurrent_requests: usize,
    /// Per-caller quotas (`classify=600/m,llm=20/m`); empty: none.
    pub quotas: QuotaSpec,
    /// This server's certificate (TLS on gRPC and REST), and the client CA
    /// for mTLS.
    pub tls: Option<TlsFiles>,
    /// The CA of `https://` peers (else the webpki roots).
    pub peer_ca: Option<std::path::PathBuf>,
}

/// Whom a call is charged to: a key's name, or `ip:ADDRESS` without keys.
/// The door puts it in the request's extensions for handlers (LLM quota).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The bucket key.
    pub id: String,
    /// The quota class of the caller's own calls.
    pub class: QuotaClass,
}

/// A call refused because the service is at its concurrency limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "server busy: {limit} calls in flight on {service} (--max-concurrent-requests, lowered while a dependency is overloaded); retry shortly"
)]
pub struct Busy {
    service: String,
    limit: usize,
}

/// Seconds a refused caller is told to wait (`Retry-After`, `retry-after`).
pub const RETRY_AFTER_S: u64 = 1;

#[derive(Debug)]
struct Inner {
    keys: Option<KeyStore>,
    peer_key: Option<ApiKey>,
    insecure_no_auth: bool,
    limit: usize,
    slots: Mutex<HashMap<String, Arc<Limiter>>>,
    quotas: Quotas,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    rest_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    peer_tls: tonic::transport::ClientTlsConfig,
}

/// The admission policy of one server process (cheap to clone).
#[derive(Debug, Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl Default for Access {
    fn default() -> Self {
        Self::open()
    }
}

impl Access {
    /// No credentials and no limit: tests and embedded use.
    pub fn open() -> Self {
        Self::from_parts(None, None, &AccessConfig::default()).expect("no files to read")
    }

    /// The policy for a server whose peers run as other processes.
    pub fn new(config: &AccessConfig) -> anyhow::Result<Self> {
        let keys = Self::key_store(config, config.service_key.as_ref())?;
        Self::from_parts(keys, config.service_key.clone(), config)
    }

    /// The policy for `serve all`, where the services call each other in
    /// one process: with keys on and no service key given, a random one is
    /// made for those calls and lives only in memory.
    pub fn for_one_process(config: &AccessConfig) -> anyhow::Result<Self> {
        let service_key = match (&config.service_key, &config.keys_file) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(_)) => {
                let mut scratch = crate::auth::KeysFile::default();
                Some(
                    scratch
                        .create("internal", Scope::Admin, None, std::time::SystemTime::now())
                        .map_err(anyhow::Error::msg)?,
                )
            }
            (None, None) => None,
        };
        let keys = Self::key_store(config, service_key.as_ref())?;
        Self::from_parts(keys, service_key, config)
    }

    fn key_store(
        config: &AccessConfig,
        service_key: Option<&ApiKey>,
    ) -> anyhow::Result<Option<KeyStore>> {
        if config.keys_file.is_none() && service_key.is_none() {
            return Ok(None);
        }
        if config.insecure_no_auth {
            anyhow::bail!(
                "--insecure-no-auth contradicts --keys-file / LEXTRAL_SERVICE_KEY: pass one or the other"
            );
        }
        Ok(Some(KeyStore::new(
            config.keys_file.as_deref(),
            service_key,
        )?))
    }

    fn from_parts(
        keys: Option<KeyStore>,
        peer_key: Option<ApiKey>,
        config: &AccessConfig,
    ) -> anyhow::Result<Self> {
        // Read and checked now, so a bad certificate stops the start.
        let (grpc_tls, rest_tls) = match &config.tls {
            Some(files) => (Some(files.grpc()?), Some(files.rustls()?)),
            None => (None, None),
        };
        let peer_tls = PeerTls {
            ca: config.peer_ca.clone(),
            identity: config.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
        }
        .grpc()?;
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                peer_key,
                insecure_no_auth: config.insecure_no_auth,
                limit: config.max_concurrent_requests,
                slots: Mutex::new(HashMap::new()),
                quotas: Quotas::new(&config.quotas),
                grpc_tls,
                rest_tls,
                peer_tls,
            }),
        })
    }

    /// TLS for this server's gRPC port, when configured.
    pub fn grpc_tls(&self) -> Option<tonic::transport::ServerTlsConfig> {
        self.inner.grpc_tls.clone()
    }

    /// TLS for the REST gateway, when configured.
    pub fn rest_tls(&self) -> Option<Arc<tokio_rustls::rustls::ServerConfig>> {
        self.inner.rest_tls.clone()
    }

    /// How to reach `https://` peers.
    pub fn peer_tls(&self) -> &tonic::transport::ClientTlsConfig {
        &self.inner.peer_tls
    }

    /// Whom a call that passed the door is charged to: its key, else its
    /// client address. Peer services (the service key) are not charged.
    pub fn who(&self, caller: Option<&Caller>, peer: Option<std::net::SocketAddr>) -> Option<Who> {
        match caller {
            Some(caller) if caller.name == "internal" => None,
            Some(caller) => Some(Who {
                id: caller.name.clone(),
                class: QuotaClass::Scope(caller.scope),
            }),
            None => Some(Who {
                id: peer.map_or_else(
                    || "ip:unknown".to_owned(),
                    |addr| format!("ip:{}", addr.ip()),
                ),
                class: QuotaClass::Anonymous,
            }),
        }
    }

    /// Takes one call from `who`'s bucket of `class` (its own class when
    /// `None`).
    pub fn charge(&self, who: &Who, class: Option<QuotaClass>) -> Result<(), OverQuota> {
        self.inner
            .quotas
            .charge(class.unwrap_or(who.class), &who.id)
    }

    /// Whether calls need a key.
    pub fn requires_keys(&self) -> bool {
        self.inner.keys.is_some()
    }

    /// The key to send to peer services, if they want one.
    pub fn peer_key(&self) -> Option<&ApiKey> {
        self.inner.peer_key.as_ref()
    }

    /// Refuses to serve data without credentials off loopback, unless the
    /// operator said so (then warns). `what` names the listener.
    pub fn check_exposure(&self, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
        if self.requires_keys() || addr.ip().is_loopback() {
            return Ok(());
        }
        if self.inner.insecure_no_auth {
            tracing::warn!(
                %addr,
                "{what} is open to anyone who can reach {addr}: no API keys (--insecure-no-auth)"
            );
            return Ok(());
        }
        anyhow::bail!(
            "refusing to serve {what} on {addr} without credentials: create keys with \
             `lextral keys create --keys-file FILE --scope classify` and pass --keys-file FILE \
             (env LEXTRAL_KEYS_FILE), bind 127.0.0.1, or pass --insecure-no-auth \
             (LEXTRAL_INSECURE_NO_AUTH=1) to serve it open"
        )
    }

    /// Checks a call's `authorization` value for `required` (`None`: an open
    /// call). Returns who called, when keys are on.
    pub fn authorize(
        &self,
        header: Option<&[u8]>,
        required: Option<Scope>,
    ) -> Result<Option<Caller>, AuthError> {
        match (&self.inner.keys, required) {
            (Some(keys), Some(required)) => keys.check(header, required).map(Some),
            _ => Ok(None),
        }
    }

    /// Registers a service that admission counts on its own.
    pub fn register(&self, service: &str) {
        if self.inner.limit == 0 {
            return;
        }
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service.to_owned())
            .or_insert_with(|| Limiter::new(service, self.inner.limit));
    }

    /// A slot for one call to `service`, held until the answer is sent
    /// (then [`Slot::done`] says whether a dependency was overloaded);
    /// [`Busy`] at once when every slot is taken. Unregistered services
    /// (health, reflection, unknown paths) are not counted.
    pub fn admit(&self, service: &str) -> Result<Option<Slot>, Busy> {
        let limiter = {
            let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(service) {
                Some(limiter) => limiter.clone(),
                None => return Ok(None),
            }
        };
        match limiter.try_acquire() {
            Some(slot) => Ok(Some(slot)),
            None => {
                metrics::counter!("lextral_requests_shed_total", "service" => service.to_owned())
                    .increment(1);
                Err(Busy {
                    service: service.to_owned(),
                    limit: limiter.current(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_servers_stay_on_loopback_unless_told() {
        let open = Access::open();
        assert!(open
            .check_exposure("127.0.0.1:1".parse().unwrap(), "gRPC")
            .is_ok());
        assert!(open
            .check_exposure("[::1]:1".parse().unwrap(), "gRPC")
            .is_ok());
        let err = open
            .check_exposure("0.0.0.0:1".parse().unwrap(), "gRPC")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--keys-file") && err.contains("--insecure-no-auth"),
            "{err}"
        );
        let insecure = Access::new(&AccessConfig {
            insecure_no_auth: true,
            ..Default::default()
        })
        .unwrap();
        assert!(insecure
            .check_exposure("0.0.0.0:1".parse().unwrap(), "gRPC")
            .is_ok());
        let keyed = Access::new(&AccessConfig {
            service_key: Some(ApiKey::new("lx_k")),
            ..Default::default()
        })
        .unwrap();
        assert!(keyed
            .check_exposure("0.0.0.0:1".parse().unwrap(), "gRPC")
            .is_ok());
        assert!(Access::new(&AccessConfig {
            service_key: Some(ApiKey::new("lx_k")),
            insecure_no_auth: true,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn one_process_with_keys_gets_an_internal_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        crate::auth::KeysFile::default().write(&path).unwrap();
        let access = Access::for_one_process(&AccessConfig {
            keys_file: Some(path),
            ..Default::default()
        })
        .unwrap();
        let key = access.peer_key().expect("an internal key").clone();
        let header = format!("Bearer {}", key.expose());
        let caller = access
            .authorize(Some(header.as_bytes()), Some(Scope::Admin))
            .unwrap()
            .unwrap();
        assert_eq!(caller.name, "internal");
        assert!(Access::for_one_process(&AccessConfig::default())
            .unwrap()
            .peer_key()
            .is_none());
    }

    #[test]
    fn admission_refuses_past_the_limit_and_frees_on_drop() {
        let access = Access::new(&AccessConfig {
            max_concurrent_requests: 2,
            ..Default::default()
        })
        .unwrap();
        access.register("svc");
        let first = access.admit("svc").unwrap();
        let _second = access.admit("svc").unwrap();
        assert!(access.admit("svc").is_err());
        assert!(access.admit("other").unwrap().is_none());
        drop(first);
        assert!(access.admit("svc").unwrap().is_some());
    }
}
