//! The processing pipeline: an ordered list of steps over one shared [`Context`]
//! (imgproxy's pattern). The order is stated once, in [`STEPS`].

use image::DynamicImage;

use crate::errors::Result;
use crate::limits::{Deadline, Limits};
use crate::probe::{self, Info};
use crate::steps;

/// Output formats a variant can be encoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Webp,
    Avif,
    Jpeg,
}

impl OutFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "webp" => Some(OutFormat::Webp),
            "avif" => Some(OutFormat::Avif),
            "jpeg" => Some(OutFormat::Jpeg),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OutFormat::Webp => "webp",
            OutFormat::Avif => "avif",
            OutFormat::Jpeg => "jpeg",
        }
    }
    pub fn mime(self) -> &'static str {
        match self {
            OutFormat::Webp => "image/webp",
            OutFormat::Avif => "image/avif",
            OutFormat::Jpeg => "image/jpeg",
        }
    }
}

/// One named size box and the formats to encode it in.
#[derive(Debug, Clone)]
pub struct VariantSpec {
    pub name: String,
    /// Bounding box in px: fit inside, keep aspect, never upscale.
    pub width: u32,
    pub height: u32,
    pub formats: Vec<OutFormat>,
    /// AVIF quality / speed for this variant; `None` takes the plan's.
    pub avif_quality: Option<f32>,
    pub avif_speed: Option<u8>,
    /// libaom's rectangular (and AB, 1:4) partition search for this variant's AVIF;
    /// off halves the time at speed 5 for about 0.002 SSIM (docs/benchmarks.md).
    pub avif_rect_partitions: bool,
}

impl VariantSpec {
    /// This variant's AVIF output settings.
    pub fn avif_settings(&self, plan: &Plan) -> AvifSettings {
        AvifSettings {
            quality: self.avif_quality.unwrap_or(plan.avif_quality),
            speed: self.avif_speed.unwrap_or(plan.avif_speed),
            rect_partitions: self.avif_rect_partitions,
        }
    }
}

/// How one AVIF output is encoded (libavif's scales).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AvifSettings {
    /// 0..=100; quantizer = (100 - q) * 63 / 100.
    pub quality: f32,
    /// 0 (slow) ..= 10 (fast).
    pub speed: u8,
    /// libaom `enable-rect-partitions`.
    pub rect_partitions: bool,
}

/// Everything `process()` was asked to do (mirrors `pixelfox.imaging.Recipe`).
#[derive(Debug, Clone)]
pub struct Plan {
    pub variants: Vec<VariantSpec>,
    /// libwebp quality 0..=100 and method 0..=6.
    pub webp_quality: f32,
    pub webp_method: i32,
    /// Default AVIF quality 0..=100 and speed 0..=10 (libavif's scales; see
    /// `codecs::avif::encode`), unless a variant sets its own.
    pub avif_quality: f32,
    pub avif_speed: u8,
    /// JPEG quality 1..=100.
    pub jpeg_quality: u8,
    /// Flatten colour for outputs without alpha (JPEG).
    pub background: [u8; 3],
}

impl Plan {
    /// A plan of `variants` with `pixelfox.imaging.Recipe`'s default encoder settings:
    /// for what depends only on the variants' sizes and formats (rendition sizes, the
    /// animation budget of `steps::animate::check_budget`), not for encoding.
    pub fn of_variants(variants: Vec<VariantSpec>) -> Self {
        Plan {
            variants,
            webp_quality: 80.0,
            webp_method: 4,
            avif_quality: 50.0,
            avif_speed: 6,
            jpeg_quality: 85,
            background: [255, 255, 255],
        }
    }
}

/// One decoded (or resized) animation frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Always `ImageRgb8` or `ImageRgba8` after decode.
    pub image: DynamicImage,
    /// Display time in ms (1 for stills; unused).
    pub delay_ms: u32,
}

/// The frames of one output size.
#[derive(Debug, Clone)]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Frame>,
}

/// One encoded output.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub format: OutFormat,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    pub frames: u32,
}

/// State shared by the steps; each step reads what the earlier ones left.
pub struct Context<'a> {
    /// The whole source file.
    pub data: &'a [u8],
    /// Header facts from `verify()` (format, stored size, frames, EXIF orientation).
    pub info: Info,
    pub plan: &'a Plan,
    pub limits: &'a Limits,
    /// When this call must be done (`limits.timeout_ms` from the start of `run`).
    pub deadline: Deadline,
    /// Embedded ICC profile of the source, if any (set by decode).
    pub icc: Option<Vec<u8>>,
    /// The decoded still (one frame), 8-bit, upright after auto_orient: at full size, or
    /// 1/`shrink` of it (rounded up) when decode took the JPEG shrink-on-load path.
    /// Empty for a streamed animation, whose frames never all exist at once.
    pub frames: Vec<Frame>,
    /// DCT scale denominator the frames were decoded at: 1 (full size), 2, 4 or 8;
    /// set by decode (see `steps::decode::jpeg_shrink`).
    pub shrink: u32,
    /// Upright FULL size of the source in px (never the reduced frames'), set by
    /// auto_orient; every rendition size is fitted from it.
    pub upright: (u32, u32),
    /// Animation loop count (0 = forever); meaningful for an animated output.
    pub loop_count: u32,
    /// One rendition per distinct target size, filled by resize (by animate for an
    /// animation: its first frame only).
    pub renditions: Vec<Rendition>,
    /// Per rendition: its animated WebP (bytes, frame count), already encoded frame by
    /// frame by animate; `None` where encode makes the WebP from the rendition.
    pub animations: Vec<Option<(Vec<u8>, u32)>>,
    /// For every (variant, format) in plan order: index into `renditions`.
    pub targets: Vec<(usize, usize)>,
    /// Encoded outputs in plan order, filled by encode.
    pub outputs: Vec<Output>,
}

/// A pipeline step.
pub trait Step: Sync {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()>;
}

/// The order of the pipeline. ICC conversion runs after resize on purpose: it is a
/// per-pixel operation, and the renditions are far smaller than the source.
/// Metadata is never copied: the encoders write pixels only.
pub const STEPS: &[&dyn Step] = &[
    &steps::decode::Decode,
    &steps::auto_orient::AutoOrient,
    &steps::resize::Resize,
    &steps::to_srgb::ToSrgb,
    &steps::encode::Encode,
];

/// An animation with a WebP output: animate runs decode → orient → resize → sRGB →
/// WebP per frame (streamed, see `steps::animate`), encode writes the stills.
pub const ANIMATION_STEPS: &[&dyn Step] = &[&steps::animate::Animate, &steps::encode::Encode];

/// verify → (animation memory budget) → decode once → orient → resize → sRGB → encode.
pub fn run<'a>(
    data: &'a [u8],
    plan: &'a Plan,
    limits: &'a Limits,
) -> Result<(Info, (u32, u32), Vec<Output>)> {
    let deadline = Deadline::new(limits.timeout_ms);
    let info = probe::verify(data, limits)?;
    let mut ctx = Context {
        data,
        info,
        plan,
        limits,
        deadline,
        icc: None,
        frames: Vec::new(),
        shrink: 1,
        upright: (0, 0),
        loop_count: 0,
        renditions: Vec::new(),
        animations: Vec::new(),
        targets: Vec::new(),
        outputs: Vec::new(),
    };
    let steps = if steps::animate::applies(&ctx.info, plan) {
        ANIMATION_STEPS
    } else {
        STEPS
    };
    for step in steps {
        ctx.deadline.check("the pipeline")?;
        step.run(&mut ctx)?;
    }
    ctx.deadline.check("encoding")?;
    Ok((ctx.info, ctx.upright, ctx.outputs))
}
