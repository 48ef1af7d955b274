//! Tick labels formatted for their axis: as many decimals as the tick spacing needs (`0.25`, not
//! `0.250`; `10000`, not `10000.000`), scientific notation for very large or small magnitudes, and
//! powers of ten (10⁻³) on logarithmic axes.

/// The label of `v` on a linear axis spanning `[lo, hi]` with about seven ticks.
pub fn linear_label(v: f64, lo: f64, hi: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let span = (hi - lo).abs();
    let big = lo.abs().max(hi.abs());
    if big >= 1e5 || (big > 0.0 && big < 1e-3) {
        return scientific(v, span);
    }
    // at most seven ticks, spaced 1, 2 or 5 × 10ᵏ apart (as plotters places them): k sets the decimals
    let step = nice_step(if span > 0.0 { span / 7.0 } else { 1.0 });
    let decimals = (-(step.log10().floor())).clamp(0.0, 6.0) as usize;
    // plotters may place ticks finer than our estimate (0.5 apart where we expect 1): one or two
    // more decimals where the tick needs them, so that 2.5 is not shown as "2"
    let fits = |d: usize| {
        let f = 10f64.powi(d as i32);
        ((v * f).round() / f - v).abs() <= 1e-9 * step
    };
    let decimals = (decimals..=decimals + 2)
        .find(|&d| fits(d))
        .unwrap_or(decimals);
    let s = format!("{v:.decimals$}");
    trim_negative_zero(s)
}

/// The smallest 1, 2 or 5 × 10ᵏ at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let decade = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|&s| s >= raw * (1.0 - 1e-12))
        .unwrap_or(10.0 * decade)
}

/// `1.5e4`-style label with the digits the tick spacing needs.
fn scientific(v: f64, span: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let step = nice_step(if span > 0.0 { span / 7.0 } else { v.abs() });
    let digits = (v.abs().log10().floor() - step.log10().floor()).clamp(0.0, 4.0) as usize;
    trim_negative_zero(format!("{v:.digits$e}"))
}

/// "-0", "-0.0" → "0", "0.0".
fn trim_negative_zero(s: String) -> String {
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// The label of `v` on a logarithmic axis: 10ᵏ at decades, else one significant digit.
pub fn log_label(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return format!("{v}");
    }
    let k = v.log10();
    if (k - k.round()).abs() < 1e-9 {
        let k = k.round() as i64;
        return match k {
            0 => "1".into(),
            1 => "10".into(),
            _ => format!("10{}", superscript(k)),
        };
    }
    let digits = (-k.floor()).max(0.0) as usize;
    if (1e-3..1e5).contains(&v) {
        format!("{v:.digits$}")
    } else {
        format!("{v:.1e}")
    }
}

/// An integer in Unicode superscript digits (DejaVu Sans has them).
fn superscript(k: i64) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s = String::new();
    if k < 0 {
        s.push('⁻');
    }
    for c in k.unsigned_abs().to_string().chars() {
        s.push(DIGITS[c as usize - '0' as usize]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_suit_their_range() {
        assert_eq!(linear_label(10000.0, 0.0, 20000.0), "10000");
        assert_eq!(linear_label(0.4, 0.0, 1.0), "0.4");
        assert_eq!(linear_label(0.05, 0.0, 0.3), "0.05");
        assert_eq!(linear_label(2.0, -4.0, 4.0), "2");
        // plotters' ticks 0.5 apart on a span of 3.6 (our estimate: 1 apart)
        assert_eq!(linear_label(2.5, -0.6, 3.0), "2.5");
        assert_eq!(linear_label(2.0, -0.6, 3.0), "2");
        assert_eq!(linear_label(-0.0001, -1.0, 1.0), "0.0");
        assert_eq!(linear_label(150000.0, 0.0, 300000.0), "1.5e5");
        assert_eq!(linear_label(0.0002, 0.0, 0.0005), "2e-4");
        assert_eq!(log_label(1e-3), "10⁻³");
        assert_eq!(log_label(100.0), "10²");
        assert_eq!(log_label(1.0), "1");
        assert_eq!(log_label(0.05), "0.05");
        assert_eq!(log_label(3.0), "3");
    }
}
