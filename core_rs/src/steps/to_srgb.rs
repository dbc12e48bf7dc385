//! Convert renditions from the embedded ICC profile to sRGB (Little CMS), so that
//! stripping the profile on output does not shift colours. Runs after resize: it
//! is per-pixel work and the renditions are much smaller than the source.
//! Non-RGB profiles (CMYK, grey) are skipped: the decoder already produced RGB.
//! Animations are converted frame by frame by `steps::animate`, with the same
//! [`SrgbTransform`].

use image::DynamicImage;
use lcms2::{ColorSpaceSignature, Flags, Intent, PixelFormat, Profile, Transform};

use crate::errors::Result;
use crate::pipeline::{Context, Step};

pub struct ToSrgb;

impl Step for ToSrgb {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let Some(transform) = SrgbTransform::new(ctx.icc.as_deref()) else {
            return Ok(());
        };
        for frame in ctx.renditions.iter_mut().flat_map(|r| r.frames.iter_mut()) {
            transform.apply(&mut frame.image);
        }
        Ok(())
    }
}

/// The profile → sRGB transforms of one source, for RGB8 and RGBA8 pixels.
pub struct SrgbTransform {
    rgb: Option<Transform<[u8; 3], [u8; 3]>>,
    rgba: Option<Transform<[u8; 4], [u8; 4]>>,
}

impl SrgbTransform {
    /// `None` when there is nothing to do: no profile, a broken or unusable one (ignored,
    /// not fatal: the pixels are still fine), a non-RGB one, or sRGB already.
    pub fn new(icc: Option<&[u8]>) -> Option<Self> {
        let profile = Profile::new_icc(icc?).ok()?;
        if profile.color_space() != ColorSpaceSignature::RgbData || is_srgb(&profile) {
            return None;
        }
        let srgb = Profile::new_srgb();
        let rgb = Transform::new(
            &profile,
            PixelFormat::RGB_8,
            &srgb,
            PixelFormat::RGB_8,
            Intent::Perceptual,
        )
        .ok();
        let rgba = Transform::new_flags(
            &profile,
            PixelFormat::RGBA_8,
            &srgb,
            PixelFormat::RGBA_8,
            Intent::Perceptual,
            Flags::COPY_ALPHA,
        )
        .ok();
        Some(SrgbTransform { rgb, rgba })
    }

    /// Converts `image` in place (RGB8 / RGBA8; other layouts are left as they are).
    pub fn apply(&self, image: &mut DynamicImage) {
        match (image, &self.rgb, &self.rgba) {
            (DynamicImage::ImageRgb8(buf), Some(t), _) => {
                t.transform_in_place(buf.as_chunks_mut::<3>().0)
            }
            (DynamicImage::ImageRgba8(buf), _, Some(t)) => {
                t.transform_in_place(buf.as_chunks_mut::<4>().0)
            }
            _ => {}
        }
    }
}

/// True for profiles that describe sRGB already (by description), to skip the work.
fn is_srgb(profile: &Profile) -> bool {
    profile
        .info(lcms2::InfoType::Description, lcms2::Locale::none())
        .map(|d| d.to_ascii_lowercase().contains("srgb"))
        .unwrap_or(false)
}
