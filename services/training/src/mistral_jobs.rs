//! Training a classifier on Mistral's platform, as the system we replace
//! offered: training files in its classifier format, uploads and
//! fine-tuning jobs. The client and its key handling are the serving crate's
//! (`lextral_finetuned_classifier::mistral`).

use std::collections::BTreeMap;
use std::path::Path;

use lextral_finetuned_classifier::mistral::{MistralClient, MistralError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Classifier target name used for our label (one target, many labels).
pub const DEFAULT_TARGET: &str = "clause_type";

/// One training line in Mistral's classifier format.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifierLine {
    /// The clause.
    pub text: String,
    /// Target name → label.
    pub labels: BTreeMap<String, String>,
}

/// Writes `(text, label)` pairs as Mistral classifier JSONL.
pub fn write_training_jsonl(
    examples: &[(String, String)],
    target: &str,
    out: &Path,
) -> std::io::Result<()> {
    let mut text = String::new();
    for (clause, label) in examples {
        let line = ClassifierLine {
            text: clause.clone(),
            labels: BTreeMap::from([(target.to_owned(), label.clone())]),
        };
        text.push_str(&serde_json::to_string(&line).expect("serialisable"));
        text.push('\n');
    }
    std::fs::write(out, text)
}

/// Settings of a fine-tuning job.
#[derive(Debug, Clone, Serialize)]
pub struct JobSpec {
    /// Base model, e.g. `ministral-3b-latest`.
    pub model: String,
    /// Uploaded training file id.
    pub training_file: String,
    /// Uploaded validation file id.
    pub validation_file: Option<String>,
    /// Training steps.
    pub training_steps: Option<u32>,
    /// Learning rate.
    pub learning_rate: Option<f64>,
    /// Suffix of the fine-tuned model's name.
    pub suffix: Option<String>,
}

/// The files and fine-tuning-job endpoints.
#[allow(async_fn_in_trait)]
pub trait FineTuningJobs {
    /// Uploads a JSONL file for fine-tuning; returns its file id.
    async fn upload(&self, path: &Path) -> Result<String, MistralError>;
    /// Creates a classifier fine-tuning job (not started); returns the job.
    async fn create_job(&self, spec: &JobSpec) -> Result<Value, MistralError>;
    /// Starts a created job.
    async fn start_job(&self, job_id: &str) -> Result<Value, MistralError>;
    /// A job's state (`status`, `fine_tuned_model` once done).
    async fn job(&self, job_id: &str) -> Result<Value, MistralError>;
}

impl FineTuningJobs for MistralClient {
    async fn upload(&self, path: &Path) -> Result<String, MistralError> {
        let bytes = std::fs::read(path).map_err(|err| MistralError::Transport(err.to_string()))?;
        let name = path.file_name().map_or_else(
            || "train.jsonl".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let form = reqwest::multipart::Form::new()
            .text("purpose", "fine-tune")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            );
        let answer = self
            .send(self.http().post(self.endpoint("/v1/files")).multipart(form))
            .await?;
        string_field(&answer, "id")
    }

    async fn create_job(&self, spec: &JobSpec) -> Result<Value, MistralError> {
        let mut hyperparameters = serde_json::Map::new();
        if let Some(steps) = spec.training_steps {
            hyperparameters.insert("training_steps".into(), json!(steps));
        }
        if let Some(lr) = spec.learning_rate {
            hyperparameters.insert("learning_rate".into(), json!(lr));
        }
        let mut body = json!({
            "model": spec.model,
            "job_type": "classifier",
            "training_files": [{"file_id": spec.training_file, "weight": 1}],
            "hyperparameters": hyperparameters,
            "auto_start": false,
        });
        if let Some(validation) = &spec.validation_file {
            body["validation_files"] = json!([validation]);
        }
        if let Some(suffix) = &spec.suffix {
            body["suffix"] = json!(suffix);
        }
        self.send(
            self.http()
                .post(self.endpoint("/v1/fine_tuning/jobs"))
                .json(&body),
        )
        .await
    }

    async fn start_job(&self, job_id: &str) -> Result<Value, MistralError> {
        self.send(
            self.http()
                .post(self.endpoint(&format!("/v1/fine_tuning/jobs/{job_id}/start"))),
        )
        .await
    }

    async fn job(&self, job_id: &str) -> Result<Value, MistralError> {
        self.send(
            self.http()
                .get(self.endpoint(&format!("/v1/fine_tuning/jobs/{job_id}"))),
        )
        .await
    }
}

fn string_field(value: &Value, name: &str) -> Result<String, MistralError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| MistralError::Protocol(format!("no {name:?} in the answer")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};

    use lextral_common::ApiKey;

    use super::*;

    const KEY: &str = "sk-test-secret";

    #[derive(Default)]
    struct Seen {
        bodies: Vec<Value>,
        upload: Option<String>,
    }

    type Shared = Arc<Mutex<Seen>>;

    fn authorised(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk-test-secret")
    }

    async fn classifications(
        State(seen): State<Shared>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        if !authorised(&headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Unauthorized"})),
            );
        }
        let n = body["input"].as_array().map_or(0, Vec::len);
        seen.lock().unwrap().bodies.push(body);
        let results: Vec<Value> = (0..n)
            .map(|_| json!({"clause_type": {"scores": {"Governing Laws": 0.9, "Notices": 0.1}}}))
            .collect();
        (
            StatusCode::OK,
            Json(json!({"id": "c1", "model": "ft:x", "results": results})),
        )
    }

    async fn files(
        State(seen): State<Shared>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, Json<Value>) {
        if !authorised(&headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Unauthorized"})),
            );
        }
        seen.lock().unwrap().upload = Some(body);
        (
            StatusCode::OK,
            Json(json!({"id": "file-123", "object": "file", "purpose": "fine-tune"})),
        )
    }

    async fn jobs(State(seen): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
        seen.lock().unwrap().bodies.push(body);
        Json(json!({"id": "job-1", "status": "QUEUED", "job_type": "classifier"}))
    }

    async fn start(UrlPath(id): UrlPath<String>) -> Json<Value> {
        Json(json!({"id": id, "status": "STARTED"}))
    }

    async fn status(UrlPath(id): UrlPath<String>) -> (StatusCode, Json<Value>) {
        if id == "missing" {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"detail": "job not found"})),
            );
        }
        (
            StatusCode::OK,
            Json(
                json!({"id": id, "status": "SUCCESS", "fine_tuned_model": "ft:classifier:ministral-3b:abc"}),
            ),
        )
    }

    async fn server() -> (String, Shared) {
        let seen: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/classifications", post(classifications))
            .route("/v1/files", post(files))
            .route("/v1/fine_tuning/jobs", post(jobs))
            .route("/v1/fine_tuning/jobs/{id}/start", post(start))
            .route("/v1/fine_tuning/jobs/{id}", get(status))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn speaks_the_classifier_and_fine_tuning_wire_format() {
        let (url, seen) = server().await;
        let client = MistralClient::new(&url, ApiKey::new(KEY), Duration::from_secs(10)).unwrap();
        assert!(
            !format!("{client:?}").contains(KEY),
            "the key must never be printed"
        );

        let texts = vec!["governed by New York law".to_owned(), "notices".to_owned()];
        let scores = client.classify("ft:x", &texts, None).await.unwrap();
        assert_eq!(scores.len(), 2);
        assert!((scores[0]["Governing Laws"] - 0.9).abs() < 1e-6);
        let named = client
            .classify("ft:x", &texts, Some("clause_type"))
            .await
            .unwrap();
        assert_eq!(named, scores);
        assert!(client
            .classify("ft:x", &texts, Some("other"))
            .await
            .is_err());
        assert_eq!(
            seen.lock().unwrap().bodies[0],
            json!({"model": "ft:x", "input": texts})
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        write_training_jsonl(
            &[("Clause A".into(), "Notices".into())],
            DEFAULT_TARGET,
            &path,
        )
        .unwrap();
        let line: ClassifierLine =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line.labels["clause_type"], "Notices");
        assert_eq!(client.upload(&path).await.unwrap(), "file-123");
        let upload = seen.lock().unwrap().upload.clone().unwrap();
        assert!(
            upload.contains("name=\"purpose\"") && upload.contains("fine-tune"),
            "{upload}"
        );
        assert!(upload.contains("filename=\"train.jsonl\"") && upload.contains("Clause A"));

        let job = client
            .create_job(&JobSpec {
                model: "ministral-3b-latest".into(),
                training_file: "file-123".into(),
                validation_file: Some("file-456".into()),
                training_steps: Some(100),
                learning_rate: Some(1e-4),
                suffix: None,
            })
            .await
            .unwrap();
        assert_eq!(job["id"], "job-1");
        let body = seen.lock().unwrap().bodies.last().cloned().unwrap();
        assert_eq!(body["job_type"], "classifier");
        assert_eq!(body["training_files"][0]["file_id"], "file-123");
        assert_eq!(body["validation_files"][0], "file-456");
        assert_eq!(body["hyperparameters"]["training_steps"], 100);
        assert_eq!(body["auto_start"], false);
        assert_eq!(
            client.start_job("job-1").await.unwrap()["status"],
            "STARTED"
        );
        let done = client.job("job-1").await.unwrap();
        assert_eq!(done["fine_tuned_model"], "ft:classifier:ministral-3b:abc");
        let missing = client.job("missing").await.unwrap_err();
        assert!(
            matches!(missing, MistralError::Api { status: 404, .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("job not found"));

        let wrong =
            MistralClient::new(&url, ApiKey::new("sk-wrong"), Duration::from_secs(10)).unwrap();
        let err = wrong.classify("ft:x", &texts, None).await.unwrap_err();
        assert!(
            matches!(err, MistralError::Api { status: 401, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("sk-wrong"));
    }
}
