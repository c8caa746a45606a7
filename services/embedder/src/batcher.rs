//! The model runs on one OS thread fed by a bounded queue: concurrent requests
//! are merged into shared forward passes, the async runtime never blocks on
//! inference, and a full queue rejects new work at once.
//!
//! The queue is bounded by work, not only by requests: tokens waiting
//! (estimated from text length, as admission must not tokenize) are capped,
//! and a request is refused when the work ahead of it would take longer than
//! `max_queue_delay` at the speed the model has shown, or, for a large
//! request, longer than [`WAIT_PER_WORK`] times its own work (a bulk ingest
//! batch may wait behind another; a one-clause query may not wait behind
//! either). Overload is thus answered RESOURCE_EXHAUSTED at once instead of
//! by a wait that outlives the caller.
//!
//! Faults stay with the request that caused them: jobs whose caller has
//! gone are dropped before the pass, a failed or panicking shared pass is
//! retried job by job (so one bad text fails only its own request), and the
//! thread survives panics. After [`MAX_CONSECUTIVE_PANICS`] panicking passes
//! in a row it stops, the queue reports not running, and health turns
//! NOT_SERVING.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::error::EmbedderError;
use lextral_embedding::{l2_normalize, ModelInfo, SentenceEmbedder, TextEmbedding};

/// Texts merged into one model call at most; bounds latency for early jobs.
const MAX_TEXTS_PER_ROUND: usize = 256;

/// A request may wait this many times its own work for the work ahead.
pub const WAIT_PER_WORK: f64 = 2.0;

/// Panicking passes in a row after which the model is not trusted any more.
pub const MAX_CONSECUTIVE_PANICS: usize = 3;

/// What the queue runs: the sentence embedder, or a stand-in in tests.
pub trait Backend: Send + 'static {
    /// The model description.
    fn info(&self) -> &ModelInfo;
    /// Raw (unnormalised) vectors of `texts`, in order.
    fn embed_raw(
        &self,
        texts: &[String],
        max_batch_tokens: usize,
    ) -> Result<Vec<TextEmbedding>, EmbedderError>;
}

impl Backend for SentenceEmbedder {
    fn info(&self) -> &ModelInfo {
        SentenceEmbedder::info(self)
    }

    fn embed_raw(
        &self,
        texts: &[String],
        max_batch_tokens: usize,
    ) -> Result<Vec<TextEmbedding>, EmbedderError> {
        Ok(self.embed(texts, false, max_batch_tokens)?)
    }
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Requests waiting at most.
    pub capacity: usize,
    /// Tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Estimated tokens admitted and not yet answered, at most (a request
    /// finding the queue empty is always admitted).
    pub max_queued_tokens: usize,
    /// The longest a new request may expect to wait for the work ahead of
    /// it; zero disables the check.
    pub max_queue_delay: Duration,
}

impl QueueLimits {
    /// `capacity` requests, `max_batch_tokens` per pass, no work bounds.
    pub fn requests(capacity: usize, max_batch_tokens: usize) -> Self {
        Self {
            capacity,
            max_batch_tokens,
            max_queued_tokens: usize::MAX,
            max_queue_delay: Duration::ZERO,
        }
    }
}

struct Job {
    texts: Vec<String>,
    normalize: bool,
    enqueued: Instant,
    /// Estimated tokens, counted in [`Load::pending`] until answered.
    tokens: usize,
    reply: oneshot::Sender<Result<Vec<TextEmbedding>, EmbedderError>>,
}

/// Work admitted and the model's measured speed, shared with the thread.
#[derive(Default)]
struct Load {
    /// Estimated tokens admitted and not yet answered.
    pending: AtomicUsize,
    /// Tokens per second over recent passes (an f64's bits; 0: not measured).
    tokens_per_s: AtomicU64,
}

impl Load {
    fn speed(&self) -> f64 {
        f64::from_bits(self.tokens_per_s.load(Ordering::Relaxed))
    }

    fn record_pass(&self, tokens: usize, took: Duration) {
        let secs = took.as_secs_f64();
        if tokens == 0 || secs <= 0.0 {
            return;
        }
        let now = tokens as f64 / secs;
        let before = self.speed();
        // Recent passes weigh most, so the bound follows a machine that
        // slows down under load.
        let speed = if before > 0.0 {
            0.7 * before + 0.3 * now
        } else {
            now
        };
        self.tokens_per_s.store(speed.to_bits(), Ordering::Relaxed);
    }

    fn done(&self, tokens: usize) {
        self.pending.fetch_sub(tokens, Ordering::AcqRel);
    }
}

/// Tokens a text is expected to take, without tokenizing: about four bytes
/// a token for English WordPiece, plus [CLS]/[SEP], capped at the window.
fn estimate_tokens(text: &str, max_seq_len: usize) -> usize {
    (text.len() / 4 + 2).min(max_seq_len.max(1))
}

/// Handle to the model thread.
pub struct EmbedQueue {
    sender: mpsc::Sender<Job>,
    limits: QueueLimits,
    info: ModelInfo,
    load: Arc<Load>,
}

impl EmbedQueue {
    /// Moves `embedder` onto its own thread and returns the queue feeding it.
    pub fn start(embedder: impl Backend, limits: QueueLimits) -> Self {
        let limits = QueueLimits {
            capacity: limits.capacity.max(1),
            ..limits
        };
        let (sender, receiver) = mpsc::channel(limits.capacity);
        let info = embedder.info().clone();
        let load = Arc::new(Load::default());
        let shared = load.clone();
        let max_batch_tokens = limits.max_batch_tokens;
        std::thread::Builder::new()
            .name("lextral-embedder".to_owned())
            .spawn(move || worker(embedder, receiver, max_batch_tokens, &shared))
            .expect("spawning the embedder thread");
        Self {
            sender,
            limits,
            info,
            load,
        }
    }

    /// Admits `tokens` more, or says why not.
    fn admit(&self, tokens: usize) -> Result<(), EmbedderError> {
        let ahead = self.load.pending.fetch_add(tokens, Ordering::AcqRel);
        if ahead == 0 {
            return Ok(());
        }
        let refuse = |err| {
            self.load.done(tokens);
            metrics::counter!("lextral_embedder_refused_total").increment(1);
            Err(err)
        };
        if ahead.saturating_add(tokens) > self.limits.max_queued_tokens {
            return refuse(EmbedderError::TooMuchQueued {
                tokens: ahead,
                limit: self.limits.max_queued_tokens,
            });
        }
        let speed = self.load.speed();
        if !self.limits.max_queue_delay.is_zero() && speed > 0.0 {
            let wait = Duration::from_secs_f64(ahead as f64 / speed);
            let own = Duration::from_secs_f64(WAIT_PER_WORK * tokens as f64 / speed);
            let limit = self.limits.max_queue_delay.max(own);
            if wait > limit {
                return refuse(EmbedderError::WaitTooLong {
                    wait_ms: wait.as_millis() as u64,
                    limit_ms: limit.as_millis() as u64,
                });
            }
        }
        Ok(())
    }

    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Whether the model thread still takes work.
    pub fn is_running(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Token budget per forward pass.
    pub fn max_batch_tokens(&self) -> usize {
        self.limits.max_batch_tokens
    }

    /// Estimated tokens admitted and not yet answered.
    pub fn pending_tokens(&self) -> usize {
        self.load.pending.load(Ordering::Acquire)
    }

    /// Embeds `texts`; `normalize` absent follows the model's configuration.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        normalize: Option<bool>,
    ) -> Result<Vec<TextEmbedding>, EmbedderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = texts
            .iter()
            .map(|t| estimate_tokens(t, self.info.max_seq_len))
            .sum();
        self.admit(tokens)?;
        let (reply, response) = oneshot::channel();
        let job = Job {
            texts,
            normalize: normalize.unwrap_or(self.info.normalize),
            enqueued: Instant::now(),
            tokens,
            reply,
        };
        self.sender.try_send(job).map_err(|err| {
            self.load.done(tokens);
            match err {
                mpsc::error::TrySendError::Full(_) => EmbedderError::QueueFull {
                    capacity: self.limits.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => EmbedderError::Stopped,
            }
        })?;
        response.await.map_err(|_| EmbedderError::Stopped)?
    }
}

/// One shared pass over every job's texts, or `None` when it panicked.
fn pass(
    embedder: &impl Backend,
    jobs: &[&Job],
    max_batch_tokens: usize,
    load: &Load,
) -> Option<Result<Vec<TextEmbedding>, EmbedderError>> {
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        embedder.embed_raw(&texts, max_batch_tokens)
    }));
    if let Ok(Ok(embeddings)) = &outcome {
        load.record_pass(
            embeddings.iter().map(|e| e.token_count).sum(),
            started.elapsed(),
        );
    }
    metrics::histogram!("lextral_embedder_batch_size").record(texts.len() as f64);
    metrics::histogram!("lextral_embedder_inference_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("lextral_embedder_texts_total").increment(texts.len() as u64);
    match outcome {
        Ok(result) => Some(result),
        Err(panic) => {
            let message = lextral_common::guard::panic_message(&*panic);
            tracing::error!(panic = %message, texts = texts.len(), "embedding pass panicked");
            metrics::counter!("lextral_panics_total").increment(1);
            None
        }
    }
}

fn reply(job: Job, result: Result<Vec<TextEmbedding>, EmbedderError>, load: &Load) {
    load.done(job.tokens);
    let result = result.map(|mut part| {
        if job.normalize {
            part.iter_mut().for_each(|e| l2_normalize(&mut e.values));
        }
        part
    });
    // The caller may have gone away (deadline); nothing to do then.
    let _ = job.reply.send(result);
}

fn panicked() -> EmbedderError {
    EmbedderError::Inference("the model panicked on this batch".into())
}

fn worker(
    embedder: impl Backend,
    mut receiver: mpsc::Receiver<Job>,
    max_batch_tokens: usize,
    load: &Load,
) {
    let mut panics_in_a_row = 0;
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = vec![first];
        let mut texts_in_round = jobs[0].texts.len();
        while texts_in_round < MAX_TEXTS_PER_ROUND {
            match receiver.try_recv() {
                Ok(job) => {
                    texts_in_round += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Work nobody waits for any more is not done.
        let before = jobs.len();
        jobs.retain(|job| {
            let waited_for = !job.reply.is_closed();
            if !waited_for {
                load.done(job.tokens);
            }
            waited_for
        });
        if jobs.len() < before {
            metrics::counter!("lextral_embedder_abandoned_total")
                .increment((before - jobs.len()) as u64);
        }
        if jobs.is_empty() {
            continue;
        }
        for job in &jobs {
            metrics::histogram!("lextral_embedder_queue_wait_seconds")
                .record(job.enqueued.elapsed().as_secs_f64());
        }
        let shared = pass(
            &embedder,
            &jobs.iter().collect::<Vec<_>>(),
            max_batch_tokens,
            load,
        );
        let mut panicked_now = shared.is_none();
        match shared {
            Some(Ok(embeddings)) => {
                let mut embeddings = embeddings.into_iter();
                for job in jobs {
                    let part: Vec<TextEmbedding> =
                        embeddings.by_ref().take(job.texts.len()).collect();
                    reply(job, Ok(part), load);
                }
            }
            Some(Err(err)) if jobs.len() == 1 => {
                tracing::error!(error = %err, "embedding batch failed");
                reply(jobs.pop().expect("one job"), Err(err), load);
            }
            None if jobs.len() == 1 => reply(jobs.pop().expect("one job"), Err(panicked()), load),
            failed => {
                if let Some(Err(err)) = &failed {
                    tracing::warn!(error = %err, jobs = jobs.len(), "shared pass failed; retrying each request alone");
                }
                panicked_now = false;
                for job in jobs {
                    let alone = pass(&embedder, &[&job], max_batch_tokens, load);
                    panicked_now |= alone.is_none();
                    reply(job, alone.unwrap_or_else(|| Err(panicked())), load);
                }
            }
        }
        panics_in_a_row = if panicked_now { panics_in_a_row + 1 } else { 0 };
        if panics_in_a_row >= MAX_CONSECUTIVE_PANICS {
            tracing::error!("the model panicked {panics_in_a_row} times in a row; the embedder stops taking work");
            break;
        }
    }
    tracing::debug!("embedder thread stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use lextral_embedding::Pooling;

    /// Embeds a text as its length; panics on "boom", fails on "bad",
    /// takes 100 ms over "slow".
    struct Fake {
        info: ModelInfo,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                info: ModelInfo {
                    model_id: "fake".into(),
                    dimension: 1,
                    max_seq_len: 512,
                    pooling: Pooling::Mean,
                    normalize: false,
                },
            }
        }
    }

    impl Backend for Fake {
        fn info(&self) -> &ModelInfo {
            &self.info
        }

        fn embed_raw(
            &self,
            texts: &[String],
            _: usize,
        ) -> Result<Vec<TextEmbedding>, EmbedderError> {
            if texts.iter().any(|t| t == "boom") {
                panic!("boom");
            }
            if texts.iter().any(|t| t == "slow") {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if texts.iter().any(|t| t == "bad") {
                return Err(EmbedderError::Inference("bad text".into()));
            }
            Ok(texts
                .iter()
                .map(|t| TextEmbedding {
                    values: vec![t.len() as f32],
                    token_count: 1,
                    truncated: false,
                })
                .collect())
        }
    }

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_request_and_the_worker_goes_on() {
        let queue = Arc::new(EmbedQueue::start(
            Fake::new(),
            QueueLimits::requests(64, 1000),
        ));
        let mut calls = Vec::new();
        for batch in [&["ab"][..], &["boom"], &["abc", "bad"], &["abcd"]] {
            let queue = queue.clone();
            let batch = texts(batch);
            calls.push(tokio::spawn(async move { queue.embed(batch, None).await }));
        }
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        assert_eq!(answers[0].as_ref().unwrap()[0].values, vec![2.0]);
        assert!(answers[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("panicked"));
        assert!(answers[2]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("bad text"));
        assert_eq!(answers[3].as_ref().unwrap()[0].values, vec![4.0]);
        assert!(queue.is_running());
        let later = queue.embed(texts(&["abcde"]), None).await.unwrap();
        assert_eq!(later[0].values, vec![5.0]);
    }

    #[tokio::test]
    async fn work_that_would_wait_too_long_is_refused_at_once() {
        let queue = Arc::new(EmbedQueue::start(
            Fake::new(),
            QueueLimits {
                max_queued_tokens: 1000,
                max_queue_delay: Duration::from_millis(50),
                ..QueueLimits::requests(64, 1000)
            },
        ));
        // Measures the speed: one token in 100 ms.
        queue.embed(texts(&["slow"]), None).await.unwrap();
        // About 105 tokens ahead: some ten seconds at that speed.
        let ahead = {
            let queue = queue.clone();
            let batch = vec!["slow".to_owned(), "x".repeat(400)];
            tokio::spawn(async move { queue.embed(batch, None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(queue.pending_tokens() > 100);
        let started = Instant::now();
        // Two tokens may wait twice their own work (0.4 s), not ten seconds.
        let refused = queue.embed(texts(&["ab"]), None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(500));
        // The speed is measured, so a slow scheduler adds a little.
        assert!(
            matches!(
                refused,
                EmbedderError::WaitTooLong {
                    limit_ms: 400..=450,
                    ..
                }
            ),
            "{refused}"
        );
        // A bulk request larger than the work ahead may wait behind it.
        let bulk = queue.embed(vec!["x".repeat(2000)], None);
        let (bulk, ahead) = tokio::join!(bulk, ahead);
        bulk.unwrap();
        ahead.unwrap().unwrap();
        // Nothing ahead any more: taken.
        assert_eq!(queue.pending_tokens(), 0);
        queue.embed(texts(&["ab"]), None).await.unwrap();
    }

    #[tokio::test]
    async fn queued_tokens_are_bounded_but_an_empty_queue_takes_anything() {
        let queue = Arc::new(EmbedQueue::start(
            Fake::new(),
            QueueLimits {
                max_queued_tokens: 4,
                ..QueueLimits::requests(64, 1000)
            },
        ));
        // Far over the bound, but alone: taken.
        queue
            .embed(texts(&["slow", "abcdefgh", "abcdefgh"]), None)
            .await
            .unwrap();
        let ahead = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.embed(texts(&["slow"]), None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = queue.embed(texts(&["ab"]), None).await.unwrap_err();
        assert!(
            matches!(refused, EmbedderError::TooMuchQueued { limit: 4, .. }),
            "{refused}"
        );
        ahead.await.unwrap().unwrap();
        assert_eq!(queue.pending_tokens(), 0);
    }

    #[tokio::test]
    async fn a_model_that_keeps_panicking_stops_the_queue() {
        let queue = EmbedQueue::start(Fake::new(), QueueLimits::requests(64, 1000));
        for _ in 0..MAX_CONSECUTIVE_PANICS {
            assert!(queue.embed(texts(&["boom"]), None).await.is_err());
        }
        let started = Instant::now();
        while queue.is_running() {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(matches!(
            queue.embed(texts(&["ab"]), None).await,
            Err(EmbedderError::Stopped)
        ));
    }
}
