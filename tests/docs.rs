//! The result pages under docs/experiments cannot go stale silently: each records the commit it
//! was produced at, and no later commit may have changed the code its numbers depend on. When
//! this fails, rerun the command written on the page and commit the new page.

use std::path::Path;
use std::process::Command;

/// The U-Net's files (a git exclude pathspec): no page's experiment runs it.
const UNET: &str = ":(exclude)src/nn/unet";

/// What `tweedie experiment recipes` trains and samples with (its two pages: the mixtures, and
/// the toys written with `--out docs/experiments/toys`).
const RECIPES: &[&str] = &[
    "src/parameterisation.rs",
    "src/objective",
    "src/nn",
    UNET,
    "src/train",
    "src/sample",
    "src/config.rs",
    "src/process.rs",
    "src/ode.rs",
    "src/target/mixture.rs",
    "src/metrics.rs",
    "src/metrics",
    "src/experiment/recipes.rs",
];

/// Each result page and the source paths its numbers depend on.
const PAGES: &[(&str, &[&str])] = &[
    (
        "docs/experiments/samplers.md",
        &[
            "src/sample",
            "src/target/mixture.rs",
            "src/target/exact.rs",
            "src/process.rs",
            "src/ode.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/samplers.rs",
        ],
    ),
    (
        "docs/experiments/quality.md",
        &[
            "src/sample",
            "src/target/mixture.rs",
            "src/target/exact.rs",
            "src/process.rs",
            "src/ode.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/quality.rs",
        ],
    ),
    ("docs/experiments/recipes.md", RECIPES),
    ("docs/experiments/toys/recipes.md", RECIPES),
    (
        "docs/experiments/objectives.md",
        &[
            "src/objective",
            "src/nn",
            UNET,
            "src/train",
            "src/process.rs",
            "src/target/mixture.rs",
            "src/target/exact.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/objectives.rs",
        ],
    ),
    (
        "docs/experiments/schedules.md",
        &[
            "src/objective",
            "src/nn",
            UNET,
            "src/train",
            "src/sample",
            "src/process.rs",
            "src/ode.rs",
            "src/target/mixture.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/schedules.rs",
        ],
    ),
    (
        "docs/experiments/forces.md",
        &[
            "src/objective",
            "src/nn",
            UNET,
            "src/train",
            "src/process.rs",
            "src/target/mixture.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/forces.rs",
        ],
    ),
    (
        "docs/experiments/mnist.md",
        &[
            "src/objective",
            // the classifier that judges the samples is built from the U-Net's blocks and layers
            "src/nn",
            ":(exclude)src/nn/unet/mod.rs",
            ":(exclude)src/nn/unet/attention.rs",
            ":(exclude)src/nn/unet/spec.rs",
            ":(exclude)src/nn/unet/profile.rs",
            ":(exclude)src/nn/unet/tests.rs",
            "src/train",
            "src/sample",
            "src/parameterisation.rs",
            "src/process.rs",
            "src/config.rs",
            "src/data/images.rs",
            "src/data/mnist.rs",
            "src/data/idx.rs",
            "data/mnist",
            "src/images",
            "src/experiment/mnist",
        ],
    ),
    (
        "docs/experiments/energy.md",
        &[
            "src/objective",
            "src/nn",
            UNET,
            "src/train",
            "src/sample",
            "src/parameterisation.rs",
            "src/process.rs",
            "src/config.rs",
            "src/target/posterior.rs",
            "src/target/potential.rs",
            "src/target/mixture.rs",
            "src/metrics.rs",
            "src/metrics",
            "src/experiment/energy.rs",
        ],
    ),
    (
        "docs/experiments/estimators.md",
        &[
            "src/target/posterior.rs",
            "src/target/mixture.rs",
            "src/target/potential.rs",
            "src/process.rs",
            "src/objective/diagnostics.rs",
            "src/experiment/estimators.rs",
        ],
    ),
];

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The hash in the page's "Produced at commit `<hash>`" stamp.
fn recorded_commit(page: &str) -> Option<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).ok()?;
    let rest = text.split("Produced at commit `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Whether the stamp says the source tree had uncommitted changes.
fn recorded_dirty(page: &str) -> bool {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).is_ok_and(|t| {
        t.lines()
            .any(|l| l.starts_with("Produced at commit") && l.contains("+ local changes"))
    })
}

#[test]
fn result_pages_are_newer_than_the_code_they_depend_on() {
    if git(&["rev-parse", "HEAD"]).is_none() {
        eprintln!("skipped: not a git checkout, so the pages' commits cannot be compared");
        return;
    }
    let mut stale = Vec::new();
    for (page, deps) in PAGES {
        let Some(commit) = recorded_commit(page) else {
            stale.push(format!(
                "{page}: no 'Produced at commit `...`' stamp; rerun its command"
            ));
            continue;
        };
        if recorded_dirty(page) {
            stale.push(format!(
                "{page} was produced from uncommitted code (+ local changes); commit, then rerun its command"
            ));
            continue;
        }
        if git(&["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_none() {
            eprintln!("skipped {page}: its commit {commit} is not in this clone (shallow?)");
            continue;
        }
        let mut args = vec![
            "log".to_string(),
            "--format=%h %s".into(),
            format!("{commit}..HEAD"),
            "--".into(),
        ];
        args.extend(deps.iter().map(|d| d.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let later = git(&args).unwrap_or_default();
        if !later.is_empty() {
            let first = later.lines().last().unwrap_or_default();
            stale.push(format!(
                "{page} was produced at {commit}, but {} later commit(s) changed its code (first: {first}); rerun the command on the page",
                later.lines().count()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "stale result pages:\n{}",
        stale.join("\n")
    );
}
