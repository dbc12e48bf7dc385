//! Decode the source once into 8-bit RGB/RGBA frames (16-bit is scaled, not clipped).

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::LoopCount;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::pipeline::{Context, Frame, OutFormat, Step};
use crate::probe::Format;

pub struct Decode;

impl Step for Decode {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let wants_animation = ctx
            .plan
            .variants
            .iter()
            .any(|v| v.formats.contains(&OutFormat::Webp));
        if ctx.info.frames > 1 && wants_animation {
            decode_animation(ctx)
        } else {
            decode_still(ctx)
        }
    }
}

/// image-crate limits derived from ours (the header was already checked; this is
/// the second line of defence inside the decoders).
fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = u32::try_from(limits.max_width).ok();
    l.max_image_height = u32::try_from(limits.max_height).ok();
    // RGBA16 of the largest allowed frame plus slack for decoder scratch buffers.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

fn image_format(format: Format) -> Result<ImageFormat> {
    match format {
        Format::Jpeg => Ok(ImageFormat::Jpeg),
        Format::Png => Ok(ImageFormat::Png),
        Format::Gif => Ok(ImageFormat::Gif),
        Format::Webp => Ok(ImageFormat::WebP),
        Format::Avif => Err(Error::unsupported("AVIF")),
    }
}

/// RGB8 for opaque sources, RGBA8 when the source has an alpha channel.
pub fn to_8bit(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => img,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.into_rgba8()),
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    }
}

fn decode_still(ctx: &mut Context<'_>) -> Result<()> {
    #[cfg(feature = "avif-decode")]
    if ctx.info.format == Format::Avif {
        let (img, icc) = crate::codecs::avif::decode(ctx.data, ctx.limits)?;
        ctx.icc = icc;
        ctx.frames = vec![Frame {
            image: img,
            delay_ms: 0,
        }];
        return Ok(());
    }
    let mut reader =
        ImageReader::with_format(Cursor::new(ctx.data), image_format(ctx.info.format)?);
    reader.limits(image_limits(ctx.limits));
    let mut decoder = reader.into_decoder()?;
    ctx.icc = decoder.icc_profile().ok().flatten();
    let img = DynamicImage::from_decoder(decoder)?;
    ctx.frames = vec![Frame {
        image: to_8bit(img),
        delay_ms: 0,
    }];
    Ok(())
}

fn decode_animation(ctx: &mut Context<'_>) -> Result<()> {
    let cursor = Cursor::new(ctx.data);
    let limits = image_limits(ctx.limits);
    let (frames, loop_count) = match ctx.info.format {
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
                return decode_still(ctx);
            }
            let apng = d.apng()?;
            let lc = apng.loop_count();
            (apng.into_frames(), lc)
        }
        _ => return decode_still(ctx),
    };
    ctx.loop_count = match loop_count {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => n.get(),
    };
    let max_frames = usize::try_from(ctx.limits.max_frames).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for frame in frames {
        if out.len() >= max_frames {
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
        out.push(Frame {
            image: DynamicImage::ImageRgba8(frame.into_buffer()),
            delay_ms,
        });
    }
    if out.is_empty() {
        return Err(Error::corrupt("animation has no frames"));
    }
    ctx.frames = out;
    Ok(())
}
