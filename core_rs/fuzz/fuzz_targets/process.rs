//! `_core.process` (the whole pipeline, small recipe, tight limits) on arbitrary bytes.
//! Errors are fine; a panic or abort is a crash.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = _core::fuzzing::process(data);
    });
}
