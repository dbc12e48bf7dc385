//! Decode a still source (or an animation's first frame, when no output is animated)
//! once into one 8-bit RGB/RGBA frame (16-bit is scaled, not clipped). Animations with
//! a WebP output are decoded frame by frame by `steps::animate` instead.
//!
//! A still JPEG whose largest rendition is at most half its size is decoded with DCT
//! scaling (shrink-on-load, 1/2 or 1/4: [`jpeg_shrink`]) by jpeg-decoder; every
//! other image, and any JPEG that path does not take, by the `image` crate at full size
//! (zune-jpeg for JPEG), except JPEGs zune-jpeg decodes wrongly (chroma finer than luma)
//! or cannot decode, which jpeg-decoder decodes at full size.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::codecs::jpeg::frame_layout;
use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::pipeline::{Context, Frame, Step};
use crate::probe::Format;
use crate::steps::auto_orient::{swaps_axes, upright_size};
use crate::steps::resize::fit;

pub struct Decode;

impl Step for Decode {
    /// The first frame only (animations with a WebP output take `steps::animate`).
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        decode_still(ctx)
    }
}

/// image-crate limits derived from ours (the header was already checked; this is
/// the second line of defence inside the decoders).
pub fn image_limits(limits: &Limits) -> image::Limits {
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
    let mut tried_jpeg_decoder = false;
    if ctx.info.format == Format::Jpeg {
        let shrink = planned_jpeg_shrink(ctx);
        // zune-jpeg gets the colours of chroma sampled finer than luma wrong: jpeg-decoder
        // decodes those at full size too (1/1), falling back to zune-jpeg only if it fails
        let finer_chroma = || frame_layout(ctx.data).is_some_and(|l| l.chroma_finer_than_luma());
        if shrink > 1 || finer_chroma() {
            tried_jpeg_decoder = shrink == 1;
            if with_jpeg_decoder(ctx, shrink)? {
                return Ok(());
            }
        }
    }
    let mut reader =
        ImageReader::with_format(Cursor::new(ctx.data), image_format(ctx.info.format)?);
    reader.limits(image_limits(ctx.limits));
    let full = reader.into_decoder().and_then(|mut decoder| {
        let icc = decoder.icc_profile().ok().flatten();
        Ok((DynamicImage::from_decoder(decoder)?, icc))
    });
    let img = match full {
        Ok((img, icc)) => {
            ctx.icc = icc;
            img
        }
        // a JPEG zune-jpeg cannot decode (it refuses a horizontal luma sampling factor of
        // 3, which T.81 allows) gets jpeg-decoder's full decode before it is called
        // corrupt, so whether a file is accepted does not depend on the recipe's sizes;
        // limit errors stay errors
        Err(err @ image::ImageError::Decoding(_))
            if ctx.info.format == Format::Jpeg && !tried_jpeg_decoder =>
        {
            if with_jpeg_decoder(ctx, 1)? {
                return Ok(());
            }
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    ctx.frames = vec![Frame {
        image: to_8bit(img),
        delay_ms: 0,
    }];
    Ok(())
}

/// Decodes the still JPEG at 1/`shrink` with [`decode_jpeg_scaled`] into `ctx` (frame,
/// ICC profile, shrink); `Ok(false)` when that path does not take the file. A panic
/// inside jpeg-decoder counts as not taken, like its errors (the fuzz build's panic
/// hook aborts first, so the fuzzer still reports it). Checks the deadline before and
/// after.
fn with_jpeg_decoder(ctx: &mut Context<'_>, shrink: u32) -> Result<bool> {
    ctx.deadline.check("decoding")?;
    let scaled = catch_unwind(AssertUnwindSafe(|| decode_jpeg_scaled(ctx, shrink)));
    if let Ok(Some((img, icc))) = scaled {
        ctx.icc = icc;
        ctx.shrink = shrink;
        ctx.frames = vec![Frame {
            image: to_8bit(img),
            delay_ms: 0,
        }];
        return Ok(true);
    }
    ctx.deadline.check("decoding")?;
    Ok(false)
}

/// The JPEG shrink-on-load (DCT scaling) denominator for a source of
/// `source_w` x `source_h` px whose largest output is `target_w` x `target_h` px
/// (both in the source's stored axes): the largest `d` of 4 and 2 with
/// `target * d <= source` on both axes, i.e. the target is at most 1/`d` of the
/// source, so the decoded `ceil(source / d)` still covers the target on both axes and
/// every rendition is resized down from it, never up; 1 (full decode) when the target
/// is over half the source on either axis.
///
/// Rule and source: the image-core issue's "JPEG shrink-on-load (DCT scaling) when the
/// target is at most half the source", following libvips' jpegload `shrink`; it is
/// exactly Pillow's `Image.draft` (`scale = min(w // tw, h // th)`, then the largest of
/// 8, 4, 2, 1 not above it). libvips' own `thumbnail` (8.14, measured) is more cautious:
/// it takes 1/`d` only when the shrink is at least `2 * d` (a 4288 px photo into a
/// 2048 px box loads at full size, into 1024 at 1/2), leaving at least 2x to its final
/// resize; docs/imaging.md has what the rule here costs in PSNR.
///
/// No 1/8: jpeg-decoder 0.3.2's 1x1 IDCT (`dequantize_and_idct_block_1x1`) divides by 8
/// without rounding, which darkens every pixel (measured: -0.5 levels on grey, -1.0 R,
/// -0.1 G, -1.5 B on colour); its 1/2 and 1/4 IDCTs round and show no shift.
pub fn jpeg_shrink(source_w: u32, source_h: u32, target_w: u32, target_h: u32) -> u32 {
    let within = |d: u32| {
        u64::from(target_w) * u64::from(d) <= u64::from(source_w)
            && u64::from(target_h) * u64::from(d) <= u64::from(source_h)
    };
    [4, 2].into_iter().find(|&d| within(d)).unwrap_or(1)
}

/// [`jpeg_shrink`] for this still JPEG and plan: the largest rendition on each axis,
/// fitted from the FULL upright size exactly as the resize step fits it, turned back
/// into the stored axes when the EXIF orientation swaps them.
fn planned_jpeg_shrink(ctx: &Context<'_>) -> u32 {
    let (w, h) = (ctx.info.width, ctx.info.height);
    let (uw, uh) = upright_size(w, h, ctx.info.orientation);
    let Some((tw, th)) = ctx
        .plan
        .variants
        .iter()
        .map(|v| fit(uw, uh, v.width, v.height))
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    else {
        return 1;
    };
    let (tw, th) = if swaps_axes(ctx.info.orientation) {
        (th, tw)
    } else {
        (tw, th)
    };
    jpeg_shrink(w, h, tw, th)
}

/// Decodes the JPEG at 1/`shrink` of its size (each side rounded up; 1 = full size) with
/// jpeg-decoder's DCT scaling; returns the frame and the ICC profile, or `None` when
/// this path does not take the file and the full decode must: not 8-bit Huffman
/// (baseline, extended or progressive), not grey or YCbCr as zune-jpeg reads it (CMYK,
/// YCCK and RGB stay with the full decode, so their colours do not change), or
/// jpeg-decoder refuses or fails on it (the full decode then gives today's result,
/// e.g. its CorruptImage error).
fn decode_jpeg_scaled(ctx: &Context<'_>, shrink: u32) -> Option<(DynamicImage, Option<Vec<u8>>)> {
    use jpeg_decoder::{CodingProcess, ColorTransform, Decoder, PixelFormat};
    let layout = frame_layout(ctx.data)?;
    if !matches!(layout.sof, 0xC0..=0xC2) || layout.precision != 8 {
        return None;
    }
    let (transform, format) = match layout.component_ids.as_slice() {
        [_] => (ColorTransform::Grayscale, PixelFormat::L8),
        // zune-jpeg (the full decode) reads ids 'R','G','B' and Adobe transform 0 as RGB
        // and transform 2 as YCCK; leave those to it
        ids if ids.len() == 3
            && ids != b"RGB"
            && matches!(layout.adobe_transform, None | Some(1)) =>
        {
            (ColorTransform::YCbCr, PixelFormat::RGB24)
        }
        _ => return None,
    };
    let (w, h) = (ctx.info.width, ctx.info.height);
    let want = (w.div_ceil(shrink), h.div_ceil(shrink));
    let mut decoder = Decoder::new(ctx.data);
    decoder.set_color_transform(transform);
    // bytes of the decoded frame; the full size was checked against the limits by verify
    let max_bytes = ctx.limits.max_pixels.saturating_mul(3);
    decoder.set_max_decoding_buffer_size(usize::try_from(max_bytes).unwrap_or(usize::MAX));
    let got = decoder
        .scale(u16::try_from(want.0).ok()?, u16::try_from(want.1).ok()?)
        .ok()?;
    // jpeg-decoder picks the smallest scale covering the request on EITHER axis; take
    // the result only if it is exactly the one asked for
    if (u32::from(got.0), u32::from(got.1)) != want {
        return None;
    }
    let info = decoder.info()?;
    if info.pixel_format != format
        || !matches!(
            info.coding_process,
            CodingProcess::DctSequential | CodingProcess::DctProgressive
        )
    {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let img = match format {
        PixelFormat::L8 => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(want.0, want.1, pixels)?)
        }
        _ => DynamicImage::ImageRgb8(image::RgbImage::from_raw(want.0, want.1, pixels)?),
    };
    Some((img, decoder.icc_profile()))
}

#[cfg(test)]
mod tests {
    use super::jpeg_shrink;

    #[test]
    fn shrink_is_the_largest_reduction_that_still_covers_the_target() {
        // corpus photos into the default 2048 px box (target fitted from the full size)
        assert_eq!(jpeg_shrink(4288, 2848, 2048, 1360), 2); // Nikon D90
        assert_eq!(jpeg_shrink(4608, 1976, 2048, 878), 2); // Nokia 8.3, wide
        assert_eq!(jpeg_shrink(2576, 1932, 2048, 1536), 1); // Samsung J3: over half
                                                            // Leica T, orientation 8: upright 3264x4928 fits 1356x2048, stored axes swap back
        assert_eq!(jpeg_shrink(4928, 3264, 2048, 1356), 2);
        // 8000x6000: 1/2 at 2048, 1/4 at 1024 and at 200
        assert_eq!(jpeg_shrink(8000, 6000, 2048, 1536), 2);
        assert_eq!(jpeg_shrink(8000, 6000, 1024, 768), 4);
        assert_eq!(jpeg_shrink(8000, 6000, 200, 150), 4);
        // 1/4 is the largest reduction, however small the target (see the doc comment: no 1/8)
        assert_eq!(jpeg_shrink(8000, 6000, 1, 1), 4);
    }

    #[test]
    fn shrink_needs_both_axes_within_the_reduction() {
        // exactly half on both axes: 1/2; one pixel over on either axis: full decode
        assert_eq!(jpeg_shrink(4000, 3000, 2000, 1500), 2);
        assert_eq!(jpeg_shrink(4000, 3000, 2001, 1500), 1);
        assert_eq!(jpeg_shrink(4000, 3000, 2000, 1501), 1);
        // 4001 px: 2000 is under half (2000.5), 2001 is over it
        assert_eq!(jpeg_shrink(4001, 3000, 2000, 1500), 2);
        assert_eq!(jpeg_shrink(4001, 3000, 2001, 1500), 1);
        // the rounded-up 1-px side of a thin fit decides too: 20000x300 into 200 is
        // 200x3 (1/4); 20000x5 into 200 is 200x1 (1/4); 20000x3 into 200x1: 1 * 4 > 3
        assert_eq!(jpeg_shrink(20000, 300, 200, 3), 4);
        assert_eq!(jpeg_shrink(20000, 5, 200, 1), 4);
        assert_eq!(jpeg_shrink(20000, 3, 200, 1), 2);
        // never upscaled: a target the size of the source, or a 0 px source
        assert_eq!(jpeg_shrink(100, 100, 100, 100), 1);
        assert_eq!(jpeg_shrink(0, 0, 1, 1), 1);
        // no overflow at the extremes
        assert_eq!(
            jpeg_shrink(u32::MAX, u32::MAX, u32::MAX / 4, u32::MAX / 4),
            4
        );
    }
}
