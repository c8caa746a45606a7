//! The serving side: holds the loaded classifier, swaps it on reload
//! without dropping in-flight requests (they keep their `Arc`), and fetches
//! embeddings from the embedder when the model needs them.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use lextral_common::{lazy_channel, TextLimits, MAX_MESSAGE_BYTES};
use lextral_common::{Access, PeerChannel};
use lextral_proto::v1::{
    embedder_service_client::EmbedderServiceClient, EmbedRequest, FinetunedClassification,
    LabelScore,
};

use crate::config::FinetunedConfig;
use crate::error::FinetunedError;
use crate::model::Classifier;

/// Default number of alternatives per clause.
pub const DEFAULT_TOP_K: usize = 5;

/// The labels stored in the index, which a model must be able to produce.
pub type IndexLabels = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<Vec<String>>> + Send>,
        > + Send
        + Sync,
>;

/// Index labels from a retriever service's Stats.
pub fn retriever_labels(
    url: &str,
    access: &Access,
    timeout: std::time::Duration,
) -> anyhow::Result<IndexLabels> {
    use lextral_proto::v1::retriever_service_client::RetrieverServiceClient;
    let client = RetrieverServiceClient::new(lazy_channel("retriever", url, timeout, access)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    Ok(Arc::new(move || {
        let mut client = client.clone();
        Box::pin(async move {
            let stats = client
                .stats(lextral_proto::v1::StatsRequest {})
                .await
                .map_err(|status| anyhow::anyhow!("retriever Stats: {}", status.message()))?
                .into_inner();
            Ok(stats.labels.into_iter().map(|c| c.label).collect())
        })
    }))
}

/// The classifier service state.
pub struct FinetunedService {
    config: FinetunedConfig,
    current: RwLock<Option<Arc<Classifier>>>,
    embedder: EmbedderServiceClient<PeerChannel>,
    reload_lock: tokio::sync::Mutex<()>,
    remote: Option<(crate::mistral::MistralClient, String)>,
    remote_breaker: lextral_common::Breaker,
    index_labels: Option<IndexLabels>,
}

impl FinetunedService {
    /// Creates the service, its embedder client sending `access`'s peer key; `load`
    /// must be called to load the model.
    pub fn new(config: FinetunedConfig, access: &Access) -> anyhow::Result<Self> {
        let channel = lazy_channel(
            "embedder",
            &config.embedder_url,
            config.request_timeout(),
            access,
        )?;
        let remote = match &config.mistral_model {
            Some(model) => Some((
                crate::mistral::MistralClient::new(
                    &config.mistral_url,
                    crate::mistral::api_key_from_env()?,
                    config.request_timeout(),
                )?,
                model.clone(),
            )),
            None => None,
        };
        let index_labels = match &config.retriever_url {
            Some(url) => Some(retriever_labels(url, access, config.request_timeout())?),
            None => None,
        };
        Ok(Self {
            index_labels,
            remote,
            remote_breaker: lextral_common::Breaker::new("mistral-classifier", config.breaker()),
            config,
            current: RwLock::new(None),
            embedder: EmbedderServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks every model loaded from now on against `labels` (replaces
    /// the retriever given in the configuration).
    pub fn check_labels_against(&mut self, labels: IndexLabels) {
        self.index_labels = Some(labels);
    }

    /// Refuses `model` if the index holds labels it cannot produce. An
    /// index that cannot be read is not a reason to keep an old model.
    async fn check_labels(&self, model: &Classifier) -> Result<(), FinetunedError> {
        let Some(source) = &self.index_labels else {
            return Ok(());
        };
        match source().await {
            Ok(labels) => {
                let unknown = crate::model::labels_missing_from(
                    model.labels(),
                    labels.iter().map(String::as_str),
                );
                match unknown.first() {
                    Some(first) => Err(FinetunedError::LabelsUncovered {
                        count: unknown.len(),
                        first: (*first).to_owned(),
                    }),
                    None => Ok(()),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the index's labels; the model's labels are not checked");
                Ok(())
            }
        }
    }

    /// The configured model directory.
    pub fn model_dir(&self) -> Option<&PathBuf> {
        self.config.model.as_ref()
    }

    /// The Mistral model id, when serving a remote classifier.
    pub fn remote_model(&self) -> Option<&str> {
        self.remote.as_ref().map(|(_, model)| model.as_str())
    }

    /// The loaded model, if any.
    pub fn current(&self) -> Option<Arc<Classifier>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads (or reloads) the model directory and swaps it in. On failure
    /// the previous model keeps serving.
    pub async fn load(&self) -> Result<Arc<Classifier>, FinetunedError> {
        let _serialised = self.reload_lock.lock().await;
        let dir = self.config.model.clone().ok_or_else(|| {
            FinetunedError::NoModel(
                "start with --finetuned-model DIR or LEXTRAL_FINETUNED_MODEL (train one with `lextral train`)".into(),
            )
        })?;
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || Classifier::load(&dir))
            .await
            .map_err(|err| FinetunedError::Internal(err.to_string()))??;
        self.check_labels(&loaded).await?;
        let loaded = Arc::new(loaded);
        let previous = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(loaded.clone());
        tracing::info!(
            method = loaded.manifest.method.as_str(),
            labels = loaded.labels().len(),
            content_hash = %loaded.manifest.content_hash,
            replaced = previous.map(|p| p.manifest.content_hash.clone()),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "fine-tuned model loaded"
        );
        metrics::counter!("lextral_finetuned_model_loads_total").increment(1);
        Ok(loaded)
    }

    fn validate(&self, texts: &[String]) -> Result<(), FinetunedError> {
        TextLimits {
            max_texts: self.config.max_texts,
            max_text_bytes: self.config.max_text_bytes,
            refuse_blank: false,
        }
        .check(texts)
        .map_err(|err| FinetunedError::BadRequest(err.to_string()))
    }

    async fn remote_classify(
        &self,
        client: &crate::mistral::MistralClient,
        model: &str,
        texts: &[String],
    ) -> Result<Vec<std::collections::BTreeMap<String, f32>>, crate::mistral::MistralError> {
        use crate::mistral::MistralError;
        let permit = self
            .remote_breaker
            .allow()
            .map_err(|open| MistralError::CircuitOpen(open.to_string()))?;
        let answer = client.classify(model, texts, None).await;
        match &answer {
            Ok(_) => permit.success(),
            Err(MistralError::Transport(_))
            | Err(MistralError::Api {
                status: 500..=599, ..
            }) => permit.failure(),
            // The API answered: it is up, whatever it said.
            Err(MistralError::Api { .. }) => permit.success(),
            Err(_) => drop(permit),
        }
        answer
    }

    /// Classifies `texts`, returning the top label and `top_k` alternatives.
    pub async fn classify(
        &self,
        texts: Vec<String>,
        top_k: Option<usize>,
    ) -> Result<Vec<FinetunedClassification>, FinetunedError> {
        self.validate(&texts)?;
        if let Some((client, model)) = &self.remote {
            let scores = self.remote_classify(client, model, &texts).await?;
            return Ok(scores
                .into_iter()
                .map(|scores| {
                    let (labels, probabilities): (Vec<String>, Vec<f32>) =
                        scores.into_iter().unzip();
                    if labels.is_empty() {
                        return FinetunedClassification::default();
                    }
                    let top_k = top_k.unwrap_or(DEFAULT_TOP_K).clamp(1, labels.len());
                    to_result(&probabilities, &labels, top_k)
                })
                .collect());
        }
        let model = self.current().ok_or_else(|| {
            FinetunedError::NoModel(match &self.config.model {
                Some(dir) => format!("{} did not load; fix it and call Reload", dir.display()),
                None => "start with --finetuned-model DIR or LEXTRAL_FINETUNED_MODEL".into(),
            })
        })?;
        let top_k = top_k
            .unwrap_or(DEFAULT_TOP_K)
            .clamp(1, model.labels().len());
        let embeddings = if model.needs_external_embeddings() {
            let response = self
                .embedder
                .clone()
                .embed(EmbedRequest {
                    texts: texts.clone(),
                    normalize: Some(true),
                })
                .await
                .map_err(|status| FinetunedError::Embedder(status.message().to_owned()))?;
            Some(
                response
                    .into_inner()
                    .embeddings
                    .into_iter()
                    .map(|e| e.values)
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let probabilities = tokio::task::spawn_blocking({
            let model = model.clone();
            move || model.predict(&texts, embeddings.as_deref())
        })
        .await
        .map_err(|err| FinetunedError::Internal(err.to_string()))??;
        Ok(probabilities
            .into_iter()
            .map(|p| to_result(&p, model.labels(), top_k))
            .collect())
    }
}

/// The label, its probability and the top alternatives.
pub fn to_result(
    probabilities: &[f32],
    labels: &[String],
    top_k: usize,
) -> FinetunedClassification {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let alternatives: Vec<LabelScore> = order
        .iter()
        .take(top_k)
        .map(|&i| LabelScore {
            label: labels[i].clone(),
            score: probabilities[i],
        })
        .collect();
    FinetunedClassification {
        label: labels[order[0]].clone(),
        probability: probabilities[order[0]],
        alternatives,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use lextral_common::{ServiceError, ServiceErrorCode};

    use super::*;

    #[tokio::test]
    async fn a_poisoned_model_lock_is_not_an_outage() {
        let service =
            FinetunedService::new(FinetunedConfig::with_model(None), &Access::open()).unwrap();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _swapping = service.current.write().unwrap();
            panic!("a panic while the model is swapped");
        }));
        assert!(service.current.is_poisoned());
        assert!(service.current().is_none(), "read on, no panic");
        let err = service.classify(vec!["x".into()], None).await.unwrap_err();
        assert_eq!(err.error_code(), ServiceErrorCode::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_failing_remote_classifier_opens_its_circuit() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/v1/classifications",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"message":"down for maintenance"}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // The only test in this crate that reads the key.
        std::env::set_var("MISTRAL_API_KEY", "test-key");
        let mut config = FinetunedConfig::with_model(None);
        config.mistral_model = Some("ft:classifier:test".into());
        config.mistral_url = format!("http://{addr}");
        config.breaker_failures = 2;
        let service = FinetunedService::new(config, &Access::open()).unwrap();
        for _ in 0..2 {
            let err = service.classify(vec!["x".into()], None).await.unwrap_err();
            assert_eq!(err.error_code(), ServiceErrorCode::Unavailable);
            assert!(err.to_string().contains("maintenance"), "{err}");
        }
        let err = service.classify(vec!["x".into()], None).await.unwrap_err();
        assert_eq!(err.error_code(), ServiceErrorCode::Unavailable);
        assert!(err.to_string().contains("circuit open"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no call while open");
    }
}
