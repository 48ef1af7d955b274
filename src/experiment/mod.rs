//! Experiments that compare methods on targets with exact answers and write tables and figures
//! (`tweedie experiment ...`). Long-running by design: they are commands, not tests.

pub mod objectives;
pub mod quality;
pub mod samplers;
pub mod schedules;

use anyhow::{Context, Result};
use std::path::Path;

/// Creates an output folder, with the path in any error.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))
}

/// Writes a text file, creating its folder, with the path in any error.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    crate::io::write_atomic_bytes(path, text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}
