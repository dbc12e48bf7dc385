//! ISO-BMFF (`ftyp`) family: AVIF is detected and its size read from `ispe`, but
//! decoding is not available yet (it needs dav1d), so parse() reports it as
//! unsupported. HEIC and friends are named in the error.

use super::{be32, Mode};
use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::pipeline::{Plan, Rendition};
use crate::probe::{Format, Info};
use image::DynamicImage;
use ravif::{Img, RGB8, RGBA8};

/// Decides between AVIF and other ftyp-based formats from the brands.
pub fn sniff_ftyp(d: &[u8]) -> Result<Format> {
    let box_len = be32(d, 0).unwrap_or(0) as usize;
    let end = box_len.clamp(8, d.len().min(256));
    let brands: Vec<&[u8]> = d.get(8..end).unwrap_or_default().chunks_exact(4).collect();
    let has = |names: &[&[u8]]| brands.iter().any(|b| names.contains(b));
    if has(&[b"avif", b"avis"]) {
        return Ok(Format::Avif);
    }
    if has(&[
        b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1",
    ]) {
        return Err(Error::unsupported("HEIC"));
    }
    if has(&[b"qt  "]) {
        return Err(Error::unsupported("QuickTime video"));
    }
    if has(&[b"isom", b"mp41", b"mp42", b"iso2", b"avc1", b"M4V "]) {
        return Err(Error::unsupported("MP4 video"));
    }
    Err(Error::unsupported("ISO media file"))
}

/// Size from the first `ispe` property (searched in the header bytes).
pub fn dimensions(d: &[u8]) -> Option<(u32, u32)> {
    let head = &d[..d.len().min(64 * 1024)];
    let at = head.windows(4).position(|w| w == b"ispe")?;
    // "ispe" + version/flags (4) + width (4) + height (4)
    Some((be32(head, at + 8)?, be32(head, at + 12)?))
}

pub fn parse(d: &[u8], limits: &Limits, _mode: Mode) -> Result<Info> {
    if let Some((w, h)) = dimensions(d) {
        limits.check_dimensions(u64::from(w), u64::from(h))?;
        return Err(Error::Unsupported(format!(
            "unsupported format: AVIF ({w}x{h}; AVIF input is not supported yet)"
        )));
    }
    Err(Error::unsupported("AVIF"))
}

/// AVIF (ravif/rav1e) of the first frame of a rendition; alpha kept.
pub fn encode(r: &Rendition, plan: &Plan) -> Result<Vec<u8>> {
    let err = |detail: String| Error::Encode {
        format: "avif",
        detail,
    };
    let first = r.frames.first().ok_or_else(|| err("no frames".into()))?;
    let (w, h) = (r.width as usize, r.height as usize);
    let encoder = ravif::Encoder::new()
        .with_quality(plan.avif_quality.clamp(1.0, 100.0))
        .with_alpha_quality(plan.avif_quality.clamp(1.0, 100.0))
        .with_speed(plan.avif_speed.clamp(1, 10));
    let encoded = match &first.image {
        DynamicImage::ImageRgba8(b) => {
            let px: Vec<RGBA8> = b
                .as_raw()
                .chunks_exact(4)
                .map(|c| RGBA8::new(c[0], c[1], c[2], c[3]))
                .collect();
            encoder.encode_rgba(Img::new(px.as_slice(), w, h))
        }
        DynamicImage::ImageRgb8(b) => {
            let px: Vec<RGB8> = b
                .as_raw()
                .chunks_exact(3)
                .map(|c| RGB8::new(c[0], c[1], c[2]))
                .collect();
            encoder.encode_rgb(Img::new(px.as_slice(), w, h))
        }
        _ => return Err(err("unexpected pixel layout".into())),
    }
    .map_err(|e| err(e.to_string()))?;
    Ok(encoded.avif_file)
}
