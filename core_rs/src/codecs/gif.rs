//! GIF: block walk counting frames and taking the union of every frame rectangle
//! with the logical screen (CVE-2022-45198-style bombs place a huge frame far
//! outside a tiny screen). Sub-blocks are skipped, never decompressed.

use super::{le16, Mode};
use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::probe::{Format, Info};

pub fn parse(d: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    let (Some(sw), Some(sh), Some(&flags)) = (le16(d, 6), le16(d, 8), d.get(10)) else {
        return Err(Error::truncated(
            "GIF data ends before the logical screen descriptor",
        ));
    };
    let mut width = u64::from(sw);
    let mut height = u64::from(sh);
    limits.check_dimensions(width, height)?;
    let mut frames: u64 = 0;
    let mut pos = 13 + color_table_len(flags);
    loop {
        let Some(&block) = d.get(pos) else {
            return end_of_data(width, height, frames, mode);
        };
        match block {
            0x3B => break,
            0x21 => {
                // extension: label, then data sub-blocks
                match skip_sub_blocks(d, pos + 2) {
                    Some(next) => pos = next,
                    None => return end_of_data(width, height, frames, mode),
                }
            }
            0x2C => {
                let (Some(left), Some(top), Some(w), Some(h), Some(&f)) = (
                    le16(d, pos + 1),
                    le16(d, pos + 3),
                    le16(d, pos + 5),
                    le16(d, pos + 7),
                    d.get(pos + 9),
                ) else {
                    return end_of_data(width, height, frames, mode);
                };
                width = width.max(u64::from(left) + u64::from(w));
                height = height.max(u64::from(top) + u64::from(h));
                frames += 1;
                limits.check_dimensions(width, height)?;
                limits.check_frames(frames, 0)?;
                // descriptor (10) + local colour table + LZW minimum code size (1)
                let data_start = pos + 10 + color_table_len(f) + 1;
                match skip_sub_blocks(d, data_start) {
                    Some(next) => pos = next,
                    None => return end_of_data(width, height, frames, mode),
                }
            }
            other => {
                return Err(Error::corrupt(format!(
                    "corrupt GIF: unknown block 0x{other:02X} at byte {pos}"
                )));
            }
        }
    }
    if frames == 0 {
        return Err(Error::corrupt("corrupt GIF: no image data"));
    }
    make_info(width, height, frames)
}

fn color_table_len(flags: u8) -> usize {
    if flags & 0x80 != 0 {
        3 << ((flags & 0x07) + 1)
    } else {
        0
    }
}

/// Returns the offset after the terminating zero-length sub-block.
fn skip_sub_blocks(d: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = usize::from(*d.get(pos)?);
        pos += 1;
        if len == 0 {
            return Some(pos);
        }
        pos += len;
    }
}

fn end_of_data(width: u64, height: u64, frames: u64, mode: Mode) -> Result<Info> {
    match mode {
        Mode::Prefix => make_info(width, height, frames.max(1)),
        Mode::Whole => Err(Error::truncated("GIF data ends before the trailer")),
    }
}

fn make_info(width: u64, height: u64, frames: u64) -> Result<Info> {
    if width == 0 || height == 0 {
        return Err(Error::corrupt("corrupt GIF: zero width or height"));
    }
    let narrow =
        |v: u64| u32::try_from(v).map_err(|_| Error::corrupt("corrupt GIF: size overflow"));
    Ok(Info {
        format: Format::Gif,
        width: narrow(width)?,
        height: narrow(height)?,
        frames: narrow(frames)?,
        orientation: 1,
    })
}

/// True when the GIF has a NETSCAPE2.0/ANIMEXTS1.0 looping extension. Without it
/// browsers play the animation once (the image crate reports "infinite").
pub fn has_loop_extension(d: &[u8]) -> bool {
    d.windows(14).any(|w| {
        w[0] == 0x21
            && w[1] == 0xFF
            && w[2] == 11
            && (&w[3..14] == b"NETSCAPE2.0" || &w[3..14] == b"ANIMEXTS1.0")
    })
}
