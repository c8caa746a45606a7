//! `lextral train`: every method of Lextral's own classifiers (TF-IDF +
//! logistic regression, a head on sentence embeddings, both combined, the
//! encoder fine-tuned) and fine-tuning jobs on Mistral's platform.
//!
//! It writes the model directory that `lextral-finetuned-classifier` owns
//! and serves; the service does not link this crate.

mod cv;
mod finetune;
mod head;
mod logistic;
pub mod mistral_jobs;
mod scoring;
mod select;
mod svm;
mod train;
mod trainable_bert;

pub use cv::Learner;
pub use finetune::FinetuneConfig;
pub use head::HeadConfig;
pub use train::{default_candidates, train, TrainData, TrainOptions};
