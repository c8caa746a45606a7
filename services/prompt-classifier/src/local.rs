//! In-process backend: a quantized Gemma 3 GGUF run with candle, so the
//! prompt strategies work with no network and no key.
//!
//! Per request: the prompt prefix (instructions and label list) is looked
//! up in a small cache of KV states, computed once per label set; the
//! clause part is run from a copy of it. Decoding is greedy. In
//! constrained mode (the default) it may only follow a label's tokens, so
//! every answer is a label and its probability is a confidence; free mode
//! generates up to the newline and leaves mapping to the parser.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;

use crate::backend::{Completion, CompletionRequest, LlmBackend, LlmError};
use crate::gemma::{Gemma, KvCache};
use crate::spm::SpmTokenizer;

/// Prompt prefixes kept (one per label set and prompt mode).
const PREFIX_CACHE_ENTRIES: usize = 8;

/// Prompts that may wait for the local model; beyond it calls are refused
/// (RESOURCE_EXHAUSTED) at once. One generation already uses every core,
/// so a deeper queue only makes callers wait longer.
pub const QUEUE_CAPACITY: usize = 8;

/// One prompt for the model thread.
struct Job {
    prefix: String,
    suffix: String,
    labels: Vec<String>,
    max_tokens: u32,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Completion, LlmError>>,
}

/// The local backend: the model on one dedicated thread behind a bounded
/// queue.
pub struct LocalBackend {
    inner: Arc<Inner>,
    name: String,
    jobs: tokio::sync::mpsc::Sender<Job>,
}

struct Inner {
    model: Gemma,
    tokenizer: SpmTokenizer,
    /// Tokens that end an answer: newline, blank line, end of sequence.
    stops: Vec<u32>,
    constrained: bool,
    prefixes: Mutex<Vec<(String, KvCache)>>,
    tries: Mutex<HashMap<(String, bool), Arc<Trie>>>,
}

impl LocalBackend {
    /// Loads `path` (a Gemma 3 GGUF).
    pub fn load(path: &Path, constrained: bool) -> Result<Self, LlmError> {
        let started = Instant::now();
        let mut file = std::fs::File::open(path).map_err(|err| {
            LlmError::NotConfigured(format!(
                "cannot open the local LLM {}: {err} (run scripts/setup-llm.sh, or set --llm-model / LEXTRAL_LLM_MODEL)",
                path.display()
            ))
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(|err| {
            LlmError::NotConfigured(format!("{} is not a GGUF file: {err}", path.display()))
        })?;
        let tokenizer = SpmTokenizer::from_gguf(&content)
            .map_err(|err| LlmError::NotConfigured(format!("{}: {err}", path.display())))?;
        let model = Gemma::from_gguf(&content, &mut file, &Device::Cpu)
            .map_err(|err| LlmError::NotConfigured(format!("{}: {err}", path.display())))?;
        let mut stops: Vec<u32> = ["\n", "\n\n"]
            .iter()
            .filter_map(|p| tokenizer.piece_id(p))
            .collect();
        stops.push(tokenizer.eos);
        let name = content
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        tracing::info!(model = %name, path = %path.display(), constrained, load_ms = started.elapsed().as_millis() as u64, "local LLM loaded");
        let inner = Arc::new(Inner {
            model,
            tokenizer,
            stops,
            constrained,
            prefixes: Mutex::new(Vec::new()),
            tries: Mutex::new(HashMap::new()),
        });
        let (jobs, queue) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("lextral-llm".to_owned())
            .spawn(move || generate_all(&worker, queue))
            .map_err(|err| LlmError::NotConfigured(format!("starting the LLM thread: {err}")))?;
        Ok(Self { inner, name, jobs })
    }

    /// Where the set-up script puts the default model.
    pub fn default_path() -> PathBuf {
        lextral_common::lextral_home()
            .join("models")
            .join("gemma-3-270m")
            .join("gemma-3-270m-q4_k_m.gguf")
    }

    /// Token count of `text` (no BOS).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.inner.tokenizer.encode(text).len()
    }
}

/// Label token sequences as a trie; `end` marks a complete label.
#[derive(Debug, Default)]
struct Trie {
    children: BTreeMap<u32, Trie>,
    end: Option<usize>,
}

impl Trie {
    fn build(tokenizer: &SpmTokenizer, labels: &[String], leading_space: bool) -> Self {
        let mut root = Trie::default();
        for (index, label) in labels.iter().enumerate() {
            let text = if leading_space {
                format!(" {label}")
            } else {
                label.clone()
            };
            let mut node = &mut root;
            for id in tokenizer.encode(&text) {
                node = node.children.entry(id).or_default();
            }
            node.end.get_or_insert(index);
        }
        root
    }
}

fn softmax_pick(logits: &[f32]) -> (usize, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let (best, &value) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("at least one candidate");
    (best, (value - max).exp() / sum)
}

impl Inner {
    fn prefix_state(&self, prefix: &str) -> Result<(KvCache, usize), LlmError> {
        if let Some((_, cache)) = self
            .prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(p, _)| p == prefix)
        {
            return Ok((cache.clone(), cache.len()));
        }
        let mut cache = self.model.new_cache();
        let ids = self.tokenizer.encode_with_bos(prefix);
        self.model
            .forward(&ids, &mut cache)
            .map_err(|err| LlmError::Inference(err.to_string()))?;
        let mut prefixes = self.prefixes.lock().unwrap_or_else(PoisonError::into_inner);
        if prefixes.len() >= PREFIX_CACHE_ENTRIES {
            prefixes.remove(0);
        }
        prefixes.push((prefix.to_owned(), cache.clone()));
        Ok((cache, ids.len()))
    }

    /// One generation; only the model thread calls it, so one runs at a
    /// time (each already uses every core).
    fn run(
        &self,
        prompt_prefix: &str,
        prompt_suffix: &str,
        labels: &[String],
        max_output_tokens: u32,
        deadline: Instant,
    ) -> Result<Completion, LlmError> {
        let check_deadline = |stage: &str| {
            if Instant::now() >= deadline {
                Err(LlmError::Deadline(format!("local model, {stage}")))
            } else {
                Ok(())
            }
        };
        check_deadline("before the prompt")?;
        let (mut cache, prefix_tokens) = self.prefix_state(prompt_prefix)?;
        let suffix_ids = if cache.is_empty() {
            self.tokenizer.encode_with_bos(prompt_suffix)
        } else {
            self.tokenizer.encode(prompt_suffix)
        };
        if suffix_ids.is_empty() {
            return Err(LlmError::Inference("empty prompt".into()));
        }
        let input_tokens = (prefix_tokens + suffix_ids.len()) as u32;
        if input_tokens as usize + max_output_tokens as usize > crate::gemma::MAX_POSITIONS {
            return Err(LlmError::TooLong(format!(
                "the prompt has {input_tokens} tokens; with {max_output_tokens} to generate it exceeds the local model's {} positions",
                crate::gemma::MAX_POSITIONS
            )));
        }
        let infer = |err: candle_core::Error| LlmError::Inference(err.to_string());
        let mut hidden = self.model.forward(&suffix_ids, &mut cache).map_err(infer)?;
        check_deadline("after the prompt")?;

        let full_prompt_ends_with_space = prompt_suffix
            .chars()
            .last()
            .or_else(|| prompt_prefix.chars().last())
            .is_some_and(char::is_whitespace);
        if self.constrained && !labels.is_empty() {
            let key = (labels.join("\u{1f}"), !full_prompt_ends_with_space);
            let trie = {
                let mut tries = self.tries.lock().unwrap_or_else(PoisonError::into_inner);
                if tries.len() > PREFIX_CACHE_ENTRIES {
                    tries.clear();
                }
                tries
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Trie::build(
                            &self.tokenizer,
                            labels,
                            !full_prompt_ends_with_space,
                        ))
                    })
                    .clone()
            };
            let mut node: &Trie = &trie;
            let mut generated = Vec::new();
            let mut confidence = 1.0f32;
            loop {
                // Candidates: each child token, plus the end-of-answer
                // tokens when a label ends at this node.
                let mut candidates: Vec<u32> = node.children.keys().copied().collect();
                let children = candidates.len();
                if node.end.is_some() {
                    candidates.extend(&self.stops);
                }
                if candidates.is_empty() {
                    break;
                }
                let pick = if candidates.len() == 1 {
                    0
                } else {
                    let logits = self
                        .model
                        .candidate_logits(&hidden, &candidates)
                        .map_err(infer)?;
                    let (pick, p) = softmax_pick(&logits);
                    confidence *= p;
                    pick
                };
                if pick >= children {
                    break;
                }
                let token = candidates[pick];
                generated.push(token);
                node = &node.children[&token];
                if node.children.is_empty() {
                    break;
                }
                check_deadline("while decoding")?;
                hidden = self.model.forward(&[token], &mut cache).map_err(infer)?;
            }
            let text = self.tokenizer.decode(&generated).trim().to_owned();
            return Ok(Completion {
                text,
                input_tokens,
                output_tokens: generated.len() as u32,
                confidence: Some(confidence),
                attempts: 1,
            });
        }

        let mut generated = Vec::new();
        for step in 0..max_output_tokens {
            let logits = self.model.logits(&hidden).map_err(infer)?;
            let token = logits
                .argmax(0)
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(infer)?;
            if self.stops.contains(&token) {
                break;
            }
            generated.push(token);
            if self.tokenizer.decode(&generated).contains('\n') || step + 1 == max_output_tokens {
                break;
            }
            check_deadline("while generating")?;
            hidden = self.model.forward(&[token], &mut cache).map_err(infer)?;
        }
        Ok(Completion {
            text: self.tokenizer.decode(&generated),
            input_tokens,
            output_tokens: generated.len() as u32,
            confidence: None,
            attempts: 1,
        })
    }
}

/// The model thread: one prompt after another; prompts whose caller has
/// gone or whose deadline has passed are skipped, and a panic fails only
/// its own prompt.
fn generate_all(inner: &Inner, mut queue: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        if job.reply.is_closed() {
            continue;
        }
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(LlmError::Deadline(
                "local model, waiting in its queue".into(),
            )));
            continue;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.run(
                &job.prefix,
                &job.suffix,
                &job.labels,
                job.max_tokens,
                job.deadline,
            )
        }))
        .unwrap_or_else(|panic| {
            let message = lextral_common::guard::panic_message(&*panic);
            tracing::error!(panic = %message, "local LLM generation panicked");
            metrics::counter!("lextral_panics_total").increment(1);
            Err(LlmError::Inference(format!(
                "generation panicked: {message}"
            )))
        });
        let _ = job.reply.send(outcome);
    }
}

#[tonic::async_trait]
impl LlmBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local-gguf"
    }

    fn model(&self) -> &str {
        &self.name
    }

    fn truncate(&self, text: &str, max_tokens: usize) -> (String, bool) {
        let ids = self.inner.tokenizer.encode(text);
        if ids.len() <= max_tokens {
            return (text.to_owned(), false);
        }
        (self.inner.tokenizer.decode(&ids[..max_tokens]), true)
    }

    async fn complete(&self, request: CompletionRequest<'_>) -> Result<Completion, LlmError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            prefix: request.prompt.prefix.clone(),
            suffix: request.prompt.suffix.clone(),
            labels: request.labels.to_vec(),
            max_tokens: request.max_output_tokens,
            deadline: request.deadline,
            reply,
        };
        self.jobs.try_send(job).map_err(|err| match err {
            tokio::sync::mpsc::error::TrySendError::Full(_) => LlmError::Busy(format!(
                "the local LLM has {QUEUE_CAPACITY} prompts waiting; retry shortly"
            )),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                LlmError::Inference("the local LLM thread has stopped".into())
            }
        })?;
        answer
            .await
            .map_err(|_| LlmError::Inference("the local LLM thread has stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    //! These run the real Gemma 3 270M (scripts/test.sh sets
    //! LEXTRAL_LLM_MODEL after caching it with scripts/setup-llm.sh).
    use super::*;
    use crate::backend::Prompt;
    use std::time::Duration;

    fn model_path() -> PathBuf {
        std::env::var_os("LEXTRAL_LLM_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(LocalBackend::default_path)
    }

    fn backend(constrained: bool) -> LocalBackend {
        let path = model_path();
        LocalBackend::load(&path, constrained).unwrap_or_else(|err| {
            panic!(
                "{err}: run scripts/setup-llm.sh (scripts/test.sh does) or set LEXTRAL_LLM_MODEL"
            )
        })
    }

    fn labels() -> Vec<String> {
        [
            "Notices",
            "Governing Laws",
            "Severability",
            "Counterparts",
            "Entire Agreements",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_the_rest_are_answered() {
        let backend = Arc::new(backend(true));
        let prompt = Arc::new(Prompt {
            prefix: "Categories:\n- Notices\n- Governing Laws\n- Severability\n".into(),
            suffix: "Clause: All notices shall be sent by registered mail.\nCategory:".into(),
        });
        let labels = Arc::new(labels());
        let calls: Vec<_> = (0..QUEUE_CAPACITY + 4)
            .map(|_| {
                let (backend, prompt, labels) = (backend.clone(), prompt.clone(), labels.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let answer = backend
                        .complete(CompletionRequest {
                            prompt: &prompt,
                            labels: &labels,
                            max_output_tokens: 8,
                            deadline: Instant::now() + Duration::from_secs(120),
                        })
                        .await;
                    (answer, started.elapsed())
                })
            })
            .collect();
        let mut busy = 0;
        let mut answered = 0;
        for call in calls {
            match call.await.unwrap() {
                (Err(LlmError::Busy(_)), took) => {
                    busy += 1;
                    assert!(took < Duration::from_millis(100), "refused after {took:?}");
                }
                (Ok(completion), _) => {
                    answered += 1;
                    assert!(labels.contains(&completion.text.trim().to_owned()));
                }
                (Err(err), _) => panic!("{err}"),
            }
        }
        // One generating, QUEUE_CAPACITY waiting; the rest refused.
        assert!(busy >= 3, "{busy} refused");
        assert_eq!(busy + answered, QUEUE_CAPACITY + 4);
    }

    #[test]
    fn tokenizer_round_trips_ledgar_clauses() {
        let b = backend(true);
        let t = &b.inner.tokenizer;
        assert_eq!(t.vocab_size(), 262_144);
        // Common words are single pieces with the ▁ prefix merged in.
        assert_eq!(t.encode(" Governing Laws").len(), 2);
        assert_eq!(t.encode_with_bos("The capital of France is")[0], t.bos);
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/ledgar/validation.jsonl");
        let text = std::fs::read_to_string(&data).expect("../shared/data/ledgar/validation.jsonl");
        for line in text.lines().take(200) {
            let clause: serde_json::Value = serde_json::from_str(line).unwrap();
            let clause = clause["text"].as_str().unwrap();
            let ids = t.encode(clause);
            assert!(ids.len() < clause.len(), "no merges in {clause:?}");
            assert_eq!(t.decode(&ids), clause);
        }
        // Multiple spaces and newlines use Gemma's user-defined pieces.
        assert_eq!(t.decode(&t.encode("a  b\n\nc")), "a  b\n\nc");
    }

    /// The ids of tests/fixtures/gemma3_tokens.json: Gemma 3's tokenizer as
    /// transformers builds it from the same GGUF, cross-checked by
    /// SentencePiece (make_gemma_reference.py beside it says how).
    #[test]
    fn tokenizer_matches_the_reference_fixture() {
        use sha2::{Digest, Sha256};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("tests/fixtures/gemma3_tokens.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            fixture["gguf"].as_str(),
            model_path().file_name().and_then(|n| n.to_str()),
            "the fixture was made from another GGUF"
        );
        let ledgar = root.join("../../../shared/data/ledgar");
        let read = |file: &str| std::fs::read_to_string(ledgar.join(file)).unwrap();
        let validation: Vec<String> = read("validation.jsonl")
            .lines()
            .map(str::to_owned)
            .collect();
        let clause = |line: &serde_json::Value| -> serde_json::Value {
            serde_json::from_str(&validation[line.as_u64().unwrap() as usize]).unwrap()
        };
        let labels = read("labels.txt").lines().collect::<Vec<_>>().join("\n");
        let b = backend(true);
        let t = &b.inner.tokenizer;
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 50, "{} cases", cases.len());
        let mut mismatches = Vec::new();
        for case in cases {
            // The texts the script wrote from ../shared are rebuilt from there.
            let text = match case["kind"].as_str().unwrap() {
                "text" => case["text"].as_str().unwrap().to_owned(),
                "ledgar" => clause(&case["line"])["text"].as_str().unwrap().to_owned(),
                "labels" => labels.clone(),
                // The served default templates, so a change to them shows here
                // as a text hash the reference was not made from.
                "zero-shot prompt" => crate::prompt::DEFAULT_ZERO_SHOT
                    .replace("{labels}", &labels)
                    .replace(
                        "{clause}",
                        clause(&case["clause_line"])["text"].as_str().unwrap(),
                    ),
                "few-shot prompt" => {
                    let examples: String = case["example_lines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|line| {
                            let example = clause(line);
                            crate::prompt::DEFAULT_EXAMPLE
                                .replace("{text}", example["text"].as_str().unwrap())
                                .replace("{label}", example["label"].as_str().unwrap())
                        })
                        .collect();
                    crate::prompt::DEFAULT_FEW_SHOT_CONSTRAINED
                        .replace("{examples}", &examples)
                        .replace(
                            "{clause}",
                            clause(&case["clause_line"])["text"].as_str().unwrap(),
                        )
                }
                other => panic!("unknown fixture kind {other}"),
            };
            if let Some(sha) = case["text_sha256"].as_str() {
                assert_eq!(
                    hex::encode(Sha256::digest(text.as_bytes())),
                    sha,
                    "{case}: the text differs from the one the reference was made from"
                );
            }
            let expected: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap() as u32)
                .collect();
            let ids = t.encode(&text);
            if ids != expected {
                mismatches.push(format!(
                    "{text:?}\n  ours:      {ids:?}\n  reference: {expected:?}"
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of {} texts differ:\n{}",
            mismatches.len(),
            cases.len(),
            mismatches.join("\n")
        );
    }

    #[test]
    fn cached_prefix_matches_one_pass() {
        let b = backend(true);
        let m = &b.inner.model;
        let t = &b.inner.tokenizer;
        let ids = t.encode_with_bos(
            "This Agreement shall be governed by and construed in accordance with the laws of the State of",
        );
        let mut one = m.new_cache();
        let whole = m.logits(&m.forward(&ids, &mut one).unwrap()).unwrap();
        let mut split = m.new_cache();
        m.forward(&ids[..5], &mut split).unwrap();
        m.forward(&ids[5..ids.len() - 1], &mut split).unwrap();
        let parts = m
            .logits(&m.forward(&ids[ids.len() - 1..], &mut split).unwrap())
            .unwrap();
        let diff = (whole - parts)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-2, "logits differ by {diff}");
    }

    fn request<'a>(prompt: &'a Prompt, labels: &'a [String]) -> CompletionRequest<'a> {
        CompletionRequest {
            prompt,
            labels,
            max_output_tokens: 8,
            deadline: Instant::now() + Duration::from_secs(120),
        }
    }

    #[tokio::test]
    async fn constrained_few_shot_answers_a_label() {
        let b = backend(true);
        // A 270M base model is easily distracted by a long label list; two
        // labels keep this a test of the mechanism, not of the model.
        let labels = vec!["Notices".to_owned(), "Governing Laws".to_owned()];
        let prompt = Prompt {
            prefix: format!(
                "Classify the contract clause into exactly one of these categories:\n{}\n\n",
                labels.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
            ),
            suffix: "Clause: All notices hereunder shall be in writing and delivered by hand or mail.\nCategory: Notices\n\n\
                     Clause: This Agreement shall be governed by the laws of the State of Delaware.\nCategory: Governing Laws\n\n\
                     Clause: This Agreement shall be governed by and construed under the laws of New York.\nCategory:"
                .into(),
        };
        let first = b.complete(request(&prompt, &labels)).await.unwrap();
        assert_eq!(first.text, "Governing Laws");
        let p = first.confidence.unwrap();
        assert!(p > 0.0 && p <= 1.0);
        assert!(first.input_tokens > 50 && first.output_tokens >= 1);
        // The second call reuses the cached prefix and answers the same.
        let second = b.complete(request(&prompt, &labels)).await.unwrap();
        assert_eq!(second.text, first.text);
        assert!((second.confidence.unwrap() - p).abs() < 1e-4);
    }

    #[tokio::test]
    async fn free_generation_stops_at_the_line_end() {
        let b = backend(false);
        let prompt = Prompt {
            prefix: String::new(),
            suffix: "Question: What is the capital of France?\nAnswer:".into(),
        };
        let c = b.complete(request(&prompt, &[])).await.unwrap();
        assert!(!c.text.trim().is_empty());
        assert!(!c.text.contains('\n'));
        assert!(c.output_tokens >= 1 && c.output_tokens <= 8);
        assert!(c.confidence.is_none());
    }

    #[tokio::test]
    async fn a_passed_deadline_is_reported() {
        let b = backend(true);
        let labels = labels();
        let prompt = Prompt {
            prefix: "Category list\n".into(),
            suffix: "Clause: x\nCategory:".into(),
        };
        let mut r = request(&prompt, &labels);
        r.deadline = Instant::now();
        assert!(matches!(b.complete(r).await, Err(LlmError::Deadline(_))));
    }
}
