//! Secrets from the environment: an API key in a variable, or in a file the
//! variable `X_FILE` names (Kubernetes secrets mounted as files).

use std::fmt;

/// An API key that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A key file that is named but cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SecretError {
    message: String,
}

/// Reads a key from the first of `vars` that is set: `X_FILE` (a file
/// holding the key) before `X` itself. `None` when none is set; a named file
/// that is unreadable or empty is an error, not a fall-through.
pub fn api_key_from_env(vars: &[&str]) -> Result<Option<ApiKey>, SecretError> {
    for var in vars {
        if let Ok(path) = std::env::var(format!("{var}_FILE")) {
            let key = std::fs::read_to_string(&path).map_err(|err| SecretError {
                message: format!("cannot read {var}_FILE ({path}): {err}"),
            })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(SecretError {
                    message: format!("{var}_FILE ({path}) is empty"),
                });
            }
            return Ok(Some(ApiKey::new(key)));
        }
        if let Ok(key) = std::env::var(var) {
            if !key.trim().is_empty() {
                return Ok(Some(ApiKey::new(key.trim())));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.expose(), "sk-very-secret");
    }

    #[test]
    fn keys_come_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        // Variable names unique to this test: the environment is shared.
        std::env::set_var("LEXTRAL_TEST_KEY_A_FILE", &file);
        std::env::set_var("LEXTRAL_TEST_KEY_B", "sk-from-env");
        let key = api_key_from_env(&["LEXTRAL_TEST_KEY_A", "LEXTRAL_TEST_KEY_B"])
            .unwrap()
            .unwrap();
        assert_eq!(key.expose(), "sk-from-file");
        let key = api_key_from_env(&["LEXTRAL_TEST_KEY_NONE", "LEXTRAL_TEST_KEY_B"])
            .unwrap()
            .unwrap();
        assert_eq!(key.expose(), "sk-from-env");
        assert!(api_key_from_env(&["LEXTRAL_TEST_KEY_NONE"])
            .unwrap()
            .is_none());
        std::env::set_var("LEXTRAL_TEST_KEY_C_FILE", dir.path().join("missing"));
        assert!(api_key_from_env(&["LEXTRAL_TEST_KEY_C"]).is_err());
        std::fs::write(dir.path().join("empty"), " \n").unwrap();
        std::env::set_var("LEXTRAL_TEST_KEY_D_FILE", dir.path().join("empty"));
        let empty = api_key_from_env(&["LEXTRAL_TEST_KEY_D"]).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
    }
}
