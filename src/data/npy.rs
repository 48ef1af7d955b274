//! NumPy `.npy` files in and out: [n, d], \[n\], or [n, ...event] (particles, images).

use super::Points;
use anyhow::{anyhow, bail, Context, Result};
use npyz::WriterBuilder;
use std::path::Path;

/// Reads a C-order little-endian `f32`/`f64` `.npy` file of n points: [n, d], \[n\] (as n × 1), or
/// [n, e₁, e₂, …] (each point an event of shape [e₁, e₂, …], e.g. particles [n, N, k]).
pub fn read_npy(path: &Path) -> Result<Points> {
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    let mut rest: &[u8] = &bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| anyhow!("{p}: not a valid .npy file (bad magic or header: {e})"))?;
    let dtype = header.dtype();
    let size = match &dtype {
        npyz::DType::Plain(ts) if ts.to_string() == "<f4" => 4,
        npyz::DType::Plain(ts) if ts.to_string() == "<f8" => 8,
        other => bail!(
            "{p}: dtype {} is not supported; accepted dtypes are '<f4' (float32) and \
             '<f8' (float64); convert with arr.astype(np.float32)",
            other.descr()
        ),
    };
    if header.order() == npyz::Order::Fortran {
        bail!("{p}: array is stored in Fortran order; save np.ascontiguousarray(arr) instead");
    }
    let shape = header.shape().to_vec();
    let (n, event): (usize, Vec<usize>) = match shape[..] {
        [] => bail!("{p}: array is a scalar; expected one point per row, [n, d] or [n, ...event]"),
        [n] => (n as usize, vec![1]),
        [n, ref rest @ ..] => (n as usize, rest.iter().map(|&e| e as usize).collect()),
    };
    let d = event
        .iter()
        .try_fold(1usize, |a, &e| a.checked_mul(e))
        .ok_or_else(|| anyhow!("{p}: shape {shape:?} is too large"))?;
    let need = n.saturating_mul(d).saturating_mul(size);
    if rest.len() < need {
        bail!(
            "{p}: truncated: header says shape {shape:?} ({need} data bytes) but only {} \
             bytes follow; re-export the file",
            rest.len()
        );
    }
    let npy = npyz::NpyFile::with_header(header, rest);
    let data: Vec<f64> = if size == 4 {
        let v: Vec<f32> = npy
            .into_vec()
            .with_context(|| format!("{p}: reading data"))?;
        v.into_iter().map(f64::from).collect()
    } else {
        npy.into_vec()
            .with_context(|| format!("{p}: reading data"))?
    };
    Points::new(n, d, data)
        .and_then(|x| x.with_event(event))
        .with_context(|| format!("{p}: inconsistent data length"))
}

/// Writes points as a C-order `.npy` file of shape [n, ...event], `f64` (`<f8`) if `f64` is true
/// else `f32` (`<f4`).
pub fn write_npy(path: &Path, x: &Points, f64: bool) -> Result<()> {
    let p = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("{p}: cannot create file"))?;
    let shape: Vec<u64> = std::iter::once(x.n)
        .chain(x.event_shape())
        .map(|v| v as u64)
        .collect();
    let w = std::io::BufWriter::new(file);
    let res = if f64 {
        npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()
            .and_then(|mut wr| {
                wr.extend(x.data.iter().copied())?;
                wr.finish()
            })
    } else {
        npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()
            .and_then(|mut wr| {
                wr.extend(x.to_f32())?;
                wr.finish()
            })
    };
    res.with_context(|| format!("{p}: writing .npy failed"))
}

/// Writes per-point values as a 1-D `f32` `.npy` file.
pub fn write_npy_f32_1d(path: &Path, values: &[f64]) -> Result<()> {
    let p = path.display();
    let file = std::fs::File::create(path).with_context(|| format!("{p}: cannot create file"))?;
    npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[values.len() as u64])
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .and_then(|mut wr| {
            wr.extend(values.iter().map(|&v| v as f32))?;
            wr.finish()
        })
        .with_context(|| format!("{p}: writing .npy failed"))
}

/// Reads integer class labels, one per point: a 1-D (or [n, 1]) `.npy` of any integer dtype
/// (`|u1`, `|i1`, `<u2`, `<i2`, `<u4`, `<i4`, `<u8`, `<i8`), each a non-negative class index.
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| anyhow!("{p}: not a valid .npy file ({e})"))?;
    let shape = npy.shape().to_vec();
    if !matches!(shape[..], [_] | [_, 1]) {
        bail!("{p}: labels have shape {shape:?}; expected one integer per point, [n] or [n, 1]");
    }
    if npy.order() == npyz::Order::Fortran && shape.len() > 1 {
        bail!("{p}: array is stored in Fortran order; save np.ascontiguousarray(arr) instead");
    }
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => other.descr(),
    };
    let read = |e: std::io::Error| anyhow!("{p}: reading labels ({e})");
    let wide: Vec<i128> = match descr.as_str() {
        "|u1" => npy
            .into_vec::<u8>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "|i1" => npy
            .into_vec::<i8>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<u2" => npy
            .into_vec::<u16>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<i2" => npy
            .into_vec::<i16>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<u4" => npy
            .into_vec::<u32>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<i4" => npy
            .into_vec::<i32>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<u8" => npy
            .into_vec::<u64>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        "<i8" => npy
            .into_vec::<i64>()
            .map_err(read)?
            .into_iter()
            .map(i128::from)
            .collect(),
        other => bail!(
            "{p}: labels have dtype {other}; class labels are integers (e.g. arr.astype(np.int64))"
        ),
    };
    wide.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| {
                anyhow!("{p}: label {v} of point {i} is not a class index (0, 1, 2, …)")
            })
        })
        .collect()
}
