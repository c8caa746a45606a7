//! The model runs on one OS thread fed by a bounded queue: concurrent requests
//! are merged into shared forward passes, the async runtime never blocks on
//! inference, and a full queue rejects new work at once.
//!
//! Faults stay with the request that caused them: jobs whose caller has
//! gone are dropped before the pass, a failed or panicking shared pass is
//! retried job by job (so one bad text fails only its own request), and the
//! thread survives panics. After [`MAX_CONSECUTIVE_PANICS`] panicking passes
//! in a row it stops, the queue reports not running, and health turns
//! NOT_SERVING.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::error::EmbedderError;
use lextral_embedding::{l2_normalize, ModelInfo, SentenceEmbedder, TextEmbedding};

/// Texts merged into one model call at most; bounds latency for early jobs.
const MAX_TEXTS_PER_ROUND: usize = 256;

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

struct Job {
    texts: Vec<String>,
    normalize: bool,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Vec<TextEmbedding>, EmbedderError>>,
}

/// Handle to the model thread.
pub struct EmbedQueue {
    sender: mpsc::Sender<Job>,
    capacity: usize,
    info: ModelInfo,
    max_batch_tokens: usize,
}

impl EmbedQueue {
    /// Moves `embedder` onto its own thread and returns the queue feeding it.
    pub fn start(embedder: impl Backend, capacity: usize, max_batch_tokens: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let info = embedder.info().clone();
        std::thread::Builder::new()
            .name("lextral-embedder".to_owned())
            .spawn(move || worker(embedder, receiver, max_batch_tokens))
            .expect("spawning the embedder thread");
        Self {
            sender,
            capacity,
            info,
            max_batch_tokens,
        }
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
        self.max_batch_tokens
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
        let (reply, response) = oneshot::channel();
        let job = Job {
            texts,
            normalize: normalize.unwrap_or(self.info.normalize),
            enqueued: Instant::now(),
            reply,
        };
        self.sender.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => EmbedderError::QueueFull {
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => EmbedderError::Stopped,
        })?;
        response.await.map_err(|_| EmbedderError::Stopped)?
    }
}

/// One shared pass over every job's texts, or `None` when it panicked.
fn pass(
    embedder: &impl Backend,
    jobs: &[&Job],
    max_batch_tokens: usize,
) -> Option<Result<Vec<TextEmbedding>, EmbedderError>> {
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        embedder.embed_raw(&texts, max_batch_tokens)
    }));
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

fn reply(job: Job, result: Result<Vec<TextEmbedding>, EmbedderError>) {
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

fn worker(embedder: impl Backend, mut receiver: mpsc::Receiver<Job>, max_batch_tokens: usize) {
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
        jobs.retain(|job| !job.reply.is_closed());
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
        );
        let mut panicked_now = shared.is_none();
        match shared {
            Some(Ok(embeddings)) => {
                let mut embeddings = embeddings.into_iter();
                for job in jobs {
                    let part: Vec<TextEmbedding> =
                        embeddings.by_ref().take(job.texts.len()).collect();
                    reply(job, Ok(part));
                }
            }
            Some(Err(err)) if jobs.len() == 1 => {
                tracing::error!(error = %err, "embedding batch failed");
                reply(jobs.pop().expect("one job"), Err(err));
            }
            None if jobs.len() == 1 => reply(jobs.pop().expect("one job"), Err(panicked())),
            failed => {
                if let Some(Err(err)) = &failed {
                    tracing::warn!(error = %err, jobs = jobs.len(), "shared pass failed; retrying each request alone");
                }
                panicked_now = false;
                for job in jobs {
                    let alone = pass(&embedder, &[&job], max_batch_tokens);
                    panicked_now |= alone.is_none();
                    reply(job, alone.unwrap_or_else(|| Err(panicked())));
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

    /// Embeds a text as its length; panics on "boom", fails on "bad".
    struct Fake {
        info: ModelInfo,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                info: ModelInfo {
                    model_id: "fake".into(),
                    dimension: 1,
                    max_seq_len: 8,
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
        let queue = std::sync::Arc::new(EmbedQueue::start(Fake::new(), 64, 1000));
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
    async fn a_model_that_keeps_panicking_stops_the_queue() {
        let queue = EmbedQueue::start(Fake::new(), 64, 1000);
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
