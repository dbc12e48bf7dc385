//! Removing EXIF and XMP from an AVIF (ISO-BMFF / HEIF) file without moving a byte.
//!
//! HEIF stores metadata as *items* of the `meta` box: `iinf` names each item's type
//! (`Exif`, or `mime` with content type `application/rdf+xml` for XMP) and `iloc`
//! says where its bytes are (ISO/IEC 14496-12 §8.11.3, ISO/IEC 23008-12 §9). Every
//! metadata item's bytes are overwritten with zeros and its type renamed to `void`
//! (an unknown item type, which readers ignore), so no offset anywhere changes and the
//! coded image is byte-identical.

use crate::codecs::{be16, be32};
use crate::errors::{Error, Result};

/// The renamed type of a blanked item: not a HEIF item type, so readers skip it.
const VOID: &[u8; 4] = b"void";

struct BoxRef {
    kind: [u8; 4],
    /// payload start (after size, type and any largesize)
    body: usize,
    end: usize,
}

fn boxes(d: &[u8], mut pos: usize, end: usize) -> Result<Vec<BoxRef>> {
    let mut out = Vec::new();
    while pos + 8 <= end {
        let size = be32(d, pos).ok_or_else(|| Error::truncated("AVIF box header"))? as usize;
        let kind = [d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7]]; // pos + 8 <= end <= d.len()
        let (body, box_end) = match size {
            0 => (pos + 8, end),
            1 => {
                let hi =
                    be32(d, pos + 8).ok_or_else(|| Error::truncated("AVIF largesize"))? as usize;
                let lo =
                    be32(d, pos + 12).ok_or_else(|| Error::truncated("AVIF largesize"))? as usize;
                let big = hi
                    .checked_shl(32)
                    .ok_or_else(|| Error::corrupt("AVIF box too large"))?
                    | lo;
                (
                    pos + 16,
                    pos.checked_add(big)
                        .ok_or_else(|| Error::corrupt("AVIF box too large"))?,
                )
            }
            n => (
                pos + 8,
                pos.checked_add(n)
                    .ok_or_else(|| Error::corrupt("AVIF box too large"))?,
            ),
        };
        if box_end > end || box_end < body {
            return Err(Error::truncated("AVIF box runs past its parent"));
        }
        out.push(BoxRef {
            kind,
            body,
            end: box_end,
        });
        pos = box_end;
    }
    Ok(out)
}

/// Reads a big-endian unsigned field of `size` bytes (0, 4 or 8) at `*at`, advancing it.
fn field(d: &[u8], at: &mut usize, size: usize) -> Result<u64> {
    let v = match size {
        0 => 0,
        2 => u64::from(be16(d, *at).ok_or_else(|| Error::truncated("AVIF iloc"))?),
        4 => u64::from(be32(d, *at).ok_or_else(|| Error::truncated("AVIF iloc"))?),
        8 => {
            let hi = u64::from(be32(d, *at).ok_or_else(|| Error::truncated("AVIF iloc"))?);
            let lo = u64::from(be32(d, *at + 4).ok_or_else(|| Error::truncated("AVIF iloc"))?);
            (hi << 32) | lo
        }
        _ => return Err(Error::corrupt("corrupt AVIF iloc field size")),
    };
    *at += size;
    Ok(v)
}

/// Item ids of EXIF/XMP items, with the position of each item's type in `d`.
fn metadata_items(d: &[u8], iinf: &BoxRef) -> Result<Vec<(u32, usize)>> {
    let version = *d
        .get(iinf.body)
        .ok_or_else(|| Error::truncated("AVIF iinf"))?;
    let first = iinf.body + 4 + if version == 0 { 2 } else { 4 };
    let mut out = Vec::new();
    for infe in boxes(d, first, iinf.end)?
        .iter()
        .filter(|b| &b.kind == b"infe")
    {
        let v = *d
            .get(infe.body)
            .ok_or_else(|| Error::truncated("AVIF infe"))?;
        if v < 2 {
            continue; // versions 0/1 describe files of a sequence, not HEIF items
        }
        let mut at = infe.body + 4;
        let id = if v == 2 {
            field(d, &mut at, 2)?
        } else {
            field(d, &mut at, 4)?
        } as u32;
        at += 2; // item_protection_index
        let kind_at = at;
        let kind = d
            .get(at..at + 4)
            .ok_or_else(|| Error::truncated("AVIF infe"))?;
        let is_xmp = kind == b"mime" && {
            // item_name\0 content_type\0 ...
            let rest = &d[(at + 4).min(infe.end)..infe.end];
            let name_end = rest
                .iter()
                .position(|&b| b == 0)
                .map_or(rest.len(), |p| p + 1);
            rest[name_end..].starts_with(b"application/rdf+xml")
        };
        if kind == b"Exif" || is_xmp {
            out.push((id, kind_at));
        }
    }
    Ok(out)
}

/// `(item id, construction method, [(offset, length)])` of every item in `iloc`.
type Location = (u32, u16, Vec<(u64, u64)>);

fn locations(d: &[u8], iloc: &BoxRef) -> Result<Vec<Location>> {
    let version = *d
        .get(iloc.body)
        .ok_or_else(|| Error::truncated("AVIF iloc"))?;
    let mut at = iloc.body + 4;
    let sizes = *d.get(at).ok_or_else(|| Error::truncated("AVIF iloc"))?;
    let more = *d.get(at + 1).ok_or_else(|| Error::truncated("AVIF iloc"))?;
    at += 2;
    let (offset_size, length_size) = (usize::from(sizes >> 4), usize::from(sizes & 15));
    let base_size = usize::from(more >> 4);
    let index_size = if version >= 1 {
        usize::from(more & 15)
    } else {
        0
    };
    let count = if version < 2 {
        field(d, &mut at, 2)?
    } else {
        field(d, &mut at, 4)?
    };
    let mut out = Vec::new();
    for _ in 0..count {
        if at >= iloc.end {
            return Err(Error::truncated("AVIF iloc item list"));
        }
        let id = if version < 2 {
            field(d, &mut at, 2)?
        } else {
            field(d, &mut at, 4)?
        } as u32;
        let method = if version >= 1 {
            (field(d, &mut at, 2)? & 15) as u16
        } else {
            0
        };
        at += 2; // data_reference_index
        let base = field(d, &mut at, base_size)?;
        let extents = field(d, &mut at, 2)?;
        let mut list = Vec::new();
        for _ in 0..extents {
            field(d, &mut at, index_size)?;
            let off = field(d, &mut at, offset_size)?;
            let len = field(d, &mut at, length_size)?;
            list.push((
                base.checked_add(off)
                    .ok_or_else(|| Error::corrupt("AVIF iloc offset"))?,
                len,
            ));
        }
        out.push((id, method, list));
    }
    Ok(out)
}

/// The top-level `meta` box, found by walking the boxes before it by their sizes (so an
/// `mdat` may come first, and bytes after `meta`'s siblings, such as junk appended to the
/// file, are never read as boxes). None when the data ends at a box boundary before any.
///
/// Errors: `Corrupt` ("truncated image: the AVIF file ends N bytes before its 'mdat' box
/// does") for a box before `meta`, or `meta` itself, that runs past the end of the data.
fn top_meta(d: &[u8]) -> Result<Option<BoxRef>> {
    let mut pos = 0usize;
    while pos < d.len() {
        if pos + 8 > d.len() {
            return Err(Error::truncated("the AVIF file ends inside a box header"));
        }
        let kind = [d[pos + 4], d[pos + 5], d[pos + 6], d[pos + 7]];
        let (header, len) = match be32(d, pos).unwrap_or(0) {
            0 => (8, (d.len() - pos) as u64), // runs to the end of the file
            1 => match (be32(d, pos + 8), be32(d, pos + 12)) {
                (Some(hi), Some(lo)) => (16, (u64::from(hi) << 32) | u64::from(lo)),
                _ => return Err(Error::truncated("the AVIF file ends inside a box header")),
            },
            n => (8, u64::from(n)),
        };
        if len < header {
            return Err(Error::corrupt(format!(
                "corrupt AVIF: a box of {len} bytes, smaller than its header"
            )));
        }
        let end = (pos as u64).saturating_add(len);
        if end > d.len() as u64 {
            return Err(Error::truncated(format!(
                "the AVIF file ends {} bytes before its '{}' box does",
                end - d.len() as u64,
                String::from_utf8_lossy(&kind)
            )));
        }
        if &kind == b"meta" {
            return Ok(Some(BoxRef {
                kind,
                body: pos + header as usize,
                end: end as usize,
            }));
        }
        pos = end as usize;
    }
    Ok(None)
}

/// Where the top-level `meta` box's payload lies in `d` (`start..end`), when all of it is
/// in `d`; None otherwise (a prefix that ends before it or inside a box before it).
pub fn meta_span(d: &[u8]) -> Option<(usize, usize)> {
    top_meta(d).ok().flatten().map(|m| (m.body, m.end))
}

/// Checks that the file holds every byte its boxes and items claim: no top-level box (the
/// `mdat` above all) runs past the end of the data, and every extent `iloc` gives (ISO/IEC
/// 14496-12 §8.11.3) lies inside the file, or inside `idat` for construction method 1.
///
/// libavif's parse reads only the `meta` box, and an incremental reader must accept a file
/// whose image bytes have not all arrived yet, so a cut-off upload would pass it and fail
/// later, at the decode. Errors: `Corrupt` ("truncated image: ...") naming what is missing.
#[cfg_attr(not(feature = "avif-decode"), allow(dead_code))] // only AVIF parsing calls it
pub fn check_complete(d: &[u8]) -> Result<()> {
    let Some(meta) = top_meta(d)? else {
        return Ok(()); // cut at a box boundary before it, or none: libavif refuses a file without one
    };
    let children = boxes(d, meta.body + 4, meta.end)?; // meta is a full box
    let find = |k: &[u8; 4]| children.iter().find(|b| &b.kind == k);
    let Some(iloc) = find(b"iloc") else {
        return Ok(());
    };
    let idat = find(b"idat");
    for (id, method, extents) in locations(d, iloc)? {
        let limit = match (method, idat) {
            (0, _) => d.len() as u64,
            (1, Some(b)) => (b.end - b.body) as u64,
            _ => continue, // item references and missing idat: libavif's to judge
        };
        for (off, len) in extents {
            let end = off.checked_add(len).ok_or_else(|| Error::corrupt("AVIF iloc offset"))?;
            if off > limit || end > limit {
                return Err(Error::truncated(format!(
                    "the AVIF file ends {} bytes before the end of its item {id}",
                    end - limit.min(end)
                )));
            }
        }
    }
    Ok(())
}

/// The AVIF file `d` with every EXIF and XMP item blanked (zeros, type `void`).
///
/// Errors: `Corrupt` when the `meta` box cannot be walked, or a metadata item's
/// bytes lie outside the file or its `idat` (or have no stated length), so nothing
/// half-cleaned is ever returned.
pub fn strip(d: &[u8]) -> Result<Vec<u8>> {
    let mut out = d.to_vec();
    let Some(meta) = top_meta(d)? else {
        return Ok(out); // no items at all
    };
    let children = boxes(d, meta.body + 4, meta.end)?; // meta is a full box
    let find = |k: &[u8; 4]| children.iter().find(|b| &b.kind == k);
    let (Some(iinf), Some(iloc)) = (find(b"iinf"), find(b"iloc")) else {
        return Ok(out);
    };
    let items = metadata_items(d, iinf)?;
    if items.is_empty() {
        return Ok(out);
    }
    let places = locations(d, iloc)?;
    let idat = find(b"idat");
    for (id, kind_at) in items {
        out[kind_at..kind_at + 4].copy_from_slice(VOID);
        let Some((_, method, extents)) = places.iter().find(|(i, _, _)| *i == id) else {
            continue; // no bytes stored
        };
        let (start, limit) = match (method, idat) {
            (0, _) => (0usize, d.len()),
            (1, Some(b)) => (b.body, b.end),
            _ => {
                return Err(Error::corrupt(
                    "AVIF metadata item stored in an unsupported way",
                ))
            }
        };
        for &(off, len) in extents {
            let from = usize::try_from(off).ok().and_then(|o| o.checked_add(start));
            let to = from.and_then(|f| usize::try_from(len).ok().and_then(|l| f.checked_add(l)));
            match (from, to) {
                (Some(f), Some(t)) if len > 0 && t <= limit => out[f..t].fill(0),
                _ => return Err(Error::corrupt("AVIF metadata item outside the file")),
            }
        }
    }
    Ok(out)
}
