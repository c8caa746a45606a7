//! The embedded store's log replay on arbitrary bytes: an error or the
//! clauses it holds, never a panic, never a length past the end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small dimension, so short inputs can hold whole frames.
    let _ = lextral_retriever::fuzzing::fuzz_replay(data, 4);
});
