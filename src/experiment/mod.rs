//! Experiments that compare methods on targets with exact answers and write tables and figures
//! (`tweedie experiment ...`). Long-running by design: they are commands, not tests.

pub mod energy;
pub mod estimators;
pub mod forces;
pub mod mnist;
pub mod objectives;
pub mod quality;
pub mod recipes;
pub mod samplers;
pub mod schedules;

use anyhow::{Context, Result};
use std::path::Path;

/// The commit the experiment ran at, as the docs record it: "commit `<hash>`", with "+ local
/// changes" when the source tree differs from it, or "commit unknown" outside a git checkout.
/// `tests/docs.rs` compares it with the last change to the code each table depends on.
pub fn provenance() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--", "src"]).is_some_and(|s| !s.is_empty());
            format!(
                "commit `{hash}`{}",
                if dirty { " + local changes" } else { "" }
            )
        }
        None => "commit unknown".into(),
    }
}

/// Creates an output folder, with the path in any error.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))
}

/// Writes a Markdown result page, stamped under its title with the commit it ran at
/// (`provenance`), so that a table can be traced to the code that made it.
pub fn write_doc(path: &Path, md: &str) -> Result<()> {
    let stamp = format!(
        "Produced at {}; rerun the command on this page to reproduce the numbers.",
        provenance()
    );
    let text = match md.split_once('\n') {
        Some((title, rest)) if title.starts_with("# ") => format!("{title}\n\n{stamp}\n{rest}"),
        _ => format!("{stamp}\n\n{md}"),
    };
    write_text(path, &text)
}

/// Writes a text file, creating its folder, with the path in any error.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    crate::io::write_atomic_bytes(path, text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}
