//! The REST/JSON gateway: its own serde types (not prost's), one error body
//! shape on the shared code table, OpenAPI at `/openapi.json`, docs at
//! `/docs`, and a one-page web UI at `/`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use lextral_common::access::Who;
use lextral_common::{client_message, guard, ServiceErrorCode};
use lextral_proto::names::{parse_strategy, parse_vote, strategy_name};
use lextral_proto::v1::orchestrator_service_server::SERVICE_NAME as ORCHESTRATOR_SERVICE;
use lextral_proto::v1::ClassifyResponse;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::domain::{Classification, Classified};
use crate::error::OrchestratorError;
use crate::orchestrator::Orchestrator;
use crate::plan::{ClassifyInput, KnnInput, VoteKind};

/// A clause: not blank, at most `--max-text-bytes` (100,000 bytes by
/// default; the schema's limit counts characters, exact for ASCII).
pub struct ClauseText;

impl utoipa::PartialSchema for ClauseText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(100_000))
            .pattern(Some("\\S"))
            .description(Some("A clause, not blank"))
            .into()
    }
}

impl utoipa::ToSchema for ClauseText {
    fn name() -> std::borrow::Cow<'static, str> {
        "ClauseText".into()
    }
}

/// The strategies.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)] // a schema only
pub enum StrategyName {
    /// The labelled neighbours vote.
    Knn,
    /// The trained classifier.
    Finetuned,
    /// Fine-tuned, falling back to kNN when unsure.
    Cascade,
    /// An LLM shown the nearest labelled clauses.
    Rag,
    /// An LLM shown the label list.
    ZeroShot,
}

/// The kNN votes.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub enum VoteName {
    /// Similarity to a power.
    Weighted,
    /// Softmax over similarities.
    Softmax,
    /// One neighbour, one vote.
    Majority,
}

/// A classify request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// A whole valid request, so the API explorer's "try it out" starts from one
// (its generated sample would send zeros for every option).
#[schema(example = json!({
    "texts": ["This Agreement shall be governed by the laws of the State of New York."],
    "strategy": "knn"
}))]
pub struct ClassifyBody {
    /// Clauses to classify: 1 to `--max-texts` (default 256), none blank.
    #[schema(
        value_type = Vec<ClauseText>,
        min_items = 1,
        max_items = 256,
        example = json!(["This Agreement shall be governed by the laws of the State of New York."])
    )]
    pub texts: Vec<String>,
    /// One of knn, finetuned, cascade, rag, zero-shot. Default knn.
    #[serde(default = "default_strategy")]
    #[schema(value_type = StrategyName, example = "knn")]
    pub strategy: String,
    /// Strategy options; absent fields take the server's defaults.
    #[serde(default)]
    pub options: ClassifyOptions,
}

fn default_strategy() -> String {
    "knn".to_owned()
}

/// Options for every strategy in one flat object; each strategy reads its own.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyOptions {
    /// kNN: neighbours to retrieve, 1..=100; RAG: examples, 1..=32.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "integer")]
    pub k: Option<u32>,
    /// kNN: weighted, softmax or majority.
    #[schema(value_type = Option<VoteName>)]
    pub vote: Option<String>,
    /// kNN weighted vote exponent.
    #[schema(minimum = 0.001, maximum = 1000.0)]
    #[serde(default, deserialize_with = "float")]
    pub power: Option<f32>,
    /// kNN softmax temperature.
    #[schema(minimum = 0.0001, maximum = 100.0)]
    #[serde(default, deserialize_with = "float")]
    pub temperature: Option<f32>,
    /// kNN: neighbours below this cosine similarity do not vote.
    #[schema(minimum = -1.0, maximum = 1.0)]
    #[serde(default, deserialize_with = "float")]
    pub min_similarity: Option<f32>,
    /// kNN: abstain below this vote share.
    #[schema(minimum = 0.0, maximum = 1.0)]
    #[serde(default, deserialize_with = "float")]
    pub min_confidence: Option<f32>,
    /// kNN: HNSW search breadth, 1..=1000.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "integer")]
    pub ef_search: Option<u32>,
    /// kNN: only neighbours from these splits vote.
    pub splits: Option<Vec<String>>,
    /// Fine-tuned: alternatives to return, 1..=1000.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "integer")]
    pub top_k: Option<u32>,
    /// Prompt strategies: cap on generated tokens, 1 to 4096 here, and at
    /// most the prompt classifier's `--llm-max-output-tokens-limit` (256 by
    /// default).
    #[schema(minimum = 1, maximum = 4096)]
    #[serde(default, deserialize_with = "integer")]
    pub max_output_tokens: Option<u32>,
    /// Cascade: below this fine-tuned probability, fall back.
    #[schema(minimum = 0.0, maximum = 1.0)]
    #[serde(default, deserialize_with = "float")]
    pub cascade_min_confidence: Option<f32>,
}

/// An optional u32 written as JSON Schema's integer: `94` or `94.0`.
fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = match (number.as_u64(), number.as_f64()) {
        (Some(whole), _) => Some(whole),
        (None, Some(float))
            if float.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&float) =>
        {
            Some(float as u64)
        }
        _ => None,
    };
    value
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "expected a whole number in 0..={}, got {number}",
                u32::MAX
            ))
        })
}

/// An optional f32 from a JSON number; a nonzero value too small for an
/// f32 is refused rather than read as 0 (which could pass a range check
/// the number itself fails, e.g. `-1e-100` against a minimum of 0).
fn float<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<f32>, D::Error> {
    use serde::de::Error;
    let Some(value) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let narrow = value as f32;
    if !narrow.is_finite() || (narrow == 0.0 && value != 0.0) {
        return Err(D::Error::custom(format!(
            "{value} is out of range for a 32-bit float"
        )));
    }
    Ok(Some(narrow))
}

/// A label with its score.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelScoreBody {
    /// The label.
    pub label: String,
    /// Its score (kNN: vote share).
    pub score: f32,
}

/// A retrieved neighbour.
#[derive(Debug, Serialize, ToSchema)]
pub struct NeighborBody {
    /// Store id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// The clause text.
    pub text: String,
    /// Its split.
    pub split: String,
}

/// The classification of one clause.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultBody {
    /// Predicted label; empty when abstained.
    pub label: String,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// Whether the strategy declined to answer.
    pub abstained: bool,
    /// Why it abstained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abstain_reason: Option<String>,
    /// Best labels, best first.
    pub alternatives: Vec<LabelScoreBody>,
    /// Neighbours considered, as evidence.
    pub neighbors: Vec<NeighborBody>,
    /// The strategy that produced the label.
    pub answered_by: String,
    /// Whether the clause was truncated.
    pub truncated: bool,
    /// LLM raw answer (prompt strategies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
    /// LLM tokens in / out and cost (prompt strategies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

/// LLM usage for one clause.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
}

/// A classify response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyReply {
    /// The strategy requested.
    pub strategy: String,
    /// One result per text, in order.
    pub results: Vec<ResultBody>,
    /// Milliseconds per stage (embed, search, vote, total).
    pub latency_ms: BTreeMap<String, f64>,
    /// Present when the strategy could not run as asked and answered
    /// another way (cascade while the fine-tuned classifier is
    /// unavailable: kNN answered); says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// Stored clauses for one label in one split.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelCountBody {
    /// The label.
    pub label: String,
    /// The split.
    pub split: String,
    /// How many.
    pub count: u64,
}

/// The label set of the index.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelsReply {
    /// Distinct labels, sorted.
    pub labels: Vec<String>,
    /// Counts per label and split.
    pub counts: Vec<LabelCountBody>,
}

/// An error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code: bad_request, unavailable, unimplemented, ...
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// Readiness of the gateway's dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyReply {
    /// "ready" (the embedder and the retriever, which kNN needs, answer)
    /// or "not_ready".
    pub status: String,
    /// Per dependency: SERVING or what went wrong.
    pub checks: BTreeMap<String, String>,
    /// Per strategy: "ready", or "unavailable: " and the missing dependencies.
    pub strategies: BTreeMap<String, String>,
}

/// An error answered as JSON with a status from the shared code table.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after_s: Option<u64>,
    /// The dependency that shed the call, named in a response header.
    overloaded: Option<&'static str>,
}

impl ApiError {
    fn new(code: ServiceErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.http_status(),
            code: code.as_str().to_owned(),
            message: message.into(),
            retry_after_s: None,
            overloaded: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ServiceErrorCode::BadRequest, message)
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(err: OrchestratorError) -> Self {
        let (code, message) = client_message(&err);
        let mut api = Self::new(code, message);
        api.retry_after_s = err.retry_after_s();
        api.overloaded = err.overloaded_dependency();
        api
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_request",
        };
        Self {
            // Malformed JSON and schema mismatches are both the caller's fault: 400.
            status: if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                status
            },
            code: code.to_owned(),
            message: rejection.body_text(),
            retry_after_s: None,
            overloaded: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        if let Some(service) = self.overloaded {
            response.headers_mut().insert(
                lextral_common::admission::OVERLOADED_HEADER,
                http::HeaderValue::from_static(service),
            );
        }
        response
    }
}

impl TryFrom<ClassifyBody> for ClassifyInput {
    type Error = ApiError;

    fn try_from(body: ClassifyBody) -> Result<Self, ApiError> {
        let ClassifyBody {
            texts,
            strategy,
            options,
        } = body;
        let ClassifyOptions {
            k,
            vote,
            power,
            temperature,
            min_similarity,
            min_confidence,
            ef_search,
            splits,
            top_k,
            max_output_tokens,
            cascade_min_confidence,
        } = options;
        let strategy = parse_strategy(&strategy).map_err(ApiError::bad_request)?;
        let vote = vote
            .as_deref()
            .map(parse_vote)
            .transpose()
            .map_err(ApiError::bad_request)?
            .map(VoteKind::from);
        Ok(Self {
            texts,
            strategy,
            // One `k` in the flat options: neighbours for kNN, examples for RAG.
            knn: KnnInput {
                k,
                vote,
                power,
                temperature,
                min_similarity,
                min_confidence,
                ef_search,
                splits: splits.unwrap_or_default(),
            },
            top_k,
            cascade_min_confidence,
            rag_k: k,
            max_output_tokens,
        })
    }
}

impl From<Classification> for ResultBody {
    fn from(result: Classification) -> Self {
        let Classification {
            label,
            confidence,
            abstain_reason,
            alternatives,
            neighbours,
            answered_by,
            truncated,
            llm,
        } = result;
        let has_usage = llm.input_tokens > 0 || llm.output_tokens > 0;
        Self {
            label,
            confidence,
            abstained: abstain_reason.is_some(),
            abstain_reason,
            alternatives: alternatives
                .into_iter()
                .map(|a| LabelScoreBody {
                    label: a.label,
                    score: a.score,
                })
                .collect(),
            neighbors: neighbours
                .into_iter()
                .map(|n| NeighborBody {
                    id: n.id,
                    label: n.label,
                    similarity: n.similarity,
                    text: n.text,
                    split: n.split,
                })
                .collect(),
            answered_by: strategy_name(answered_by).to_owned(),
            truncated,
            raw_output: (!llm.raw_output.is_empty()).then_some(llm.raw_output),
            usage: has_usage.then_some(UsageBody {
                input_tokens: llm.input_tokens,
                output_tokens: llm.output_tokens,
                cost_usd: llm.cost_usd,
            }),
        }
    }
}

impl From<Classified> for ClassifyReply {
    fn from(classified: Classified) -> Self {
        Self {
            strategy: strategy_name(classified.strategy).to_owned(),
            results: classified
                .results
                .into_iter()
                .map(ResultBody::from)
                .collect(),
            latency_ms: classified
                .latencies
                .into_iter()
                .map(|s| (s.stage, s.ms))
                .collect(),
            degraded: classified.degraded,
        }
    }
}

/// Converts a gRPC classify response into the REST body (the CLI prints
/// gRPC answers as the gateway would answer).
pub fn reply_body(response: ClassifyResponse) -> ClassifyReply {
    Classified::from(response).into()
}

/// Classify clauses with a strategy.
#[utoipa::path(
    post,
    path = "/v1/classify",
    request_body = ClassifyBody,
    responses(
        (status = 200, description = "One result per text", body = ClassifyReply),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 409, description = "Not possible in this state (e.g. no model loaded)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Overloaded or over quota (see Retry-After)", body = ErrorBody),
        (status = 500, description = "Server fault", body = ErrorBody),
        (status = 501, description = "Strategy not available", body = ErrorBody),
        (status = 503, description = "A dependency is down", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn classify(
    State(orchestrator): State<Arc<Orchestrator>>,
    who: Option<axum::Extension<Who>>,
    body: Result<Json<ClassifyBody>, JsonRejection>,
) -> Result<Json<ClassifyReply>, ApiError> {
    let Json(body) = body?;
    let who = who.map(|axum::Extension(who)| who);
    let plan = orchestrator.plan(ClassifyInput::try_from(body)?, who.as_ref())?;
    let timeout = orchestrator.config().request_timeout();
    let classified = tokio::time::timeout(timeout, orchestrator.classify(plan))
        .await
        .map_err(|_| {
            ApiError::new(
                ServiceErrorCode::DeadlineExceeded,
                format!("no answer within {} s", timeout.as_secs()),
            )
        })??;
    Ok(Json(classified.into()))
}

/// List the labels in the index.
#[utoipa::path(
    get,
    path = "/v1/labels",
    responses(
        (status = 200, description = "Labels with counts", body = LabelsReply),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 429, description = "Overloaded or over quota (see Retry-After)", body = ErrorBody),
        (status = 503, description = "The retriever is down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn labels(
    State(orchestrator): State<Arc<Orchestrator>>,
) -> Result<Json<LabelsReply>, ApiError> {
    let set = orchestrator.labels().await?;
    Ok(Json(LabelsReply {
        labels: set.labels,
        counts: set
            .counts
            .into_iter()
            .map(|c| LabelCountBody {
                label: c.label,
                split: c.split,
                count: c.count,
            })
            .collect(),
    }))
}

/// Describe the stack: server defaults per strategy, the embedding model,
/// index size per split, the fine-tuned model's manifest, the LLM backend.
/// A dependency that does not answer is null and named in `errors`.
#[utoipa::path(
    get,
    path = "/v1/info",
    responses(
        (status = 200, description = "The stack", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 429, description = "Overloaded or over quota (see Retry-After)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn info(State(orchestrator): State<Arc<Orchestrator>>) -> Json<serde_json::Value> {
    Json(crate::info::to_json(orchestrator.info().await))
}

/// Liveness: the gateway process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the embedder and retriever report SERVING.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = ReadyReply),
        (status = 503, description = "A dependency is not ready", body = ReadyReply),
    )
)]
async fn readyz(State(orchestrator): State<Arc<Orchestrator>>) -> (StatusCode, Json<ReadyReply>) {
    let statuses = orchestrator.readiness().await;
    let strategies = crate::strategy::strategy_readiness(&statuses);
    let ready = strategies
        .iter()
        .any(|(name, answer)| *name == "knn" && answer.is_ok());
    let reply = ReadyReply {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        checks: statuses
            .into_iter()
            .map(|s| (s.name.to_owned(), s.detail))
            .collect(),
        strategies: strategies
            .into_iter()
            .map(|(name, answer)| {
                let said = match answer {
                    Ok(()) => "ready".to_owned(),
                    Err(missing) => format!("unavailable: {missing}"),
                };
                (name.to_owned(), said)
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(reply))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lextral",
        description = "Contract-clause classification: kNN over labelled clauses, fine-tuned classifiers and LLM prompting behind one API."
    ),
    paths(classify, labels, info, healthz, readyz),
    modifiers(&BearerAuth),
    components(schemas(
        ClauseText,
        StrategyName,
        VoteName,
        ClassifyBody,
        ClassifyOptions,
        ClassifyReply,
        ResultBody,
        LabelScoreBody,
        NeighborBody,
        UsageBody,
        LabelsReply,
        LabelCountBody,
        ErrorBody,
        ErrorDetail,
        ReadyReply
    ))
)]
struct ApiDoc;

/// Declares the `bearer` scheme the `/v1/` paths name (`lextral keys create`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `lextral keys create`, needed when the server runs with --keys-file",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the gateway.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn not_found() -> ApiError {
    ApiError::new(ServiceErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed".to_owned(),
        message: "method not allowed on this route".to_owned(),
        retry_after_s: None,
        overloaded: None,
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("lextral_http_requests_total", &labels).increment(1);
    metrics::histogram!("lextral_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The CORS policy from `--cors-allow-origin`: none by default.
fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                http::HeaderValue::from_str(o)
                    .map_err(|_| anyhow::anyhow!("--cors-allow-origin {o:?} is not a valid origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([http::header::AUTHORIZATION, http::header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

/// The gateway's router.
pub fn app(orchestrator: Arc<Orchestrator>) -> Router {
    let body_limit = orchestrator.config().http_body_limit;
    // Checked when the orchestrator was built (Orchestrator::with_access).
    let cors = cors(&orchestrator.config().cors_allow_origin).unwrap_or_default();
    let mut spec = openapi();
    if !orchestrator.access().requires_keys() {
        // Served without keys: say so, or clients (and schemathesis) would
        // expect 401s this server never sends.
        for item in spec.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation.security = None;
            }
        }
        if let Some(components) = spec.components.as_mut() {
            components.security_schemes.clear();
        }
    }
    let router = Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../web/index.html")) }),
        )
        // Swagger UI over the document below, its assets compiled in.
        .merge(
            SwaggerUi::new("/docs").config(
                SwaggerConfig::new(["/openapi.json"])
                    .try_it_out_enabled(true)
                    .persist_authorization(true)
                    .display_request_duration(true),
            ),
        )
        .route("/openapi.json", get(move || async move { Json(spec) }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/classify", post(classify))
        .route("/v1/labels", get(labels))
        .route("/v1/info", get(info))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(guard::http_panic_response))
        .layer(middleware::from_fn_with_state(
            (orchestrator.access().clone(), ORCHESTRATOR_SERVICE),
            guard::http_guard,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http())
        .with_state(orchestrator);
    // Outermost, so preflights are answered before the key check.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Checks `--cors-allow-origin` at start-up.
pub fn check_cors(origins: &[String]) -> anyhow::Result<()> {
    cors(origins).map(|_| ())
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    orchestrator: Arc<Orchestrator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(tls) = orchestrator.access().rest_tls() {
        return lextral_common::tls::serve_https(listener, app(orchestrator), tls, shutdown).await;
    }
    // Small JSON replies must not wait on Nagle + delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    // The peer address keys the quota of callers without a key.
    axum::serve(
        listener,
        app(orchestrator).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::config::OrchestratorConfig;

    fn gateway(origins: &[&str]) -> Router {
        let mut config = OrchestratorConfig::with_urls("http://127.0.0.1:1", "http://127.0.0.1:1");
        config.cors_allow_origin = origins.iter().map(|o| (*o).to_owned()).collect();
        app(Arc::new(Orchestrator::new(config).unwrap()))
    }

    fn preflight(origin: &str) -> axum::http::Request<axum::body::Body> {
        axum::http::Request::builder()
            .method("OPTIONS")
            .uri("/v1/classify")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn cors_allows_only_the_configured_origins() {
        let open = gateway(&["https://app.example.com"]);
        let answer = open
            .clone()
            .oneshot(preflight("https://app.example.com"))
            .await
            .unwrap();
        assert_eq!(
            answer.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        let other = open
            .oneshot(preflight("https://evil.example"))
            .await
            .unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());
        let closed = gateway(&[])
            .oneshot(preflight("https://app.example.com"))
            .await
            .unwrap();
        assert!(closed
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        assert!(Orchestrator::new({
            let mut config =
                OrchestratorConfig::with_urls("http://127.0.0.1:1", "http://127.0.0.1:1");
            config.cors_allow_origin = vec!["bad\norigin".into()];
            config
        })
        .is_err());
    }
}
