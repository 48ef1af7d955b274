//! The checkpoint loader: the safetensors header, tweedie's metadata (format, model spec, run
//! config, step, RNG state) and the tensors, then the network rebuilt from them, as `sample --run`
//! does; and the header-only reader of the model spec.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tweedie::train::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = Checkpoint::from_bytes(data) {
        let _ = tweedie::train::net_from_checkpoint(&ck, true, &candle_core::Device::Cpu);
    }
    let _ = Checkpoint::spec_from_bytes(data);
});
