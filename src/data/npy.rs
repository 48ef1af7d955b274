//! NumPy `.npy` files in and out: [n, d], \[n\], or [n, ...event] (particles, images).

use super::Points;
use anyhow::{anyhow, bail, Context, Result};
use npyz::WriterBuilder;
use std::path::Path;

/// Reads a C-order little-endian `f32`/`f64` `.npy` file of n points: [n, d], \[n\] (as n × 1), or
/// [n, e₁, e₂, …] (each point an event of shape [e₁, e₂, …], e.g. particles [n, N, k]).
pub fn read_npy(path: &Path) -> Result<Points> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    points(&bytes, &p)
}

/// Parses the bytes of a `.npy` file as `read_npy` does (errors name the data ".npy data").
pub fn parse_npy(bytes: &[u8]) -> Result<Points> {
    points(bytes, ".npy data")
}

/// The points in `bytes`; `p` names them in errors.
fn points(bytes: &[u8], p: &str) -> Result<Points> {
    let (h, data) = Header::parse(bytes)
        .map_err(|e| anyhow!("{p}: not a valid .npy file (bad magic or header: {e})"))?;
    let size = match h.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => bail!(
            "{p}: dtype '{other}' is not supported; accepted dtypes are '<f4' (float32) and \
             '<f8' (float64); convert with arr.astype(np.float32)"
        ),
    };
    if h.fortran && h.shape.len() > 1 {
        bail!("{p}: array is stored in Fortran order; save np.ascontiguousarray(arr) instead");
    }
    let shape = &h.shape;
    let (n, event): (u64, &[u64]) = match shape[..] {
        [] => bail!("{p}: array is a scalar; expected one point per row, [n, d] or [n, ...event]"),
        [n] => (n, &[1]),
        [n, ref rest @ ..] => (n, rest),
    };
    let too_large = || anyhow!("{p}: shape {shape:?} is too large");
    let d = event
        .iter()
        .try_fold(1u64, |a, &e| a.checked_mul(e))
        .ok_or_else(too_large)?;
    if d == 0 {
        bail!("{p}: shape {shape:?} gives points of no values; expected [n, d] with d ≥ 1");
    }
    let need = n
        .checked_mul(d)
        .and_then(|v| v.checked_mul(size))
        .ok_or_else(too_large)?;
    if (data.len() as u64) < need {
        bail!(
            "{p}: truncated: header says shape {shape:?} ({need} data bytes) but only {} \
             bytes follow; re-export the file",
            data.len()
        );
    }
    // need ≤ data.len(): every size below fits a usize
    let (n, d) = (n as usize, d as usize);
    let data = &data[..need as usize];
    let values: Vec<f64> = if size == 4 {
        data.chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    };
    let event = if shape.len() == 1 {
        vec![1]
    } else {
        event.iter().map(|&e| e as usize).collect()
    };
    Points::new(n, d, values)
        .and_then(|x| x.with_event(event))
        .with_context(|| format!("{p}: inconsistent data length"))
}

/// The header of a `.npy` file (format versions 1 to 3): dtype descriptor, order and shape.
/// Parsed here, without recursion and with every size checked against the bytes present, so that
/// no header can make the reader allocate more than the file holds, overflow or recurse deeply.
#[derive(Debug)]
struct Header {
    /// The `descr` string ('<f4'), or the text of a structured dtype.
    descr: String,
    fortran: bool,
    shape: Vec<u64>,
}

impl Header {
    /// The header and the data bytes after it.
    fn parse(bytes: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
        let magic = b"\x93NUMPY";
        if bytes.len() < 10 || &bytes[..6] != magic {
            return Err("no \\x93NUMPY magic".into());
        }
        let (len, start): (usize, usize) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            v => return Err(format!("format version {v} is not 1, 2 or 3")),
        };
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or("the header runs past the end of the file")?;
        let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not UTF-8")?;
        Ok((Self::parse_dict(text)?, &bytes[end..]))
    }

    /// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }`
    fn parse_dict(text: &str) -> std::result::Result<Header, String> {
        let mut c = Cursor {
            s: text.as_bytes(),
            i: 0,
        };
        c.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            c.skip_ws();
            if c.eat(b'}') {
                break;
            }
            let key = c.string()?;
            c.skip_ws();
            c.expect(b':')?;
            c.skip_ws();
            match key.as_str() {
                "descr" => {
                    descr = Some(if c.peek() == Some(b'\'') || c.peek() == Some(b'"') {
                        c.string()?
                    } else {
                        c.skip_value()?
                    })
                }
                "fortran_order" => {
                    fortran = Some(if c.word("True") {
                        true
                    } else if c.word("False") {
                        false
                    } else {
                        return Err("'fortran_order' is not True or False".into());
                    })
                }
                "shape" => shape = Some(c.tuple()?),
                other => return Err(format!("unknown header key '{other}'")),
            }
            c.skip_ws();
            if !c.eat(b',') {
                c.skip_ws();
                c.expect(b'}')?;
                break;
            }
        }
        Ok(Header {
            descr: descr.ok_or("the header has no 'descr'")?,
            fortran: fortran.ok_or("the header has no 'fortran_order'")?,
            shape: shape.ok_or("the header has no 'shape'")?,
        })
    }
}

/// A position in a header's text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }
    fn expect(&mut self, b: u8) -> std::result::Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", b as char, self.i))
        }
    }
    fn word(&mut self, w: &str) -> bool {
        let hit = self.s[self.i..].starts_with(w.as_bytes());
        if hit {
            self.i += w.len();
        }
        hit
    }
    /// A quoted string (no escapes: none occur in a header's keys or dtypes).
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        let from = self.i + 1;
        let len = self.s[from..]
            .iter()
            .position(|&b| b == q)
            .ok_or("unterminated string")?;
        self.i = from + len + 1;
        Ok(String::from_utf8_lossy(&self.s[from..from + len]).into_owned())
    }
    /// A tuple of non-negative integers: `()`, `(3,)`, `(3, 2)`.
    fn tuple(&mut self) -> std::result::Result<Vec<u64>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let from = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[from..self.i]).map_err(|e| e.to_string())?;
            out.push(
                digits
                    .parse::<u64>()
                    .map_err(|_| format!("bad shape entry at byte {from}"))?,
            );
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
    /// Any other value (a structured dtype's list): skipped by counting brackets; its text.
    fn skip_value(&mut self) -> std::result::Result<String, String> {
        let from = self.i;
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'\'' | b'"' => {
                    self.string()?;
                    continue;
                }
                b'[' | b'(' | b'{' => depth += 1,
                b']' | b')' | b'}' if depth > 0 => depth -= 1,
                b',' | b'}' if depth == 0 => break,
                _ => {}
            }
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[from..self.i]).into_owned())
    }
}

/// Writes points as a C-order `.npy` file of shape [n, ...event], `f64` (`<f8`) if `f64` is true
/// else `f32` (`<f4`).
pub fn write_npy(path: &Path, x: &Points, f64: bool) -> Result<()> {
    let p = path.display();
    let shape: Vec<u64> = std::iter::once(x.n)
        .chain(x.event_shape())
        .map(|v| v as u64)
        .collect();
    crate::io::write_atomic(path, |w| {
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
    })
}

/// Writes per-point values as a 1-D `f32` `.npy` file.
pub fn write_npy_f32_1d(path: &Path, values: &[f64]) -> Result<()> {
    write_1d(path, values.iter().map(|&v| v as f32), values.len())
}

/// Writes class labels, one per point, as a 1-D `<i8` (int64) `.npy` file (`read_labels` reads it).
pub fn write_labels(path: &Path, labels: &[u32]) -> Result<()> {
    write_1d(path, labels.iter().map(|&l| i64::from(l)), labels.len())
}

/// Writes `len` values as a 1-D `.npy` file of their type.
fn write_1d<T: npyz::Serialize + npyz::AutoSerialize>(
    path: &Path,
    values: impl Iterator<Item = T>,
    len: usize,
) -> Result<()> {
    let p = path.display();
    crate::io::write_atomic(path, |w| {
        npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&[len as u64])
            .writer(w)
            .begin_nd()
            .and_then(|mut wr| {
                wr.extend(values)?;
                wr.finish()
            })
            .with_context(|| format!("{p}: writing .npy failed"))
    })
}

/// Reads integer class labels, one per point: a 1-D (or [n, 1]) `.npy` of any integer dtype
/// (`|u1`, `|i1`, `<u2`, `<i2`, `<u4`, `<i4`, `<u8`, `<i8`), each a non-negative class index.
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    labels(&bytes, &p)
}

/// Parses the bytes of a labels `.npy` file as `read_labels` does.
pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u32>> {
    labels(bytes, ".npy labels")
}

fn labels(bytes: &[u8], p: &str) -> Result<Vec<u32>> {
    let (h, data) =
        Header::parse(bytes).map_err(|e| anyhow!("{p}: not a valid .npy file ({e})"))?;
    let shape = &h.shape;
    let n = match shape[..] {
        [n] | [n, 1] => n,
        _ => {
            bail!("{p}: labels have shape {shape:?}; expected one integer per point, [n] or [n, 1]")
        }
    };
    // (an [n, 1] array reads the same in either order)
    let (size, signed) = match h.descr.as_str() {
        "|u1" => (1, false),
        "|i1" => (1, true),
        "<u2" => (2, false),
        "<i2" => (2, true),
        "<u4" => (4, false),
        "<i4" => (4, true),
        "<u8" => (8, false),
        "<i8" => (8, true),
        other => bail!(
            "{p}: labels have dtype {other}; class labels are integers (e.g. arr.astype(np.int64))"
        ),
    };
    let need = n.checked_mul(size).filter(|&b| b <= data.len() as u64);
    let Some(need) = need else {
        bail!(
            "{p}: reading labels (truncated: header says {n} labels of {size} bytes, {} bytes follow)",
            data.len()
        );
    };
    data[..need as usize]
        .chunks_exact(size as usize)
        .enumerate()
        .map(|(i, c)| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            let v: i128 = if signed {
                // sign-extend from the value's width
                let shift = 64 - 8 * c.len() as u32;
                i128::from((i64::from_le_bytes(b) << shift) >> shift)
            } else {
                i128::from(u64::from_le_bytes(b))
            };
            u32::try_from(v).map_err(|_| {
                anyhow!("{p}: label {v} of point {i} is not a class index (0, 1, 2, …)")
            })
        })
        .collect()
}
