//! The TOML run config: parsing, the checks of `validate`, and a round trip through `to_toml`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tweedie::config::RunConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = RunConfig::from_toml_str(text) else {
        return;
    };
    let _ = cfg.validate();
    if let Ok(back) = cfg.to_toml() {
        // what tweedie writes beside a run reads back as the same config (NaN aside)
        if let Ok(again) = RunConfig::from_toml_str(&back) {
            if !format!("{cfg:?}").contains("NaN") {
                assert_eq!(again, cfg, "{back}");
            }
        }
    }
});
