//! Remote fine-tuned classifiers on Mistral's API, as the system we replace
//! offered: the client and the classifier endpoint for serving (the files
//! and fine-tuning-job endpoints live in `lextral-training`). The API key comes from
//! `MISTRAL_API_KEY` or a secret file (`MISTRAL_API_KEY_FILE`) and is never
//! logged (`Debug` redacts it).

use std::collections::BTreeMap;
use std::time::Duration;

use lextral_common::provider::provider_message;
use lextral_common::ApiKey;
use serde_json::{json, Value};

/// Mistral's public API.
pub const DEFAULT_API_URL: &str = "https://api.mistral.ai";

/// What can go wrong talking to Mistral.
#[derive(Debug, thiserror::Error)]
pub enum MistralError {
    /// No key configured.
    #[error("no Mistral API key: set MISTRAL_API_KEY or MISTRAL_API_KEY_FILE")]
    NoKey,
    /// The key file is named but unreadable or empty.
    #[error("Mistral API key: {0}")]
    KeyFile(String),
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
    /// The API failed so often that calls to it are paused.
    #[error("Mistral API unavailable: {0}")]
    CircuitOpen(String),
    /// The answer did not have the expected shape.
    #[error("unexpected Mistral API answer: {0}")]
    Protocol(String),
}

/// A client for one API base URL and key.
#[derive(Clone)]
pub struct MistralClient {
    base_url: String,
    api_key: ApiKey,
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

/// Reads the key: the file named by `MISTRAL_API_KEY_FILE`, else `MISTRAL_API_KEY`.
pub fn api_key_from_env() -> Result<ApiKey, MistralError> {
    lextral_common::api_key_from_env(&["MISTRAL_API_KEY"])
        .map_err(|err| MistralError::KeyFile(err.to_string()))?
        .ok_or(MistralError::NoKey)
}

impl MistralClient {
    /// A client for `base_url` with `api_key`.
    pub fn new(base_url: &str, api_key: ApiKey, timeout: Duration) -> Result<Self, MistralError> {
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
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|err| MistralError::Transport(err.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|err| MistralError::Transport(err.without_url().to_string()))?;
        if !status.is_success() {
            return Err(MistralError::Api {
                status: status.as_u16(),
                message: provider_message(&body),
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
