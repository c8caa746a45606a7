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

/// Replaces the directory `target` with the directory `staged` in one step
/// where the platform can (Linux `renameat2(RENAME_EXCHANGE)`): a crash
/// leaves either the old directory or the new one at `target`, never none.
/// The old one ends up at `staged`, for the caller to remove. Elsewhere, or
/// on file systems without exchange, two renames with `target` briefly
/// missing (logged). Syncs the parent directory either way.
pub fn replace_dir(staged: &Path, target: &Path) -> anyhow::Result<()> {
    if !target.exists() {
        std::fs::rename(staged, target)
            .with_context(|| format!("renaming {} to {}", staged.display(), target.display()))?;
        return sync_parent(target);
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, staged, CWD, target, RenameFlags::EXCHANGE) {
            Ok(()) => return sync_parent(target),
            Err(err) if err == rustix::io::Errno::INVAL || err == rustix::io::Errno::NOSYS => {
                tracing::warn!(path = %target.display(), "no atomic directory exchange here; replacing in two steps");
            }
            Err(err) => {
                return Err(std::io::Error::from(err)).with_context(|| {
                    format!("exchanging {} and {}", staged.display(), target.display())
                })
            }
        }
    }
    let aside = staged.with_extension("aside");
    std::fs::rename(target, &aside)
        .with_context(|| format!("moving {} aside", target.display()))?;
    if let Err(err) = std::fs::rename(staged, target) {
        let _ = std::fs::rename(&aside, target);
        return Err(err).with_context(|| format!("renaming to {}", target.display()));
    }
    std::fs::rename(&aside, staged).with_context(|| format!("moving {} back", aside.display()))?;
    sync_parent(target)
}

/// Syncs every file under `dir` and the directories themselves, so a
/// rename that publishes `dir` publishes complete files.
pub fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|file| file.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod replace_tests {
    use super::*;

    #[test]
    fn a_directory_is_replaced_whole_and_the_old_one_handed_back() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("model");
        let staged = root.path().join(".model.new");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("a"), "old").unwrap();
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("a"), "new").unwrap();
        sync_tree(&staged).unwrap();
        replace_dir(&staged, &target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(staged.join("a")).unwrap(), "old");
        // Into a place with nothing there yet.
        let fresh = root.path().join("other");
        replace_dir(&staged, &fresh).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.join("a")).unwrap(), "old");
    }
}
