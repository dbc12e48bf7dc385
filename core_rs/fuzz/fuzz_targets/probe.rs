//! `_core.probe` (header parse, default limits) on arbitrary bytes.
//! Errors are fine; a panic or abort is a crash.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = _core::fuzzing::probe(data);
    });
}
