//! pixelfox._core: the Rust image core (probe, verify, process).
//! This file only declares modules and the Python module.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod codecs;
mod errors;
mod exif;
#[doc(hidden)]
pub mod fuzzing;
mod isobmff_meta;
mod limits;
mod metadata;
mod pipeline;
mod probe;
mod steps;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(api::probe, m)?)?;
    m.add_function(wrap_pyfunction!(api::verify, m)?)?;
    m.add_function(wrap_pyfunction!(api::process, m)?)?;
    m.add_function(wrap_pyfunction!(api::strip_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(api::read_exif, m)?)?;
    m.add("CoreError", py.get_type::<errors::CoreError>())?;
    m.add(
        "CorruptImageError",
        py.get_type::<errors::CorruptImageError>(),
    )?;
    m.add(
        "UnsupportedFormatError",
        py.get_type::<errors::UnsupportedFormatError>(),
    )?;
    m.add(
        "LimitExceededError",
        py.get_type::<errors::LimitExceededError>(),
    )?;
    m.add("TimeoutError", py.get_type::<errors::TimeoutError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
