//! A potential of your own, sampled with MALA: a ring U(x) = (‖x‖ − r0)²/(2w²) in 2-D, whose
//! density p ∝ exp(−U/kT) is a thin annulus of radius about r0 (a shape no Gaussian mixture
//! fits), then its draws' radius, acceptance, ESS and R-hat.
//!
//! `cargo run --release --example potential` (under a second).

use anyhow::Result;
use tweedie::mcmc::{self, Options};
use tweedie::metrics::mean_and_sem;
use tweedie::target::potential::{each_row, Potential};

/// The ring: radius r0, width w, temperature kT.
struct Ring {
    r0: f64,
    w: f64,
    kt: f64,
}

impl Potential for Ring {
    fn dim(&self) -> usize {
        2
    }
    fn kt(&self) -> f64 {
        self.kt
    }
    /// U and F = −∇U = −(‖x‖ − r0)/w² · x/‖x‖, one row at a time (`each_row` checks the shapes).
    fn energy_force(&self, x: &[f64], e: &mut [f64], f: &mut [f64]) -> Result<()> {
        each_row(x, 2, e, f, |x, f| {
            let r = x[0].hypot(x[1]).max(1e-12);
            let dr = (r - self.r0) / (self.w * self.w);
            f[0] = -dr * x[0] / r;
            f[1] = -dr * x[1] / r;
            0.5 * (r - self.r0) * dr
        })
    }
}

fn main() -> Result<()> {
    let ring = Ring {
        r0: 2.0,
        w: 0.2,
        kt: 1.0,
    };
    let o = Options {
        chains: 128,
        steps: 4000,
        burn_in: 1000,
        thin: 4,
        ..Options::default()
    };
    // starting states: the trait's default, N(0, I)
    let draws = mcmc::mala(&ring, None, &o, None)?;
    let radius: Vec<f64> = draws
        .positions
        .chunks(2)
        .map(|x| x[0].hypot(x[1]))
        .collect();
    let (r, sem) = mean_and_sem(&radius);
    let ess = mcmc::ess(&radius, draws.chains);
    println!(
        "{} draws: mean radius {r:.4} ± {:.4} (r0 = {}; the annulus' area weighting puts it a little \
         outside, r0 + w²/r0 = {:.4}), acceptance {:.3} at h = {:.3e}, ESS of the radius {ess:.0}, \
         split R-hat of x {:.4}",
        radius.len(),
        sem * (radius.len() as f64 / ess).sqrt(),
        ring.r0,
        ring.r0 + ring.w * ring.w / ring.r0,
        draws.acceptance,
        draws.step_size,
        mcmc::per_coordinate(&draws.positions, draws.chains, 2).1[0],
    );
    Ok(())
}
