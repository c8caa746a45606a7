//! The Dockerfile, checked without a Docker engine (none runs here): every
//! stage is named, every COPY source exists and is not dockerignored, COPY
//! --from names an earlier stage and a path that stage makes, the build
//! stage holds every workspace member and builds the `lextral` binary the
//! runtime copies, the runtime runs as a non-root user, and ports, model
//! paths and entrypoint agree with the code and the set-up scripts.

use std::collections::HashMap;
use std::path::Path;

use lextral_integration_tests::repo_root;

/// One instruction: keyword (upper case) and its argument text.
struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    name: String,
    base: String,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// `ENV` values of this stage (KEY=VALUE pairs).
    fn env(&self) -> HashMap<String, String> {
        self.all("ENV")
            .flat_map(|args| args.split_whitespace())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

fn parse(text: &str) -> Vec<Stage> {
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = keyword.to_uppercase();
        let args = args.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            assert!(
                words.len() == 3 && words[1].eq_ignore_ascii_case("AS"),
                "every stage is named: FROM {args}"
            );
            stages.push(Stage {
                name: words[2].to_owned(),
                base: words[0].to_owned(),
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// (flags, sources, destination) of a COPY.
fn copy_parts(args: &str) -> (HashMap<String, String>, Vec<String>, String) {
    let mut flags = HashMap::new();
    let mut paths = Vec::new();
    for word in args.split_whitespace() {
        if let Some(flag) = word.strip_prefix("--") {
            let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
            flags.insert(k.to_owned(), v.to_owned());
        } else {
            paths.push(word.to_owned());
        }
    }
    let destination = paths.pop().expect("COPY has a destination");
    (flags, paths, destination)
}

fn dockerignored(root: &Path, path: &str) -> bool {
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore exists");
    ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|pattern| {
            let pattern = pattern.trim_end_matches('/');
            !pattern.contains('*') && (path == pattern || path.starts_with(&format!("{pattern}/")))
        })
}

/// A string field of a TOML file, read the simple way (`key = "value"`).
fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{key} not found"))
}

#[test]
fn dockerfile_stages_copies_binary_user_and_ports_are_consistent() {
    let root = repo_root();
    let stages = parse(&std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile"));
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "models", "runtime", "bundled"]);
    let stage = |name: &str| stages.iter().find(|s| s.name == name).unwrap();

    // COPY sources exist and reach the build context; --from names an earlier stage.
    for (index, stage) in stages.iter().enumerate() {
        for args in stage.all("COPY") {
            let (flags, sources, _) = copy_parts(args);
            match flags.get("from") {
                Some(from) => assert!(
                    names[..index].contains(&from.as_str()),
                    "{}: COPY --from={from} is not an earlier stage",
                    stage.name
                ),
                None => {
                    for source in sources {
                        assert!(root.join(&source).exists(), "COPY source {source} missing");
                        assert!(
                            !dockerignored(&root, &source),
                            "COPY source {source} is excluded by .dockerignore"
                        );
                    }
                }
            }
        }
    }
    for excluded in ["target", ".git"] {
        assert!(
            dockerignored(&root, excluded),
            ".dockerignore keeps {excluded} out"
        );
    }

    // The build stage holds every workspace member.
    let build = stage("build");
    let copied: Vec<String> = build
        .all("COPY")
        .flat_map(|args| copy_parts(args).1)
        .collect();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = workspace
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members");
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            copied
                .iter()
                .any(|c| member == c || member.starts_with(&format!("{c}/"))),
            "workspace member {member} is not copied into the build stage"
        );
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        assert!(copied.iter().any(|c| c == file), "{file} is not copied");
    }

    // It builds the CLI package's binary and puts it where the runtime copies from.
    let cli = std::fs::read_to_string(root.join("clients/cli/Cargo.toml")).unwrap();
    let package = toml_value(&cli, "name");
    let binary = cli
        .split("[[bin]]")
        .nth(1)
        .map(|bin| toml_value(bin, "name"))
        .expect("clients/cli has a [[bin]]");
    let run = build.all("RUN").collect::<Vec<_>>().join(" && ");
    assert!(
        run.contains(&format!("cargo build --release --locked -p {package}")),
        "{run}"
    );
    let built = format!("target/release/{binary}");
    let installed = run
        .split("&&")
        .map(str::trim)
        .find_map(|cmd| cmd.strip_prefix(&format!("cp {built} ")))
        .expect("the build stage copies the binary out of target/")
        .trim()
        .to_owned();
    let runtime = stage("runtime");
    let (flags, sources, destination) = runtime
        .all("COPY")
        .map(copy_parts)
        .find(|(flags, _, _)| flags.get("from").map(String::as_str) == Some("build"))
        .expect("runtime copies from build");
    assert_eq!(flags["from"], "build");
    assert_eq!(sources, std::slice::from_ref(&installed));
    let entrypoint = runtime.all("ENTRYPOINT").next().expect("ENTRYPOINT");
    assert_eq!(entrypoint, format!("[\"{destination}\"]"));

    // Non-root: a numeric USER that useradd creates.
    let user = runtime.all("USER").last().expect("USER");
    let uid: u32 = user
        .parse()
        .expect("numeric USER (Kubernetes runAsNonRoot needs it)");
    assert_ne!(uid, 0);
    assert!(runtime
        .all("RUN")
        .any(|r| r.contains(&format!("useradd --system --uid {uid}"))));
    assert!(stage("bundled").base == "runtime");

    // Ports: CMD's gRPC/HTTP and the metrics address are exposed.
    let exposed: Vec<&str> = runtime
        .all("EXPOSE")
        .flat_map(str::split_whitespace)
        .collect();
    let cmd = runtime.all("CMD").next().expect("CMD");
    let env = runtime.env();
    for address in [
        cmd.split("\"--grpc\", \"")
            .nth(1)
            .and_then(|r| r.split('"').next()),
        cmd.split("\"--http\", \"")
            .nth(1)
            .and_then(|r| r.split('"').next()),
        env.get("LEXTRAL_METRICS").map(String::as_str),
    ] {
        let address = address.expect("an address");
        assert!(
            address.starts_with("0.0.0.0:"),
            "{address} must listen on all interfaces"
        );
        let port = address.rsplit(':').next().unwrap();
        assert!(exposed.contains(&port), "port {port} is not EXPOSEd");
    }

    // Model paths: what the set-up scripts write under $LEXTRAL_HOME/models,
    // copied to /models in the bundled image, named by the runtime's ENV.
    let models = stage("models");
    let home = models.env()["LEXTRAL_HOME"].clone();
    let bundled_copy = stage("bundled")
        .all("COPY")
        .map(copy_parts)
        .find(|(flags, _, _)| flags.get("from").map(String::as_str) == Some("models"))
        .expect("bundled copies the models");
    assert_eq!(bundled_copy.1, [format!("{home}/models")]);
    let mount = bundled_copy.2;
    let setup_model = std::fs::read_to_string(root.join("scripts/setup-model.sh")).unwrap();
    let setup_llm = std::fs::read_to_string(root.join("scripts/setup-llm.sh")).unwrap();
    assert!(setup_model.contains("TARGET=\"$HOME_DIR/models/all-MiniLM-L6-v2\""));
    assert_eq!(
        env["LEXTRAL_EMBED_MODEL"],
        format!("{mount}/all-MiniLM-L6-v2")
    );
    assert!(setup_llm.contains("TARGET_DIR=\"$HOME_DIR/models/gemma-3-270m\""));
    let llm_name = toml_value(&setup_llm, "NAME");
    assert_eq!(
        env["LEXTRAL_LLM_MODEL"],
        format!("{mount}/gemma-3-270m/{llm_name}")
    );
    assert!(setup_model.contains("${LEXTRAL_HOME:-") && setup_llm.contains("${LEXTRAL_HOME:-"));
}
