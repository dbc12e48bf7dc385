//! Source metadata: the useful EXIF fields returned as data (kamadak-exif), and
//! a lossless copy of the original with its metadata removed.
//!
//! Stripping never touches pixel data: JPEG keeps every segment except APPn
//! (JFIF APP0, ICC APP2 and Adobe APP14 stay, as they change how pixels decode)
//! and COM, and ends at the end-of-image marker (appended data is dropped); PNG drops tEXt/zTXt/iTXt/eXIf/tIME chunks; WebP drops the EXIF and
//! XMP chunks and clears their VP8X flags; AVIF has its EXIF/XMP items blanked in
//! place (`isobmff_meta`). GIF is returned unchanged.
//! A source whose EXIF orientation is not 1 gets a minimal 26-byte EXIF block
//! with only that tag back (as `exiftool -all= -tagsfromfile @ -Orientation`
//! does), so the stripped original still displays upright.

use std::io::Cursor;

use exif::{In, Reader, Tag, Value};

use crate::codecs::{be16, be32, le32};
use crate::errors::{Error, Result};
use crate::probe::{self, Format};

/// EXIF fields worth keeping: (key, display text), in a fixed order. GPS is
/// returned separately (decimal degrees) so only the owner is shown it.
pub struct ExifData {
    pub fields: Vec<(String, String)>,
    pub gps: Option<(f64, f64)>,
}

fn ascii(v: &Value) -> Option<String> {
    let Value::Ascii(parts) = v else {
        return None;
    };
    let s = parts
        .iter()
        .map(|p| {
            String::from_utf8_lossy(p)
                .trim_matches(['\0', ' '])
                .to_owned()
        })
        .find(|s| !s.is_empty())?;
    Some(s.chars().take(200).collect())
}

/// Element `i` of a RATIONAL or SRATIONAL value (some phones write GPS as SRATIONAL).
fn ratio(v: &Value, i: usize) -> Option<f64> {
    let (num, denom) = match v {
        Value::Rational(r) => r.get(i).map(|x| (f64::from(x.num), f64::from(x.denom)))?,
        Value::SRational(r) => r.get(i).map(|x| (f64::from(x.num), f64::from(x.denom)))?,
        _ => return None,
    };
    (denom != 0.0).then(|| num / denom)
}

fn degrees(v: &Value) -> Option<f64> {
    Some(ratio(v, 0)? + ratio(v, 1).unwrap_or(0.0) / 60.0 + ratio(v, 2).unwrap_or(0.0) / 3600.0)
}

/// "1/60 s", "1/1848 s", "2.5 s", "30 s".
fn exposure(v: &Value) -> Option<String> {
    let t = ratio(v, 0).filter(|t| *t > 0.0 && t.is_finite())?;
    Some(if t < 0.5 {
        format!("1/{} s", (1.0 / t).round())
    } else if (t - t.round()).abs() < 0.05 {
        format!("{} s", t.round())
    } else {
        format!("{t:.1} s")
    })
}

/// Reads the EXIF block of a JPEG, PNG, WebP or AVIF file. Absent or broken EXIF
/// gives empty data, never an error: metadata is optional.
pub fn read(data: &[u8]) -> ExifData {
    let mut out = ExifData {
        fields: Vec::new(),
        gps: None,
    };
    let Ok(exif) = Reader::new().read_from_container(&mut Cursor::new(data)) else {
        return out;
    };
    let get = |tag: Tag| exif.get_field(tag, In::PRIMARY).map(|f| &f.value);
    let text = |tag: Tag| get(tag).and_then(ascii);
    let shown = |tag: Tag| {
        exif.get_field(tag, In::PRIMARY)
            .map(|f| f.display_value().with_unit(&exif).to_string())
            .filter(|s| !s.is_empty() && s.len() <= 64)
    };
    let mut push = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            out.fields.push((key.to_owned(), v));
        }
    };
    push("make", text(Tag::Make));
    push("model", text(Tag::Model));
    push("lens", text(Tag::LensModel).or_else(|| text(Tag::LensMake)));
    push(
        "taken_at",
        text(Tag::DateTimeOriginal).or_else(|| text(Tag::DateTime)),
    );
    push("exposure_time", get(Tag::ExposureTime).and_then(exposure));
    push("f_number", shown(Tag::FNumber));
    push(
        "iso",
        get(Tag::PhotographicSensitivity)
            .and_then(|v| v.get_uint(0))
            .map(|n| n.to_string()),
    );
    push("focal_length", shown(Tag::FocalLength));
    let lat = get(Tag::GPSLatitude).and_then(degrees);
    let lon = get(Tag::GPSLongitude).and_then(degrees);
    if let (Some(lat), Some(lon)) = (lat, lon) {
        let south = text(Tag::GPSLatitudeRef).is_some_and(|r| r.starts_with('S'));
        let west = text(Tag::GPSLongitudeRef).is_some_and(|r| r.starts_with('W'));
        let lat = if south { -lat } else { lat };
        let lon = if west { -lon } else { lon };
        if lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 {
            out.gps = Some((lat, lon));
        }
    }
    out
}

/// The original file without EXIF/XMP/IPTC/comments, every pixel byte unchanged.
///
/// Errors: `Unsupported`/`Corrupt` as `probe` would raise them; a structure that
/// cannot be walked to its end gives `Corrupt`.
pub fn strip(data: &[u8]) -> Result<Vec<u8>> {
    let format = probe::sniff(data)?;
    let orientation = probe::probe(data, &crate::limits::Limits::default())
        .map(|i| i.orientation)
        .unwrap_or(1);
    let keep = (orientation != 1).then(|| orientation_tiff(orientation));
    match format {
        Format::Jpeg => strip_jpeg(data, keep.as_ref()),
        Format::Png => strip_png(data, keep.as_ref()),
        Format::Webp => strip_webp(data, keep.as_ref()),
        Format::Avif => crate::isobmff_meta::strip(data),
        Format::Gif => Ok(data.to_vec()),
    }
}

/// A big-endian TIFF structure with one IFD holding only Orientation.
fn orientation_tiff(orientation: u8) -> [u8; 26] {
    let mut t = [0u8; 26];
    t[..8].copy_from_slice(b"MM\0*\0\0\0\x08");
    t[8..10].copy_from_slice(&1u16.to_be_bytes()); // one entry
    t[10..12].copy_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    t[12..14].copy_from_slice(&3u16.to_be_bytes()); // SHORT
    t[14..18].copy_from_slice(&1u32.to_be_bytes()); // count 1
    t[18..20].copy_from_slice(&u16::from(orientation).to_be_bytes());
    // value padding (20..22) and next-IFD offset 0 (22..26) stay zero
    t
}

fn strip_jpeg(d: &[u8], keep: Option<&[u8; 26]>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(d.len());
    out.extend_from_slice(&d[..2]);
    let mut pos = 2;
    let mut pending = keep.map(|tiff| {
        let mut app1 = vec![0xFF, 0xE1, 0, 34];
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(tiff);
        app1
    });
    loop {
        if d.get(pos) != Some(&0xFF) {
            return Err(Error::corrupt("corrupt JPEG: expected a marker"));
        }
        let mut m = pos + 1;
        while d.get(m) == Some(&0xFF) {
            m += 1;
        }
        let marker = *d
            .get(m)
            .ok_or_else(|| Error::truncated("JPEG ends inside a marker"))?;
        if marker == 0xDA || marker == 0xD9 {
            // first scan: image data (plus later tables and scans) up to the end-of-image
            // marker; what follows (a phone's appended motion-photo video, a trailer, a
            // polyglot's payload) is not part of the image and is dropped.
            let end = jpeg_image_end(d, pos);
            out.extend_from_slice(&d[pos..end]);
            return Ok(out);
        }
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            out.extend_from_slice(&d[pos..=m]);
            pos = m + 1;
            continue;
        }
        let len = usize::from(be16(d, m + 1).ok_or_else(|| Error::truncated("JPEG segment"))?);
        let end = m + 1 + len;
        let body = d
            .get(m + 3..end)
            .ok_or_else(|| Error::truncated("JPEG segment runs past the end"))?;
        let keep = match marker {
            0xE0 => body.starts_with(b"JFIF\0") || body.starts_with(b"JFXX\0"),
            0xE2 => body.starts_with(b"ICC_PROFILE\0"),
            0xEE => body.starts_with(b"Adobe"),
            0xE1 | 0xE3..=0xED | 0xEF | 0xFE => false,
            _ => true,
        };
        if keep {
            out.extend_from_slice(&d[pos..end]);
        }
        // the orientation-only APP1 goes after a leading JFIF APP0, else after SOI
        if marker != 0xE0 || !keep {
            if let Some(app1) = pending.take() {
                let at = if out.get(3) == Some(&0xE0) {
                    2 + 2 + usize::from(be16(&out, 4).unwrap_or(0))
                } else {
                    2
                };
                out.splice(at.min(out.len())..at.min(out.len()), app1);
            }
        }
        pos = end;
    }
}

/// The offset just past the JPEG's EOI marker, walking from the marker at `pos`:
/// segments are skipped by their length, and after each SOS the entropy-coded data
/// is scanned for the next marker (an FF there is followed by 00 stuffing, a restart
/// marker or more FF fill). A file that ends without EOI gives `d.len()`.
fn jpeg_image_end(d: &[u8], mut pos: usize) -> usize {
    loop {
        let mut m = pos + 1;
        while d.get(m) == Some(&0xFF) {
            m += 1;
        }
        let Some(&marker) = d.get(m) else {
            return d.len();
        };
        if marker == 0xD9 {
            return m + 1;
        }
        let Some(len) = be16(d, m + 1) else {
            return d.len();
        };
        let mut next = m + 1 + usize::from(len);
        if marker == 0xDA {
            loop {
                match (d.get(next), d.get(next + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => next += 2,
                    (Some(0xFF), Some(_)) => break,
                    (Some(_), _) => next += 1,
                    (None, _) => return d.len(),
                }
            }
        }
        if d.get(next) != Some(&0xFF) {
            return d.len();
        }
        pos = next;
    }
}

fn strip_png(d: &[u8], keep: Option<&[u8; 26]>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(d.len());
    out.extend_from_slice(&d[..8]);
    let mut pos = 8;
    while pos < d.len() {
        let len = be32(d, pos).ok_or_else(|| Error::truncated("PNG chunk header"))? as usize;
        let end = pos
            .checked_add(12)
            .and_then(|e| e.checked_add(len))
            .filter(|&e| e <= d.len())
            .ok_or_else(|| Error::truncated("PNG chunk runs past the end"))?;
        let kind = &d[pos + 4..pos + 8];
        if !matches!(kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME") {
            out.extend_from_slice(&d[pos..end]);
        }
        if kind == b"IHDR" {
            if let Some(tiff) = keep {
                out.extend_from_slice(&26u32.to_be_bytes());
                let mut crc = crc32fast::Hasher::new();
                crc.update(b"eXIf");
                crc.update(tiff);
                out.extend_from_slice(b"eXIf");
                out.extend_from_slice(tiff);
                out.extend_from_slice(&crc.finalize().to_be_bytes());
            }
        }
        pos = end;
        if kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

fn strip_webp(d: &[u8], keep: Option<&[u8; 26]>) -> Result<Vec<u8>> {
    let riff_end = le32(d, 4)
        .map(|l| (l as usize).saturating_add(8))
        .ok_or_else(|| Error::truncated("WebP RIFF header"))?
        .min(d.len());
    let mut out = Vec::with_capacity(d.len());
    out.extend_from_slice(&d[..12]);
    let mut vp8x_at = None;
    let mut pos = 12;
    while pos + 8 <= riff_end {
        let len = le32(d, pos + 4).unwrap_or(0) as usize;
        let end = (pos + 8)
            .checked_add(len + (len & 1))
            .ok_or_else(|| Error::corrupt("corrupt WebP chunk length"))?
            .min(riff_end);
        let kind = &d[pos..pos + 4];
        if kind == b"VP8X" {
            vp8x_at = Some(out.len());
        }
        if !matches!(kind, b"EXIF" | b"XMP ") {
            out.extend_from_slice(&d[pos..end]);
        }
        pos = end;
    }
    if let Some(at) = vp8x_at {
        // VP8X flags byte: 0x08 = EXIF present, 0x04 = XMP present
        if let Some(flags) = out.get_mut(at + 8) {
            *flags &= !0x0C;
            if keep.is_some() {
                *flags |= 0x08;
            }
        }
        if let Some(tiff) = keep {
            // EXIF chunks come after the image data (WebP container spec)
            out.extend_from_slice(b"EXIF");
            out.extend_from_slice(&26u32.to_le_bytes());
            out.extend_from_slice(tiff);
        }
    }
    let riff_len = u32::try_from(out.len() - 8).map_err(|_| Error::corrupt("WebP too large"))?;
    out[4..8].copy_from_slice(&riff_len.to_le_bytes());
    Ok(out)
}
