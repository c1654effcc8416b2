//! tandem-syncd's configuration file (TOML, then every range and cross-field check). Must
//! never panic: a bad file is an error naming the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_syncd::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml");
    }
});
