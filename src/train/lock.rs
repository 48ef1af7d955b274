//! The run folder's lock: `train.lock`, holding the PID of the process training there, created
//! atomically (`create_new`) for the whole run and removed when it ends (also on error). A second
//! process on the same folder refuses at once; a lock left by a killed process (its PID gone) is
//! taken over with a warning.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the lock inside a run folder.
pub const LOCK: &str = "train.lock";

/// A held lock; dropping it removes the file.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist) for this process.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK);
        let me = std::process::id();
        match create(&path, me) {
            Ok(()) => return Ok(RunLock { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot create lock", path.display()))
            }
        }
        // a lock just created holds no PID for a moment: read again before judging it
        let mut holder = None;
        for _ in 0..20 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            holder = text.trim().parse::<u32>().ok();
            if holder.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        match holder {
            Some(pid) if alive(pid) => bail!(
                "{}: another tweedie process (PID {pid}{}) is training in this folder; wait for it \
                 to finish or train into another folder (if no such process runs, remove {})",
                run_dir.display(),
                if pid == me { ", this one" } else { "" },
                path.display()
            ),
            _ => {}
        }
        // a stale lock: its process is gone (or the file is unreadable). Replace it atomically
        // and read it back, so that of two processes taking it over at once only one goes on.
        let tmp = crate::io::atomic_path(&path);
        std::fs::write(&tmp, format!("{me}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("{}: cannot take over the lock", path.display()))?;
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.trim().parse::<u32>().ok() != Some(me) {
            bail!(
                "{}: another tweedie process took over this folder's stale lock first",
                run_dir.display()
            );
        }
        eprintln!(
            "warning: {}: took over a lock left by {} (no longer running); the run folder \
             holds what that process last wrote",
            path.display(),
            holder.map_or("an unknown process".to_string(), |p| format!("PID {p}"))
        );
        Ok(RunLock { path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // only our own lock: a lock another process took over (after ours was judged stale) stays
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn create(path: &Path, pid: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    writeln!(f, "{pid}")?;
    f.sync_all()
}

/// Whether a process with this PID exists (Linux: /proc/PID). Elsewhere every holder counts as
/// alive: the message names the lock file to remove.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_refused_stale_taken_over_released() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lock = RunLock::acquire(dir.path())?;
        let err = format!("{:#}", RunLock::acquire(dir.path()).expect_err("held"));
        assert!(err.contains("another tweedie process"), "{err}");
        drop(lock);
        assert!(!dir.path().join(LOCK).exists(), "removed on drop");
        // a PID that cannot exist (above Linux's pid_max of 2^22)
        std::fs::write(dir.path().join(LOCK), "4194305\n")?;
        let lock = RunLock::acquire(dir.path())?;
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK))?.trim(),
            std::process::id().to_string()
        );
        drop(lock);
        // an unreadable lock is stale too
        std::fs::write(dir.path().join(LOCK), "garbage")?;
        drop(RunLock::acquire(dir.path())?);
        assert!(!dir.path().join(LOCK).exists());
        Ok(())
    }
}
