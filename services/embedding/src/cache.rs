//! Embeddings cached on disk by model and texts: embedding is the slowest
//! step of training and benchmark set-up on CPU, and re-runs with other
//! settings embed the same clauses again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The cache file of `texts` embedded by `model_id`.
fn cache_path(dir: &Path, model_id: &str, texts: &[String]) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(model_id.as_bytes());
    for text in texts {
        hasher.update([0]);
        hasher.update(text.as_bytes());
    }
    dir.join(format!("{}.f32", hex::encode(hasher.finalize())))
}

/// One vector per text, little-endian f32 rows; `None` when absent or of a
/// size that does not fit `count` rows.
fn read(path: &Path, count: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    if count == 0 || bytes.is_empty() || bytes.len() % (4 * count) != 0 {
        return None;
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dim = values.len() / count;
    Some(values.chunks(dim).map(<[f32]>::to_vec).collect())
}

/// The embeddings of `texts` by `model_id`: from the cache in `dir` when it
/// holds them, else from `embed`, written atomically for the next run. With
/// no `dir`, `embed` runs every time. `cached` is told when the cache
/// answered (progress bars say so).
pub fn embed_cached(
    dir: Option<&Path>,
    model_id: &str,
    texts: &[String],
    cached: impl FnOnce(),
    embed: impl FnOnce(&[String]) -> anyhow::Result<Vec<Vec<f32>>>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let Some(dir) = dir else {
        return embed(texts);
    };
    let path = cache_path(dir, model_id, texts);
    if let Some(vectors) = read(&path, texts.len()) {
        cached();
        return Ok(vectors);
    }
    let vectors = embed(texts)?;
    anyhow::ensure!(
        vectors.len() == texts.len(),
        "{} embeddings for {} texts",
        vectors.len(),
        texts.len()
    );
    std::fs::create_dir_all(dir)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", dir.display()))?;
    let bytes: Vec<u8> = vectors
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    lextral_common::fs::write_atomically(&path, |file| {
        std::io::Write::write_all(file, &bytes)?;
        Ok(())
    })?;
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_call_reads_what_the_first_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let texts = vec!["a".to_owned(), "b".to_owned()];
        let embed =
            |texts: &[String]| Ok(texts.iter().map(|t| vec![t.len() as f32, 2.0]).collect());
        let mut hit = false;
        let first = embed_cached(Some(dir.path()), "m", &texts, || hit = true, embed).unwrap();
        assert!(!hit);
        let second = embed_cached(
            Some(dir.path()),
            "m",
            &texts,
            || hit = true,
            |_| anyhow::bail!("must come from the cache"),
        )
        .unwrap();
        assert!(hit);
        assert_eq!(first, second);
        // Another model or other texts miss.
        let other = embed_cached(Some(dir.path()), "other", &texts, || {}, embed).unwrap();
        assert_eq!(other, first);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
