//! Format detection from magic bytes and header-only probing.
//!
//! Nothing here decodes pixels or allocates in proportion to the image size; the
//! limits are checked from the header so bombs are rejected in microseconds.

use crate::codecs::{self, Mode};
use crate::errors::{Error, Result};
use crate::limits::Limits;

/// Formats the core accepts (AVIF is detected but not yet decodable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Webp,
    Avif,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Gif => "gif",
            Format::Webp => "webp",
            Format::Avif => "avif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
        }
    }
}

/// What the header says about an image.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    pub format: Format,
    /// Stored size in px (before EXIF orientation); for GIF the union of the
    /// logical screen and every frame rectangle.
    pub width: u32,
    pub height: u32,
    /// 1 for stills, the frame count for animations.
    pub frames: u32,
    /// EXIF orientation 1..=8.
    pub orientation: u8,
}

/// Detects the container from magic bytes. Errors name what was found instead.
pub fn sniff(data: &[u8]) -> Result<Format> {
    if data.is_empty() {
        return Err(Error::corrupt("empty file"));
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    if data.get(4..8) == Some(b"ftyp") {
        return codecs::avif::sniff_ftyp(data);
    }
    Err(unsupported_kind(data))
}

/// Names the kind of a non-image (or unaccepted image) input.
fn unsupported_kind(data: &[u8]) -> Error {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF", "PDF"),
        (b"II*\0", "TIFF"),
        (b"MM\0*", "TIFF"),
        (b"BM", "BMP"),
        (b"\0\0\x01\0", "ICO"),
        (b"8BPS", "PSD"),
        (b"\xFF\x0A", "JPEG XL"),
        (b"\0\0\0\x0cJXL ", "JPEG XL"),
        (b"\xFF\x4F\xFF\x51", "JPEG 2000"),
        (b"\0\0\0\x0cjP  ", "JPEG 2000"),
        (b"PK\x03\x04", "ZIP archive"),
        (b"\x1f\x8b", "gzip archive"),
        (b"qoif", "QOI"),
        (b"RIFF", "RIFF (not WebP)"),
    ];
    for (magic, name) in MAGIC {
        if data.starts_with(magic) {
            return Error::unsupported(name);
        }
    }
    let head = &data[..data.len().min(4096)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if text.contains("<svg") {
        return Error::unsupported("SVG");
    }
    if trimmed.starts_with("<!doctype html") || trimmed.starts_with("<html") {
        return Error::unsupported("HTML");
    }
    if trimmed.starts_with("<?xml") {
        return Error::unsupported("XML");
    }
    let printable = head
        .iter()
        .filter(|&&b| {
            b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
        })
        .count();
    if printable * 100 >= head.len() * 95 && std::str::from_utf8(head).is_ok() {
        return Error::Unsupported("not an image (text)".into());
    }
    Error::Unsupported("not an image (unknown binary data)".into())
}

/// Header-only probe; works on a prefix of the file.
pub fn probe(data: &[u8], limits: &Limits) -> Result<Info> {
    parse(data, limits, Mode::Prefix)
}

/// Probe plus a structural completeness check of the whole file (no pixel decode).
pub fn verify(data: &[u8], limits: &Limits) -> Result<Info> {
    limits.check_input_len(data.len())?;
    parse(data, limits, Mode::Whole)
}

fn parse(data: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    let info = match sniff(data)? {
        Format::Jpeg => codecs::jpeg::parse(data, limits, mode)?,
        Format::Png => codecs::png::parse(data, limits, mode)?,
        Format::Gif => codecs::gif::parse(data, limits, mode)?,
        Format::Webp => codecs::webp::parse(data, limits, mode)?,
        Format::Avif => codecs::avif::parse(data, limits, mode)?,
    };
    limits.check_dimensions(u64::from(info.width), u64::from(info.height))?;
    let area = u64::from(info.width) * u64::from(info.height);
    limits.check_frames(
        u64::from(info.frames),
        area.saturating_mul(u64::from(info.frames)),
    )?;
    Ok(info)
}
