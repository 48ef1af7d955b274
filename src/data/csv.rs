//! Comma-separated rows in and out.

use super::Points;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Reads comma-separated numeric rows; skips `#` comments and a non-numeric first (header) line.
pub fn read_csv(path: &Path) -> Result<Points> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("{p}: cannot read file"))?;
    rows(file, &p)
}

/// Parses CSV text as `read_csv` does (errors name it "CSV data").
pub fn parse_csv(bytes: &[u8]) -> Result<Points> {
    rows(bytes, "CSV data")
}

fn rows(file: impl std::io::Read, p: &str) -> Result<Points> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let (mut data, mut d, mut n) = (Vec::new(), None, 0usize);
    for (k, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{p}: malformed CSV"))?;
        let line = rec.position().map_or(0, |pos| pos.line());
        let vals: Result<Vec<f64>, _> = rec.iter().map(str::parse::<f64>).collect();
        let vals = match vals {
            Ok(v) => v,
            Err(_) if k == 0 => continue, // header line
            Err(_) => bail!(
                "{p}: line {line} has a non-numeric field: {:?}",
                rec.iter().collect::<Vec<_>>()
            ),
        };
        match d {
            None => d = Some(vals.len()),
            Some(d) if d != vals.len() => bail!(
                "{p}: line {line} has {} fields but earlier rows have {d}; every row needs the \
                 same number of columns",
                vals.len()
            ),
            _ => {}
        }
        data.extend(vals);
        n += 1;
    }
    let d = d.ok_or_else(|| anyhow!("{p}: no numeric rows found"))?;
    if d == 0 {
        bail!("{p}: rows have no values");
    }
    Points::new(n, d, data)
}

/// Writes points as comma-separated rows (no header), using round-trip exact formatting.
pub fn write_csv(path: &Path, x: &Points) -> Result<()> {
    let p = path.display();
    crate::io::write_atomic(path, |w| {
        for i in 0..x.n {
            let line: Vec<String> = x.row(i).iter().map(|v| v.to_string()).collect();
            writeln!(w, "{}", line.join(",")).with_context(|| format!("{p}: write failed"))?;
        }
        Ok(())
    })
}
