//! `lextral finetune mistral …`: fine-tuning jobs on Mistral's platform for
//! a remote classifier (served with `--finetuned-mistral-model`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lextral_finetuned_classifier::mistral::{api_key_from_env, MistralClient, DEFAULT_API_URL};
use lextral_training::mistral_jobs::{
    write_training_jsonl, FineTuningJobs, JobSpec, DEFAULT_TARGET,
};

use crate::data::read_split;

/// Remote fine-tuning providers.
#[derive(Subcommand)]
pub enum FinetuneCommand {
    /// Mistral's classifier fine-tuning.
    Mistral {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: MistralCommand,
    },
}

/// Where the API is (the key: MISTRAL_API_KEY or MISTRAL_API_KEY_FILE).
#[derive(Args)]
pub struct ApiArgs {
    /// API base URL.
    #[arg(long = "api-url", env = "MISTRAL_API_URL", default_value = DEFAULT_API_URL, global = true)]
    api_url: String,
}

/// Job steps.
#[derive(Subcommand)]
pub enum MistralCommand {
    /// Convert a split to Mistral's classifier JSONL and upload it; prints the file id.
    Upload {
        /// Data directory (train.jsonl, validation.jsonl, labels.txt).
        #[arg(long)]
        data: PathBuf,
        /// Split to upload.
        #[arg(long, default_value = "train")]
        split: String,
        /// Classifier target name.
        #[arg(long, default_value = DEFAULT_TARGET)]
        target: String,
        /// Also keep the JSONL here.
        #[arg(long = "keep-jsonl")]
        keep_jsonl: Option<PathBuf>,
    },
    /// Create a classifier fine-tuning job (not started); prints the job.
    Create {
        /// Base model.
        #[arg(long, default_value = "ministral-3b-latest")]
        model: String,
        /// Training file id (from `upload`).
        #[arg(long = "training-file")]
        training_file: String,
        /// Validation file id.
        #[arg(long = "validation-file")]
        validation_file: Option<String>,
        /// Training steps.
        #[arg(long = "training-steps")]
        training_steps: Option<u32>,
        /// Learning rate.
        #[arg(long = "learning-rate")]
        learning_rate: Option<f64>,
        /// Suffix of the fine-tuned model name.
        #[arg(long)]
        suffix: Option<String>,
    },
    /// Start a created job.
    Start {
        /// Job id.
        #[arg(long)]
        job: String,
    },
    /// Show a job's status (and its fine-tuned model id once done).
    Status {
        /// Job id.
        #[arg(long)]
        job: String,
    },
}

/// Runs `lextral finetune …`.
pub async fn run(command: FinetuneCommand) -> anyhow::Result<()> {
    let FinetuneCommand::Mistral { api, command } = command;
    let client = MistralClient::new(&api.api_url, api_key_from_env()?, Duration::from_secs(300))?;
    let answer = match command {
        MistralCommand::Upload {
            data,
            split,
            target,
            keep_jsonl,
        } => {
            let examples: Vec<(String, String)> = read_split(&data, &split)?
                .into_iter()
                .map(|e| (e.text, e.label))
                .collect();
            let dir = tempfile::tempdir()?;
            let path = dir.path().join(format!("lextral-{split}.jsonl"));
            write_training_jsonl(&examples, &target, &path)?;
            if let Some(keep) = keep_jsonl {
                std::fs::copy(&path, keep)?;
            }
            let id = client.upload(&path).await?;
            eprintln!("uploaded {} {split} clauses", examples.len());
            serde_json::json!({"file_id": id, "clauses": examples.len(), "target": target})
        }
        MistralCommand::Create {
            model,
            training_file,
            validation_file,
            training_steps,
            learning_rate,
            suffix,
        } => {
            client
                .create_job(&JobSpec {
                    model,
                    training_file,
                    validation_file,
                    training_steps,
                    learning_rate,
                    suffix,
                })
                .await?
        }
        MistralCommand::Start { job } => client.start_job(&job).await?,
        MistralCommand::Status { job } => client.job(&job).await?,
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
