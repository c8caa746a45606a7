//! The lexical and hybrid methods: candidates compared by cross-validation
//! over train + validation, the winner refitted on all of it.
//!
//! Lexical candidates (linear learners on TF-IDF word + character n-grams)
//! are ranked by their mean fold scores. The hybrid method also tries
//! candidates that need a sentence embedding per request — lexical and
//! dense features in one linear model, the dense features alone, the
//! lexical model mixed with a kNN vote — and keeps the one that costs an
//! embedding only if it beats the best lexical candidate by more than the
//! spread of its gain over the folds (see [`crate::cv::beyond_spread`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use lextral_embedding::SentenceEmbedder;
use serde_json::json;

use lextral_finetuned_classifier::{
    lexical_tensors, write_model_dir, BlockConfig, Combination, CrossValidation, CvCandidate,
    DenseHead, EmbeddingSpec, F1Scores, LexicalModel, LinearModel, Manifest, Method, SparseRow,
    ValidationReport, Vectorizer, FORMAT,
};

use crate::cv::{
    beyond_spread, key, knn_vote, log_probs, paired_gain, score_rows, stratified_folds, summarise,
    training_indices, with_dense, FoldFeatures, Learner,
};
use crate::scoring::{calibratable, fit_temperature, nll};
use crate::train::{bar, embed_texts, training_info, Stages, TrainData, TrainOptions};

/// What the final model is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Recipe {
    /// A learner on the lexical features.
    Lexical(Learner),
    /// The learner on lexical features and `weight`-scaled embeddings.
    Joint(Learner, f32),
}

impl Recipe {
    fn name(&self) -> String {
        match self {
            Self::Lexical(learner) => format!("lexical {}", learner.name()),
            Self::Joint(learner, weight) => {
                format!("lexical+dense {} dense_weight={weight}", learner.name())
            }
        }
    }
}

/// Neighbours in the kNN vote mixed with the lexical model (the served kNN
/// strategy's default k).
const KNN_K: usize = 10;
/// Dense feature weights tried in the joint model.
const JOINT_WEIGHTS: [f32; 2] = [0.5, 1.0];
/// Shares of the kNN vote tried in the mix.
const KNN_SHARES: [f32; 4] = [0.02, 0.05, 0.1, 0.2];

/// All labelled clauses in one pool: train first, then validation.
struct Pool<'a> {
    texts: Vec<&'a str>,
    labels: Vec<usize>,
    n_train: usize,
}

impl<'a> Pool<'a> {
    fn new(data: &'a TrainData) -> Self {
        let all = data.train.iter().chain(&data.validation);
        Self {
            texts: all.clone().map(|(t, _)| t.as_str()).collect(),
            labels: all.map(|(_, l)| *l).collect(),
            n_train: data.train.len(),
        }
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// One fold: who is trained on, who is scored, and their features.
struct Fold {
    train: Vec<usize>,
    test: Vec<usize>,
    features: FoldFeatures,
}

impl Fold {
    fn test_labels(&self, pool: &Pool) -> Vec<usize> {
        self.test.iter().map(|&i| pool.labels[i]).collect()
    }
    fn train_labels(&self, pool: &Pool) -> Vec<usize> {
        self.train.iter().map(|&i| pool.labels[i]).collect()
    }
}

fn joint_rows(
    rows: &[SparseRow],
    idx: &[usize],
    dense: &[Vec<f32>],
    offset: usize,
    w: f32,
) -> Vec<SparseRow> {
    rows.iter()
        .zip(idx)
        .map(|(row, &i)| with_dense(row, offset as u32, &dense[i], w))
        .collect()
}

fn dense_rows(idx: &[usize], dense: &[Vec<f32>]) -> Vec<SparseRow> {
    idx.iter()
        .map(|&i| with_dense(&SparseRow::default(), 0, &dense[i], 1.0))
        .collect()
}

/// Scores of `recipe` on every fold's left-out clauses: per-fold F1 and the
/// out-of-fold log-probabilities (pool order).
fn cross_validate(
    recipe: Recipe,
    folds: &[Fold],
    pool: &Pool,
    dense: Option<&[Vec<f32>]>,
    n_classes: usize,
    seed: u64,
    deadline: Instant,
) -> (Vec<F1Scores>, Vec<Vec<f32>>) {
    let mut scores = Vec::with_capacity(folds.len());
    let mut oof = vec![Vec::new(); pool.len()];
    for fold in folds {
        let labels = fold.train_labels(pool);
        // Lexical candidates read the fold's rows as they are; only a
        // joint candidate needs rows of its own.
        let (train_rows, test_rows, dimension, learner): (
            Cow<[SparseRow]>,
            Cow<[SparseRow]>,
            _,
            _,
        ) = match recipe {
            Recipe::Lexical(learner) => (
                Cow::Borrowed(&fold.features.train),
                Cow::Borrowed(&fold.features.test),
                fold.features.dimension,
                learner,
            ),
            Recipe::Joint(learner, w) => {
                let dense = dense.expect("joint candidates have embeddings");
                let offset = fold.features.dimension;
                (
                    Cow::Owned(joint_rows(
                        &fold.features.train,
                        &fold.train,
                        dense,
                        offset,
                        w,
                    )),
                    Cow::Owned(joint_rows(
                        &fold.features.test,
                        &fold.test,
                        dense,
                        offset,
                        w,
                    )),
                    offset + dense[0].len(),
                    learner,
                )
            }
        };
        let model = learner.fit(
            &train_rows,
            &labels,
            dimension,
            n_classes,
            seed,
            Some(deadline),
        );
        let fold_scores = log_probs(&model, &test_rows);
        scores.push(score_rows(&fold_scores, &fold.test_labels(pool)));
        for (&i, z) in fold.test.iter().zip(fold_scores) {
            oof[i] = z;
        }
    }
    (scores, oof)
}

/// Embeddings of every pool clause (train then validation), through the cache.
fn embed_pool(
    data: &TrainData,
    options: &TrainOptions,
    model_dir: &Path,
) -> anyhow::Result<(Vec<Vec<f32>>, EmbeddingSpec)> {
    let embedder = SentenceEmbedder::load(model_dir, &options.embed_model)?;
    let cache = options.cache_dir.as_deref();
    let progress = bar(options, 0, "embed");
    let train: Vec<String> = data.train.iter().map(|(t, _)| t.clone()).collect();
    let validation: Vec<String> = data.validation.iter().map(|(t, _)| t.clone()).collect();
    let mut all = embed_texts(&embedder, &train, cache, &progress)?;
    all.extend(embed_texts(&embedder, &validation, cache, &progress)?);
    progress.finish();
    let spec = EmbeddingSpec {
        model_id: embedder.info().model_id.clone(),
        dimension: embedder.info().dimension,
        source: "embedder-service".into(),
    };
    Ok((all, spec))
}

/// The fitted final model's parts.
struct Fitted {
    vectorizer: Vectorizer,
    lexical: LinearModel,
    /// The dense block of a joint model, as a one-layer head.
    dense: Option<LinearModel>,
}

/// What every final fit of one run shares. Final fits run to convergence:
/// `--max-minutes` cuts the comparison short, never the model it ships.
struct Settings<'a> {
    configs: &'a [BlockConfig],
    n_classes: usize,
    seed: u64,
}

/// Fits `recipe` on the clauses `idx` of the pool.
fn fit_recipe(
    recipe: Recipe,
    idx: &[usize],
    pool: &Pool,
    dense: Option<&[Vec<f32>]>,
    settings: &Settings,
) -> Fitted {
    let Settings {
        configs,
        n_classes,
        seed,
    } = *settings;
    let texts: Vec<String> = idx.iter().map(|&i| pool.texts[i].to_owned()).collect();
    let labels: Vec<usize> = idx.iter().map(|&i| pool.labels[i]).collect();
    let vectorizer = Vectorizer::fit(configs, &texts);
    let rows: Vec<SparseRow> = texts.iter().map(|t| vectorizer.transform(t)).collect();
    let dimension = vectorizer.dimension();
    match recipe {
        Recipe::Lexical(learner) => {
            let lexical = learner.fit(&rows, &labels, dimension, n_classes, seed, None);
            Fitted {
                vectorizer,
                lexical,
                dense: None,
            }
        }
        Recipe::Joint(learner, w) => {
            let dense = dense.expect("joint recipes have embeddings");
            let rows = joint_rows(&rows, idx, dense, dimension, w);
            let dim = dense[0].len();
            let joint = learner.fit(&rows, &labels, dimension + dim, n_classes, seed, None);
            // Split the weight matrix (feature-major) into the lexical rows
            // and the dense rows; the dense rows absorb the feature weight.
            let split = dimension * n_classes;
            let lexical = LinearModel {
                n_features: dimension,
                n_classes,
                weights: joint.weights[..split].to_vec(),
                bias: joint.bias.clone(),
            };
            let dense = LinearModel {
                n_features: dim,
                n_classes,
                weights: joint.weights[split..].iter().map(|v| v * w).collect(),
                bias: vec![0.0; n_classes],
            };
            Fitted {
                vectorizer,
                lexical,
                dense: Some(dense),
            }
        }
    }
}

impl Fitted {
    /// Raw scores (the joint model's decision values) of the pool's clauses
    /// `idx`, as log-probabilities for the temperature fit and scoring.
    fn log_probs(&self, idx: &[usize], pool: &Pool, dense: Option<&[Vec<f32>]>) -> Vec<Vec<f32>> {
        idx.iter()
            .map(|&i| {
                let mut z = self
                    .lexical
                    .logits(&self.vectorizer.transform(pool.texts[i]));
                if let (Some(head), Some(dense)) = (&self.dense, dense) {
                    let row = with_dense(&SparseRow::default(), 0, &dense[i], 1.0);
                    head.add_logits(&row, &mut z);
                }
                lextral_finetuned_classifier::log_softmax_in_place(&mut z);
                z
            })
            .collect()
    }
}

/// A fitted recipe as the model directory holds it.
struct ServedParts {
    tensors: HashMap<String, Tensor>,
    vocabulary: String,
    preprocessing: Vec<BlockConfig>,
    hyper: serde_json::Map<String, serde_json::Value>,
    dense_weight: f32,
    temperature: f32,
}

/// The tensors and combination that serve `fitted` with the scores it was
/// calibrated on at `temperature`.
fn served_parts(fitted: Fitted, recipe: Recipe, temperature: f32) -> anyhow::Result<ServedParts> {
    let n_classes = fitted.lexical.n_classes;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let preprocessing = fitted
        .vectorizer
        .blocks
        .iter()
        .map(|b| b.config.clone())
        .collect();
    let lexical_model = LexicalModel {
        vectorizer: fitted.vectorizer,
        linear: fitted.lexical,
    };
    let vocabulary = lexical_tensors(&lexical_model, &mut tensors)?;
    let mut hyper = serde_json::Map::new();
    let learner = match recipe {
        Recipe::Lexical(learner) | Recipe::Joint(learner, _) => learner,
    };
    hyper.insert("lexical".into(), serde_json::to_value(learner)?);
    // The joint model's scores are the sum of its two blocks; served as the
    // hybrid's equal-weight mixture of log-softmaxes, whose scores are half
    // that sum (plus a constant per clause), so the temperature halves too.
    let (dense_weight, temperature) = match (&fitted.dense, recipe) {
        (Some(head), Recipe::Joint(_, w)) => {
            let device = Device::Cpu;
            let weight =
                Tensor::from_vec(head.weights.clone(), (head.n_features, n_classes), &device)?;
            let bias = Tensor::from_vec(head.bias.clone(), n_classes, &device)?;
            tensors.extend(DenseHead::from_layers(vec![(weight, bias)]).tensors("head"));
            hyper.insert("joint_dense_feature_weight".into(), json!(w));
            (0.5, temperature / 2.0)
        }
        _ => (0.0, temperature),
    };
    hyper.insert("dense_weight".into(), json!(dense_weight));
    Ok(ServedParts {
        tensors,
        vocabulary,
        preprocessing,
        hyper,
        dense_weight,
        temperature,
    })
}

/// Trains the lexical or hybrid method and writes the model to `out`.
pub async fn train_selected(
    data: &TrainData,
    options: &TrainOptions,
    out: &Path,
) -> anyhow::Result<Manifest> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.max_minutes.max(0.0) * 60.0);
    let mut stages = Stages::new();
    let method = options.method;
    let n_classes = data.labels.len();
    let pool = Pool::new(data);
    let configs = Vectorizer::default_configs();
    anyhow::ensure!(
        !options.candidates.is_empty(),
        "no lexical candidate to cross-validate"
    );

    let mut dense = None;
    let mut embedding_spec = None;
    if method == Method::Hybrid {
        let model_dir = lextral_embedding::resolve_model_dir(&options.embed_model).await?;
        let (vectors, spec) =
            tokio::task::block_in_place(|| embed_pool(data, options, &model_dir))?;
        dense = Some(vectors);
        embedding_spec = Some(spec);
        stages.done("embed");
    }
    let dense = dense.as_deref();

    let report = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let fold_tests = stratified_folds(&pool.labels, options.cv_folds, options.seed);
        let folds: Vec<Fold> = fold_tests
            .into_iter()
            .map(|test| {
                let train = training_indices(pool.len(), &test);
                let texts = |idx: &[usize]| idx.iter().map(|&i| pool.texts[i]).collect::<Vec<_>>();
                let features = FoldFeatures::build(&configs, &texts(&train), &texts(&test));
                Fold {
                    train,
                    test,
                    features,
                }
            })
            .collect();
        stages.done("cv_features");
        tracing::info!(
            folds = folds.len(),
            clauses = pool.len(),
            "cross-validation folds built"
        );

        let mut table: Vec<CvCandidate> = Vec::new();
        let mut oof: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
        let progress = bar(options, options.candidates.len() as u64, "cv");
        let mut recipes: HashMap<String, Recipe> = HashMap::new();
        for &learner in &options.candidates {
            let recipe = Recipe::Lexical(learner);
            let began = Instant::now();
            let (scores, out_of_fold) = cross_validate(
                recipe,
                &folds,
                &pool,
                dense,
                n_classes,
                options.seed,
                deadline,
            );
            let row = summarise(recipe.name(), scores, false, began.elapsed().as_secs_f64());
            progress.inc(1);
            progress.set_message(format!(
                "{}: micro {:.4}±{:.4} macro {:.4}±{:.4}",
                row.name, row.micro_f1_mean, row.micro_f1_sd, row.macro_f1_mean, row.macro_f1_sd
            ));
            recipes.insert(row.name.clone(), recipe);
            oof.insert(row.name.clone(), out_of_fold);
            table.push(row);
            if Instant::now() >= deadline {
                break;
            }
        }
        progress.finish();
        stages.done("cv_lexical");
        let best_lexical = table
            .iter()
            .max_by(|a, b| {
                key(a)
                    .partial_cmp(&key(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .cloned()
            .expect("at least one candidate ran");
        let best_learner = match recipes[&best_lexical.name] {
            Recipe::Lexical(learner) | Recipe::Joint(learner, _) => learner,
        };

        let mut dense_gains = BTreeMap::new();
        let mut chosen = best_lexical.clone();
        let mut rule = format!(
            "best mean macro-F1 (then micro-F1) over {} folds among the lexical candidates",
            folds.len()
        );
        if let Some(dense) = dense {
            let mut dense_rows_table = Vec::new();
            // Lexical and dense features in one linear model.
            for w in JOINT_WEIGHTS {
                if Instant::now() >= deadline {
                    break;
                }
                let recipe = Recipe::Joint(best_learner, w);
                let began = Instant::now();
                let (scores, out_of_fold) = cross_validate(
                    recipe,
                    &folds,
                    &pool,
                    Some(dense),
                    n_classes,
                    options.seed,
                    deadline,
                );
                let row = summarise(recipe.name(), scores, true, began.elapsed().as_secs_f64());
                recipes.insert(row.name.clone(), recipe);
                oof.insert(row.name.clone(), out_of_fold);
                dense_rows_table.push(row);
            }
            // The dense features alone (what the head method builds on).
            if Instant::now() < deadline {
                let began = Instant::now();
                let scores: Vec<F1Scores> = folds
                    .iter()
                    .map(|fold| {
                        let model = best_learner.fit(
                            &dense_rows(&fold.train, dense),
                            &fold.train_labels(&pool),
                            dense[0].len(),
                            n_classes,
                            options.seed,
                            Some(deadline),
                        );
                        score_rows(
                            &log_probs(&model, &dense_rows(&fold.test, dense)),
                            &fold.test_labels(&pool),
                        )
                    })
                    .collect();
                dense_rows_table.push(summarise(
                    format!("dense only {}", best_learner.name()),
                    scores,
                    true,
                    began.elapsed().as_secs_f64(),
                ));
            }
            // The lexical model's calibrated probabilities mixed with a kNN
            // vote over the fold's training clauses.
            let lexical_oof = &oof[&best_lexical.name];
            let (rows, gold) = calibratable(lexical_oof, &pool.labels);
            let temperature = fit_temperature(&rows, &gold);
            // The vote and the calibrated lexical probabilities of each
            // left-out clause, computed once for every share tried.
            let mut votes = vec![Vec::new(); pool.len()];
            let mut lexical = vec![Vec::new(); pool.len()];
            for fold in &folds {
                let neighbours: Vec<&[f32]> =
                    fold.train.iter().map(|&i| dense[i].as_slice()).collect();
                let labels = fold.train_labels(&pool);
                for &i in &fold.test {
                    votes[i] = knn_vote(&dense[i], &neighbours, &labels, n_classes, KNN_K);
                    let mut z: Vec<f32> = lexical_oof[i].iter().map(|v| v / temperature).collect();
                    lextral_finetuned_classifier::log_softmax_in_place(&mut z);
                    lexical[i] = z.into_iter().map(f32::exp).collect();
                }
            }
            for share in KNN_SHARES {
                let began = Instant::now();
                let scores: Vec<F1Scores> = folds
                    .iter()
                    .map(|fold| {
                        let mixed: Vec<Vec<f32>> = fold
                            .test
                            .iter()
                            .map(|&i| {
                                lexical[i]
                                    .iter()
                                    .zip(&votes[i])
                                    .map(|(l, v)| (1.0 - share) * l + share * v)
                                    .collect()
                            })
                            .collect();
                        score_rows(&mixed, &fold.test_labels(&pool))
                    })
                    .collect();
                dense_rows_table.push(summarise(
                    format!(
                        "lexical {} + kNN vote (k={KNN_K}) share={share}",
                        best_learner.name()
                    ),
                    scores,
                    true,
                    began.elapsed().as_secs_f64(),
                ));
            }
            stages.done("cv_dense");
            for row in &dense_rows_table {
                dense_gains.insert(row.name.clone(), paired_gain(row, &best_lexical));
            }
            // Only a joint model can be served by this model directory; the
            // other rows are reference figures (the kNN mix is what the
            // orchestrator's cascade strategy composes at request time).
            let best_joint = dense_rows_table
                .iter()
                .filter(|row| matches!(recipes.get(&row.name), Some(Recipe::Joint(..))))
                .filter(|row| beyond_spread(&dense_gains[&row.name]))
                .max_by(|a, b| {
                    key(a)
                        .partial_cmp(&key(b))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            if let Some(joint) = best_joint {
                chosen = joint.clone();
                rule = format!(
                    "{}; a candidate needing an embedding per request is kept only when its paired gain over the best lexical one exceeds its spread on both micro- and macro-F1 (this one did)",
                    rule
                );
            } else {
                rule = format!(
                    "{rule}; candidates needing an embedding per request must gain more than their spread on both micro- and macro-F1 over it (none did)"
                );
            }
            table.extend(dense_rows_table);
        }
        table.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok((table, chosen, rule, dense_gains, recipes, oof, folds.len()))
    })?;
    let (table, chosen, rule, dense_gains, recipes, oof, n_folds) = report;
    let recipe = recipes[&chosen.name];
    let uses_dense = matches!(recipe, Recipe::Joint(..));
    let dense_for_recipe = if uses_dense { dense } else { None };
    tracing::info!(chosen = %chosen.name, micro = chosen.micro_f1_mean, macro_ = chosen.macro_f1_mean, "cross-validation chose");

    let settings = Settings {
        configs: &configs,
        n_classes,
        seed: options.seed,
    };
    // The chosen recipe fitted on train only, scored on validation: a
    // reported figure (and the final model without a refit).
    let train_idx: Vec<usize> = (0..pool.n_train).collect();
    let val_idx: Vec<usize> = (pool.n_train..pool.len()).collect();
    let val_gold: Vec<usize> = val_idx.iter().map(|&i| pool.labels[i]).collect();
    let (train_only, val_scores) = tokio::task::block_in_place(|| {
        let fitted = fit_recipe(recipe, &train_idx, &pool, dense_for_recipe, &settings);
        let scores = fitted.log_probs(&val_idx, &pool, dense_for_recipe);
        (fitted, scores)
    });
    stages.done("fit_train");
    let (final_model, temperature, fit_examples) = if options.refit && !val_idx.is_empty() {
        let all: Vec<usize> = (0..pool.len()).collect();
        let fitted = tokio::task::block_in_place(|| {
            fit_recipe(recipe, &all, &pool, dense_for_recipe, &settings)
        });
        stages.done("refit");
        // No clause is left out of the final fit, so its temperature comes
        // from the cross-validated scores of the same recipe.
        let (rows, gold) = calibratable(&oof[&chosen.name], &pool.labels);
        let temperature = fit_temperature(&rows, &gold);
        (fitted, temperature, pool.len())
    } else {
        let (rows, gold) = calibratable(&val_scores, &val_gold);
        let temperature = fit_temperature(&rows, &gold);
        (train_only, temperature, pool.n_train)
    };
    // NLL over the validation clauses whose label the train-only fit could
    // predict (a label absent from train has no finite likelihood).
    let (nll_rows, nll_gold) = calibratable(&val_scores, &val_gold);
    let val_f1 = score_rows(&val_scores, &val_gold);
    let validation = ValidationReport {
        scores: val_f1,
        nll_uncalibrated: nll(&nll_rows, &nll_gold, 1.0),
        nll_calibrated: nll(&nll_rows, &nll_gold, temperature),
        candidates: BTreeMap::from([(chosen.name.clone(), val_f1)]),
    };
    stages.done("calibrate");

    let ServedParts {
        tensors,
        vocabulary,
        preprocessing,
        hyper,
        dense_weight,
        temperature,
    } = served_parts(final_model, recipe, temperature)?;
    let time_limited = Instant::now() >= deadline;
    let manifest = Manifest {
        format: FORMAT.into(),
        method,
        labels: data.labels.clone(),
        hyper_parameters: serde_json::Value::Object(hyper),
        embedding: if uses_dense { embedding_spec } else { None },
        lexical_preprocessing: Some(preprocessing),
        combination: Combination {
            dense_weight,
            temperature,
        },
        validation: Some(validation),
        cross_validation: Some(CrossValidation {
            folds: n_folds,
            seed: options.seed,
            examples: pool.len(),
            candidates: table,
            chosen: chosen.name.clone(),
            rule,
            dense_gains,
        }),
        training: training_info(data, options, &stages, time_limited, fit_examples),
        files: BTreeMap::new(),
        content_hash: String::new(),
    };
    let manifest = tokio::task::block_in_place(|| {
        write_model_dir(out, manifest, &tensors, Some(&vocabulary), None)
    })?;
    tracing::info!(
        seconds = start.elapsed().as_secs_f64(),
        "model written to {}",
        out.display()
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lextral_finetuned_classifier::{argmax, Classifier, TrainingInfo};

    /// A joint model served from its directory gives the probabilities it
    /// was calibrated on: the split of the weight matrix, the dense head and
    /// the halved temperature reproduce the joint scores exactly.
    #[test]
    fn a_joint_model_serves_what_it_was_fitted_to() {
        let words = ["notice", "law", "assign", "term"];
        let mut train = Vec::new();
        for i in 0..40usize {
            let label = i % 4;
            train.push((format!("the {} clause number {i}", words[label]), label));
        }
        let data = TrainData {
            labels: words.iter().map(|w| w.to_string()).collect(),
            train,
            validation: Vec::new(),
            data_sha256: String::new(),
        };
        let pool = Pool::new(&data);
        // Unit vectors that say the label with some noise.
        let dense: Vec<Vec<f32>> = pool
            .labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let mut v = [0.1 * ((i % 3) as f32); 6];
                v[l] += 1.0;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect();
        let configs = Vectorizer::default_configs();
        let settings = Settings {
            configs: &configs,
            n_classes: 4,
            seed: 1,
        };
        let idx: Vec<usize> = (0..pool.len()).collect();
        let recipe = Recipe::Joint(
            Learner::Svm {
                c: 1.0,
                balanced: false,
            },
            0.7,
        );
        let fitted = fit_recipe(recipe, &idx, &pool, Some(&dense), &settings);
        let expected = fitted.log_probs(&idx, &pool, Some(&dense));
        let temperature = 0.3;
        let parts = served_parts(fitted, recipe, temperature).unwrap();
        assert_eq!(parts.dense_weight, 0.5);
        let manifest = Manifest {
            format: FORMAT.into(),
            method: Method::Hybrid,
            labels: data.labels.clone(),
            hyper_parameters: serde_json::Value::Object(parts.hyper),
            embedding: Some(EmbeddingSpec {
                model_id: "test".into(),
                dimension: 6,
                source: "embedder-service".into(),
            }),
            lexical_preprocessing: Some(parts.preprocessing),
            combination: Combination {
                dense_weight: parts.dense_weight,
                temperature: parts.temperature,
            },
            validation: None,
            cross_validation: None,
            training: TrainingInfo {
                seconds: 0.0,
                stage_seconds: BTreeMap::new(),
                seed: 1,
                train_examples: 40,
                validation_examples: 0,
                data_sha256: String::new(),
                time_limited: false,
                fit_examples: 40,
                refit: false,
                lextral_version: "test".into(),
            },
            files: BTreeMap::new(),
            content_hash: String::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        write_model_dir(
            &out,
            manifest,
            &parts.tensors,
            Some(&parts.vocabulary),
            None,
        )
        .unwrap();
        let model = Classifier::load(&out).unwrap();
        let texts: Vec<String> = pool.texts.iter().map(|t| (*t).to_owned()).collect();
        let served = model.predict(&texts, Some(&dense)).unwrap();
        for (row, scores) in served.iter().zip(&expected) {
            let mut z: Vec<f32> = scores.iter().map(|v| v / temperature).collect();
            lextral_finetuned_classifier::log_softmax_in_place(&mut z);
            for (p, q) in row.iter().zip(&z) {
                assert!((p - q.exp()).abs() < 1e-4, "{row:?} vs {z:?}");
            }
        }
        // And it learned the task (both blocks carry the label).
        let right = served
            .iter()
            .zip(&pool.labels)
            .filter(|(row, &l)| argmax(row) == l)
            .count();
        assert_eq!(right, pool.len());
    }
}
