//! PNG/APNG: chunk walk for IHDR size, acTL frame count and eXIf orientation;
//! in `Whole` mode every chunk CRC is checked and IEND must be present.

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

fn end_of_data(info: Info, mode: Mode) -> Result<Info> {
    match mode {
        Mode::Prefix => Ok(info),
        Mode::Whole => Err(Error::truncated("PNG data ends before the IEND chunk")),
    }
}
