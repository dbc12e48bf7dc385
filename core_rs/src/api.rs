//! The Python-facing functions of `pixelfox._core`. Input is any C-contiguous
//! bytes-like object; all real work runs with the GIL released and behind
//! `catch_unwind`, so a decoder panic becomes `CorruptImageError`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{Error, Result};
use crate::limits::Limits;
use crate::metadata;
use crate::pipeline::{self, OutFormat, Plan, VariantSpec};
use crate::probe::{self as header, Info};
use crate::steps::animate::check_budget;

/// (format, mime, width, height, frames, orientation)
type InfoTuple = (&'static str, &'static str, u32, u32, u32, u8);
/// (max_pixels, max_width, max_height, max_frames, max_total_pixels, max_input_bytes,
/// max_scans, timeout_ms, max_animation_bytes)
type LimitsTuple = (u64, u64, u64, u64, u64, u64, u64, u64, u64);
/// (name, format, mime, width, height, data, frames)
type VariantTuple<'py> = (
    String,
    &'static str,
    &'static str,
    u32,
    u32,
    Bound<'py, PyBytes>,
    u32,
);

/// (EXIF (key, text) pairs, GPS (lat, lon) in decimal degrees)
type ExifTuple = (Vec<(String, String)>, Option<(f64, f64)>);
/// (info, upright width, upright height, variants, EXIF pairs, GPS)
type ProcessTuple<'py> = (
    InfoTuple,
    u32,
    u32,
    Vec<VariantTuple<'py>>,
    Vec<(String, String)>,
    Option<(f64, f64)>,
);

fn info_tuple(info: &Info) -> InfoTuple {
    (
        info.format.name(),
        info.format.mime(),
        info.width,
        info.height,
        info.frames,
        info.orientation,
    )
}

fn limits_from(t: Option<LimitsTuple>) -> Limits {
    match t {
        None => Limits::default(),
        Some((
            max_pixels,
            max_width,
            max_height,
            max_frames,
            max_total_pixels,
            max_input_bytes,
            max_scans,
            timeout_ms,
            max_animation_bytes,
        )) => Limits {
            max_pixels,
            max_width,
            max_height,
            max_frames,
            max_total_pixels,
            max_input_bytes,
            max_scans,
            timeout_ms,
            max_animation_bytes,
        },
    }
}

/// Runs `f` with a panic guard: a panic in a decoder is reported as corrupt input.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::corrupt(
            "corrupt image: the decoder failed on this data",
        ))
    })
}

/// Borrows the bytes of `data` and runs `f` on them with the GIL released.
fn with_bytes<T: Send>(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> Result<T> + Send,
) -> PyResult<T> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        let slice = bytes.as_bytes();
        return Ok(py.detach(|| guarded(|| f(slice)))?);
    }
    let buffer = PyBuffer::<u8>::get(data).map_err(|_| {
        PyTypeError::new_err("expected a bytes-like object (bytes, bytearray, memoryview, mmap)")
    })?;
    if !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err("expected a C-contiguous buffer"));
    }
    let len = buffer.item_count();
    let slice: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the buffer is C-contiguous u8 data of `len` items, and `buffer`
        // keeps the export (and so the memory) alive until it is dropped after
        // this call. Concurrent writes by another thread would only change the
        // bytes we read, which the parsers treat as untrusted anyway.
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, len) }
    };
    let out = py.detach(|| guarded(|| f(slice)));
    drop(buffer);
    Ok(out?)
}

/// `parse` (probe or verify) of `data` under `limits`; with `variants`, also the animation
/// budget `process()` with those variants would check (`steps::animate::check_budget`).
fn checked_info(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    limits: Option<LimitsTuple>,
    variants: Option<Vec<VariantSpecTuple>>,
    parse: fn(&[u8], &Limits) -> Result<Info>,
) -> PyResult<InfoTuple> {
    let limits = limits_from(limits);
    let plan = variants.map(specs_from).transpose()?.map(Plan::of_variants);
    let info = with_bytes(py, data, |d| {
        let info = parse(d, &limits)?;
        if let Some(plan) = &plan {
            check_budget(&info, plan, &limits)?;
        }
        Ok(info)
    })?;
    Ok(info_tuple(&info))
}

/// Header-only probe (works on a prefix of the file); with `variants`, also the
/// animation budget of `process()` with them, from the header seen so far.
#[pyfunction]
#[pyo3(signature = (data, limits=None, variants=None))]
pub fn probe(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    limits: Option<LimitsTuple>,
    variants: Option<Vec<VariantSpecTuple>>,
) -> PyResult<InfoTuple> {
    checked_info(py, data, limits, variants, header::probe)
}

/// Probe plus structural completeness of the whole file; no pixel decode. With
/// `variants`, also the animation budget of `process()` with them.
#[pyfunction]
#[pyo3(signature = (data, limits=None, variants=None))]
pub fn verify(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    limits: Option<LimitsTuple>,
    variants: Option<Vec<VariantSpecTuple>>,
) -> PyResult<InfoTuple> {
    checked_info(py, data, limits, variants, header::verify)
}

/// (name, box width px, box height px, formats, AVIF quality or None, AVIF speed or None,
/// libaom rectangular partitions on).
type VariantSpecTuple = (String, u32, u32, Vec<String>, Option<f32>, Option<u8>, bool);

/// The variant specs of `variants`; `ValueError` for an unknown output format.
fn specs_from(variants: Vec<VariantSpecTuple>) -> PyResult<Vec<VariantSpec>> {
    let mut specs = Vec::with_capacity(variants.len());
    for (name, width, height, formats, avif_quality, avif_speed, avif_rect_partitions) in variants {
        let formats = formats
            .iter()
            .map(|f| {
                OutFormat::parse(f)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown output format {f:?}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        specs.push(VariantSpec {
            name,
            width,
            height,
            formats,
            avif_quality,
            avif_speed,
            avif_rect_partitions,
        });
    }
    Ok(specs)
}

/// Decode once, orient, resize, convert to sRGB and encode every variant.
#[pyfunction]
#[pyo3(signature = (data, variants, *, webp_quality, webp_method, avif_quality, avif_speed, jpeg_quality, background, limits=None))]
#[allow(clippy::too_many_arguments)]
pub fn process<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    variants: Vec<VariantSpecTuple>,
    webp_quality: f32,
    webp_method: i32,
    avif_quality: f32,
    avif_speed: u8,
    jpeg_quality: u8,
    background: (u8, u8, u8),
    limits: Option<LimitsTuple>,
) -> PyResult<ProcessTuple<'py>> {
    let plan = Plan {
        variants: specs_from(variants)?,
        webp_quality,
        webp_method,
        avif_quality,
        avif_speed,
        jpeg_quality,
        background: [background.0, background.1, background.2],
    };
    let limits = limits_from(limits);
    let ((info, (width, height), outputs), exif) = with_bytes(py, data, |d| {
        let out = pipeline::run(d, &plan, &limits)?;
        Ok((out, metadata::read(d)))
    })?;
    let variants = outputs
        .into_iter()
        .map(|o| {
            let data = PyBytes::new(py, &o.data);
            (
                o.name,
                o.format.name(),
                o.format.mime(),
                o.width,
                o.height,
                data,
                o.frames,
            )
        })
        .collect();
    Ok((
        info_tuple(&info),
        width,
        height,
        variants,
        exif.fields,
        exif.gps,
    ))
}

/// The original file with EXIF/XMP/IPTC/comments removed losslessly.
#[pyfunction]
pub fn strip_metadata<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = with_bytes(py, data, metadata::strip)?;
    Ok(PyBytes::new(py, &out))
}

/// The useful EXIF fields and GPS position of a file (no pixel decode).
#[pyfunction]
pub fn read_exif(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<ExifTuple> {
    let exif = with_bytes(py, data, |d| Ok(metadata::read(d)))?;
    Ok((exif.fields, exif.gps))
}
