//! The model runs on one OS thread fed by a bounded queue: concurrent requests
//! are merged into shared forward passes, the async runtime never blocks on
//! inference, and a full queue rejects new work at once.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::error::EmbedderError;
use lextral_embedding::{l2_normalize, ModelInfo, SentenceEmbedder, TextEmbedding};

/// Texts merged into one model call at most; bounds latency for early jobs.
const MAX_TEXTS_PER_ROUND: usize = 256;

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
    pub fn start(embedder: SentenceEmbedder, capacity: usize, max_batch_tokens: usize) -> Self {
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

fn worker(embedder: SentenceEmbedder, mut receiver: mpsc::Receiver<Job>, max_batch_tokens: usize) {
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
        let mut texts = Vec::with_capacity(texts_in_round);
        let mut counts = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            metrics::histogram!("lextral_embedder_queue_wait_seconds")
                .record(job.enqueued.elapsed().as_secs_f64());
            counts.push(job.texts.len());
            texts.append(&mut job.texts);
        }
        let started = Instant::now();
        // Normalisation is per job, so the shared pass returns raw vectors.
        let result = embedder.embed(&texts, false, max_batch_tokens);
        metrics::histogram!("lextral_embedder_batch_size").record(texts.len() as f64);
        metrics::histogram!("lextral_embedder_inference_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("lextral_embedder_texts_total").increment(texts.len() as u64);
        match result {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                for (job, count) in jobs.into_iter().zip(counts) {
                    let mut part: Vec<TextEmbedding> = embeddings.by_ref().take(count).collect();
                    if job.normalize {
                        part.iter_mut().for_each(|e| l2_normalize(&mut e.values));
                    }
                    // The caller may have gone away (deadline); nothing to do then.
                    let _ = job.reply.send(Ok(part));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "embedding batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(err.clone().into()));
                }
            }
        }
    }
    tracing::debug!("embedder thread stopped");
}
