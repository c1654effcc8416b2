//! ipvsadm's command line, translated into `tandemctl`'s subcommands before clap parses it.
//!
//! An argument list whose first argument (after `tandemctl`'s own global options) is one of
//! ipvsadm's command flags (`-A -E -D -a -e -d -L -l -Z -C -S -R --set` and their long
//! names) is read as ipvsadm would read it and rewritten into the equivalent subcommand form,
//! which clap then parses as usual. Bundled short flags (`-Ln`, `-Lnc`, `-Sn`) are split.
//! Defaults are not filled in here but by the subcommands (they are ipvsadm's: scheduler `wlc`,
//! method `-g`, weight 1, the real port defaults to the virtual one, `-p` alone means 300 s).
//!
//! Differences from ipvsadm, each refused with a message rather than silently misread:
//! firewall-mark (`-f`) and IPv6 (`-6`) services, thresholds (`-x`/`-y` with `-a`/`-e`),
//! `--daemon`, `--thresholds`, `--persistent-conn`, `--start-daemon`/`--stop-daemon`.
//! `-o` is `tandemctl`'s output format (ipvsadm's one-packet scheduling is not supported);
//! `-x` with `-L` means `--exact`. Addresses are always shown numerically (`-n` is accepted).

use crate::error::CtlError;

/// `tandemctl`'s global options that take a value; they pass through the translation
/// unchanged wherever they appear.
pub const GLOBAL_WITH_VALUE: &[&str] = &[
    "--socket",
    "--server",
    "--ca",
    "--cert",
    "--key",
    "-o",
    "--output",
    "--connect-timeout",
    "--rpc-timeout",
];

/// `tandemctl`'s global flags.
pub const GLOBAL_FLAGS: &[&str] = &["-v", "--verbose"];

/// Short flags that take no value and may be bundled (`-Lnc`).
const BUNDLABLE: &str = "AEDCRSaedLlZncxgim";
/// Short options that take a value; one may end a bundle (`-At 1.2.3.4:80`).
const VALUED: &str = "tusMbrwp";

/// An ipvsadm command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    AddServer,
    EditServer,
    DeleteServer,
    List,
    Zero,
    Clear,
    Save,
    Restore,
    Set,
}

impl Cmd {
    fn from_arg(a: &str) -> Option<Self> {
        Some(match a {
            "-A" | "--add-service" => Cmd::AddService,
            "-E" | "--edit-service" => Cmd::EditService,
            "-D" | "--delete-service" => Cmd::DeleteService,
            "-a" | "--add-server" => Cmd::AddServer,
            "-e" | "--edit-server" => Cmd::EditServer,
            "-d" | "--delete-server" => Cmd::DeleteServer,
            "-L" | "-l" | "--list" => Cmd::List,
            "-Z" | "--zero" => Cmd::Zero,
            "-C" | "--clear" => Cmd::Clear,
            "-S" | "--save" => Cmd::Save,
            "-R" | "--restore" => Cmd::Restore,
            "--set" => Cmd::Set,
            _ => return None,
        })
    }

    /// The option keys (see [`Opt::key`]) this command accepts.
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Cmd::AddService | Cmd::EditService => &["service", "s", "p", "M", "b"],
            Cmd::DeleteService => &["service"],
            Cmd::AddServer | Cmd::EditServer => &["service", "r", "method", "w"],
            Cmd::DeleteServer => &["service", "r"],
            Cmd::List => &[
                "service", "n", "c", "stats", "rate", "timeout", "exact", "sort",
            ],
            Cmd::Zero => &["service"],
            Cmd::Save => &["n"],
            Cmd::Clear | Cmd::Restore | Cmd::Set => &[],
        }
    }
}

/// What was given on an ipvsadm command line.
#[derive(Debug, Default)]
struct Opts {
    service: Option<(&'static str, String)>,
    scheduler: Option<String>,
    persistent: Option<Option<String>>,
    netmask: Option<String>,
    sched_flags: Option<String>,
    real: Option<String>,
    method: Option<(&'static str, String)>,
    weight: Option<String>,
    connection: bool,
    stats: bool,
    rate: bool,
    timeout: bool,
    exact: bool,
    set: Vec<String>,
    /// (key, as typed), in order, for the "cannot be used with" check.
    seen: Vec<(&'static str, String)>,
}

fn is_global_with_value(a: &str) -> bool {
    GLOBAL_WITH_VALUE.contains(&a)
}

/// `--socket=x`, `-ojson`: a global option with its value attached.
fn is_global_attached(a: &str) -> bool {
    GLOBAL_WITH_VALUE
        .iter()
        .filter(|g| g.starts_with("--"))
        .any(|g| a.strip_prefix(g).is_some_and(|r| r.starts_with('=')))
        || (a.starts_with("-o") && a.len() > 2 && !a.starts_with("--"))
}

/// Splits bundled short flags (`-Lnc` into `-L -n -c`); anything else is returned as is.
fn expand(arg: &str) -> Vec<String> {
    let Some(body) = arg.strip_prefix('-') else {
        return vec![arg.to_string()];
    };
    if body.starts_with('-') || body.chars().count() < 2 {
        return vec![arg.to_string()];
    }
    let chars: Vec<char> = body.chars().collect();
    let (last, init) = match chars.split_last() {
        Some(x) => x,
        None => return vec![arg.to_string()],
    };
    if init.iter().all(|c| BUNDLABLE.contains(*c))
        && (BUNDLABLE.contains(*last) || VALUED.contains(*last))
    {
        chars.iter().map(|c| format!("-{c}")).collect()
    } else {
        vec![arg.to_string()]
    }
}

/// Separates `tandemctl`'s global options from the rest, expanding bundles in the rest.
fn split_globals(args: &[String]) -> Result<(Vec<String>, Vec<String>), CtlError> {
    let mut globals = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if is_global_with_value(a) {
            let v = it
                .next()
                .ok_or_else(|| CtlError::usage(format!("option `{a}` needs a value")))?;
            globals.push(a.clone());
            globals.push(v.clone());
        } else if is_global_attached(a) || GLOBAL_FLAGS.contains(&a.as_str()) {
            globals.push(a.clone());
        } else {
            rest.extend(expand(a));
        }
    }
    Ok((globals, rest))
}

/// Whether `args` (without the program name) are an ipvsadm-style command line.
pub fn is_ipvsadm_form(args: &[String]) -> bool {
    match split_globals(args) {
        Ok((_, rest)) => rest.first().is_some_and(|a| Cmd::from_arg(a).is_some()),
        Err(_) => false,
    }
}

/// Rewrites an ipvsadm-style argument list (without the program name) into `tandemctl`'s
/// subcommand form. Global options come first, then the subcommand and its options.
pub fn translate(args: &[String]) -> Result<Vec<String>, CtlError> {
    let (mut out, rest) = split_globals(args)?;
    let mut it = rest.into_iter().peekable();
    let first = it.next().unwrap_or_default();
    let cmd = Cmd::from_arg(&first).ok_or_else(|| {
        CtlError::usage(format!(
            "`{first}` is not an ipvsadm command (-A -E -D -a -e -d -L -Z -C -S -R --set)"
        ))
    })?;
    let mut o = Opts::default();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| CtlError::usage(format!("option `{name}` needs a value")))
        };
        if Cmd::from_arg(&a).is_some() {
            return Err(CtlError::usage(format!(
                "multiple commands specified (`{first}` and `{a}`)"
            )));
        }
        let key: &'static str = match a.as_str() {
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                let p = if a == "-t" || a == "--tcp-service" {
                    "-t"
                } else {
                    "-u"
                };
                let v = value(&a)?;
                if o.service.is_some() {
                    return Err(CtlError::usage("more than one service address given"));
                }
                o.service = Some((p, v));
                "service"
            }
            "-f" | "--fwmark-service" => {
                return Err(CtlError::usage(
                    "firewall-mark services (-f) are not supported; use -t or -u VIP:PORT",
                ));
            }
            "-6" | "--ipv6" => {
                return Err(CtlError::usage("IPv6 services are not supported"));
            }
            "-s" | "--scheduler" => {
                o.scheduler = Some(value(&a)?);
                "s"
            }
            "-p" | "--persistent" => {
                let v = match it.peek() {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => it.next(),
                    _ => None,
                };
                o.persistent = Some(v);
                "p"
            }
            "-M" | "--netmask" => {
                o.netmask = Some(value(&a)?);
                "M"
            }
            "-b" | "--sched-flags" => {
                o.sched_flags = Some(value(&a)?);
                "b"
            }
            "-r" | "--real-server" => {
                o.real = Some(value(&a)?);
                "r"
            }
            "-g" | "--gatewaying" | "-i" | "--ipip" | "-m" | "--masquerading" => {
                let sw = match a.as_str() {
                    "-g" | "--gatewaying" => "-g",
                    "-i" | "--ipip" => "-i",
                    _ => "-m",
                };
                if let Some((prev, typed)) = &o.method
                    && *prev != sw
                {
                    return Err(CtlError::usage(format!(
                        "`{typed}` and `{a}` cannot be used together: choose one forwarding method (-m NAT, -i tunnel, -g direct routing)"
                    )));
                }
                o.method = Some((sw, a.clone()));
                "method"
            }
            "-w" | "--weight" => {
                o.weight = Some(value(&a)?);
                "w"
            }
            "-n" | "--numeric" => "n",
            "-c" | "--connection" => {
                o.connection = true;
                "c"
            }
            "--stats" => {
                o.stats = true;
                "stats"
            }
            "--rate" => {
                o.rate = true;
                "rate"
            }
            "--timeout" => {
                o.timeout = true;
                "timeout"
            }
            "--exact" => {
                o.exact = true;
                "exact"
            }
            "-x" if cmd == Cmd::List => {
                o.exact = true;
                "exact"
            }
            "--sort" | "--nosort" => "sort",
            "-x" | "--u-threshold" | "-y" | "--l-threshold" | "--thresholds" => {
                return Err(CtlError::usage("connection thresholds are not supported"));
            }
            "--daemon" | "--start-daemon" | "--stop-daemon" | "--mcast-interface" | "--syncid" => {
                return Err(CtlError::usage(
                    "the sync daemon is not managed with tandemctl; `tandemctl status` shows the director's role",
                ));
            }
            "--persistent-conn" => {
                return Err(CtlError::usage(
                    "--persistent-conn is not supported; `tandemctl conns` lists persistence templates",
                ));
            }
            "--ops" => {
                return Err(CtlError::usage(
                    "one-packet scheduling (--ops) is not supported",
                ));
            }
            _ if cmd == Cmd::Set && !a.starts_with('-') => {
                o.set.push(a.clone());
                continue;
            }
            _ if cmd == Cmd::Restore && !a.starts_with('-') => {
                return Err(CtlError::usage(
                    "-R reads the rules from standard input; use `tandemctl restore FILE` for a file",
                ));
            }
            _ => {
                return Err(CtlError::usage(format!(
                    "unknown option `{a}` for ipvsadm-style `{first}`"
                )));
            }
        };
        if !cmd.allowed().contains(&key) {
            return Err(CtlError::usage(format!(
                "option `{a}` cannot be used with `{first}`"
            )));
        }
        if key != "n" && key != "sort" && o.seen.iter().any(|(k, _)| *k == key) && key != "method" {
            return Err(CtlError::usage(format!(
                "option `{a}` given more than once"
            )));
        }
        o.seen.push((key, a));
    }
    out.extend(emit(cmd, &first, o)?);
    Ok(out)
}

fn need_service(o: &Opts, first: &str) -> Result<[String; 2], CtlError> {
    match &o.service {
        Some((p, v)) => Ok([p.to_string(), v.clone()]),
        None => Err(CtlError::usage(format!(
            "`{first}` needs a service: -t|-u VIP:PORT"
        ))),
    }
}

fn need_real(o: &Opts, first: &str) -> Result<[String; 2], CtlError> {
    match &o.real {
        Some(r) => Ok(["-r".to_string(), r.clone()]),
        None => Err(CtlError::usage(format!(
            "`{first}` needs a real server: -r RIP[:PORT]"
        ))),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The subcommand form of a parsed ipvsadm command.
fn emit(cmd: Cmd, first: &str, o: Opts) -> Result<Vec<String>, CtlError> {
    let mut v: Vec<String> = Vec::new();
    match cmd {
        Cmd::AddService | Cmd::EditService => {
            v.extend(s(&[
                "service",
                if cmd == Cmd::AddService {
                    "add"
                } else {
                    "edit"
                },
            ]));
            v.extend(need_service(&o, first)?);
            if let Some(x) = &o.scheduler {
                v.extend(["-s".to_string(), x.clone()]);
            }
            if let Some(p) = &o.persistent {
                v.push("-p".to_string());
                v.push(
                    p.clone()
                        .unwrap_or_else(|| crate::parse::DEFAULT_PERSISTENCE_S.to_string()),
                );
            }
            if let Some(x) = &o.netmask {
                v.extend(["-M".to_string(), x.clone()]);
            }
            if let Some(x) = &o.sched_flags {
                v.extend(["-b".to_string(), x.clone()]);
            }
        }
        Cmd::DeleteService => {
            v.extend(s(&["service", "del"]));
            v.extend(need_service(&o, first)?);
        }
        Cmd::AddServer | Cmd::EditServer | Cmd::DeleteServer => {
            let verb = match cmd {
                Cmd::AddServer => "add",
                Cmd::EditServer => "edit",
                _ => "del",
            };
            v.extend(s(&["server", verb]));
            v.extend(need_service(&o, first)?);
            v.extend(need_real(&o, first)?);
            if let Some((m, _)) = &o.method {
                v.push(m.to_string());
            }
            if let Some(w) = &o.weight {
                v.extend(["-w".to_string(), w.clone()]);
            }
        }
        Cmd::List => {
            let views = [o.connection, o.timeout, o.stats, o.rate]
                .iter()
                .filter(|b| **b)
                .count();
            if views > 1 {
                return Err(CtlError::usage(
                    "choose one of -c, --timeout, --stats and --rate",
                ));
            }
            if o.connection {
                v.push("conns".to_string());
                if let Some((p, a)) = &o.service {
                    v.extend([p.to_string(), a.clone()]);
                }
            } else if o.timeout {
                if o.service.is_some() {
                    return Err(CtlError::usage("--timeout takes no service"));
                }
                v.extend(s(&["timeout", "get"]));
            } else {
                v.push("list".to_string());
                if o.stats {
                    v.push("--stats".to_string());
                }
                if o.rate {
                    v.push("--rate".to_string());
                }
                if o.exact {
                    v.push("--exact".to_string());
                }
                if let Some((p, a)) = &o.service {
                    v.extend([p.to_string(), a.clone()]);
                }
            }
        }
        Cmd::Zero => {
            v.push("zero".to_string());
            if let Some((p, a)) = &o.service {
                v.extend([p.to_string(), a.clone()]);
            }
        }
        Cmd::Clear => v.push("clear".to_string()),
        Cmd::Save => v.push("save".to_string()),
        Cmd::Restore => v.extend(s(&["restore", "-"])),
        Cmd::Set => {
            let [tcp, tcpfin, udp] = <[String; 3]>::try_from(o.set).map_err(|_| {
                CtlError::usage(
                    "--set needs three values: tcp tcpfin udp (seconds, 0 leaves one unchanged)",
                )
            })?;
            v.extend(s(&["timeout", "set", "--tcp"]));
            v.push(tcp);
            v.push("--tcpfin".to_string());
            v.push(tcpfin);
            v.push("--udp".to_string());
            v.push(udp);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn tr(s: &str) -> String {
        match translate(&args(s)) {
            Ok(v) => v.join(" "),
            Err(e) => panic!("`{s}` did not translate: {e}"),
        }
    }

    fn tr_err(s: &str) -> String {
        match translate(&args(s)) {
            Ok(v) => panic!("`{s}` translated to {v:?}, expected an error"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "usage error");
                e.to_string()
            }
        }
    }

    #[test]
    fn recognises_ipvsadm_forms_only() {
        for yes in [
            "-A -t 1.2.3.4:80",
            "-Ln",
            "-L",
            "-l",
            "--list",
            "-S -n",
            "-R",
            "-C",
            "--set 1 2 3",
            "--socket /tmp/s -L -n",
            "-o json -Lnc",
            "--socket=/tmp/x -Z",
        ] {
            assert!(is_ipvsadm_form(&args(yes)), "{yes}");
        }
        for no in [
            "",
            "list",
            "ls -n",
            "service add -t 1.2.3.4:80",
            "--socket /tmp/s list",
            "-o json status",
            "--help",
            "-h",
            "-V",
            "-n",
            "--socket",
        ] {
            assert!(!is_ipvsadm_form(&args(no)), "{no}");
        }
    }

    #[test]
    fn service_commands() {
        assert_eq!(
            tr("-A -t 203.0.113.10:80"),
            "service add -t 203.0.113.10:80"
        );
        assert_eq!(
            tr("-A -t 203.0.113.10:80 -s wrr"),
            "service add -t 203.0.113.10:80 -s wrr"
        );
        assert_eq!(
            tr("-A -u 203.0.113.10:53 -s sh -b sh-port,sh-fallback"),
            "service add -u 203.0.113.10:53 -s sh -b sh-port,sh-fallback"
        );
        assert_eq!(
            tr("-A -t 203.0.113.10:21 -p"),
            "service add -t 203.0.113.10:21 -p 300"
        );
        assert_eq!(
            tr("-A -t 203.0.113.10:21 -p 600 -M 255.255.255.0 -s wlc"),
            "service add -t 203.0.113.10:21 -s wlc -p 600 -M 255.255.255.0"
        );
        assert_eq!(
            tr("-A -t 203.0.113.10:21 -p -M 255.255.255.0"),
            "service add -t 203.0.113.10:21 -p 300 -M 255.255.255.0"
        );
        assert_eq!(
            tr(
                "--add-service --tcp-service 203.0.113.10:80 --scheduler rr --persistent 60 --netmask 255.255.0.0 --sched-flags x"
            ),
            "service add -t 203.0.113.10:80 -s rr -p 60 -M 255.255.0.0 -b x"
        );
        assert_eq!(
            tr("-At 203.0.113.10:80 -s rr"),
            "service add -t 203.0.113.10:80 -s rr"
        );
        assert_eq!(
            tr("-E -t 203.0.113.10:80 -s rr"),
            "service edit -t 203.0.113.10:80 -s rr"
        );
        assert_eq!(
            tr("-E -u 203.0.113.10:53 -p 0"),
            "service edit -u 203.0.113.10:53 -p 0"
        );
        assert_eq!(
            tr("--edit-service -t 203.0.113.10:80 -p"),
            "service edit -t 203.0.113.10:80 -p 300"
        );
        assert_eq!(
            tr("-D -t 203.0.113.10:80"),
            "service del -t 203.0.113.10:80"
        );
        assert_eq!(
            tr("--delete-service --udp-service 203.0.113.10:53"),
            "service del -u 203.0.113.10:53"
        );
    }

    #[test]
    fn server_commands() {
        assert_eq!(
            tr("-a -t 203.0.113.10:80 -r 172.16.0.2:80 -m -w 1"),
            "server add -t 203.0.113.10:80 -r 172.16.0.2:80 -m -w 1"
        );
        assert_eq!(
            tr("-a -t 203.0.113.10:80 -r 172.16.0.2"),
            "server add -t 203.0.113.10:80 -r 172.16.0.2"
        );
        assert_eq!(
            tr("-a -u 203.0.113.10:53 -r 172.16.0.2 -i"),
            "server add -u 203.0.113.10:53 -r 172.16.0.2 -i"
        );
        assert_eq!(
            tr("-a -t 203.0.113.10:80 -r 172.16.0.2 -g -w 0"),
            "server add -t 203.0.113.10:80 -r 172.16.0.2 -g -w 0"
        );
        assert_eq!(
            tr(
                "--add-server --tcp-service 1.1.1.1:80 --real-server 2.2.2.2:81 --masquerading --weight 3"
            ),
            "server add -t 1.1.1.1:80 -r 2.2.2.2:81 -m -w 3"
        );
        assert_eq!(
            tr("-a -t 1.1.1.1:80 -r 2.2.2.2 --ipip"),
            "server add -t 1.1.1.1:80 -r 2.2.2.2 -i"
        );
        assert_eq!(
            tr("-a -t 1.1.1.1:80 -r 2.2.2.2 --gatewaying"),
            "server add -t 1.1.1.1:80 -r 2.2.2.2 -g"
        );
        assert_eq!(
            tr("-e -t 203.0.113.10:80 -r 172.16.0.3:8000 -w 5"),
            "server edit -t 203.0.113.10:80 -r 172.16.0.3:8000 -w 5"
        );
        assert_eq!(
            tr("--edit-server -t 1.1.1.1:80 -r 2.2.2.2 -m"),
            "server edit -t 1.1.1.1:80 -r 2.2.2.2 -m"
        );
        assert_eq!(
            tr("-d -t 203.0.113.10:80 -r 172.16.0.3:8000"),
            "server del -t 203.0.113.10:80 -r 172.16.0.3:8000"
        );
        assert_eq!(
            tr("--delete-server -u 1.1.1.1:53 --real-server 2.2.2.2"),
            "server del -u 1.1.1.1:53 -r 2.2.2.2"
        );
        // Repeating the same method is harmless, as in ipvsadm.
        assert_eq!(
            tr("-a -t 1.1.1.1:80 -r 2.2.2.2 -m --masquerading"),
            "server add -t 1.1.1.1:80 -r 2.2.2.2 -m"
        );
    }

    #[test]
    fn listing_commands() {
        assert_eq!(tr("-L"), "list");
        assert_eq!(tr("-l"), "list");
        assert_eq!(tr("-L -n"), "list");
        assert_eq!(tr("-Ln"), "list");
        assert_eq!(tr("--list --numeric"), "list");
        assert_eq!(tr("-L -n -t 203.0.113.10:80"), "list -t 203.0.113.10:80");
        assert_eq!(tr("-L -u 203.0.113.10:53"), "list -u 203.0.113.10:53");
        assert_eq!(tr("-L -n --stats"), "list --stats");
        assert_eq!(tr("-Ln --stats --exact"), "list --stats --exact");
        assert_eq!(tr("-L --stats -x"), "list --stats --exact");
        assert_eq!(tr("-Lnx --rate"), "list --rate --exact");
        assert_eq!(tr("-L -n --rate"), "list --rate");
        assert_eq!(tr("-L --rate -t 1.1.1.1:80"), "list --rate -t 1.1.1.1:80");
        assert_eq!(tr("-L -n -c"), "conns");
        assert_eq!(tr("-Lnc"), "conns");
        assert_eq!(tr("-lnc"), "conns");
        assert_eq!(tr("-L --connection"), "conns");
        assert_eq!(tr("-L -c -t 1.1.1.1:80"), "conns -t 1.1.1.1:80");
        assert_eq!(tr("-L --timeout"), "timeout get");
        assert_eq!(tr("-L -n --timeout"), "timeout get");
        assert_eq!(tr("-L -n --sort"), "list");
    }

    #[test]
    fn other_commands() {
        assert_eq!(tr("-Z"), "zero");
        assert_eq!(tr("--zero"), "zero");
        assert_eq!(tr("-Z -t 1.1.1.1:80"), "zero -t 1.1.1.1:80");
        assert_eq!(tr("-C"), "clear");
        assert_eq!(tr("--clear"), "clear");
        assert_eq!(tr("-S"), "save");
        assert_eq!(tr("-S -n"), "save");
        assert_eq!(tr("-Sn"), "save");
        assert_eq!(tr("--save"), "save");
        assert_eq!(tr("-R"), "restore -");
        assert_eq!(tr("--restore"), "restore -");
        assert_eq!(
            tr("--set 900 60 300"),
            "timeout set --tcp 900 --tcpfin 60 --udp 300"
        );
        assert_eq!(
            tr("--set 0 0 120"),
            "timeout set --tcp 0 --tcpfin 0 --udp 120"
        );
    }

    #[test]
    fn global_options_pass_through() {
        assert_eq!(
            tr("--socket /tmp/a.sock -L -n"),
            "--socket /tmp/a.sock list"
        );
        assert_eq!(tr("-L -n -o json"), "-o json list");
        assert_eq!(tr("-Lnc -ojson"), "-ojson conns");
        assert_eq!(tr("--output=json -S"), "--output=json save");
        assert_eq!(
            tr("-v --server https://d1:50051 --ca ca.pem --cert c.pem --key k.pem -C"),
            "-v --server https://d1:50051 --ca ca.pem --cert c.pem --key k.pem clear"
        );
        assert_eq!(
            tr("--connect-timeout 1 --rpc-timeout 2 -Z"),
            "--connect-timeout 1 --rpc-timeout 2 zero"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            tr_err("-a -t 1.1.1.1:80 -r 2.2.2.2 -m -i"),
            "`-m` and `-i` cannot be used together: choose one forwarding method (-m NAT, -i tunnel, -g direct routing)"
        );
        assert!(
            tr_err("-a -t 1.1.1.1:80 -r 2.2.2.2 -g --masquerading")
                .contains("cannot be used together")
        );
        assert_eq!(tr_err("-A -s rr"), "`-A` needs a service: -t|-u VIP:PORT");
        assert_eq!(tr_err("-D"), "`-D` needs a service: -t|-u VIP:PORT");
        assert_eq!(
            tr_err("-a -t 1.1.1.1:80 -m"),
            "`-a` needs a real server: -r RIP[:PORT]"
        );
        assert_eq!(
            tr_err("-d -t 1.1.1.1:80"),
            "`-d` needs a real server: -r RIP[:PORT]"
        );
        assert_eq!(
            tr_err("-a -t 1.1.1.1:80 -r 2.2.2.2 -s rr"),
            "option `-s` cannot be used with `-a`"
        );
        assert_eq!(
            tr_err("-A -t 1.1.1.1:80 -w 2"),
            "option `-w` cannot be used with `-A`"
        );
        assert_eq!(
            tr_err("-D -t 1.1.1.1:80 -s rr"),
            "option `-s` cannot be used with `-D`"
        );
        assert_eq!(
            tr_err("-C -t 1.1.1.1:80"),
            "option `-t` cannot be used with `-C`"
        );
        assert_eq!(tr_err("-Z -n"), "option `-n` cannot be used with `-Z`");
        assert_eq!(
            tr_err("-A -t 1.1.1.1:80 -u 1.1.1.1:53"),
            "more than one service address given"
        );
        assert_eq!(
            tr_err("-A -t 1.1.1.1:80 -L"),
            "multiple commands specified (`-A` and `-L`)"
        );
        assert_eq!(tr_err("-A -t"), "option `-t` needs a value");
        assert_eq!(tr_err("-A -t 1.1.1.1:80 -s"), "option `-s` needs a value");
        assert!(tr_err("-A -f 1").contains("firewall-mark"));
        assert!(tr_err("-A -6 -t 1.1.1.1:80").contains("IPv6"));
        assert!(tr_err("-a -t 1.1.1.1:80 -r 2.2.2.2 -x 10").contains("thresholds"));
        assert!(tr_err("-L --daemon").contains("sync daemon"));
        assert!(tr_err("-L --persistent-conn").contains("not supported"));
        assert!(tr_err("-L --thresholds").contains("thresholds"));
        assert_eq!(
            tr_err("-L -c --stats"),
            "choose one of -c, --timeout, --stats and --rate"
        );
        assert_eq!(
            tr_err("-L --stats --rate"),
            "choose one of -c, --timeout, --stats and --rate"
        );
        assert_eq!(
            tr_err("-L --timeout -t 1.1.1.1:80"),
            "--timeout takes no service"
        );
        assert!(tr_err("--set 1 2").starts_with("--set needs three values"));
        assert!(tr_err("--set 1 2 3 4").starts_with("--set needs three values"));
        assert!(tr_err("-R rules.txt").contains("tandemctl restore FILE"));
        assert_eq!(
            tr_err("-L --bogus"),
            "unknown option `--bogus` for ipvsadm-style `-L`"
        );
        assert_eq!(
            tr_err("-A -t 1.1.1.1:80 -s rr -s wrr"),
            "option `-s` given more than once"
        );
        assert_eq!(tr_err("--socket"), "option `--socket` needs a value");
    }
}
