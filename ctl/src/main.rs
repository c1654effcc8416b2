//! `tandemctl`: see the library for everything; this only wires it to the process.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                eprintln!("tandemctl: argument {bad:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let (stdout, stderr, code) = tandemctl::main_with(args);
    // A closed pipe (`tandemctl -S | head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(stderr.as_bytes());
    ExitCode::from(code)
}
