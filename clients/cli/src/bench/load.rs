//! `lextral bench load`: classify latency and throughput against a running
//! stack with N concurrent clients, over REST and gRPC, per strategy, and the
//! memory each service reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use lextral_eval::metrics::percentile;
use lextral_proto::names::parse_strategy;
use lextral_proto::v1::orchestrator_service_client::OrchestratorServiceClient;
use lextral_proto::v1::ClassifyRequest;
use serde::Serialize;

use crate::data::read_texts;

/// How the clients call.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `POST /v1/classify` on the REST gateway.
    Rest,
    /// `OrchestratorService/Classify`.
    Grpc,
}

/// `lextral bench load`.
#[derive(Args)]
pub struct LoadArgs {
    /// JSONL file whose `text` fields are sent, one clause per request.
    #[arg(long)]
    data: PathBuf,
    /// Strategies measured (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "knn,finetuned")]
    strategies: Vec<String>,
    /// Concurrent clients, each with its own connection (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Protocols measured (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "rest,grpc")]
    protocols: Vec<Protocol>,
    /// Requests timed per (strategy, protocol, concurrency); at least 10 per
    /// client are sent.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Untimed requests per client before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Run each level for this many seconds instead of a request count
    /// (overload and soak runs).
    #[arg(long)]
    duration: Option<f64>,
    /// A request without an answer after this many seconds counts as a
    /// time-out.
    #[arg(long = "timeout-s", default_value_t = 30.0)]
    timeout_s: f64,
    /// Orchestrator gRPC URL.
    #[arg(long, env = "LEXTRAL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// REST gateway URL.
    #[arg(
        long,
        env = "LEXTRAL_HTTP_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    http: String,
    /// API key, when the server wants one.
    #[arg(long = "api-key", env = "LEXTRAL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A service's Prometheus endpoint as NAME=URL (repeatable); its
    /// resident and peak memory are read after the run.
    #[arg(long = "service-metrics")]
    service_metrics: Vec<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LevelReport {
    strategy: String,
    protocol: Protocol,
    concurrency: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    throughput_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    /// Answers per status: HTTP codes over REST, gRPC code names over
    /// gRPC, `timeout` and `transport` for no answer.
    statuses: BTreeMap<String, usize>,
    /// Refused answers (429 / RESOURCE_EXHAUSTED) and their p99 latency.
    refused: usize,
    refused_p99_ms: f64,
}

/// What one request got back.
enum Answer {
    /// A classification.
    Ok,
    /// Refused for load or quota (429 / RESOURCE_EXHAUSTED).
    Refused(String),
    /// Any other failure status.
    Failed(String),
}

#[derive(Serialize)]
struct Saturation {
    strategy: String,
    protocol: Protocol,
    concurrency: usize,
    throughput_per_s: f64,
}

#[derive(Serialize)]
struct ServiceMemory {
    service: String,
    resident_mib: f64,
    peak_resident_mib: f64,
}

#[derive(Serialize)]
struct LoadReport {
    clauses: usize,
    levels: Vec<LevelReport>,
    saturation: Vec<Saturation>,
    memory: Vec<ServiceMemory>,
}

/// One simulated client: its own connection.
enum Caller {
    Rest { http: reqwest::Client, url: String },
    Grpc(OrchestratorServiceClient<lextral_common::PeerChannel>),
}

impl Caller {
    async fn new(protocol: Protocol, args: &LoadArgs) -> anyhow::Result<Self> {
        Ok(match protocol {
            Protocol::Rest => Self::Rest {
                http: rest_client(args.api_key.as_deref())?,
                url: format!("{}/v1/classify", args.http.trim_end_matches('/')),
            },
            Protocol::Grpc => {
                let channel = tonic::transport::Channel::from_shared(args.server.clone())?
                    .connect()
                    .await
                    .with_context(|| {
                        format!("cannot reach {}; start `lextral serve all`", args.server)
                    })?;
                let key = crate::client::api_key(args.api_key.as_deref());
                Self::Grpc(OrchestratorServiceClient::new(
                    lextral_common::PeerChannel::new(channel, key.as_ref())?,
                ))
            }
        })
    }

    /// Classifies one clause; an error is a failure to get any answer.
    async fn classify(&mut self, strategy: &str, text: &str) -> anyhow::Result<Answer> {
        Ok(match self {
            Self::Rest { http, url } => {
                let response = http
                    .post(url.as_str())
                    .json(&serde_json::json!({ "texts": [text], "strategy": strategy }))
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let status = response.status();
                let body = response.bytes().await?;
                if status.is_success() {
                    Answer::Ok
                } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Answer::Refused(status.as_u16().to_string())
                } else {
                    Answer::Failed(format!(
                        "{} {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body)
                    ))
                }
            }
            Self::Grpc(client) => {
                let request = ClassifyRequest {
                    texts: vec![text.to_owned()],
                    strategy: parse_strategy(strategy).map_err(anyhow::Error::msg)? as i32,
                    ..Default::default()
                };
                match client.classify(request).await {
                    Ok(response) if response.get_ref().results.len() == 1 => Answer::Ok,
                    Ok(_) => Answer::Failed("Ok without a result".to_owned()),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        Answer::Refused(format!("{:?}", status.code()))
                    }
                    Err(status) => {
                        Answer::Failed(format!("{:?} {}", status.code(), status.message()))
                    }
                }
            }
        })
    }
}

/// A REST client sending `authorization: Bearer KEY` when given a key.
fn rest_client(api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = crate::client::api_key(api_key) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .context("the API key holds characters a header cannot")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    for strategy in &args.strategies {
        parse_strategy(strategy).map_err(anyhow::Error::msg)?;
    }
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| c >= 1),
        "--concurrency values must be at least 1"
    );
    let services: Vec<(&str, &str)> = args
        .service_metrics
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .with_context(|| format!("--service-metrics {spec:?}: expected NAME=URL"))
        })
        .collect::<Result<_, _>>()?;
    let texts = Arc::new(read_texts(&args.data, usize::MAX)?);
    let mut levels = Vec::new();
    for strategy in &args.strategies {
        for &protocol in &args.protocols {
            for &concurrency in &args.concurrency {
                let level = measure(&args, strategy, protocol, concurrency, &texts).await?;
                if !args.json {
                    print_level(&level);
                }
                levels.push(level);
            }
        }
    }
    let mut saturation: Vec<Saturation> = Vec::new();
    for level in &levels {
        match saturation
            .iter_mut()
            .find(|s| s.strategy == level.strategy && s.protocol == level.protocol)
        {
            Some(best) if best.throughput_per_s >= level.throughput_per_s => {}
            Some(best) => {
                best.concurrency = level.concurrency;
                best.throughput_per_s = level.throughput_per_s;
            }
            None => saturation.push(Saturation {
                strategy: level.strategy.clone(),
                protocol: level.protocol,
                concurrency: level.concurrency,
                throughput_per_s: level.throughput_per_s,
            }),
        }
    }
    let mut memory = Vec::new();
    for (service, url) in services {
        memory.push(service_memory(service, url).await?);
    }
    let report = LoadReport {
        clauses: texts.len(),
        levels,
        saturation,
        memory,
    };
    if let Some(out) = &args.out {
        lextral_common::fs::write_json_atomically(out, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &report.saturation {
            println!(
                "saturation {} over {:?}: {:.1} requests/s at {} clients",
                s.strategy, s.protocol, s.throughput_per_s, s.concurrency
            );
        }
        for m in &report.memory {
            println!(
                "memory {}: resident {:.0} MiB, peak {:.0} MiB",
                m.service, m.resident_mib, m.peak_resident_mib
            );
        }
    }
    Ok(())
}

fn print_level(level: &LevelReport) {
    println!(
        "{:<10} {:<4} {:>3} clients: {:>4} requests, {:>6.1}/s, p50 {:>7.1} ms, p95 {:>7.1} ms, p99 {:>7.1} ms{}",
        level.strategy,
        format!("{:?}", level.protocol).to_lowercase(),
        level.concurrency,
        level.requests,
        level.throughput_per_s,
        level.p50_ms,
        level.p95_ms,
        level.p99_ms,
        if level.errors > 0 || level.refused > 0 {
            format!(
                ", {} refused (p99 {:.1} ms), {} errors; answers {:?}",
                level.refused, level.refused_p99_ms, level.errors, level.statuses
            )
        } else {
            String::new()
        }
    );
}

/// Runs `concurrency` clients until `requests` answers are timed (clients
/// take the next clause from a shared counter, cycling through the file).
async fn measure(
    args: &LoadArgs,
    strategy: &str,
    protocol: Protocol,
    concurrency: usize,
    texts: &Arc<Vec<String>>,
) -> anyhow::Result<LevelReport> {
    let requests = match args.duration {
        Some(_) => usize::MAX,
        None => args.requests.max(10 * concurrency),
    };
    let until = args
        .duration
        .map(|seconds| Duration::from_secs_f64(seconds.max(0.1)));
    let timeout = Duration::from_secs_f64(args.timeout_s.max(0.001));
    let mut callers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut caller = Caller::new(protocol, args).await?;
        for i in 0..args.warmup {
            // Warm-up answers are not counted; a refusal is fine, no answer is not.
            caller
                .classify(strategy, &texts[i % texts.len()])
                .await
                .with_context(|| format!("warm-up {strategy} over {protocol:?}"))?;
        }
        callers.push(caller);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            let next = Arc::clone(&next);
            let texts = Arc::clone(texts);
            let strategy = strategy.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut refused = Vec::new();
                let mut errors = Vec::new();
                let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests || until.is_some_and(|d| started.elapsed() >= d) {
                        break;
                    }
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(
                        timeout,
                        caller.classify(&strategy, &texts[i % texts.len()]),
                    )
                    .await;
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    let status = match answer {
                        Ok(Ok(Answer::Ok)) => {
                            latencies.push(ms);
                            if protocol == Protocol::Rest {
                                "200"
                            } else {
                                "Ok"
                            }
                            .to_owned()
                        }
                        Ok(Ok(Answer::Refused(code))) => {
                            refused.push(ms);
                            code
                        }
                        Ok(Ok(Answer::Failed(what))) => {
                            let code = what.split(' ').next().unwrap_or_default().to_owned();
                            errors.push(anyhow::anyhow!("{what}"));
                            code
                        }
                        Ok(Err(err)) => {
                            errors.push(err);
                            "transport".to_owned()
                        }
                        Err(_) => {
                            errors.push(anyhow::anyhow!("no answer within {timeout:?}"));
                            "timeout".to_owned()
                        }
                    };
                    *statuses.entry(status).or_default() += 1;
                }
                (latencies, refused, errors, statuses)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut refused = Vec::new();
    let mut errors = Vec::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (l, r, e, s) = task.await?;
        latencies.extend(l);
        refused.extend(r);
        errors.extend(e);
        for (status, count) in s {
            *statuses.entry(status).or_default() += count;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    refused.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        let first = errors
            .into_iter()
            .next()
            .map_or_else(|| "no answer".to_owned(), |e| format!("{e:#}"));
        bail!("{strategy} over {protocol:?}: every request failed: {first}");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(LevelReport {
        strategy: strategy.to_owned(),
        protocol,
        concurrency,
        requests: latencies.len(),
        errors: errors.len(),
        seconds,
        throughput_per_s: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        statuses,
        refused: refused.len(),
        refused_p99_ms: if refused.is_empty() {
            0.0
        } else {
            percentile(&refused, 99.0)
        },
    })
}

/// Reads a service's resident and peak memory from its `/metrics`.
async fn service_memory(service: &str, url: &str) -> anyhow::Result<ServiceMemory> {
    let url = if url.ends_with("/metrics") {
        url.to_owned()
    } else {
        format!("{}/metrics", url.trim_end_matches('/'))
    };
    let body = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .error_for_status()?
        .text()
        .await?;
    let gauge = |name: &str| {
        body.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?;
                rest.starts_with(' ')
                    .then(|| rest.trim().parse::<f64>().ok())?
            })
            .map(|bytes| bytes / (1024.0 * 1024.0))
            .with_context(|| format!("{url} has no {name}"))
    };
    Ok(ServiceMemory {
        service: service.to_owned(),
        resident_mib: gauge("process_resident_memory_bytes")?,
        peak_resident_mib: gauge("lextral_process_peak_resident_memory_bytes")?,
    })
}
