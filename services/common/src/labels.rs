//! The label-set file format shared by the data layout, the orchestrator's
//! `--labels` and `lextral eval score`: `labels.txt`, one label per line.

use std::path::Path;

/// Reads a labels.txt: one label per line, surrounding spaces and blank
/// lines ignored, at least one label.
pub fn read_label_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("cannot read the label file {}: {err}", path.display()))?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if labels.is_empty() {
        anyhow::bail!("the label file {} has no labels", path.display());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_and_rejects_empty_files() {
        let dir = std::env::temp_dir().join(format!("lextral-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("labels.txt");
        std::fs::write(&file, "Notices\n\n  Governing Laws \n").unwrap();
        assert_eq!(
            read_label_file(&file).unwrap(),
            vec!["Notices", "Governing Laws"]
        );
        std::fs::write(&file, "\n \n").unwrap();
        assert!(read_label_file(&file)
            .unwrap_err()
            .to_string()
            .contains("no labels"));
        assert!(read_label_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
