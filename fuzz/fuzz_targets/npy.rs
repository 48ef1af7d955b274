//! `.npy` points (`data::read_npy`'s parser): any bytes give points or an error, never a panic,
//! and never an allocation larger than the input implies.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(x) = tweedie::data::parse_npy(data) {
        assert_eq!(x.data.len(), x.n * x.d);
        assert!(x.data.len() * 4 <= data.len());
        let _ = x.check_finite("fuzz");
    }
});
