//! Animations (GIF, APNG, animated WebP with a WebP output), streamed: each frame is
//! composited by the decoder, oriented, resized into every rendition, converted to
//! sRGB and handed to the animated WebP encoders before the next one is decoded, and
//! then dropped. The full-size frame never outlives its iteration and no rendition
//! keeps more than its first frame (the still that AVIF and JPEG encode), so peak
//! memory is a few canvases plus each encoder's own working set, whatever the frame
//! count; [`working_set`] is that sum, checked against `Limits::max_animation_bytes`
//! before anything is decoded.
//!
//! It replaces decode → auto_orient → resize → to_srgb of a still (the same per-frame
//! operations in the same order, so the outputs are those of decoding every frame
//! first); encode then writes the stills and takes the finished animations.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::{LoopCount, Orientation};
use image::{AnimationDecoder, DynamicImage, Frames, ImageDecoder};
use rayon::prelude::*;

use crate::codecs::webp::{self, AnimWriter};
use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::pipeline::{Context, Frame, OutFormat, Plan, Rendition, Step, STEPS};
use crate::probe::{Format, Info};
use crate::steps::auto_orient::upright_size;
use crate::steps::decode::image_limits;
use crate::steps::resize::{plan_sizes, resize_chain};
use crate::steps::to_srgb::SrgbTransform;

/// Canvas-sized RGBA buffers alive at once while a frame is processed: the decoder's
/// own canvas (APNG keeps two: the current and the previous, for disposal), the
/// composited frame it hands out, and a turned copy of it (EXIF orientation) or the
/// resizer's intermediate buffer (the large rendition's width x the canvas height).
pub const CANVAS_BUFFERS: u64 = 4;
/// Buffers of each rendition's size: the frame being resized, and the first frame,
/// kept for the still (AVIF, JPEG) encodes.
pub const RENDITION_BUFFERS: u64 = 2;
/// Buffers of its rendition's size that libwebp's animation encoder holds: its three
/// canvases (the frame, the previous one, a copy for blending), the imported picture,
/// and the scratch of one frame's lossy and lossless trial encodes (`allow_mixed`);
/// measured in docs/imaging.md (animations).
pub const ENCODER_BUFFERS: u64 = 8;

pub struct Animate;

/// Whether `run` takes the streamed animation path for this source and plan: more
/// than one frame in the header and at least one WebP output (AVIF and JPEG are
/// stills of the first frame, which the still path decodes alone).
pub fn applies(info: &Info, plan: &Plan) -> bool {
    info.frames > 1
        && matches!(info.format, Format::Gif | Format::Png | Format::Webp)
        && plan
            .variants
            .iter()
            .any(|v| v.formats.contains(&OutFormat::Webp))
}

/// Bytes of pixel buffers that streaming this animation allocates at most, from the
/// header's canvas size and the plan's rendition sizes (see the `*_BUFFERS` constants):
/// [`CANVAS_BUFFERS`] canvases, [`RENDITION_BUFFERS`] frames of every rendition, and
/// [`ENCODER_BUFFERS`] frames of every rendition that gets an animated WebP. The frame
/// count does not enter: no decoded frame is kept past its iteration.
pub fn working_set(info: &Info, plan: &Plan) -> u64 {
    let rgba = |w: u32, h: u32| u64::from(w) * u64::from(h) * 4;
    let canvas = rgba(info.width, info.height);
    let upright = upright_size(info.width, info.height, info.orientation);
    let (sizes, targets) = plan_sizes(plan, upright);
    let animated = animated_sizes(plan, sizes.len(), &targets);
    sizes
        .iter()
        .zip(&animated)
        .map(|(&(w, h), &anim)| {
            let copies = RENDITION_BUFFERS + if anim { ENCODER_BUFFERS } else { 0 };
            rgba(w, h).saturating_mul(copies)
        })
        .fold(canvas.saturating_mul(CANVAS_BUFFERS), u64::saturating_add)
}

/// The animation budget of `process()`: `Err(Error::Limit)` ("animation needs N MiB of
/// frame buffers, over the M MiB limit") when this source is streamed with `plan`
/// ([`applies`]) and its [`working_set`] is over `limits.max_animation_bytes`. Needs only
/// the header facts and the plan's variant sizes and formats, so an upload node can
/// refuse the file before it is stored.
pub fn check_budget(info: &Info, plan: &Plan, limits: &Limits) -> Result<()> {
    if applies(info, plan) {
        limits.check_animation_bytes(working_set(info, plan))?;
    }
    Ok(())
}

/// For each of the `count` sizes: whether a variant with a WebP output is made from it.
fn animated_sizes(plan: &Plan, count: usize, targets: &[(usize, usize)]) -> Vec<bool> {
    let mut animated = vec![false; count];
    for &(variant, size) in targets {
        let webp = plan
            .variants
            .get(variant)
            .is_some_and(|v| v.formats.contains(&OutFormat::Webp));
        if let (true, Some(a)) = (webp, animated.get_mut(size)) {
            *a = true;
        }
    }
    animated
}

impl Step for Animate {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        check_budget(&ctx.info, ctx.plan, ctx.limits)?;
        let Some((frames, loop_count)) = open(ctx)? else {
            // a PNG whose acTL the decoder does not take as APNG: a still after all
            for step in &STEPS[..STEPS.len() - 1] {
                ctx.deadline.check("the pipeline")?;
                step.run(ctx)?;
            }
            return Ok(());
        };
        ctx.loop_count = match loop_count {
            LoopCount::Infinite => 0,
            LoopCount::Finite(n) => n.get(),
        };
        stream(ctx, frames)
    }
}

/// The frame iterator and loop count of the source (its ICC profile into `ctx.icc`);
/// `None` for a PNG that is not an APNG.
fn open<'a>(ctx: &mut Context<'a>) -> Result<Option<(Frames<'a>, LoopCount)>> {
    let cursor = Cursor::new(ctx.data);
    let limits = image_limits(ctx.limits);
    let opened = match ctx.info.format {
        Format::Gif => {
            let mut d = GifDecoder::new(cursor)?;
            d.set_limits(limits)?;
            ctx.icc = d.icc_profile().ok().flatten();
            let lc = if crate::codecs::gif::has_loop_extension(ctx.data) {
                d.loop_count()
            } else {
                LoopCount::Finite(std::num::NonZeroU32::MIN)
            };
            (d.into_frames(), lc)
        }
        Format::Webp => {
            let mut d = WebPDecoder::new(cursor)?;
            d.set_limits(limits)?;
            ctx.icc = d.icc_profile().ok().flatten();
            let lc = d.loop_count();
            (d.into_frames(), lc)
        }
        Format::Png => {
            let mut d = PngDecoder::with_limits(cursor, limits)?;
            ctx.icc = d.icc_profile().ok().flatten();
            if !d.is_apng()? {
                ctx.icc = None;
                return Ok(None);
            }
            let apng = d.apng()?;
            let lc = apng.loop_count();
            (apng.into_frames(), lc)
        }
        Format::Jpeg | Format::Avif => return Ok(None),
    };
    Ok(Some(opened))
}

fn stream(ctx: &mut Context<'_>, frames: Frames<'_>) -> Result<()> {
    let orientation =
        Orientation::from_exif(ctx.info.orientation).filter(|&o| o != Orientation::NoTransforms);
    let srgb = SrgbTransform::new(ctx.icc.as_deref());
    let config = webp::config(ctx.plan)?;
    let max_frames = usize::try_from(ctx.limits.max_frames).unwrap_or(usize::MAX);
    let mut sizes: Vec<(u32, u32)> = Vec::new();
    let mut animated: Vec<bool> = Vec::new();
    // one per size; an encoder is started at the second frame (an animation that
    // decodes to one frame is a still WebP, as before) for each animated size
    let mut writers: Vec<Option<AnimWriter>> = Vec::new();
    let mut renditions: Vec<Rendition> = Vec::new();
    let mut count = 0usize;
    for frame in frames {
        if count >= max_frames {
            return Err(Error::Limit(format!(
                "animation has more than {max_frames} frames"
            )));
        }
        ctx.deadline.check("decoding animation frames")?;
        let frame = frame?;
        let (num, den) = frame.delay().numer_denom_ms();
        let ms = num.checked_div(den).unwrap_or(0);
        // Browsers show GIF delays of 0..=10 ms as 100 ms; keep the file playing the same.
        let delay_ms = if ms <= 10 { 100 } else { ms };
        let mut image = DynamicImage::ImageRgba8(frame.into_buffer());
        if let Some(o) = orientation {
            image.apply_orientation(o);
        }
        if count == 0 {
            // every rendition size is fitted from the first frame's upright size
            ctx.upright = (image.width(), image.height());
            let (s, targets) = plan_sizes(ctx.plan, ctx.upright);
            animated = animated_sizes(ctx.plan, s.len(), &targets);
            ctx.targets = targets;
            sizes = s;
        }
        let mut images = resize_chain(&image, &sizes, ctx.deadline)?;
        drop(image);
        if let Some(t) = &srgb {
            images.iter_mut().for_each(|i| t.apply(i));
        }
        count += 1;
        if count == 1 {
            renditions = sizes
                .iter()
                .zip(images)
                .map(|(&(width, height), image)| Rendition {
                    width,
                    height,
                    frames: vec![Frame { image, delay_ms }],
                })
                .collect();
            writers = sizes.iter().map(|_| None).collect();
            continue;
        }
        if count == 2 {
            // the second frame makes it an animation: start each encoder with the first
            for ((slot, r), &anim) in writers.iter_mut().zip(&renditions).zip(&animated) {
                if !anim {
                    continue;
                }
                let mut writer = AnimWriter::new(r.width, r.height, config, ctx.loop_count)?;
                if let Some(first) = r.frames.first() {
                    writer.add(&first.image, first.delay_ms)?;
                }
                *slot = Some(writer);
            }
        }
        ctx.deadline.check("encoding an animation")?;
        // the renditions' encoders take the frame in parallel; then it is dropped
        writers
            .par_iter_mut()
            .zip(images.par_iter())
            .try_for_each(|(slot, image)| match slot {
                Some(writer) => writer.add(image, delay_ms),
                None => Ok(()),
            })?;
    }
    if count == 0 {
        return Err(Error::corrupt("animation has no frames"));
    }
    ctx.deadline.check("encoding an animation")?;
    let finished: Vec<Option<(Vec<u8>, u32)>> = writers
        .into_par_iter()
        .map(|slot| slot.map(AnimWriter::finish).transpose())
        .collect::<Result<_>>()?;
    ctx.animations = finished;
    ctx.renditions = renditions;
    Ok(())
}
