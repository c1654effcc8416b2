//! tandemctl's input parsers: the ipvsadm short forms (translated to subcommands, then parsed
//! by clap, as `tandemctl` does before it connects anywhere) and the rules files of
//! `tandemctl restore` (ipvsadm-save's format). The input is split into arguments at NUL
//! bytes; as text it is also a rules file. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandemctl::{cli, compat, rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rules::parse_rules(text);
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if compat::is_ipvsadm_form(&args) {
        let _ = compat::translate(&args);
    }
    let mut argv = vec!["tandemctl".to_owned()];
    argv.extend(args);
    let _ = cli::parse_args(argv);
});
