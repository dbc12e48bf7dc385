//! A tiny EXIF reader: only IFD0 Orientation (tag 0x0112). Bounds-checked, never
//! allocates, so a huge APP1 costs nothing.

use crate::codecs::{be16, be32, le16, le32};

/// Orientation 1..=8 from a TIFF-structured EXIF blob (with or without the
/// `Exif\0\0` prefix). Returns 1 when absent or malformed.
pub fn orientation(blob: &[u8]) -> u8 {
    let tiff = blob.strip_prefix(b"Exif\0\0").unwrap_or(blob);
    read_orientation(tiff)
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

fn read_orientation(t: &[u8]) -> Option<u8> {
    let little = match t.get(0..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| if little { le16(t, at) } else { be16(t, at) };
    let u32_at = |at: usize| if little { le32(t, at) } else { be32(t, at) };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count.min(1000) {
        let entry = ifd.checked_add(2 + i * 12)?;
        if u16_at(entry)? == 0x0112 {
            // type SHORT (3), count 1: value in the first two bytes of the value field
            let value = u16_at(entry + 8)?;
            return u8::try_from(value).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_byte_orders() {
        let mm = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0,
        ];
        assert_eq!(orientation(&mm), 6);
        let ii = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0,
        ];
        assert_eq!(orientation(&ii), 8);
        assert_eq!(orientation(b"garbage"), 1);
    }
}
