//! The query language: any text parses or fails with a positioned error; what parses prints back to text that
//! parses to the same tree, and evaluates over a twin without panicking.
#![no_main]

use iothub_emulator::domain::query::{parse_condition, parse_query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(query) = parse_query(text) {
        let printed = query.to_string();
        let again = parse_query(&printed).unwrap_or_else(|e| panic!("{printed:?} does not re-parse: {e}"));
        assert_eq!(again, query, "print/parse round trip of {text:?}");
        iothub_emulator::fuzzing::evaluate_over_sample(&query);
    }
    let _ = parse_condition(text);
});
