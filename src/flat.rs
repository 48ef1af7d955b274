//! Tensors ↔ flat buffers: the fused kernels and the ODE and SDE solvers keep their state in
//! plain slices and meet candle's tensors only at a model's inputs and outputs. On a GPU the
//! solvers' state (`Buf`) stays a tensor on the device instead: copying an image-sized state to
//! the host and back costs 20–45 network evaluations there.

use anyhow::{bail, Result};
use candle_core::{DType, Storage, Tensor, WithDType};

/// A tensor's values as one flat vector of T (converted), row-major.
pub fn values<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()?)
}

/// `f` on a tensor's values as T: borrowed when it already is a contiguous CPU tensor of T (a
/// sampler's state, a model's output), converted otherwise.
pub fn with_values<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    if t.dtype() == T::DTYPE {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return f(&cpu.as_slice::<T>()?[a..b]);
        }
    }
    f(&values(t)?)
}

/// dst ← t's values (as f64), converted in one pass where t is a contiguous f32 CPU tensor.
pub fn copy_values(t: &Tensor, dst: &mut [f64]) -> Result<()> {
    let want = dst.len();
    let len = |n: usize| {
        anyhow::ensure!(n == want, "{n} values for a buffer of {want}");
        Ok(())
    };
    if t.dtype() == candle_core::DType::F32 {
        return with_values::<f32, _>(t, |v| {
            len(v.len())?;
            dst.iter_mut().zip(v).for_each(|(d, &v)| *d = v as f64);
            Ok(())
        });
    }
    with_values::<f64, _>(t, |v| {
        len(v.len())?;
        dst.copy_from_slice(v);
        Ok(())
    })
}

/// The flat values y as a tensor shaped, typed and placed like `like`.
pub fn unflat(y: &[f64], like: &Tensor) -> Result<Tensor> {
    let (shape, device) = (like.shape(), like.device());
    Ok(match like.dtype() {
        candle_core::DType::F32 => Tensor::from_vec(
            y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            shape,
            device,
        )?,
        dtype => Tensor::from_slice(y, shape, device)?.to_dtype(dtype)?,
    })
}

thread_local! {
    /// Tests: keep solver state in tensors on the CPU too (the GPU path, checked without a GPU).
    pub(crate) static TENSOR_STATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A solver's state-sized buffer: flat f64 values on the host, or a tensor on the model's device.
#[derive(Clone, Debug)]
pub enum Buf {
    Host(Vec<f64>),
    Device(Tensor),
}

impl Buf {
    /// x's values as a buffer: flat on the host for a CPU tensor, x itself on a GPU.
    pub fn of(x: &Tensor) -> Result<Buf> {
        Ok(if x.device().is_cpu() && !TENSOR_STATE.get() {
            Buf::Host(values(x)?)
        } else {
            Buf::Device(x.clone())
        })
    }

    /// A zeroed buffer of the same kind and size.
    pub fn zeros(&self) -> Result<Buf> {
        Ok(match self {
            Buf::Host(v) => Buf::Host(vec![0.0; v.len()]),
            Buf::Device(t) => Buf::Device(t.zeros_like()?),
        })
    }

    /// The values as a tensor shaped, typed and placed like `like`.
    pub fn tensor(&self, like: &Tensor) -> Result<Tensor> {
        match self {
            Buf::Host(v) => unflat(v, like),
            Buf::Device(t) => Ok(t.reshape(like.shape())?.to_dtype(like.dtype())?),
        }
    }

    /// self ← t's values (t as long as the buffer).
    pub fn assign(&mut self, t: Tensor) -> Result<()> {
        match self {
            Buf::Host(v) => copy_values(&t, v),
            Buf::Device(d) => {
                anyhow::ensure!(
                    t.elem_count() == d.elem_count(),
                    "{} values for a buffer of {}",
                    t.elem_count(),
                    d.elem_count()
                );
                *d = t.reshape(d.shape())?;
                Ok(())
            }
        }
    }

    /// Mean over rows (of length d) of their Euclidean norms.
    pub fn mean_row_norm(&self, d: usize) -> Result<f64> {
        match self {
            Buf::Host(v) => Ok(host_mean_row_norm(v, d)),
            Buf::Device(t) => device_mean_row_norm(t, d),
        }
    }

    /// The host values (an error for a device buffer).
    pub fn host(&self) -> Result<&[f64]> {
        match self {
            Buf::Host(v) => Ok(v),
            Buf::Device(_) => bail!("a device buffer in a host computation"),
        }
    }

    /// The host values for writing (an error for a device buffer).
    pub fn host_mut(&mut self) -> Result<&mut [f64]> {
        match self {
            Buf::Host(v) => Ok(v),
            Buf::Device(_) => bail!("a device buffer in a host computation"),
        }
    }

    /// The device tensor (an error for a host buffer).
    pub fn device(&self) -> Result<&Tensor> {
        match self {
            Buf::Device(t) => Ok(t),
            Buf::Host(_) => bail!("a host buffer in a device computation"),
        }
    }
}

/// out ← a·out + Σ c_i v_i (a = 0: out's old values are not read; terms with c_i = 0 are skipped).
pub fn lincomb(out: &mut Buf, a: f64, terms: &[(f64, &Buf)]) -> Result<()> {
    let terms = terms.iter().filter(|(c, _)| *c != 0.0);
    match out {
        Buf::Host(out) => {
            let terms = terms
                .map(|&(c, v)| Ok((c, v.host()?)))
                .collect::<Result<Vec<_>>>()?;
            if terms.iter().any(|(_, v)| v.len() != out.len()) {
                bail!("lincomb of buffers of different lengths");
            }
            // chunks in parallel (a sampler's state is serial work between NFEs otherwise), one
            // vectorised pass per term in each
            const CHUNK: usize = 8192;
            crate::pool::for_each_chunk(out, CHUNK, |i, out| {
                if a == 0.0 {
                    out.fill(0.0);
                } else if a != 1.0 {
                    out.iter_mut().for_each(|o| *o *= a);
                }
                for &(c, v) in &terms {
                    let v = &v[i * CHUNK..i * CHUNK + out.len()];
                    out.iter_mut().zip(v).for_each(|(o, v)| *o += c * v);
                }
            });
        }
        Buf::Device(out) => {
            let mut acc = if a == 0.0 {
                out.zeros_like()?
            } else if a == 1.0 {
                out.clone()
            } else {
                out.affine(a, 0.0)?
            };
            for &(c, v) in terms {
                acc = (acc + v.device()?.affine(c, 0.0)?)?;
            }
            *out = acc;
        }
    }
    Ok(())
}

/// Mean over rows (of length d) of their Euclidean norms.
pub fn host_mean_row_norm<T: Copy + Into<f64>>(v: &[T], d: usize) -> f64 {
    let norm = |row: &[T]| row.iter().map(|&x| x.into().powi(2)).sum::<f64>().sqrt();
    v.chunks(d).map(norm).sum::<f64>() / (v.len() / d).max(1) as f64
}

/// `host_mean_row_norm` of a tensor, on its device.
pub fn device_mean_row_norm(t: &Tensor, d: usize) -> Result<f64> {
    let rows = t
        .reshape((t.elem_count() / d.max(1), d))?
        .to_dtype(DType::F64)?;
    Ok(rows.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Round trips through f32 and f64 tensors, and a non-contiguous one (copied, not borrowed).
    #[test]
    fn values_round_trip() -> Result<()> {
        let y = [1.5, -2.25, 3.0, 0.125, 7.0, -0.5];
        for dtype in [DType::F32, DType::F64] {
            let like = Tensor::zeros((2, 3), dtype, &Device::Cpu)?;
            let t = unflat(&y, &like)?;
            assert_eq!((t.dims(), t.dtype()), (&[2, 3][..], dtype));
            let mut back = [0.0; 6];
            copy_values(&t, &mut back)?;
            assert_eq!(back, y);
            let tt = t.t()?; // [3 × 2], strided
            let mut back = [0.0; 6];
            copy_values(&tt, &mut back)?;
            assert_eq!(back, [1.5, 0.125, -2.25, 7.0, 3.0, -0.5]);
            assert!(copy_values(&t, &mut [0.0; 5]).is_err());
        }
        Ok(())
    }
}
