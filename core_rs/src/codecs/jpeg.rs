//! JPEG: marker walk for size/orientation (probe) and EOI presence (verify).

use super::{be16, Mode};
use crate::errors::{Error, Result};
use crate::exif;
use crate::limits::Limits;
use crate::pipeline::{Plan, Rendition};
use crate::probe::{Format, Info};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ExtendedColorType};

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Markers that carry no length field.
fn is_standalone(marker: u8) -> bool {
    matches!(marker, 0x01 | 0xD0..=0xD7 | SOI | EOI)
}

/// Walks the marker segments. In `Prefix` mode stops at the first SOF (after
/// having seen the APP1 EXIF that precedes it); in `Whole` mode also walks the
/// entropy-coded data of every scan until EOI.
pub fn parse(d: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    let mut pos = 2; // after SOI
    let mut size: Option<(u32, u32)> = None;
    let mut orientation = 1;
    let mut scans: u64 = 0;
    loop {
        // find the next marker (skip fill bytes)
        let Some(&ff) = d.get(pos) else {
            return end_of_data(size, orientation, mode);
        };
        if ff != 0xFF {
            return Err(Error::corrupt(format!(
                "corrupt JPEG: expected a marker at byte {pos}"
            )));
        }
        let mut m = pos + 1;
        while d.get(m) == Some(&0xFF) {
            m += 1;
        }
        let Some(&marker) = d.get(m) else {
            return end_of_data(size, orientation, mode);
        };
        pos = m + 1;
        if marker == EOI {
            return finish(size, orientation);
        }
        if is_standalone(marker) {
            continue;
        }
        let Some(len) = be16(d, pos) else {
            return end_of_data(size, orientation, mode);
        };
        let len = usize::from(len);
        if len < 2 {
            return Err(Error::corrupt("corrupt JPEG: bad segment length"));
        }
        let body = d.get(pos + 2..pos + len);
        if marker == 0xE1 && orientation == 1 {
            if let Some(b) = body.filter(|b| b.starts_with(b"Exif\0\0")) {
                orientation = exif::orientation(b);
            }
        }
        if is_sof(marker) {
            if size.is_some() {
                // one frame per file (no hierarchical JPEG): a second SOF is damage, often an
                // unstuffed 0xFF in the entropy data, and its "size" is noise, not a limit breach
                return Err(Error::corrupt(format!(
                    "corrupt JPEG: a second frame header (SOF) at byte {}",
                    m - 1
                )));
            }
            let Some(b) = body else {
                return end_of_data(size, orientation, mode);
            };
            let (h, w) = (be16(b, 1), be16(b, 3));
            let (Some(h), Some(w)) = (h, w) else {
                return Err(Error::corrupt("corrupt JPEG: short frame header"));
            };
            if w == 0 || h == 0 {
                return Err(Error::corrupt("corrupt JPEG: zero width or height"));
            }
            limits.check_dimensions(u64::from(w), u64::from(h))?;
            size = Some((u32::from(w), u32::from(h)));
            if mode == Mode::Prefix {
                return finish(size, orientation);
            }
        }
        pos += len;
        if marker == SOS {
            scans += 1;
            if scans > limits.max_scans {
                return Err(Error::Limit(format!(
                    "JPEG has more than {} scans (the scan limit)",
                    limits.max_scans
                )));
            }
            pos = skip_entropy_data(d, pos);
        }
    }
}

/// How a JPEG is coded, from the marker segments before its first scan: what the
/// DCT-scaled decode (`steps::decode`) needs to know to take the file or leave it to
/// the full decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    /// Low byte of the SOF marker: 0xC0 baseline, 0xC1 extended sequential, 0xC2
    /// progressive (Huffman); the others are lossless, hierarchical or arithmetic.
    pub sof: u8,
    /// Sample precision in bits (8 or 12 in practice).
    pub precision: u8,
    /// Component identifiers in frame-header order (their count is the component count).
    pub component_ids: Vec<u8>,
    /// Each component's sampling factors `(horizontal, vertical)`, 1..=4, in the same order.
    pub sampling: Vec<(u8, u8)>,
    /// Colour transform byte of the last Adobe APP14 segment (0 RGB or CMYK, 1 YCbCr,
    /// 2 YCCK), if there is one.
    pub adobe_transform: Option<u8>,
}

impl FrameLayout {
    /// True for a three-component JPEG whose second or third component (the chroma of a
    /// YCbCr file) is sampled more finely than the first on either axis, as
    /// `cjpeg -sample 1x1,2x2,2x2` writes. Legal (ITU T.81 allows any factors 1..=4), rare,
    /// and decoded with wrong colours by zune-jpeg 0.4 (measured: a mean shift of about 50
    /// levels), so `steps::decode` takes these through jpeg-decoder instead.
    pub fn chroma_finer_than_luma(&self) -> bool {
        match self.sampling.as_slice() {
            [(lh, lv), chroma @ ..] if chroma.len() == 2 => {
                chroma.iter().any(|&(h, v)| h > *lh || v > *lv)
            }
            _ => false,
        }
    }
}

/// The [`FrameLayout`] of `d` (a JPEG whose structure `parse` already accepted), or
/// `None` when the markers before the first scan do not give one cleanly (no frame
/// header, a second one, a short segment).
pub fn frame_layout(d: &[u8]) -> Option<FrameLayout> {
    let mut pos = 2; // after SOI
    let mut layout: Option<FrameLayout> = None;
    let mut adobe_transform = None;
    loop {
        if *d.get(pos)? != 0xFF {
            return None;
        }
        let mut m = pos + 1;
        while d.get(m) == Some(&0xFF) {
            m += 1;
        }
        let marker = *d.get(m)?;
        pos = m + 1;
        if marker == EOI {
            return None;
        }
        if is_standalone(marker) {
            continue;
        }
        let len = usize::from(be16(d, pos)?);
        let body = d.get(pos + 2..pos.checked_add(len)?)?;
        if marker == 0xEE && body.starts_with(b"Adobe") {
            // "Adobe", version (2), flags0 (2), flags1 (2), transform (1)
            adobe_transform = Some(*body.get(11)?);
        }
        if is_sof(marker) {
            if layout.is_some() {
                return None;
            }
            let count = usize::from(*body.get(5)?);
            let component_ids = (0..count)
                .map(|i| body.get(6 + 3 * i).copied())
                .collect::<Option<Vec<u8>>>()?;
            let sampling = (0..count)
                .map(|i| body.get(7 + 3 * i).map(|&f| (f >> 4, f & 0x0F)))
                .collect::<Option<Vec<(u8, u8)>>>()?;
            layout = Some(FrameLayout {
                sof: marker,
                precision: *body.first()?,
                component_ids,
                sampling,
                adobe_transform: None,
            });
        }
        if marker == SOS {
            return layout.map(|l| FrameLayout {
                adobe_transform,
                ..l
            });
        }
        pos += len;
    }
}

/// Returns the offset of the next real marker after entropy-coded data
/// (skipping stuffed 0xFF00 and restart markers), or `d.len()`.
fn skip_entropy_data(d: &[u8], mut pos: usize) -> usize {
    while pos + 1 < d.len() {
        if d[pos] == 0xFF {
            let next = d[pos + 1];
            if next != 0x00 && next != 0xFF && !(0xD0..=0xD7).contains(&next) {
                return pos;
            }
            pos += if next == 0xFF { 1 } else { 2 };
        } else {
            // fast path: jump to the next 0xFF
            match d[pos..].iter().position(|&b| b == 0xFF) {
                Some(off) => pos += off,
                None => return d.len(),
            }
        }
    }
    d.len()
}

fn end_of_data(size: Option<(u32, u32)>, orientation: u8, mode: Mode) -> Result<Info> {
    match (mode, size) {
        (Mode::Prefix, Some(_)) => finish(size, orientation),
        (Mode::Prefix, None) => Err(Error::truncated("JPEG data ends before the frame header")),
        (Mode::Whole, Some(_)) => Err(Error::truncated(
            "JPEG data ends before the end-of-image marker",
        )),
        (Mode::Whole, None) => Err(Error::truncated("JPEG data ends before the frame header")),
    }
}

fn finish(size: Option<(u32, u32)>, orientation: u8) -> Result<Info> {
    let Some((width, height)) = size else {
        return Err(Error::corrupt(
            "corrupt JPEG: no frame header before end of image",
        ));
    };
    Ok(Info {
        format: Format::Jpeg,
        width,
        height,
        frames: 1,
        orientation,
    })
}

/// Baseline JPEG (JFIF only, no EXIF/ICC) of the first frame; alpha is
/// flattened onto `plan.background`.
pub fn encode(r: &Rendition, plan: &Plan) -> Result<Vec<u8>> {
    let err = |detail: String| Error::Encode {
        format: "jpeg",
        detail,
    };
    let first = r.frames.first().ok_or_else(|| err("no frames".into()))?;
    let rgb: std::borrow::Cow<'_, [u8]> = match &first.image {
        DynamicImage::ImageRgb8(b) => std::borrow::Cow::Borrowed(b.as_raw()),
        DynamicImage::ImageRgba8(b) => {
            std::borrow::Cow::Owned(flatten(b.as_raw(), plan.background))
        }
        _ => return Err(err("unexpected pixel layout".into())),
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, plan.jpeg_quality.clamp(1, 100))
        .encode(&rgb, r.width, r.height, ExtendedColorType::Rgb8)
        .map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// Composites straight-alpha RGBA onto an opaque background colour.
fn flatten(rgba: &[u8], bg: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for c in 0..3 {
            let v = (u32::from(px[c]) * a + u32::from(bg[c]) * (255 - a) + 127) / 255;
            out.push(v as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{frame_layout, FrameLayout};
    use image::codecs::jpeg::JpegEncoder;
    use image::ExtendedColorType;

    fn encoded(width: u32, height: u32, colour: ExtendedColorType) -> Vec<u8> {
        let channels = if colour == ExtendedColorType::L8 {
            1
        } else {
            3
        };
        let pixels = vec![128u8; (width * height) as usize * channels];
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .encode(&pixels, width, height, colour)
            .unwrap();
        out
    }

    /// Inserts an Adobe APP14 segment with colour transform `transform` after SOI.
    fn with_adobe(jpeg: &[u8], transform: u8) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xEE, 0, 14]);
        out.extend_from_slice(b"Adobe\0\x64\0\0\0\0");
        out.push(transform);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn layout_of_rgb_grey_and_adobe_files() {
        let rgb = encoded(40, 30, ExtendedColorType::Rgb8);
        assert_eq!(
            frame_layout(&rgb),
            Some(FrameLayout {
                sof: 0xC0,
                precision: 8,
                component_ids: vec![1, 2, 3],
                sampling: vec![(1, 1), (1, 1), (1, 1)], // the image crate writes 4:4:4
                adobe_transform: None,
            })
        );
        assert!(!frame_layout(&rgb).unwrap().chroma_finer_than_luma());
        // the same header with luma 1x1 and chroma 2x1 (only the frame header is read)
        let mut finer = rgb.clone();
        let sof = finer.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        for (i, factors) in [0x11, 0x21, 0x21].into_iter().enumerate() {
            finer[sof + 2 + 2 + 6 + 1 + 3 * i] = factors; // marker, length, P Y X Nf, then C H|V Tq
        }
        let layout = frame_layout(&finer).unwrap();
        assert_eq!(layout.sampling, vec![(1, 1), (2, 1), (2, 1)]);
        assert!(layout.chroma_finer_than_luma());
        let grey = frame_layout(&encoded(40, 30, ExtendedColorType::L8)).unwrap();
        assert_eq!(grey.component_ids.len(), 1);
        assert_eq!(
            frame_layout(&with_adobe(&rgb, 0)).unwrap().adobe_transform,
            Some(0)
        );
        assert_eq!(
            frame_layout(&with_adobe(&rgb, 1)).unwrap().adobe_transform,
            Some(1)
        );
    }

    #[test]
    fn no_layout_without_a_clean_frame_header() {
        let rgb = encoded(40, 30, ExtendedColorType::Rgb8);
        assert_eq!(frame_layout(&rgb[..20]), None); // cut before the frame header
        assert_eq!(frame_layout(&[0xFF, 0xD8, 0xFF, 0xD9]), None); // SOI, EOI
        assert_eq!(frame_layout(&[0xFF, 0xD8, 0x00]), None); // not a marker
    }
}
