//! IDX files (the MNIST format), gzip-compressed or plain: a big-endian header (two zero bytes,
//! the type 0x08 = u8, the number of dimensions, each dimension as u32), then the raw bytes.
//! Magic 2051 = images u8 [n, rows, cols]; magic 2049 = labels u8 \[n\].

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// Magic number of an IDX file of u8 images [n, rows, cols].
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of u8 labels \[n\].
pub const LABELS_MAGIC: u32 = 2049;

/// u8 images [n, rows, cols] as stored in an IDX file, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// n · rows · cols bytes, one image after another.
    pub pixels: Vec<u8>,
}

/// The bytes of `path`, gunzipped when they start with gzip's magic (1f 8b).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let p = path.display();
    let raw = std::fs::read(path).with_context(|| format!("{p}: cannot read file"))?;
    gunzip_if_needed(raw).with_context(|| format!("{p}: not a valid gzip file"))
}

/// `raw` itself, or its decompression when it is gzip data.
fn gunzip_if_needed(raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The header's dimensions and the data after it, checking the magic (`want`) and that exactly
/// the bytes the dimensions promise follow; `p` names the file in errors.
fn body<'a>(bytes: &'a [u8], want: u32, p: &str) -> Result<(Vec<usize>, &'a [u8])> {
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(magic) = u32_at(0) else {
        bail!(
            "{p}: truncated: {} bytes, shorter than an IDX header",
            bytes.len()
        );
    };
    if magic != want {
        let what = if want == IMAGES_MAGIC {
            "images"
        } else {
            "labels"
        };
        bail!("{p}: bad magic {magic}; an IDX file of u8 {what} starts with {want}");
    }
    let ndim = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(ndim);
    for k in 0..ndim {
        match u32_at(4 + 4 * k) {
            Some(v) => dims.push(v as usize),
            None => bail!("{p}: truncated inside the IDX header"),
        }
    }
    let data = &bytes[4 + 4 * ndim..];
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{p}: dimensions {dims:?} are too large"))?;
    if data.len() < need {
        bail!(
            "{p}: truncated: dimensions {dims:?} need {need} bytes but {} follow the header",
            data.len()
        );
    }
    if data.len() > need {
        bail!(
            "{p}: {} bytes follow the header, more than the {need} its dimensions {dims:?} hold",
            data.len()
        );
    }
    Ok((dims, data))
}

/// Parses IDX image bytes (gzip or plain); `p` names them in errors.
pub fn parse_idx_images(raw: Vec<u8>, p: &str) -> Result<IdxImages> {
    let bytes = gunzip_if_needed(raw).with_context(|| format!("{p}: not a valid gzip file"))?;
    let (dims, data) = body(&bytes, IMAGES_MAGIC, p)?;
    let [n, rows, cols] = dims[..] else {
        bail!("{p}: images have dimensions {dims:?}; expected [n, rows, cols]");
    };
    if rows == 0 || cols == 0 {
        bail!("{p}: images of {rows} × {cols} pixels hold nothing");
    }
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

/// Parses IDX label bytes (gzip or plain) into one label per image; `p` names them in errors.
pub fn parse_idx_labels(raw: Vec<u8>, p: &str) -> Result<Vec<u32>> {
    let bytes = gunzip_if_needed(raw).with_context(|| format!("{p}: not a valid gzip file"))?;
    let (dims, data) = body(&bytes, LABELS_MAGIC, p)?;
    if dims.len() != 1 {
        bail!("{p}: labels have dimensions {dims:?}; expected [n]");
    }
    Ok(data.iter().map(|&b| b as u32).collect())
}

/// Reads an IDX images file (`.gz` or plain).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_idx_images(read_bytes(path)?, &path.display().to_string())
}

/// Reads an IDX labels file (`.gz` or plain).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    parse_idx_labels(read_bytes(path)?, &path.display().to_string())
}

/// Whether `path` names an IDX file: `.idx`, `.gz`, or an MNIST-style `…-ubyte` name.
pub fn is_idx_path(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".gz") || name.ends_with(".idx") || name.ends_with("-ubyte")
}

/// The bytes of an IDX file with `magic` and dimensions `dims` holding `data` (tests, examples).
pub fn encode_idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("in-memory gzip");
        e.finish().expect("in-memory gzip")
    }

    #[test]
    fn reads_plain_and_gzip_images_and_labels() -> Result<()> {
        let pixels: Vec<u8> = (0..2 * 3 * 2).map(|v| v as u8 * 7).collect();
        let img = encode_idx(IMAGES_MAGIC, &[2, 3, 2], &pixels);
        for bytes in [img.clone(), gz(&img)] {
            let im = parse_idx_images(bytes, "t")?;
            assert_eq!((im.n, im.rows, im.cols), (2, 3, 2));
            assert_eq!(im.pixels, pixels);
        }
        let lab = encode_idx(LABELS_MAGIC, &[3], &[4, 0, 9]);
        for bytes in [lab.clone(), gz(&lab)] {
            assert_eq!(parse_idx_labels(bytes, "t")?, vec![4, 0, 9]);
        }
        Ok(())
    }

    #[test]
    fn bad_files_give_one_line_errors_naming_the_file() {
        let err = |r: Result<IdxImages>| format!("{:#}", r.expect_err("must fail"));
        let img = encode_idx(IMAGES_MAGIC, &[2, 2, 2], &[0; 8]);
        // bad magic: labels read as images, and the other way round
        let e = err(parse_idx_images(
            encode_idx(LABELS_MAGIC, &[2], &[1, 2]),
            "f.idx",
        ));
        assert!(e.contains("f.idx") && e.contains("bad magic"), "{e}");
        let e = format!(
            "{:#}",
            parse_idx_labels(img.clone(), "l.gz").expect_err("images are not labels")
        );
        assert!(e.contains("l.gz") && e.contains("bad magic"), "{e}");
        // truncated data, header, and a truncated gzip stream
        let e = err(parse_idx_images(img[..img.len() - 1].to_vec(), "f.idx"));
        assert!(e.contains("truncated"), "{e}");
        let e = err(parse_idx_images(img[..9].to_vec(), "f.idx"));
        assert!(e.contains("truncated"), "{e}");
        let z = gz(&img);
        let e = err(parse_idx_images(z[..z.len() / 2].to_vec(), "f.gz"));
        assert!(e.contains("f.gz"), "{e}");
        // images without pixels
        let e = err(parse_idx_images(
            encode_idx(IMAGES_MAGIC, &[2, 0, 3], &[]),
            "f.idx",
        ));
        assert!(e.contains("hold nothing") && !e.contains('\n'), "{e}");
        // trailing bytes
        let mut long = img;
        long.push(0);
        let e = err(parse_idx_images(long, "f.idx"));
        assert!(e.contains("more than") && !e.contains('\n'), "{e}");
    }
}
