//! Pipeline steps, one per file; the order lives in `pipeline::STEPS`.

pub mod animate;
pub mod auto_orient;
pub mod decode;
pub mod encode;
pub mod resize;
pub mod to_srgb;
