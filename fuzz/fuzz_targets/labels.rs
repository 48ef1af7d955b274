//! `.npy` class labels (`data::read_labels`'s parser).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(labels) = tweedie::data::parse_labels(data) {
        assert!(labels.len() <= data.len());
    }
});
