//! The command line: clap definitions of every subcommand, and [`parse_args`], which also
//! accepts ipvsadm's short forms (see [`crate::compat`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::compat;
use crate::error::CtlError;
use crate::parse::{self, Proto, ServiceAddr};

/// Where the dataplane serves the admin API by default.
pub const DEFAULT_SOCKET: &str = "/run/tandem/admin.sock";

const AFTER_HELP: &str = "\
ipvsadm-style short forms are accepted too:
  tandemctl -A -t|-u VIP:PORT [-s SCHED] [-p [SECONDS]] [-M NETMASK] [-b FLAGS]
  tandemctl -E -t|-u VIP:PORT [-s SCHED] [-p [SECONDS]] [-M NETMASK] [-b FLAGS]
  tandemctl -D -t|-u VIP:PORT
  tandemctl -a|-e -t|-u VIP:PORT -r RIP[:PORT] [-m|-i|-g] [-w WEIGHT]
  tandemctl -d -t|-u VIP:PORT -r RIP[:PORT]
  tandemctl -L|-l [-n] [-c] [--stats|--rate|--timeout] [--exact] [-t|-u VIP:PORT]
  tandemctl -Z [-t|-u VIP:PORT]
  tandemctl -C | -S [-n] | -R | --set TCP TCPFIN UDP

Exit status: 0 on success, 2 for bad input or a change the director refused (nothing was
changed), 1 when the director cannot be reached or fails.";

/// Administer a Tandem director (an LVS-style L4 load balancer) over its gRPC admin API.
///
/// Verbs and listings follow ipvsadm; every command also prints JSON with `-o json`.
#[derive(Debug, Parser)]
#[command(name = "tandemctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The dataplane's admin Unix socket.
    #[arg(
        long,
        global = true, help_heading = "Global options",
        env = "TANDEM_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    /// Talk to the dataplane over TCP instead: https://HOST:PORT (TLS) or http://HOST:PORT.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub server: Option<String>,

    /// CA certificate (PEM) that signed the dataplane's certificate (with --server https://).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS (with --key).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS (with --cert).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,

    /// Seconds to wait for the connection.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value_t = 3,
        value_name = "SECONDS"
    )]
    pub connect_timeout: u64,

    /// Seconds to wait for each call.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub rpc_timeout: u64,

    /// Output format.
    #[arg(short = 'o', long, global = true, help_heading = "Global options", value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Print the changes a command made.
    #[arg(short = 'v', long, global = true, help_heading = "Global options")]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// What an ipvsadm user expects to read.
    Table,
    /// A stable JSON document, snake_case fields (schema in the `tandemctl::view` docs).
    Json,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, edit or delete a virtual service (ipvsadm -A / -E / -D).
    Service {
        #[command(subcommand)]
        action: ServiceCmd,
    },
    /// Add, edit or delete a real server of a virtual service (ipvsadm -a / -e / -d).
    Server {
        #[command(subcommand)]
        action: ServerCmd,
    },
    /// List virtual services and their real servers (ipvsadm -L -n).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// List connections (ipvsadm -L -n -c).
    Conns(ConnsArgs),
    /// Counters since start or the last zeroing (ipvsadm -L -n --stats).
    Stats(CounterArgs),
    /// Rates per second (ipvsadm -L -n --rate).
    Rate(CounterArgs),
    /// Zero the counters of every service or of one (ipvsadm -Z).
    Zero(ZeroArgs),
    /// Show or set the connection timeouts (ipvsadm -L --timeout / --set).
    Timeout(TimeoutArgs),
    /// The director's state: role, generation, ports, lcores, connections, drops.
    Status,
    /// Print the running configuration as ipvsadm -S lines (ipvsadm -S -n).
    Save(SaveArgs),
    /// Replace the whole configuration with ipvsadm -S lines, atomically (ipvsadm -R).
    Restore(RestoreArgs),
    /// Delete every virtual service (ipvsadm -C).
    Clear,
    /// Re-read the director's configuration file and apply it (as SIGHUP does).
    Reload(ReloadArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// A required virtual service: `-t VIP:PORT` or `-u VIP:PORT`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ServiceArg {
    /// A TCP virtual service.
    #[arg(
        short = 't',
        long = "tcp-service",
        visible_alias = "tcp",
        value_name = "VIP:PORT"
    )]
    pub tcp: Option<String>,
    /// A UDP virtual service.
    #[arg(
        short = 'u',
        long = "udp-service",
        visible_alias = "udp",
        value_name = "VIP:PORT"
    )]
    pub udp: Option<String>,
}

impl ServiceArg {
    /// The parsed service.
    pub fn parse(&self) -> Result<ServiceAddr, CtlError> {
        match (&self.tcp, &self.udp) {
            (Some(t), _) => parse::parse_service(Proto::Tcp, t),
            (None, Some(u)) => parse::parse_service(Proto::Udp, u),
            (None, None) => Err(CtlError::usage("a service is needed: -t|-u VIP:PORT")),
        }
    }
}

/// An optional virtual service filter.
#[derive(Debug, Clone, Default, Args)]
#[group(required = false, multiple = false)]
pub struct ServiceFilter {
    /// Only this TCP virtual service.
    #[arg(
        short = 't',
        long = "tcp-service",
        visible_alias = "tcp",
        value_name = "VIP:PORT"
    )]
    pub tcp: Option<String>,
    /// Only this UDP virtual service.
    #[arg(
        short = 'u',
        long = "udp-service",
        visible_alias = "udp",
        value_name = "VIP:PORT"
    )]
    pub udp: Option<String>,
}

impl ServiceFilter {
    /// The parsed service, if one was given.
    pub fn parse(&self) -> Result<Option<ServiceAddr>, CtlError> {
        match (&self.tcp, &self.udp) {
            (Some(t), _) => parse::parse_service(Proto::Tcp, t).map(Some),
            (None, Some(u)) => parse::parse_service(Proto::Udp, u).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// `service add|edit|del`.
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Add a virtual service (ipvsadm -A).
    Add(ServiceAddArgs),
    /// Change a virtual service's scheduler, flags or persistence (ipvsadm -E); only the
    /// options given change.
    Edit(ServiceEditArgs),
    /// Delete a virtual service (ipvsadm -D).
    #[command(visible_alias = "delete")]
    Del(ServiceDelArgs),
}

/// `service add`.
#[derive(Debug, Args)]
pub struct ServiceAddArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Scheduler: rr wrr lc wlc lblc lblcr dh sh sed nq mh.
    #[arg(short = 's', long, value_name = "SCHEDULER", default_value = "wlc")]
    pub scheduler: String,
    /// Persistent service: a client keeps its real server for SECONDS (300 when omitted).
    #[arg(short = 'p', long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "300")]
    pub persistent: Option<String>,
    /// Persistence granularity: clients in the same NETMASK share a real server.
    #[arg(short = 'M', long, value_name = "NETMASK")]
    pub netmask: Option<String>,
    /// Scheduler flags, comma-separated: sh-fallback sh-port (sh), mh-fallback mh-port (mh).
    #[arg(short = 'b', long = "sched-flags", value_name = "FLAGS")]
    pub sched_flags: Option<String>,
}

/// `service edit`.
#[derive(Debug, Args)]
pub struct ServiceEditArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// New scheduler.
    #[arg(short = 's', long, value_name = "SCHEDULER")]
    pub scheduler: Option<String>,
    /// New persistence timeout (300 when omitted; 0 turns persistence off).
    #[arg(short = 'p', long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "300")]
    pub persistent: Option<String>,
    /// New persistence netmask.
    #[arg(short = 'M', long, value_name = "NETMASK")]
    pub netmask: Option<String>,
    /// New scheduler flags ("" for none).
    #[arg(short = 'b', long = "sched-flags", value_name = "FLAGS")]
    pub sched_flags: Option<String>,
}

/// `service del`.
#[derive(Debug, Args)]
pub struct ServiceDelArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// Remove the service's connections now instead of letting them drain.
    #[arg(long)]
    pub flush: bool,
}

/// `server add|edit|del`.
#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Add a real server to a virtual service (ipvsadm -a).
    Add(ServerAddArgs),
    /// Change a real server's forwarding method or weight (ipvsadm -e); only the options
    /// given change.
    Edit(ServerAddArgs),
    /// Delete a real server (ipvsadm -d).
    #[command(visible_alias = "delete")]
    Del(ServerDelArgs),
}

/// How requests reach the real server.
#[derive(Debug, Clone, Default, Args)]
#[group(required = false, multiple = false)]
pub struct MethodArg {
    /// Masquerading (NAT), listed as Masq.
    #[arg(short = 'm', long = "masquerading", visible_alias = "nat")]
    pub nat: bool,
    /// IPIP tunnelling, listed as Tunnel.
    #[arg(short = 'i', long = "ipip", visible_alias = "tunnel")]
    pub tunnel: bool,
    /// Gatewaying (direct routing), listed as Route; the default when adding.
    #[arg(short = 'g', long = "gatewaying", visible_alias = "direct-route")]
    pub route: bool,
}

impl MethodArg {
    /// The method given, if any.
    pub fn method(&self) -> Option<parse::Method> {
        if self.nat {
            Some(parse::Method::Nat)
        } else if self.tunnel {
            Some(parse::Method::Tunnel)
        } else if self.route {
            Some(parse::Method::DirectRoute)
        } else {
            None
        }
    }
}

/// `server add` and `server edit`.
#[derive(Debug, Args)]
pub struct ServerAddArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// The real server; its port defaults to the virtual port.
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    pub real: String,
    #[command(flatten)]
    pub method: MethodArg,
    /// Weight 0-65535 (1 when adding; 0 takes no new connections).
    #[arg(short = 'w', long, value_name = "WEIGHT")]
    pub weight: Option<String>,
}

/// `server del`.
#[derive(Debug, Args)]
pub struct ServerDelArgs {
    #[command(flatten)]
    pub service: ServiceArg,
    /// The real server; its port defaults to the virtual port.
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    pub real: String,
    /// Remove the server's connections now instead of letting them drain.
    #[arg(long)]
    pub flush: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub service: ServiceFilter,
    /// Numeric addresses (always; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// List connections instead (as `conns`).
    #[arg(short = 'c', long = "connection", conflicts_with_all = ["stats", "rate", "timeout"])]
    pub connection: bool,
    /// Counters instead of weights and connection counts.
    #[arg(long, conflicts_with_all = ["rate", "timeout"])]
    pub stats: bool,
    /// Rates instead of weights and connection counts.
    #[arg(long, conflicts_with = "timeout")]
    pub rate: bool,
    /// The connection timeouts instead (as `timeout`).
    #[arg(long)]
    pub timeout: bool,
    /// Exact numbers instead of K/M/G/T suffixes.
    #[arg(short = 'x', long)]
    pub exact: bool,
}

/// `stats` and `rate`.
#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(flatten)]
    pub service: ServiceFilter,
    /// Numeric addresses (always; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Exact numbers instead of K/M/G/T suffixes.
    #[arg(short = 'x', long)]
    pub exact: bool,
}

/// `conns`.
#[derive(Debug, Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub service: ServiceFilter,
    /// Numeric addresses (always; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Only TCP or only UDP connections.
    #[arg(long, value_name = "tcp|udp")]
    pub proto: Option<String>,
    /// Only connections from this client address.
    #[arg(long, value_name = "ADDRESS")]
    pub client: Option<String>,
    /// Only connections to this real server address.
    #[arg(long = "real", value_name = "ADDRESS")]
    pub real: Option<String>,
    /// Only connections in this state (ESTABLISHED, SYN_RECV, FIN_WAIT, ..., UDP).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// At most this many connections (the dataplane caps it at 100000; default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// `zero`.
#[derive(Debug, Args)]
pub struct ZeroArgs {
    #[command(flatten)]
    pub service: ServiceFilter,
}

/// `timeout [get|set]`.
#[derive(Debug, Args)]
pub struct TimeoutArgs {
    #[command(subcommand)]
    pub action: Option<TimeoutCmd>,
}

/// `timeout get|set`.
#[derive(Debug, Subcommand)]
pub enum TimeoutCmd {
    /// Show the timeouts (the default).
    Get,
    /// Set timeouts in seconds; one not given (or 0) stays as it is (ipvsadm --set).
    Set(TimeoutSetArgs),
}

/// `timeout set`.
#[derive(Debug, Args)]
pub struct TimeoutSetArgs {
    /// ESTABLISHED TCP connections.
    #[arg(long, value_name = "SECONDS")]
    pub tcp: Option<String>,
    /// TCP connections after a FIN.
    #[arg(long, value_name = "SECONDS")]
    pub tcpfin: Option<String>,
    /// UDP flows.
    #[arg(long, value_name = "SECONDS")]
    pub udp: Option<String>,
}

/// `save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Numeric addresses (always; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    pub numeric: bool,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file of ipvsadm -S lines; `-` or nothing for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: Option<String>,
    /// Check and show the changes without applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// `reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Check the file and show the changes without applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// A command to run.
    Run(Box<Cli>),
    /// Help or version text to print on standard output (exit 0).
    Print(String),
}

/// Parses the full argument list (program name first), accepting ipvsadm's short forms.
/// Every refusal is a one-line [`CtlError::Usage`].
pub fn parse_args(args: Vec<String>) -> Result<Parsed, CtlError> {
    let mut it = args.into_iter();
    let prog = it.next().unwrap_or_else(|| "tandemctl".to_string());
    let rest: Vec<String> = it.collect();
    let rest = if compat::is_ipvsadm_form(&rest) {
        compat::translate(&rest)?
    } else {
        rest
    };
    match Cli::try_parse_from(std::iter::once(prog).chain(rest)) {
        Ok(cli) => Ok(Parsed::Run(Box::new(cli))),
        Err(e) => match clap_error(&e) {
            ClapOutcome::Print(s) => Ok(Parsed::Print(s)),
            ClapOutcome::Error(e) => Err(e),
        },
    }
}

enum ClapOutcome {
    Print(String),
    Error(CtlError),
}

/// Help and version are printed; any other clap error becomes one line.
fn clap_error(e: &clap::Error) -> ClapOutcome {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            ClapOutcome::Print(e.render().to_string())
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            ClapOutcome::Error(CtlError::usage(
                "a command is missing; see `tandemctl --help`",
            ))
        }
        _ => ClapOutcome::Error(CtlError::usage(one_line(&e.render().to_string()))),
    }
}

/// The first paragraph of a clap message on one line, without the `error: ` prefix.
pub fn one_line(rendered: &str) -> String {
    let para: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = para.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("tandemctl")
            .chain(s.split_whitespace())
            .map(str::to_string)
            .collect()
    }

    fn cli(s: &str) -> Cli {
        match parse_args(argv(s)) {
            Ok(Parsed::Run(c)) => *c,
            other => panic!("`{s}`: {other:?}"),
        }
    }

    fn usage(s: &str) -> String {
        match parse_args(argv(s)) {
            Err(CtlError::Usage(m)) => m,
            other => panic!("`{s}`: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ipvsadm_forms_reach_the_subcommands_with_defaults() {
        let c = cli("-A -t 203.0.113.10:80");
        let Command::Service {
            action: ServiceCmd::Add(a),
        } = c.command
        else {
            panic!("not service add");
        };
        assert_eq!(a.scheduler, "wlc");
        assert_eq!(a.persistent, None);
        let c = cli("-A -t 203.0.113.10:21 -p");
        let Command::Service {
            action: ServiceCmd::Add(a),
        } = c.command
        else {
            panic!("not service add");
        };
        assert_eq!(a.persistent.as_deref(), Some("300"));
        let c = cli("service add -t 203.0.113.10:21 -p -s rr");
        let Command::Service {
            action: ServiceCmd::Add(a),
        } = c.command
        else {
            panic!("not service add");
        };
        assert_eq!(a.persistent.as_deref(), Some("300"));
        assert_eq!(a.scheduler, "rr");
        let c = cli("-a -t 203.0.113.10:80 -r 172.16.0.2");
        let Command::Server {
            action: ServerCmd::Add(a),
        } = c.command
        else {
            panic!("not server add");
        };
        assert_eq!(
            a.method.method(),
            None,
            "the default (-g) is applied when sending"
        );
        assert_eq!(a.weight, None);
        let c = cli("-Ln -o json");
        assert_eq!(c.output, Output::Json);
        assert!(matches!(c.command, Command::List(_)));
        assert!(matches!(cli("ls").command, Command::List(_)));
        assert!(matches!(cli("-Lnc").command, Command::Conns(_)));
        assert!(matches!(
            cli("--set 1 2 3").command,
            Command::Timeout(TimeoutArgs {
                action: Some(TimeoutCmd::Set(_))
            })
        ));
        assert!(matches!(
            cli("timeout").command,
            Command::Timeout(TimeoutArgs { action: None })
        ));
        let c = cli("-R");
        let Command::Restore(r) = c.command else {
            panic!("not restore");
        };
        assert_eq!(r.file.as_deref(), Some("-"));
        let c = cli("--socket /tmp/x.sock status");
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn clap_refusals_are_one_line() {
        let m = usage("server add -t 1.1.1.1:80 -r 2.2.2.2 -m -i");
        assert!(m.contains("cannot be used with"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let m = usage("server add -t 1.1.1.1:80");
        assert!(m.contains("--real-server"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let m = usage("service add -t 1.1.1.1:80 -u 1.1.1.1:53");
        assert!(m.contains("cannot be used with"), "{m}");
        let m = usage("bogus");
        assert!(m.contains("bogus"), "{m}");
        let m = usage("");
        assert_eq!(m, "a command is missing; see `tandemctl --help`");
        let m = usage("-o yaml list");
        assert!(m.contains("yaml"), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn help_and_version_are_printed() {
        assert!(
            matches!(parse_args(argv("--help")), Ok(Parsed::Print(s)) if s.contains("ipvsadm-style"))
        );
        assert!(matches!(parse_args(argv("-V")), Ok(Parsed::Print(s)) if s.contains("tandemctl")));
        assert!(
            matches!(parse_args(argv("server add --help")), Ok(Parsed::Print(s)) if s.contains("--real-server"))
        );
    }
}
