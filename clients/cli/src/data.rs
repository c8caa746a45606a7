//! The data directory layout (`labels.txt`, `<split>.jsonl` with
//! {"text","label"}) and `lextral data fetch ledgar`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context};
use lextral_common::fs::write_atomically;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde::{Deserialize, Serialize};

/// One labelled clause.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    /// The clause.
    pub text: String,
    /// Its label.
    pub label: String,
}

#[derive(Deserialize)]
struct Line {
    text: Option<String>,
    label: Option<serde_json::Value>,
}

/// Reads `labels.txt` (one label a line) if the directory has one.
pub fn read_labels(dir: &Path) -> anyhow::Result<Option<Vec<String>>> {
    let path = dir.join("labels.txt");
    if !path.is_file() {
        return Ok(None);
    }
    let labels = lextral_common::labels::read_label_file(&path)?;
    Ok(Some(labels))
}

/// Reads `<dir>/<split>.jsonl`, checking every line: valid JSON, a non-empty
/// `text`, a `label` (a name, or an index into labels.txt) from the label set.
/// Errors name the file and line.
pub fn read_split(dir: &Path, split: &str) -> anyhow::Result<Vec<Example>> {
    let labels = read_labels(dir)?;
    let known: Option<HashSet<&str>> = labels
        .as_ref()
        .map(|l| l.iter().map(String::as_str).collect());
    let path = dir.join(format!("{split}.jsonl"));
    let file = std::fs::File::open(&path)
        .with_context(|| format!("split {split:?} not found: cannot open {}", path.display()))?;
    let mut examples = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let where_ = || format!("{}:{number}", path.display());
        let line = line.with_context(where_)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a JSON object with text and label", where_()))?;
        let text = parsed
            .text
            .filter(|t| !t.trim().is_empty())
            .with_context(|| format!("{}: missing or empty \"text\"", where_()))?;
        let label = match parsed.label {
            Some(serde_json::Value::String(name)) if !name.trim().is_empty() => name,
            Some(serde_json::Value::Number(n)) => {
                let id = n
                    .as_u64()
                    .with_context(|| format!("{}: bad label id {n}", where_()))?;
                let names = labels
                    .as_ref()
                    .with_context(|| format!("{}: numeric label needs labels.txt", where_()))?;
                names
                    .get(id as usize)
                    .cloned()
                    .with_context(|| format!("{}: label id {id} is out of range", where_()))?
            }
            _ => bail!("{}: missing or empty \"label\"", where_()),
        };
        if let Some(known) = &known {
            if !known.contains(label.as_str()) {
                bail!("{}: unknown label {label:?} (not in labels.txt)", where_());
            }
        }
        examples.push(Example { text, label });
    }
    if examples.is_empty() {
        bail!("{} has no examples", path.display());
    }
    Ok(examples)
}

/// Reads `text` of every line of a JSONL file (labels optional), for benchmarks.
pub fn read_texts(path: &Path, limit: usize) -> anyhow::Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut texts = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        if texts.len() >= limit {
            break;
        }
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), index + 1))?;
        match parsed.text {
            Some(text) => texts.push(text),
            None => bail!("{}:{}: missing \"text\"", path.display(), index + 1),
        }
    }
    if texts.is_empty() {
        bail!("{} has no texts", path.display());
    }
    Ok(texts)
}

/// Where `data fetch` reads the Hugging Face dataset from.
#[derive(Debug, Clone)]
pub struct HubSource {
    /// Hub base URL (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Dataset repository.
    pub dataset: String,
    /// Dataset config.
    pub config: String,
    /// Optional access token (`HF_TOKEN`), never logged.
    pub token: Option<String>,
}

/// Downloads the LexGLUE LEDGAR parquet files and writes `labels.txt` and
/// `<split>.jsonl` into `out`. Files are written beside their final names and
/// renamed, so an interrupted fetch never leaves a half-written split.
pub async fn fetch_ledgar(
    source: &HubSource,
    splits: &[String],
    out: &Path,
) -> anyhow::Result<Vec<(String, usize)>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("lextral/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let authorized = |request: reqwest::RequestBuilder| match &source.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let mut label_names: Option<Vec<String>> = None;
    let mut written = Vec::new();
    for split in splits {
        let api = format!(
            "{}/api/datasets/{}/parquet/{}/{split}",
            source.endpoint.trim_end_matches('/'),
            source.dataset,
            source.config
        );
        let urls: Vec<String> = authorized(client.get(&api))
            .send()
            .await
            .with_context(|| format!("cannot reach {api}"))?
            .error_for_status()
            .with_context(|| format!("listing parquet files for split {split}"))?
            .json()
            .await
            .with_context(|| format!("{api} did not return a list of URLs"))?;
        if urls.is_empty() {
            bail!("the Hub lists no parquet files for split {split}");
        }
        let mut rows = Vec::new();
        for url in &urls {
            let bytes = authorized(client.get(url))
                .send()
                .await
                .with_context(|| format!("downloading split {split} from {url}"))?
                .error_for_status()
                .with_context(|| format!("downloading split {split} from {url}"))?
                .bytes()
                .await?;
            let mut part = read_parquet(bytes).with_context(|| format!("reading {url}"))?;
            if label_names.is_none() {
                label_names = part.label_names;
            }
            rows.append(&mut part.rows);
        }
        let names = label_names
            .as_ref()
            .context("the parquet files carry no label names (huggingface metadata)")?;
        let path = out.join(format!("{split}.jsonl"));
        write_atomically(&path, |file| {
            for (text, label) in &rows {
                let name = names
                    .get(*label as usize)
                    .with_context(|| format!("label id {label} is out of range"))?;
                serde_json::to_writer(
                    &mut *file,
                    &Example {
                        text: text.clone(),
                        label: name.clone(),
                    },
                )?;
                file.write_all(b"\n")?;
            }
            Ok(())
        })?;
        written.push((split.clone(), rows.len()));
    }
    if let Some(names) = label_names {
        write_atomically(&out.join("labels.txt"), |file| {
            for name in &names {
                writeln!(file, "{name}")?;
            }
            Ok(())
        })?;
    }
    Ok(written)
}

/// What one Hugging Face parquet file holds.
pub struct ParquetRows {
    /// ClassLabel names from the `huggingface` metadata, if present.
    pub label_names: Option<Vec<String>>,
    /// (text, label id) rows.
    pub rows: Vec<(String, i64)>,
}

/// Rows (text, label id) and the ClassLabel names from a Hugging Face parquet file.
pub fn read_parquet(bytes: bytes::Bytes) -> anyhow::Result<ParquetRows> {
    let reader = SerializedFileReader::new(bytes)?;
    let names = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == "huggingface"))
        .and_then(|kv| kv.value.as_deref())
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .and_then(|meta| {
            let names = meta.pointer("/info/features/label/names")?.as_array()?;
            names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect()
        });
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let mut text = None;
        let mut label = None;
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("text", Field::Str(value)) => text = Some(value.clone()),
                ("label", Field::Long(value)) => label = Some(*value),
                ("label", Field::Int(value)) => label = Some(i64::from(*value)),
                _ => {}
            }
        }
        match (text, label) {
            (Some(text), Some(label)) => rows.push((text, label)),
            _ => bail!("a row lacks text or label"),
        }
    }
    Ok(ParquetRows {
        label_names: names,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn reads_names_and_label_ids() {
        let dir = dir_with(&[
            ("labels.txt", "Notices\nGoverning Laws\n"),
            (
                "train.jsonl",
                "{\"text\":\"a\",\"label\":\"Notices\"}\n\n{\"text\":\"b\",\"label\":1}\n",
            ),
        ]);
        let examples = read_split(dir.path(), "train").unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[1].label, "Governing Laws");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = dir_with(&[
            ("labels.txt", "Notices\n"),
            (
                "train.jsonl",
                "{\"text\":\"a\",\"label\":\"Notices\"}\n{oops\n",
            ),
            ("validation.jsonl", "{\"text\":\"a\",\"label\":\"Nope\"}\n"),
            ("test.jsonl", "\n"),
        ]);
        let err = format!("{:#}", read_split(dir.path(), "train").unwrap_err());
        assert!(err.contains("train.jsonl:2"), "{err}");
        let err = format!("{:#}", read_split(dir.path(), "validation").unwrap_err());
        assert!(
            err.contains("validation.jsonl:1") && err.contains("unknown label"),
            "{err}"
        );
        let err = format!("{:#}", read_split(dir.path(), "test").unwrap_err());
        assert!(err.contains("no examples"), "{err}");
        let err = format!("{:#}", read_split(dir.path(), "missing").unwrap_err());
        assert!(err.contains("split \"missing\" not found"), "{err}");
    }

    /// Writes a parquet file shaped like the Hub's LEDGAR files: text, label
    /// id, and ClassLabel names in the `huggingface` metadata.
    fn ledgar_parquet(rows: &[(&str, i64)], names: &[&str]) -> Vec<u8> {
        use std::sync::Arc;

        use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
        use parquet::file::metadata::KeyValue;
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;

        let schema = Arc::new(
            parse_message_type(
                "message schema { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT64 label; }",
            )
            .unwrap(),
        );
        let metadata = serde_json::json!({
            "info": { "features": {
                "text": { "dtype": "string", "_type": "Value" },
                "label": { "names": names, "_type": "ClassLabel" }
            } }
        });
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_key_value_metadata(Some(vec![KeyValue::new(
                    "huggingface".to_owned(),
                    metadata.to_string(),
                )]))
                .build(),
        );
        let mut buffer = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut buffer, schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let texts: Vec<ByteArray> = rows.iter().map(|(t, _)| ByteArray::from(*t)).collect();
        column
            .typed::<ByteArrayType>()
            .write_batch(&texts, None, None)
            .unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let labels: Vec<i64> = rows.iter().map(|(_, l)| *l).collect();
        column
            .typed::<Int64Type>()
            .write_batch(&labels, None, None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        buffer
    }

    #[tokio::test]
    async fn fetches_ledgar_from_a_hub_speaking_the_parquet_api() {
        use axum::extract::{Path as UrlPath, State};
        use axum::routing::get;

        let names = ["Amendments", "Governing Laws", "Notices"];
        let train = ledgar_parquet(
            &[
                ("This Agreement may be amended in writing.", 0),
                ("Laws of New York.", 1),
            ],
            &names,
        );
        let validation = ledgar_parquet(&[("Notices by mail.", 2)], &names);
        let files = Arc::new(HashMap::from([
            ("train".to_owned(), train),
            ("validation".to_owned(), validation),
        ]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let list_base = base.clone();
        let app = axum::Router::new()
            .route(
                "/api/datasets/coastalcph/lex_glue/parquet/ledgar/{split}",
                get(move |UrlPath(split): UrlPath<String>| {
                    let base = list_base.clone();
                    async move { axum::Json(vec![format!("{base}/files/{split}/0000.parquet")]) }
                }),
            )
            .route(
                "/files/{split}/0000.parquet",
                get(
                    |State(files): State<Arc<HashMap<String, Vec<u8>>>>,
                     UrlPath(split): UrlPath<String>| async move {
                        files
                            .get(&split)
                            .cloned()
                            .ok_or(axum::http::StatusCode::NOT_FOUND)
                    },
                ),
            )
            .with_state(files);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let out = tempfile::tempdir().unwrap();
        let source = HubSource {
            endpoint: base,
            dataset: "coastalcph/lex_glue".into(),
            config: "ledgar".into(),
            token: None,
        };
        let splits = vec!["train".to_owned(), "validation".to_owned()];
        let written = fetch_ledgar(&source, &splits, out.path()).await.unwrap();
        assert_eq!(
            written,
            vec![("train".to_owned(), 2), ("validation".to_owned(), 1)]
        );
        assert_eq!(
            read_labels(out.path()).unwrap().unwrap(),
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        );
        let train = read_split(out.path(), "train").unwrap();
        assert_eq!(train[1].label, "Governing Laws");
        assert_eq!(train[1].text, "Laws of New York.");
        assert_eq!(
            read_split(out.path(), "validation").unwrap()[0].label,
            "Notices"
        );

        // A split the Hub does not have is a clear error, and no file is left.
        let err = fetch_ledgar(&source, &["test".to_owned()], out.path())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("split test"), "{err:#}");
        assert!(!out.path().join("test.jsonl").exists());
    }
}
