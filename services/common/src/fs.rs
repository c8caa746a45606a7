//! Crash-safe file writes.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes through a temporary file in the same directory, syncs it, then
/// renames it over `path`: readers see the old file or the new one, never
/// half of one.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp-lextral");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    write(&mut writer)?;
    let file = writer.into_inner().map_err(|err| err.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, so a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing directory {}", parent.display()))?;
    }
    Ok(())
}

/// [`write_atomically`] of `value` as pretty-printed JSON.
pub fn write_json_atomically(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    write_atomically(path, |file| {
        serde_json::to_writer_pretty(&mut *file, value)?;
        Ok(())
    })
}

/// [`write_atomically`] of `text`.
pub fn write_text_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomically(path, |file| {
        std::io::Write::write_all(file, text.as_bytes())?;
        Ok(())
    })
}
