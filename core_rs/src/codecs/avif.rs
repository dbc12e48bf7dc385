//! ISO-BMFF (`ftyp`) family: AVIF is detected and its size read from `ispe`;
//! with the `avif-decode` feature (on by default) it is parsed and decoded by
//! libavif + dav1d, both built from the sources bundled in the `libavif-sys`
//! crate (Debian's libdav1d is too old for the `image` crate's bindings). HEIC
//! and friends are named in the error.

use super::{be32, Mode};
use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::pipeline::{AvifSettings, Rendition};
use crate::probe::{Format, Info};
#[cfg(feature = "avif-decode")]
use image::DynamicImage;

/// Decides between AVIF and other ftyp-based formats from the brands.
pub fn sniff_ftyp(d: &[u8]) -> Result<Format> {
    let box_len = be32(d, 0).unwrap_or(0) as usize;
    let end = box_len.clamp(8, d.len().min(256));
    let brands: Vec<&[u8]> = d.get(8..end).unwrap_or_default().chunks_exact(4).collect();
    let has = |names: &[&[u8]]| brands.iter().any(|b| names.contains(b));
    if has(&[b"avif", b"avis"]) {
        return Ok(Format::Avif);
    }
    if has(&[
        b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1",
    ]) {
        return Err(Error::unsupported("HEIC"));
    }
    if has(&[b"qt  "]) {
        return Err(Error::unsupported("QuickTime video"));
    }
    if has(&[b"isom", b"mp41", b"mp42", b"iso2", b"avc1", b"M4V "]) {
        return Err(Error::unsupported("MP4 video"));
    }
    if d.len() < 12 {
        // "ftyp" and no whole major brand: a file cut within its first 12 bytes (it was named an
        // unsupported "ISO media file", as if the format were the problem)
        return Err(Error::truncated(
            "the file ends inside its ftyp box, before its brand (an AVIF or HEIC file cut short?)",
        ));
    }
    Err(Error::unsupported("ISO media file"))
}

/// Size from the first `ispe` property, searched in the `meta` box (which may follow the
/// `mdat`), or in the first 64 KiB when `d` does not hold all of `meta` (a prefix).
pub fn dimensions(d: &[u8]) -> Option<(u32, u32)> {
    let head = match crate::isobmff_meta::meta_span(d) {
        Some((start, end)) => &d[start..end],
        None => &d[..d.len().min(64 * 1024)],
    };
    let at = head.windows(4).position(|w| w == b"ispe")?;
    // "ispe" + version/flags (4) + width (4) + height (4)
    Some((be32(head, at + 8)?, be32(head, at + 12)?))
}

#[cfg(not(feature = "avif-decode"))]
pub fn parse(d: &[u8], limits: &Limits, _mode: Mode) -> Result<Info> {
    if let Some((w, h)) = dimensions(d) {
        limits.check_dimensions(u64::from(w), u64::from(h))?;
        return Err(Error::Unsupported(format!(
            "unsupported format: AVIF ({w}x{h}; this build has no AVIF decoder)"
        )));
    }
    Err(Error::unsupported("AVIF"))
}

/// Header size (from `ispe`, checked against the limits first); in `Whole` mode
/// also libavif's parse of the whole box structure (no pixel decode). The
/// orientation comes from `irot`/`imir` as the equivalent EXIF value.
#[cfg(feature = "avif-decode")]
pub fn parse(d: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    let Some((w, h)) = dimensions(d) else {
        if mode == Mode::Whole {
            crate::isobmff_meta::check_complete(d)?; // says which box the data ends in, when it does
        }
        return Err(Error::truncated(
            "AVIF data ends before the image size (ispe)",
        ));
    };
    if w == 0 || h == 0 {
        return Err(Error::corrupt("corrupt AVIF: zero width or height"));
    }
    limits.check_dimensions(u64::from(w), u64::from(h))?;
    let mut info = Info {
        format: Format::Avif,
        width: w,
        height: h,
        frames: 1,
        orientation: 1,
    };
    if mode == Mode::Whole {
        crate::isobmff_meta::check_complete(d)?;
        let dec = libavif::Decoder::new(limits)?;
        dec.parse(d)?;
        info.orientation = dec.orientation();
    }
    Ok(info)
}

/// The first (or only) image as 8-bit RGB/RGBA plus its ICC profile.
#[cfg(feature = "avif-decode")]
pub fn decode(d: &[u8], limits: &Limits) -> Result<(DynamicImage, Option<Vec<u8>>)> {
    let dec = libavif::Decoder::new(limits)?;
    dec.parse(d)?;
    dec.first_image()
}

#[cfg(feature = "avif-decode")]
mod libavif {
    //! The few libavif calls we need, behind a handle that is always destroyed.
    use image::{DynamicImage, RgbImage, RgbaImage};
    use libavif_sys as sys;

    use crate::errors::{Error, Result};
    use crate::limits::Limits;

    pub struct Decoder(*mut sys::avifDecoder);

    impl Drop for Decoder {
        fn drop(&mut self) {
            // SAFETY: created by avifDecoderCreate, destroyed once.
            unsafe { sys::avifDecoderDestroy(self.0) }
        }
    }

    fn check(result: sys::avifResult, what: &str) -> Result<()> {
        if result == sys::AVIF_RESULT_OK {
            return Ok(());
        }
        // SAFETY: avifResultToString returns a static NUL-terminated string.
        let msg = unsafe { std::ffi::CStr::from_ptr(sys::avifResultToString(result)) }
            .to_string_lossy()
            .into_owned();
        if result == sys::AVIF_RESULT_TRUNCATED_DATA {
            return Err(Error::truncated(format!("AVIF {what}: {msg}")));
        }
        Err(Error::corrupt(format!("corrupt AVIF ({what}): {msg}")))
    }

    impl Decoder {
        pub fn new(limits: &Limits) -> Result<Self> {
            // SAFETY: plain constructor; null is checked.
            let ptr = unsafe { sys::avifDecoderCreate() };
            if ptr.is_null() {
                return Err(Error::corrupt("AVIF decoder could not be created"));
            }
            let dec = Decoder(ptr);
            // SAFETY: ptr is a valid decoder we own.
            unsafe {
                (*ptr).maxThreads = 1; // one worker per core does the parallelism
                (*ptr).ignoreExif = 1;
                (*ptr).ignoreXMP = 1;
                (*ptr).strictFlags = sys::AVIF_STRICT_DISABLED as _;
                (*ptr).imageSizeLimit = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
                (*ptr).imageDimensionLimit =
                    u32::try_from(limits.max_width.max(limits.max_height)).unwrap_or(u32::MAX);
                (*ptr).imageCountLimit = u32::try_from(limits.max_frames).unwrap_or(u32::MAX);
            }
            Ok(dec)
        }

        /// Parses the container (boxes, item properties); `d` must outlive `self`.
        pub fn parse(&self, d: &[u8]) -> Result<()> {
            // SAFETY: the decoder reads `d` only during parse/decode calls made while
            // the caller's borrow of `d` is alive (self is dropped in the same scope).
            unsafe {
                check(
                    sys::avifDecoderSetIOMemory(self.0, d.as_ptr(), d.len()),
                    "input",
                )?;
                check(sys::avifDecoderParse(self.0), "container")
            }
        }

        /// irot/imir as an EXIF orientation (1 when neither is present).
        pub fn orientation(&self) -> u8 {
            // SAFETY: image is set by a successful parse.
            let img = unsafe { &*(*self.0).image };
            let flags = img.transformFlags;
            let rot = if flags & sys::AVIF_TRANSFORM_IROT != 0 {
                img.irot.angle % 4
            } else {
                0
            };
            let mirror = if flags & sys::AVIF_TRANSFORM_IMIR != 0 {
                Some(img.imir.axis)
            } else {
                None
            };
            // irot is counter-clockwise; imir (applied after irot) axis 0 flips
            // top-bottom, axis 1 left-right (HEIF 1.0 / libavif >= 1.0).
            match (rot, mirror) {
                (0, None) => 1,
                (1, None) => 8,
                (2, None) => 3,
                (3, None) => 6,
                (0, Some(1)) | (2, Some(0)) => 2,
                (0, Some(0)) | (2, Some(1)) => 4,
                (1, Some(1)) | (3, Some(0)) => 7,
                (1, Some(0)) | (3, Some(1)) => 5,
                _ => 1,
            }
        }

        pub fn first_image(&self) -> Result<(DynamicImage, Option<Vec<u8>>)> {
            // SAFETY: decoder parsed successfully; every pointer read below is owned by
            // the decoder and valid until the next call on it; `buf` outlives the
            // conversion that writes into it with the row stride we set.
            unsafe {
                check(sys::avifDecoderNextImage(self.0), "image data")?;
                let img = (*self.0).image;
                let mut rgb = sys::avifRGBImage::default();
                sys::avifRGBImageSetDefaults(&mut rgb, img);
                let alpha = !(*img).alphaPlane.is_null();
                let channels: u32 = if alpha { 4 } else { 3 };
                rgb.depth = 8;
                rgb.format = if alpha {
                    sys::AVIF_RGB_FORMAT_RGBA
                } else {
                    sys::AVIF_RGB_FORMAT_RGB
                };
                let (w, h) = (rgb.width, rgb.height);
                let row = w
                    .checked_mul(channels)
                    .ok_or_else(|| Error::corrupt("corrupt AVIF: size overflow"))?;
                let mut buf = vec![0u8; row as usize * h as usize];
                rgb.pixels = buf.as_mut_ptr();
                rgb.rowBytes = row;
                check(sys::avifImageYUVToRGB(img, &mut rgb), "colour conversion")?;
                let icc = (*img).icc;
                let icc = (!icc.data.is_null() && icc.size > 0)
                    .then(|| std::slice::from_raw_parts(icc.data, icc.size).to_vec());
                let image = if alpha {
                    RgbaImage::from_raw(w, h, buf).map(DynamicImage::ImageRgba8)
                } else {
                    RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8)
                }
                .ok_or_else(|| Error::corrupt("corrupt AVIF: bad image size"))?;
                Ok((image, icc))
            }
        }
    }
}

/// Without the `avif-encode` feature (the fuzz build only): AVIF output is refused.
#[cfg(not(feature = "avif-encode"))]
pub fn encode(_r: &Rendition, settings: AvifSettings) -> Result<Vec<u8>> {
    Err(Error::Encode {
        format: "avif",
        detail: format!(
            "this build has no AVIF encoder (asked for quality {}, speed {})",
            settings.quality, settings.speed
        ),
    })
}

/// Owns a libavif pointer and frees it with `drop_fn` (every exit path of [`encode`]).
#[cfg(feature = "avif-encode")]
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

#[cfg(feature = "avif-encode")]
impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching libavif create function, freed once.
            unsafe { (self.1)(self.0) }
        }
    }
}

/// AVIF of the first frame of a rendition, by libaom through libavif (both built
/// from the sources bundled in `libavif-sys`/`libaom-sys`); alpha kept.
///
/// 8-bit YUV 4:2:0, full range, sRGB CICP (primaries BT.709, transfer sRGB, matrix
/// BT.601), no ICC, EXIF or XMP. `settings.quality` is libavif's quality 0..=100
/// (quantizer = (100 - q) * 63 / 100, the mapping libheif uses for libvips' `Q`, so
/// equal numbers give comparable files); `settings.speed` is libavif's speed 0
/// (slowest) ..= 10 (fastest; libaom's `cpu-used` tops out at 9);
/// `settings.rect_partitions` false sets libaom's `enable-rect-partitions=0`, which
/// halves the time at speed 5 for about 0.002 SSIM (docs/benchmarks.md). libaom uses
/// up to as many threads as the machine has cores. Errors: [`Error::Encode`] with
/// libavif's result text.
#[cfg(feature = "avif-encode")]
pub fn encode(r: &Rendition, settings: AvifSettings) -> Result<Vec<u8>> {
    let AvifSettings {
        quality,
        speed,
        rect_partitions,
    } = settings;
    use libavif_sys as av;
    use std::os::raw::c_int;

    let err = |detail: String| Error::Encode {
        format: "avif",
        detail,
    };
    let check = |what: &str, res: av::avifResult| -> Result<()> {
        if res == av::AVIF_RESULT_OK {
            return Ok(());
        }
        // SAFETY: avifResultToString returns a static NUL-terminated string for any value.
        let text = unsafe { std::ffi::CStr::from_ptr(av::avifResultToString(res)) };
        Err(err(format!("{what}: {}", text.to_string_lossy())))
    };
    let first = r.frames.first().ok_or_else(|| err("no frames".into()))?;
    let (w, h) = (r.width, r.height);
    let (pixels, format, channels) = match &first.image {
        DynamicImage::ImageRgba8(b) => (b.as_raw(), av::AVIF_RGB_FORMAT_RGBA, 4),
        DynamicImage::ImageRgb8(b) => (b.as_raw(), av::AVIF_RGB_FORMAT_RGB, 3),
        _ => return Err(err("unexpected pixel layout".into())),
    };
    if pixels.len() != (w as usize) * (h as usize) * channels {
        return Err(err("pixel buffer does not match the rendition size".into()));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as c_int;
    let quality = quality.round().clamp(0.0, 100.0) as c_int;
    // SAFETY: every pointer is checked for NULL and owned by a guard that frees it once;
    // `rgb.pixels` borrows `pixels` (alive for the whole block) and libavif only reads it.
    unsafe {
        let image = Owned(
            av::avifImageCreate(w, h, 8, av::AVIF_PIXEL_FORMAT_YUV420),
            av::avifImageDestroy,
        );
        if image.0.is_null() {
            return Err(err("out of memory (avifImageCreate)".into()));
        }
        (*image.0).yuvRange = av::AVIF_RANGE_FULL;
        (*image.0).colorPrimaries = av::AVIF_COLOR_PRIMARIES_BT709 as _;
        (*image.0).transferCharacteristics = av::AVIF_TRANSFER_CHARACTERISTICS_SRGB as _;
        (*image.0).matrixCoefficients = av::AVIF_MATRIX_COEFFICIENTS_BT601 as _;
        let mut rgb = av::avifRGBImage::default();
        av::avifRGBImageSetDefaults(&mut rgb, image.0);
        rgb.format = format;
        rgb.depth = 8;
        rgb.pixels = pixels.as_ptr().cast_mut();
        rgb.rowBytes = w * channels as u32;
        rgb.maxThreads = threads;
        check("RGB to YUV", av::avifImageRGBToYUV(image.0, &rgb))?;

        let encoder = Owned(av::avifEncoderCreate(), av::avifEncoderDestroy);
        if encoder.0.is_null() {
            return Err(err("out of memory (avifEncoderCreate)".into()));
        }
        (*encoder.0).codecChoice = av::AVIF_CODEC_CHOICE_AOM;
        (*encoder.0).maxThreads = threads;
        (*encoder.0).speed = c_int::from(speed.min(10));
        (*encoder.0).quality = quality;
        (*encoder.0).qualityAlpha = quality;
        (*encoder.0).autoTiling = av::AVIF_TRUE as _;
        if !rect_partitions {
            check(
                "libaom option enable-rect-partitions",
                av::avifEncoderSetCodecSpecificOption(
                    encoder.0,
                    c"enable-rect-partitions".as_ptr(),
                    c"0".as_ptr(),
                ),
            )?;
        }
        let mut out = av::avifRWData::default();
        let res = av::avifEncoderWrite(encoder.0, image.0, &mut out);
        let bytes = if res == av::AVIF_RESULT_OK && !out.data.is_null() {
            std::slice::from_raw_parts(out.data, out.size).to_vec()
        } else {
            Vec::new()
        };
        av::avifRWDataFree(&mut out);
        check("encode", res)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVIF_HEAD: &[u8] = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf";

    #[test]
    fn a_file_cut_before_its_brand_is_truncated() {
        for n in 8..12 {
            match sniff_ftyp(&AVIF_HEAD[..n]) {
                Err(Error::Corrupt(m)) => assert!(
                    m.starts_with("truncated image: the file ends inside its ftyp"),
                    "{m}"
                ),
                Err(other) => panic!("{n} bytes: {other}"),
                Ok(_) => panic!("{n} bytes: taken as a format"),
            }
        }
        assert!(matches!(sniff_ftyp(&AVIF_HEAD[..12]), Ok(Format::Avif)));
        let other = b"\x00\x00\x00\x10ftypcrx \x00\x00\x00\x00";
        assert!(
            matches!(sniff_ftyp(other), Err(Error::Unsupported(m)) if m.ends_with("ISO media file"))
        );
    }
}
