use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "lextral/v1/common.proto",
    "lextral/v1/embedder_service.proto",
    "lextral/v1/retriever_service.proto",
    "lextral/v1/prompt_classifier_service.proto",
    "lextral/v1/finetuned_classifier_service.proto",
    "lextral/v1/orchestrator_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps CI and fresh machines free of a system install;
    // an explicit PROTOC still wins.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=lextral");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("lextral_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
