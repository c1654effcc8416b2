//! `tandemctl`: administration of a Tandem director over its gRPC admin API, in the manner of
//! `ipvsadm`.
//!
//! The binary is a thin shell around this library so that tests (and the integration tests
//! against a real dataplane) can call each layer:
//! * [`cli`]: the clap command line and [`cli::parse_args`], which also accepts ipvsadm's
//!   short forms through [`compat`];
//! * [`parse`]: addresses, ports, schedulers, weights as operators type them;
//! * [`commands`]: [`commands::plan`] checks a command line and builds its requests,
//!   [`commands::execute`] sends them and renders the answer;
//! * [`view`]: the JSON documents and the ipvsadm-style tables, from response messages;
//! * [`rules`]: `save` / `restore` (ipvsadm `-S` / `-R` lines);
//! * [`client`]: the Unix-socket or TLS connection.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod compat;
pub mod error;
pub mod parse;
pub mod rules;
pub mod view;

pub use error::CtlError;

/// Runs `tandemctl` with `args` (program name first): what to print on standard output and
/// standard error, and the exit code. Nothing goes to standard output on an error.
pub fn main_with(args: Vec<String>) -> (String, String, u8) {
    let cli = match cli::parse_args(args) {
        Ok(cli::Parsed::Print(text)) => return (text, String::new(), 0),
        Ok(cli::Parsed::Run(cli)) => cli,
        Err(e) => return (String::new(), format!("tandemctl: {e}\n"), e.exit_code()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return (
                String::new(),
                format!("tandemctl: cannot start the async runtime: {e}\n"),
                1,
            );
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(outcome) => (
            outcome.stdout,
            outcome.note.map(|n| n + "\n").unwrap_or_default(),
            0,
        ),
        Err(e) => (String::new(), format!("tandemctl: {e}\n"), e.exit_code()),
    }
}
