//! Remote fine-tuned classifiers on Mistral's API, as the system we replace
//! offered: the client and the classifier endpoint for serving (the files
//! and fine-tuning-job endpoints live in `lextral-training`). The API key comes from
//! `MISTRAL_API_KEY` or a secret file (`MISTRAL_API_KEY_FILE`) and is never
//! logged (`Debug` redacts it).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Mistral's public API.
pub const DEFAULT_API_URL: &str = "https://api.mistral.ai";

/// What can go wrong talking to Mistral.
#[derive(Debug, thiserror::Error)]
pub enum MistralError {
    /// No key configured.
    #[error("no Mistral API key: set MISTRAL_API_KEY or MISTRAL_API_KEY_FILE")]
    NoKey,
    /// The key file could not be read.
    #[error("cannot read the Mistral API key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Network failure.
    #[error("Mistral API unreachable: {0}")]
    Transport(String),
    /// The API answered with an error status.
    #[error("Mistral API {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected Mistral API answer: {0}")]
    Protocol(String),
}

/// A client for one API base URL and key.
#[derive(Clone)]
pub struct MistralClient {
    base_url: String,
    api_key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for MistralClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralClient")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Reads the key: `MISTRAL_API_KEY`, else the file named by `MISTRAL_API_KEY_FILE`.
pub fn api_key_from_env() -> Result<String, MistralError> {
    if let Some(key) = std::env::var("MISTRAL_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
    {
        return Ok(key.trim().to_owned());
    }
    let Some(path) = std::env::var_os("MISTRAL_API_KEY_FILE") else {
        return Err(MistralError::NoKey);
    };
    let key = std::fs::read_to_string(&path).map_err(|err| MistralError::KeyFile {
        path: Path::new(&path).display().to_string(),
        reason: err.to_string(),
    })?;
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(MistralError::NoKey);
    }
    Ok(key)
}

impl MistralClient {
    /// A client for `base_url` with `api_key`.
    pub fn new(base_url: &str, api_key: String, timeout: Duration) -> Result<Self, MistralError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| MistralError::Transport(err.to_string()))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            http,
        })
    }

    /// `{base_url}{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The HTTP client, for requests to build and pass to [`Self::send`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` with the key; an error status becomes
    /// [`MistralError::Api`] with the provider's message.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, MistralError> {
        let response = request
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|err| MistralError::Transport(err.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|err| MistralError::Transport(err.without_url().to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("detail"))
                        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                })
                .unwrap_or_else(|| body.chars().take(300).collect());
            return Err(MistralError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_str(&body).map_err(|err| MistralError::Protocol(err.to_string()))
    }

    /// Classifies `texts` with a fine-tuned classifier model; returns the
    /// label scores of `target` (or the only target) per text.
    pub async fn classify(
        &self,
        model: &str,
        texts: &[String],
        target: Option<&str>,
    ) -> Result<Vec<BTreeMap<String, f32>>, MistralError> {
        let answer = self
            .send(
                self.http
                    .post(format!("{}/v1/classifications", self.base_url))
                    .json(&json!({"model": model, "input": texts})),
            )
            .await?;
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| MistralError::Protocol("no results array".into()))?;
        if results.len() != texts.len() {
            return Err(MistralError::Protocol(format!(
                "{} results for {} texts",
                results.len(),
                texts.len()
            )));
        }
        results
            .iter()
            .map(|result| {
                let targets = result
                    .as_object()
                    .ok_or_else(|| MistralError::Protocol("a result is not an object".into()))?;
                let chosen = match target {
                    Some(name) => targets.get(name),
                    None => targets.values().next(),
                }
                .ok_or_else(|| MistralError::Protocol("target missing from a result".into()))?;
                let scores = chosen
                    .get("scores")
                    .and_then(Value::as_object)
                    .ok_or_else(|| MistralError::Protocol("no scores".into()))?;
                scores
                    .iter()
                    .map(|(label, score)| {
                        score
                            .as_f64()
                            .map(|s| (label.clone(), s as f32))
                            .ok_or_else(|| {
                                MistralError::Protocol(format!(
                                    "score of {label:?} is not a number"
                                ))
                            })
                    })
                    .collect()
            })
            .collect()
    }
}
