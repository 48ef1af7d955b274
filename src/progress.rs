//! Progress bars (indicatif) for the command line and the experiments, driven by the loops'
//! step callbacks: the core (`train`, `sample`, `mcmc`) knows only its callbacks.

use crate::sample::{Callback, Step};
use crate::train::TrainStep;

/// A progress bar on stderr with the loss and steps/s (hidden when `quiet` or not a terminal).
pub fn bar(len: usize, pos: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64).with_position(pos as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A spinner on stderr with `msg` and the elapsed time, for work of unknown length (hidden when
/// `quiet` or not a terminal).
pub fn spinner(msg: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(msg.to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A callback that moves `bar` to each training step and shows the logged loss.
pub fn train_callback(bar: indicatif::ProgressBar) -> Callback<TrainStep> {
    Box::new(move |s: &TrainStep| {
        if s.step == s.start + 1 {
            // a resumed run: rate and ETA count from here
            bar.set_position(s.start as u64);
            bar.reset_elapsed();
            bar.reset_eta();
        }
        bar.set_position(s.step as u64);
        if let Some(l) = s.logged_loss {
            bar.set_message(format!("loss {l:.4}"));
        }
    })
}

/// A callback that moves `bar` to each sampler step, after `done` steps of earlier batches.
pub fn sample_callback(bar: indicatif::ProgressBar, done: usize) -> Callback<Step> {
    Box::new(move |s: &Step| bar.set_position((done + s.i) as u64))
}

/// A callback that moves `bar` to each MCMC step and shows the step size and acceptance.
pub fn mcmc_callback(bar: indicatif::ProgressBar) -> Callback<crate::mcmc::Progress> {
    Box::new(move |p: &crate::mcmc::Progress| {
        bar.set_position(p.step as u64);
        // a message per step would format thousands of strings a second for nothing
        if p.step.is_multiple_of(16) || p.step == p.total {
            bar.set_message(format!("h {:.3e} accept {:.2}", p.step_size, p.acceptance));
        }
    })
}
