//! Entry points for the fuzz targets in `core_rs/fuzz/` (cargo-afl). Not part of the
//! Python API: each function runs what the `_core` function of the same name runs,
//! without the `catch_unwind` guard of `api.rs`, so a panic reaches the fuzzer as a
//! crash. Errors are fine and are returned as their message.

use crate::limits::Limits;
use crate::pipeline::{self, OutFormat, Plan, VariantSpec};
use crate::{metadata, probe};

/// `_core.probe(data)`: the header parse with the default limits.
pub fn probe(data: &[u8]) -> Result<(u32, u32), String> {
    probe::probe(data, &Limits::default())
        .map(|i| (i.width, i.height))
        .map_err(|e| e.to_string())
}

/// Tight limits so one execution stays in milliseconds (the instrumented decoders
/// are several times slower than the release build): 0.25 MP, 16 frames, 1 s.
fn process_limits() -> Limits {
    Limits {
        max_pixels: 262_144,
        max_width: 8_192,
        max_height: 8_192,
        max_frames: 16,
        max_total_pixels: 1_048_576,
        max_input_bytes: 2 * 1024 * 1024,
        max_scans: 100,
        timeout_ms: 1_000,
        max_animation_bytes: 64 << 20,
    }
}

/// A small recipe: one 64 px box, WebP (fastest method) and JPEG.
fn process_plan() -> Plan {
    Plan {
        variants: vec![VariantSpec {
            name: "t".into(),
            width: 64,
            height: 64,
            formats: vec![OutFormat::Webp, OutFormat::Jpeg],
            avif_quality: None,
            avif_speed: None,
            avif_rect_partitions: true,
        }],
        webp_quality: 50.0,
        webp_method: 0,
        avif_quality: 50.0,
        avif_speed: 10,
        jpeg_quality: 50,
        background: [255, 255, 255],
    }
}

/// `_core.process(data, ...)` with the small recipe and tight limits above: the
/// whole pipeline plus the EXIF read; returns the number of encoded bytes.
pub fn process(data: &[u8]) -> Result<usize, String> {
    let (plan, limits) = (process_plan(), process_limits());
    let (_, _, outputs) = pipeline::run(data, &plan, &limits).map_err(|e| e.to_string())?;
    let exif = metadata::read(data);
    Ok(outputs.iter().map(|o| o.data.len()).sum::<usize>() + exif.fields.len())
}

/// `_core.strip_metadata(data)`: the lossless metadata strip.
pub fn strip(data: &[u8]) -> Result<usize, String> {
    metadata::strip(data)
        .map(|out| out.len())
        .map_err(|e| e.to_string())
}
