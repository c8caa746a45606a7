//! API keys: scopes, the keys file (hashes only), and the check every server
//! makes before a call reaches a service.
//!
//! A key is shown once, when `lextral keys create` makes it; the file keeps
//! its SHA-256. Keys are 256 random bits, so a fast hash is enough: there is
//! nothing to brute-force. Servers re-read the file when it changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secrets::ApiKey;

/// How often a server looks at the keys file for changes.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Prefix of every generated key, so a leaked one is recognisable in a scan.
const KEY_PREFIX: &str = "lx_";

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Classify, Labels, Info and the read calls of the internal services.
    Classify,
    /// Also Ingest and Upsert.
    Ingest,
    /// Everything, Delete and Reload included.
    Admin,
}

impl Scope {
    /// Whether a key of this scope may make a call that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }

    /// The scope's name as in the keys file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classify => "classify",
            Self::Ingest => "ingest",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "classify" => Ok(Self::Classify),
            "ingest" => Ok(Self::Ingest),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope {other:?}: expected classify, ingest or admin"
            )),
        }
    }
}

/// The scope a gRPC method needs, from its path (`/package.Service/Method`);
/// `None` for the calls that stay open (health and reflection).
pub fn grpc_scope(path: &str) -> Option<Scope> {
    let trimmed = path.trim_start_matches('/');
    let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
        return None;
    }
    Some(match method {
        "Classify" | "Labels" | "Info" | "Embed" | "Search" | "Stats" => Scope::Classify,
        "Ingest" | "Upsert" => Scope::Ingest,
        // Delete, Reload and anything added later: admin until decided.
        _ => Scope::Admin,
    })
}

/// Who made a call: the key's name and scope. Handlers find it in the
/// request's extensions (quotas, audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (`internal` for the service key).
    pub name: String,
    /// The key's scope.
    pub scope: Scope,
}

/// Why a call was refused. Messages never repeat the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential.
    #[error("this server requires an API key: send the header `authorization: Bearer KEY`")]
    Missing,
    /// Not `Bearer <key>`.
    #[error("malformed authorization header: expected `Bearer KEY`")]
    Malformed,
    /// No such key.
    #[error("unknown API key")]
    Unknown,
    /// The key's time is up.
    #[error("API key {0:?} has expired")]
    Expired(String),
    /// The key was revoked.
    #[error("API key {0:?} has been revoked")]
    Revoked(String),
    /// A valid key of too small a scope.
    #[error("API key {name:?} has scope {scope}; this call needs {required}")]
    Forbidden {
        /// The key's name.
        name: String,
        /// Its scope.
        scope: Scope,
        /// What the call needs.
        required: Scope,
    },
}

impl AuthError {
    /// `false` for 401 / UNAUTHENTICATED, `true` for 403 / PERMISSION_DENIED.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }

    /// The stable code used in JSON error bodies.
    pub fn code(&self) -> &'static str {
        if self.is_forbidden() {
            "permission_denied"
        } else {
            "unauthenticated"
        }
    }
}

/// One key as the keys file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// A unique name, for listing, revoking and logs.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// RFC 3339, UTC; none never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// RFC 3339, UTC, when revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl KeyRecord {
    /// Whether the key's expiry has passed at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
            .is_some_and(|at| at <= now)
    }
}

/// The keys file: a JSON document `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysFile {
    /// Every key ever created in this file, revoked ones included.
    pub keys: Vec<KeyRecord>,
}

/// A keys file that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("keys file {path}: {message}")]
pub struct KeysFileError {
    path: String,
    message: String,
}

impl KeysFileError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// RFC 3339 (seconds, UTC) for the keys file.
pub fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn parse_time(path: &Path, field: &str, value: &str) -> Result<SystemTime, KeysFileError> {
    humantime::parse_rfc3339_weak(value)
        .map_err(|err| KeysFileError::new(path, format!("{field} {value:?}: {err}")))
}

impl KeysFile {
    /// Reads and checks a keys file; a missing file is an error.
    pub fn read(path: &Path) -> Result<Self, KeysFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| KeysFileError::new(path, format!("cannot read: {err}")))?;
        let file: Self = serde_json::from_str(&text)
            .map_err(|err| KeysFileError::new(path, format!("not a keys file: {err}")))?;
        file.entries(path)?;
        Ok(file)
    }

    /// Reads a keys file, or an empty one when none exists yet.
    pub fn read_or_default(path: &Path) -> Result<Self, KeysFileError> {
        if path.exists() {
            Self::read(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Writes the file atomically with owner-only permissions (it names
    /// every key, though it holds no key itself).
    pub fn write(&self, path: &Path) -> Result<(), KeysFileError> {
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|err| KeysFileError::new(path, err.to_string()))?;
        text.push('\n');
        crate::fs::write_text_atomically(path, &text)
            .map_err(|err| KeysFileError::new(path, format!("cannot write: {err:#}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(())
    }

    /// Makes a new key of `scope` named `name` (unique among live keys),
    /// records its hash and returns the key itself, which is nowhere else.
    pub fn create(
        &mut self,
        name: &str,
        scope: Scope,
        expires_in: Option<Duration>,
        now: SystemTime,
    ) -> Result<ApiKey, String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "key name {name:?} must be 1-64 printable characters"
            ));
        }
        if self.keys.iter().any(|k| k.name == name) {
            return Err(format!(
                "a key named {name:?} exists already (names stay taken after revoke)"
            ));
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| format!("the operating system's random source failed: {e}"))?;
        let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        self.keys.push(KeyRecord {
            name: name.to_owned(),
            scope,
            sha256: hex::encode(hash(&key)),
            created: format_time(now),
            expires: expires_in.map(|d| format_time(now + d)),
            revoked: None,
        });
        Ok(ApiKey::new(key))
    }

    /// Marks the key `name` revoked; an unknown or already revoked name is an error.
    pub fn revoke(&mut self, name: &str, now: SystemTime) -> Result<(), String> {
        let record = self
            .keys
            .iter_mut()
            .find(|k| k.name == name)
            .ok_or_else(|| format!("no key named {name:?}"))?;
        if record.revoked.is_some() {
            return Err(format!("key {name:?} is revoked already"));
        }
        record.revoked = Some(format_time(now));
        Ok(())
    }

    fn entries(&self, path: &Path) -> Result<Vec<Entry>, KeysFileError> {
        let mut names = std::collections::HashSet::new();
        self.keys
            .iter()
            .map(|record| {
                if !names.insert(record.name.as_str()) {
                    return Err(KeysFileError::new(
                        path,
                        format!("key name {:?} appears twice", record.name),
                    ));
                }
                let digest = hex::decode(&record.sha256)
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        KeysFileError::new(
                            path,
                            format!("key {:?}: sha256 is not 64 hex digits", record.name),
                        )
                    })?;
                parse_time(path, "created", &record.created)?;
                Ok(Entry {
                    caller: Caller {
                        name: record.name.clone(),
                        scope: record.scope,
                    },
                    digest,
                    expires: record
                        .expires
                        .as_deref()
                        .map(|v| parse_time(path, "expires", v))
                        .transpose()?,
                    revoked: record.revoked.is_some(),
                })
            })
            .collect()
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key as the server checks it.
#[derive(Debug, Clone)]
struct Entry {
    caller: Caller,
    digest: [u8; 32],
    expires: Option<SystemTime>,
    revoked: bool,
}

/// File identity used to notice changes without re-parsing every second.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The keys a server accepts: those of a keys file (re-read when it
/// changes) plus the service key its peers send.
#[derive(Debug)]
pub struct KeyStore {
    path: Option<PathBuf>,
    service: Option<Entry>,
    loaded: RwLock<(Stamp, Vec<Entry>)>,
    last_check: Mutex<Instant>,
}

impl KeyStore {
    /// Loads `path` (if any) and accepts `service_key` as an admin key named
    /// `internal`. Fails when the file cannot be read or parsed.
    pub fn new(path: Option<&Path>, service_key: Option<&ApiKey>) -> Result<Self, KeysFileError> {
        let (stamp, entries) = match path {
            Some(path) => (stamp(path), KeysFile::read(path)?.entries(path)?),
            None => (None, Vec::new()),
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            service: service_key.map(|key| Entry {
                caller: Caller {
                    name: "internal".to_owned(),
                    scope: Scope::Admin,
                },
                digest: hash(key.expose()),
                expires: None,
                revoked: false,
            }),
            loaded: RwLock::new((stamp, entries)),
            last_check: Mutex::new(Instant::now()),
        })
    }

    /// Re-reads the file when its size or modification time changed; a
    /// file that has become unreadable or invalid keeps the last good keys.
    fn refresh(&self) {
        let Some(path) = &self.path else { return };
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < RELOAD_CHECK_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let current = stamp(path);
        if current == self.loaded.read().unwrap_or_else(|p| p.into_inner()).0 {
            return;
        }
        match KeysFile::read(path).and_then(|file| file.entries(path)) {
            Ok(entries) => {
                tracing::info!(path = %path.display(), keys = entries.len(), "keys file reloaded");
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = (current, entries);
            }
            Err(err) => {
                tracing::error!(error = %err, "keys file unusable; keeping the keys loaded before");
            }
        }
    }

    /// Checks an `authorization` header value for a call needing `required`.
    pub fn check(&self, header: Option<&[u8]>, required: Scope) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, key) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        let key = key.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
            return Err(AuthError::Malformed);
        }
        self.refresh();
        let digest = hash(key);
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        // Compare against every entry so the time taken says nothing about
        // which (or whether one) matched.
        let mut found: Option<&Entry> = None;
        for entry in self.service.iter().chain(loaded.1.iter()) {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::Unknown)?;
        if entry.revoked {
            return Err(AuthError::Revoked(entry.caller.name.clone()));
        }
        if entry.expires.is_some_and(|at| at <= SystemTime::now()) {
            return Err(AuthError::Expired(entry.caller.name.clone()));
        }
        if !entry.caller.scope.allows(required) {
            return Err(AuthError::Forbidden {
                name: entry.caller.name.clone(),
                scope: entry.caller.scope,
                required,
            });
        }
        Ok(entry.caller.clone())
    }
}

/// Parses `--expires-in` values such as `90d`, `12h` or `30m`.
pub fn parse_expires_in(value: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(value).map_err(|err| format!("bad duration {value:?}: {err}"))?;
    if duration.is_zero() {
        return Err("an expiry of zero would make a dead key".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(key: &ApiKey) -> Vec<u8> {
        format!("Bearer {}", key.expose()).into_bytes()
    }

    #[test]
    fn scopes_nest() {
        assert!(Scope::Admin.allows(Scope::Ingest));
        assert!(Scope::Ingest.allows(Scope::Classify));
        assert!(!Scope::Classify.allows(Scope::Ingest));
        assert!(!Scope::Ingest.allows(Scope::Admin));
        assert_eq!("Admin".parse::<Scope>(), Ok(Scope::Admin));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn methods_map_to_scopes() {
        assert_eq!(
            grpc_scope("/lextral.v1.OrchestratorService/Classify"),
            Some(Scope::Classify)
        );
        assert_eq!(
            grpc_scope("/lextral.v1.OrchestratorService/Ingest"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            grpc_scope("/lextral.v1.RetrieverService/Delete"),
            Some(Scope::Admin)
        );
        assert_eq!(
            grpc_scope("/lextral.v1.FinetunedClassifierService/Reload"),
            Some(Scope::Admin)
        );
        assert_eq!(grpc_scope("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_scope("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(grpc_scope("/nonsense"), Some(Scope::Admin));
    }

    #[test]
    fn the_file_keeps_hashes_and_the_store_checks_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let now = SystemTime::now();
        let mut file = KeysFile::default();
        let reader = file.create("reader", Scope::Classify, None, now).unwrap();
        let writer = file.create("writer", Scope::Ingest, None, now).unwrap();
        let old = file
            .create(
                "old",
                Scope::Admin,
                Some(Duration::from_secs(1)),
                now - Duration::from_secs(10),
            )
            .unwrap();
        let gone = file.create("gone", Scope::Admin, None, now).unwrap();
        file.revoke("gone", now).unwrap();
        assert!(file.create("reader", Scope::Admin, None, now).is_err());
        file.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [&reader, &writer, &old, &gone] {
            assert!(!text.contains(key.expose()), "the file holds a key");
            assert!(key.expose().starts_with(KEY_PREFIX));
        }

        let store = KeyStore::new(Some(&path), None).unwrap();
        let caller = store
            .check(Some(&bearer(&reader)), Scope::Classify)
            .unwrap();
        assert_eq!(caller.name, "reader");
        assert!(matches!(
            store.check(Some(&bearer(&reader)), Scope::Ingest),
            Err(AuthError::Forbidden { .. })
        ));
        assert!(store.check(Some(&bearer(&writer)), Scope::Ingest).is_ok());
        assert_eq!(
            store.check(Some(&bearer(&old)), Scope::Classify),
            Err(AuthError::Expired("old".to_owned()))
        );
        assert_eq!(
            store.check(Some(&bearer(&gone)), Scope::Classify),
            Err(AuthError::Revoked("gone".to_owned()))
        );
        assert_eq!(store.check(None, Scope::Classify), Err(AuthError::Missing));
        assert_eq!(
            store.check(Some(b"Basic abc"), Scope::Classify),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            store.check(Some(b"Bearer lx_nope"), Scope::Classify),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            store.check(Some(&[0xff, 0xfe]), Scope::Classify),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn changes_to_the_file_are_picked_up_and_bad_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let now = SystemTime::now();
        let mut file = KeysFile::default();
        let first = file.create("first", Scope::Classify, None, now).unwrap();
        file.write(&path).unwrap();
        let store = KeyStore::new(Some(&path), None).unwrap();
        assert!(store.check(Some(&bearer(&first)), Scope::Classify).is_ok());

        let second = file.create("second", Scope::Classify, None, now).unwrap();
        file.revoke("first", now).unwrap();
        file.write(&path).unwrap();
        *store.last_check.lock().unwrap() = Instant::now() - RELOAD_CHECK_EVERY;
        assert!(store.check(Some(&bearer(&second)), Scope::Classify).is_ok());
        assert!(matches!(
            store.check(Some(&bearer(&first)), Scope::Classify),
            Err(AuthError::Revoked(_))
        ));

        std::fs::write(&path, "{ not json").unwrap();
        *store.last_check.lock().unwrap() = Instant::now() - RELOAD_CHECK_EVERY;
        assert!(store.check(Some(&bearer(&second)), Scope::Classify).is_ok());
    }

    #[test]
    fn the_service_key_is_admin_and_bad_files_are_refused() {
        let key = ApiKey::new("lx_service");
        let store = KeyStore::new(None, Some(&key)).unwrap();
        let caller = store
            .check(Some(b"bearer lx_service"), Scope::Admin)
            .unwrap();
        assert_eq!(caller.name, "internal");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert!(KeyStore::new(Some(&path), None).is_err());
        std::fs::write(&path, r#"{"keys":[{"name":"a","scope":"admin","sha256":"zz","created":"2026-01-01T00:00:00Z"}]}"#).unwrap();
        let err = KeyStore::new(Some(&path), None).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn expiry_durations_parse() {
        assert_eq!(
            parse_expires_in("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert!(parse_expires_in("0s").is_err());
        assert!(parse_expires_in("soon").is_err());
    }
}
