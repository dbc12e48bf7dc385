//! PNG/APNG: chunk walk for IHDR size, acTL frame count and eXIf orientation, and every
//! fcTL frame rectangle checked against the canvas (the decoder refuses a file with one
//! outside it, so it is refused here already, with the frame named); in `Whole` mode
//! every chunk CRC is checked and IEND must be present.

use super::{be32, Mode};
use crate::errors::{Error, Result};
use crate::exif;
use crate::limits::Limits;
use crate::probe::{Format, Info};

pub fn parse(d: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    // signature (8) + IHDR length (4) + "IHDR" (4) + width + height
    if d.len() < 24 {
        return Err(Error::truncated("PNG data ends before the header"));
    }
    if &d[12..16] != b"IHDR" {
        return Err(Error::corrupt("corrupt PNG: first chunk is not IHDR"));
    }
    let (Some(width), Some(height)) = (be32(d, 16), be32(d, 20)) else {
        return Err(Error::truncated("PNG data ends before the header"));
    };
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(Error::corrupt(format!(
            "corrupt PNG: invalid size {width}x{height}"
        )));
    }
    limits.check_dimensions(u64::from(width), u64::from(height))?;
    let mut info = Info {
        format: Format::Png,
        width,
        height,
        frames: 1,
        orientation: 1,
    };
    let mut pos = 8;
    // fcTL chunks seen (the frame number of the next one minus 1), and whether an IDAT was
    let mut fctls = 0u32;
    let mut have_idat = false;
    loop {
        let Some(len) = be32(d, pos) else {
            return end_of_data(info, mode);
        };
        let len = len as usize;
        let kind = d.get(pos + 4..pos + 8).unwrap_or_default();
        let body_end = pos + 8 + len;
        let body = d.get(pos + 8..body_end);
        if mode == Mode::Whole {
            let (Some(body), Some(crc)) = (body, be32(d, body_end)) else {
                return end_of_data(info, mode);
            };
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(kind);
            hasher.update(body);
            if hasher.finalize() != crc {
                let name = String::from_utf8_lossy(kind);
                return Err(Error::corrupt(format!(
                    "corrupt PNG: CRC mismatch in {name} chunk"
                )));
            }
        }
        match kind {
            b"acTL" => {
                if let Some(frames) = body.and_then(|b| be32(b, 0)).filter(|&n| n > 0) {
                    limits.check_frames(u64::from(frames), 0)?;
                    info.frames = frames;
                }
            }
            b"fcTL" => {
                if let Some(b) = body {
                    fctls += 1;
                    check_frame(b, fctls, (width, height), !have_idat)?;
                }
            }
            b"IDAT" => have_idat = true,
            b"eXIf" => {
                if let Some(b) = body {
                    info.orientation = exif::orientation(b);
                }
            }
            b"IEND" => return Ok(info),
            b"" => return end_of_data(info, mode),
            _ => {}
        }
        pos = body_end + 4;
    }
}

/// Checks the frame rectangle of the `number`th fcTL chunk (`body`, 26 bytes) against
/// the `canvas` (IHDR size), as the decoder does: not empty, inside the canvas, and
/// the whole canvas when it comes before the first IDAT (the default image is frame 1).
fn check_frame(body: &[u8], number: u32, canvas: (u32, u32), default_image: bool) -> Result<()> {
    let (Some(w), Some(h), Some(x), Some(y)) =
        (be32(body, 4), be32(body, 8), be32(body, 12), be32(body, 16))
    else {
        return Err(Error::corrupt(format!(
            "corrupt PNG: APNG frame {number} has a short fcTL chunk"
        )));
    };
    let (cw, ch) = canvas;
    if w == 0 || h == 0 {
        return Err(Error::corrupt(format!(
            "corrupt PNG: APNG frame {number} is empty ({w}x{h})"
        )));
    }
    let inside = |size: u32, offset: u32, limit: u32| {
        u64::from(size) + u64::from(offset) <= u64::from(limit)
    };
    if !inside(w, x, cw) || !inside(h, y, ch) {
        return Err(Error::corrupt(format!(
            "corrupt PNG: APNG frame {number} ({w}x{h} at {x},{y}) lies outside the {cw}x{ch} canvas"
        )));
    }
    if default_image && (x, y, w, h) != (0, 0, cw, ch) {
        return Err(Error::corrupt(format!(
            "corrupt PNG: APNG frame {number} ({w}x{h} at {x},{y}) is the default image and must \
             cover the whole {cw}x{ch} canvas"
        )));
    }
    Ok(())
}

fn end_of_data(info: Info, mode: Mode) -> Result<Info> {
    match mode {
        Mode::Prefix => Ok(info),
        Mode::Whole => Err(Error::truncated("PNG data ends before the IEND chunk")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_frame;

    /// An fcTL body: sequence number, then width, height, x and y offsets (and delays, ops).
    fn fctl(w: u32, h: u32, x: u32, y: u32) -> Vec<u8> {
        [0, w, h, x, y]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain([0, 1, 0, 100, 0, 0])
            .collect()
    }

    #[test]
    fn frames_inside_the_canvas_pass() {
        assert!(check_frame(&fctl(100, 100, 0, 0), 1, (100, 100), true).is_ok());
        assert!(check_frame(&fctl(60, 60, 40, 40), 3, (100, 100), false).is_ok());
    }

    #[test]
    fn a_frame_outside_the_canvas_is_named() {
        let err = check_frame(&fctl(60, 60, 50, 50), 3, (100, 100), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt PNG: APNG frame 3 (60x60 at 50,50) lies outside the 100x100 canvas"
        );
        // offsets near u32::MAX do not wrap around
        assert!(check_frame(&fctl(2, 1, u32::MAX, 0), 2, (100, 100), false).is_err());
        assert!(check_frame(&fctl(0, 1, 0, 0), 2, (100, 100), false).is_err());
        assert!(check_frame(&fctl(50, 50, 0, 0), 1, (100, 100), true).is_err());
        assert!(check_frame(&fctl(1, 1, 0, 0)[..12], 2, (100, 100), false).is_err());
    }
}
