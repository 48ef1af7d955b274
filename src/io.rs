//! Atomic file writes: every final file tweedie writes goes to a temporary file in the same folder,
//! is synced, and is renamed over its final name, so a killed process never leaves a half-written
//! file under that name (the previous file, if any, stays whole until the rename).
//!
//! The one file written otherwise is a run's `metrics.jsonl`, an append-only log (a killed run can
//! leave its last line cut short; readers skip lines that do not parse, and a resumed run rewrites
//! the log, atomically, up to its checkpoint's step).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling a write of `path` goes through: `.tmp-<pid>-<name>` in the same folder
/// (same file system, so the rename is atomic; the extension is kept, so writers that choose a
/// format by extension, such as the PNG encoder, still see it).
pub fn atomic_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Where a write of `path` really goes: a symbolic link's target (the link stays), else `path`;
/// `None` when `path` is not a regular file to replace (a device such as /dev/null, a pipe), which
/// is then written in place.
fn target(path: &Path) -> Option<PathBuf> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => None,
        Ok(_) if path.is_symlink() => std::fs::canonicalize(path).ok(),
        _ => Some(path.to_path_buf()),
    }
}

/// Writes `path` atomically through `write`, which gets a buffered writer on the temporary file.
/// On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let Some(path) = target(path) else {
        // a device or pipe: nothing to replace, write straight into it
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        return w
            .flush()
            .with_context(|| format!("{}: write failed", path.display()));
    };
    let path = path.as_path();
    let tmp = atomic_path(path);
    let res = (|| -> Result<()> {
        let file =
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("{}: write failed", tmp.display()))?;
        Ok(())
    })();
    match res {
        Ok(()) => commit(&tmp, path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e).with_context(|| format!("{}: not written", path.display()))
        }
    }
}

/// Checks, before any work, that `path` can be written: its folder exists and is a folder.
pub fn check_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: cannot write there: {} is not an existing folder",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes)
            .with_context(|| format!("{}: write failed", path.display()))
    })
}

/// Moves a finished temporary file into place: syncs its data, renames it over `path`, and syncs
/// the folder so that the rename itself survives a crash. The temporary file is removed on error.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    let res = (|| -> Result<()> {
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("{}: cannot sync", tmp.display()))?;
        std::fs::rename(tmp, path)
            .with_context(|| format!("{}: cannot move into place", path.display()))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
        return res;
    }
    // best effort: some file systems cannot open or sync a folder
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Renders through `draw`, which writes to the temporary path it is given (a plotting backend that
/// opens the file itself), then commits it over `path`.
pub fn render_atomic<F>(path: &Path, draw: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let Some(path) = target(path) else {
        return draw(path);
    };
    let path = path.as_path();
    let tmp = atomic_path(path);
    match draw(&tmp) {
        Ok(()) if tmp.exists() => commit(&tmp, path),
        Ok(()) => anyhow::bail!("{}: nothing was written", path.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.json");
        write_atomic_bytes(&p, b"old")?;
        let err = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("injected")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p)?, b"old");
        // no temporary file is left behind
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(names.len(), 1, "{names:?}");
        write_atomic_bytes(&p, b"new")?;
        assert_eq!(std::fs::read(&p)?, b"new");
        let tmp = atomic_path(&p);
        assert_eq!(tmp.parent(), p.parent());
        assert_eq!(tmp.extension(), p.extension());
        Ok(())
    }

    /// A device is written in place (never replaced by a file); a link keeps pointing at its
    /// target, which gets the new contents.
    #[cfg(unix)]
    #[test]
    fn devices_and_links() -> Result<()> {
        let null = Path::new("/dev/null");
        if null.exists() {
            write_atomic_bytes(null, b"x")?;
            use std::os::unix::fs::FileTypeExt;
            assert!(std::fs::metadata(null)?.file_type().is_char_device());
        }
        let dir = tempfile::tempdir()?;
        let (real, link) = (dir.path().join("real.txt"), dir.path().join("link.txt"));
        std::fs::write(&real, b"old")?;
        std::os::unix::fs::symlink(&real, &link)?;
        write_atomic_bytes(&link, b"new")?;
        assert!(link.is_symlink());
        assert_eq!(std::fs::read(&real)?, b"new");
        Ok(())
    }
}
