//! CSV rows (`data::read_csv`'s parser).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(x) = tweedie::data::parse_csv(data) {
        assert_eq!(x.data.len(), x.n * x.d);
        assert!(x.d > 0);
    }
});
