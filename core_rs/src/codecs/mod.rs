//! One module per container format: header parsing (probe), structural completeness
//! (verify) and, where the format needs special handling, decode/encode helpers.

pub mod avif;
pub mod gif;
pub mod jpeg;
pub mod png;
pub mod webp;
pub mod webp_frames;

/// How much of the file the parser is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Maybe only a prefix (e.g. the first 256 KiB of an upload): running off the end
    /// after the size is known is fine.
    Prefix,
    /// The whole file: it must be structurally complete.
    Whole,
}

pub fn be16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

pub fn le16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

pub fn be32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn le32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn le24(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(3)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], 0]))
}
