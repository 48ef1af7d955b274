//! Tensors ↔ flat buffers: the fused kernels and the ODE and SDE solvers keep their state in
//! plain slices and meet candle's tensors only at a model's inputs and outputs.

use anyhow::Result;
use candle_core::{Storage, Tensor, WithDType};

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
