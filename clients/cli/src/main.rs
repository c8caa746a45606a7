//! `lextral`: run the services, index data, classify, evaluate, benchmark.

mod bench;
mod client;
mod data;
mod eval;
mod finetune;
mod index;
mod keys;
mod migrate;
mod serve;
mod train;

// The encoder allocates a fresh multi-megabyte buffer per layer output; the
// system allocator hands each back to the kernel and page-faults it in again
// (a tenth of embedding time), mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lextral",
    version,
    about = "Contract-clause classification service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run services: `all` in one process, or one service.
    Serve {
        #[command(subcommand)]
        target: serve::Target,
    },
    /// Embed and store labelled clauses through the orchestrator.
    Index(index::IndexArgs),
    /// Create or upgrade the pgvector schema and exit (Kubernetes migration Job).
    Migrate(migrate::MigrateArgs),
    /// Classify clauses through the orchestrator.
    Classify(client::ClassifyArgs),
    /// Classify every clause of a split with one or more strategies; report
    /// quality, calibration, latency and cost (a run folder with --out).
    Eval(eval::EvalArgs),
    /// Train a classifier (served by the finetuned-classifier service).
    Train(train::TrainArgs),
    /// Fine-tune on a remote platform (Mistral's classifier jobs).
    Finetune {
        #[command(subcommand)]
        command: finetune::FinetuneCommand,
    },
    /// API keys: create, list, revoke (the servers' --keys-file).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download a data set into the data directory layout.
    Fetch {
        #[command(subcommand)]
        dataset: Dataset,
    },
}

#[derive(Subcommand)]
enum Dataset {
    /// LexGLUE LEDGAR (coastalcph/lex_glue, config ledgar) from the Hugging Face Hub.
    Ledgar(FetchArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Splits to fetch.
    #[arg(long, value_delimiter = ',', default_value = "train,validation,test")]
    splits: Vec<String>,
    /// Hugging Face Hub URL.
    #[arg(
        long = "hub-url",
        env = "HF_ENDPOINT",
        default_value = "https://huggingface.co"
    )]
    hub_url: String,
    /// Hub dataset repository.
    #[arg(long, default_value = "coastalcph/lex_glue")]
    dataset: String,
    /// Dataset config.
    #[arg(long, default_value = "ledgar")]
    config: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Keys { command } = cli.command {
        return keys::run(command);
    }
    let json_logs = std::env::var("LEXTRAL_LOG_JSON").is_ok_and(|v| v == "1" || v == "true");
    lextral_common::telemetry::init_tracing(json_logs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { target } => serve::run(target).await,
            Command::Index(args) => index::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Classify(args) => client::classify(args).await,
            Command::Eval(args) => eval::run(args).await,
            Command::Train(args) => train::run(args).await,
            Command::Finetune { command } => finetune::run(command).await,
            Command::Bench { command } => bench::run(command).await,
            Command::Keys { .. } => unreachable!("handled before the runtime starts"),
            Command::Data {
                command:
                    DataCommand::Fetch {
                        dataset: Dataset::Ledgar(args),
                    },
            } => {
                let source = data::HubSource {
                    endpoint: args.hub_url,
                    dataset: args.dataset,
                    config: args.config,
                    token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
                };
                let written = data::fetch_ledgar(&source, &args.splits, &args.out).await?;
                for (split, count) in written {
                    println!(
                        "{split}: {count} clauses -> {}",
                        args.out.join(format!("{split}.jsonl")).display()
                    );
                }
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        // Catches clashing flag names between the flattened service configs.
        super::Cli::command().debug_assert();
    }
}
