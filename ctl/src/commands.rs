//! From a parsed command line to the requests it sends ([`plan`], no I/O but reading a
//! `restore` file), and from the responses to what is printed ([`execute`]).

use std::io::Read as _;

use tandem_proto::admin;

use crate::cli::{
    Cli, Command, ConnsArgs, Output, ServerAddArgs, ServerCmd, ServiceAddArgs, ServiceCmd,
    ServiceEditArgs, TimeoutCmd,
};
use crate::client::Connection;
use crate::error::CtlError;
use crate::parse::{self, Method, Proto, ServiceAddr};
use crate::rules;
use crate::view::{self, ListFormat};

/// What a command asks of the dataplane, checked locally as far as possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// ipvsadm -A.
    AddService(admin::AddServiceRequest),
    /// ipvsadm -E.
    EditService(admin::EditServiceRequest),
    /// ipvsadm -D.
    DeleteService(admin::DeleteServiceRequest),
    /// ipvsadm -a.
    AddServer(admin::AddServerRequest),
    /// ipvsadm -e.
    EditServer(admin::EditServerRequest),
    /// ipvsadm -d.
    DeleteServer(admin::DeleteServerRequest),
    /// ipvsadm -R and -C.
    Replace(admin::ReplaceServicesRequest),
    /// Re-read the configuration file.
    Reload(admin::ReloadRequest),
    /// ipvsadm -L.
    List {
        /// Only this service.
        key: Option<admin::ServiceKey>,
        /// Which columns.
        format: ListFormat,
        /// No K/M/G suffixes.
        exact: bool,
    },
    /// ipvsadm -L -c.
    Conns(admin::ListConnectionsRequest),
    /// ipvsadm -Z.
    Zero(Option<ServiceAddr>),
    /// ipvsadm -L --timeout.
    GetTimeouts,
    /// ipvsadm --set.
    SetTimeouts(admin::Timeouts),
    /// The director's state.
    Status,
    /// ipvsadm -S.
    Save,
    /// A completion script (no connection needed).
    Completions(clap_complete::Shell),
}

/// A virtual service's settings from `service add` arguments (and `-A` lines of a rules file).
pub fn service_config(a: &ServiceAddArgs) -> Result<admin::ServiceConfig, CtlError> {
    let svc = a.service.parse()?;
    let kind = parse::parse_scheduler(&a.scheduler)?;
    let flags = match &a.sched_flags {
        Some(f) => parse::parse_sched_flags(kind, f)?,
        None => Vec::new(),
    };
    let persistence = match &a.persistent {
        Some(p) => parse::parse_seconds(p, "persistence timeout")?,
        None => 0,
    };
    let netmask = match &a.netmask {
        Some(_) if persistence == 0 => {
            return Err(CtlError::usage(
                "a persistence netmask (-M) needs persistence (-p)",
            ));
        }
        Some(m) => normal_netmask(parse::parse_netmask(m)?),
        None => String::new(),
    };
    Ok(admin::ServiceConfig {
        key: Some(svc.to_wire()),
        scheduler: kind.name().to_string(),
        flags,
        persistence_timeout_s: persistence,
        persistence_netmask: netmask,
    })
}

fn normal_netmask(m: std::net::Ipv4Addr) -> String {
    if m == std::net::Ipv4Addr::BROADCAST {
        String::new()
    } else {
        m.to_string()
    }
}

/// A real server from `server add` arguments (and `-a` lines): its service and settings, with
/// ipvsadm's defaults (method `-g`, weight 1, the virtual port).
pub fn server_config(a: &ServerAddArgs) -> Result<(ServiceAddr, admin::ServerConfig), CtlError> {
    let svc = a.service.parse()?;
    let (addr, port) = parse::parse_real(&a.real, svc.port)?;
    let method = a.method.method().unwrap_or(Method::DirectRoute);
    let weight = match &a.weight {
        Some(w) => parse::parse_weight(w)?,
        None => parse::DEFAULT_WEIGHT,
    };
    Ok((
        svc,
        admin::ServerConfig {
            key: Some(admin::ServerKey {
                address: addr.to_string(),
                port: u32::from(port),
            }),
            method: method.to_wire().into(),
            weight,
        },
    ))
}

fn edit_service(a: &ServiceEditArgs) -> Result<admin::EditServiceRequest, CtlError> {
    let svc = a.service.parse()?;
    let kind = a
        .scheduler
        .as_deref()
        .map(parse::parse_scheduler)
        .transpose()?;
    let flags = match (&a.sched_flags, kind) {
        (Some(f), Some(k)) => Some(parse::parse_sched_flags(k, f)?),
        // Without the scheduler the flags are checked by the dataplane, which knows it.
        (Some(f), None) => Some(
            f.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        (None, _) => None,
    };
    let persistence = a
        .persistent
        .as_deref()
        .map(|p| parse::parse_seconds(p, "persistence timeout"))
        .transpose()?;
    let netmask = a
        .netmask
        .as_deref()
        .map(|m| parse::parse_netmask(m).map(normal_netmask))
        .transpose()?;
    if kind.is_none() && flags.is_none() && persistence.is_none() && netmask.is_none() {
        return Err(CtlError::usage("nothing to change: give -s, -b, -p or -M"));
    }
    Ok(admin::EditServiceRequest {
        key: Some(svc.to_wire()),
        scheduler: kind.map(|k| k.name().to_string()),
        flags: flags.map(|flags| admin::FlagList { flags }),
        persistence_timeout_s: persistence,
        persistence_netmask: netmask,
    })
}

fn edit_server(a: &ServerAddArgs) -> Result<admin::EditServerRequest, CtlError> {
    let svc = a.service.parse()?;
    let (addr, port) = parse::parse_real(&a.real, svc.port)?;
    let weight = a.weight.as_deref().map(parse::parse_weight).transpose()?;
    let method = a.method.method();
    if weight.is_none() && method.is_none() {
        return Err(CtlError::usage("nothing to change: give -m|-i|-g or -w"));
    }
    Ok(admin::EditServerRequest {
        service: Some(svc.to_wire()),
        server: Some(admin::ServerKey {
            address: addr.to_string(),
            port: u32::from(port),
        }),
        method: method.map(|m| m.to_wire().into()),
        weight,
    })
}

fn conns_request(a: &ConnsArgs) -> Result<admin::ListConnectionsRequest, CtlError> {
    let service = a.service.parse()?;
    let protocol = match a.proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        Some(other) => {
            return Err(CtlError::usage(format!(
                "protocol `{other}` is neither tcp nor udp"
            )));
        }
    };
    if let (Some(p), Some(s)) = (protocol, service)
        && p != s.proto
    {
        return Err(CtlError::usage(format!(
            "--proto {} contradicts the service {s}",
            p.upper().to_ascii_lowercase()
        )));
    }
    let client = a
        .client
        .as_deref()
        .map(|c| parse::parse_addr(c, "client address").map(|a| a.to_string()))
        .transpose()?;
    let real = a
        .real
        .as_deref()
        .map(|c| parse::parse_addr(c, "real server address").map(|a| a.to_string()))
        .transpose()?;
    let limit = a.limit.unwrap_or(0);
    if limit > 100_000 {
        return Err(CtlError::usage(format!(
            "--limit {limit} is too large (at most 100000)"
        )));
    }
    Ok(admin::ListConnectionsRequest {
        protocol: protocol.map(|p| p.to_wire().into()),
        client_address: client,
        service: service.map(ServiceAddr::to_wire),
        server_address: real,
        state: a.state.as_deref().map(|s| s.trim().to_ascii_uppercase()),
        limit,
    })
}

fn timeout_value(v: Option<&str>, what: &str) -> Result<u32, CtlError> {
    v.map(|s| parse::parse_seconds(s, what))
        .transpose()
        .map(|x| x.unwrap_or(0))
}

fn read_rules(file: Option<&str>) -> Result<String, CtlError> {
    match file {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CtlError::Failed(format!("cannot read standard input: {e}")))?;
            Ok(s)
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CtlError::usage(format!("cannot read {path}: {e}"))),
    }
}

/// The requests a command line makes, checked locally first. Reads the rules of `restore`.
pub fn plan(cli: &Cli) -> Result<Plan, CtlError> {
    Ok(match &cli.command {
        Command::Service { action } => match action {
            ServiceCmd::Add(a) => Plan::AddService(admin::AddServiceRequest {
                service: Some(admin::ServiceDefinition {
                    config: Some(service_config(a)?),
                    servers: Vec::new(),
                }),
            }),
            ServiceCmd::Edit(a) => Plan::EditService(edit_service(a)?),
            ServiceCmd::Del(a) => Plan::DeleteService(admin::DeleteServiceRequest {
                key: Some(a.service.parse()?.to_wire()),
                flush: a.flush,
            }),
        },
        Command::Server { action } => match action {
            ServerCmd::Add(a) => {
                let (svc, server) = server_config(a)?;
                Plan::AddServer(admin::AddServerRequest {
                    service: Some(svc.to_wire()),
                    server: Some(server),
                })
            }
            ServerCmd::Edit(a) => Plan::EditServer(edit_server(a)?),
            ServerCmd::Del(a) => {
                let svc = a.service.parse()?;
                let (addr, port) = parse::parse_real(&a.real, svc.port)?;
                Plan::DeleteServer(admin::DeleteServerRequest {
                    service: Some(svc.to_wire()),
                    server: Some(admin::ServerKey {
                        address: addr.to_string(),
                        port: u32::from(port),
                    }),
                    flush: a.flush,
                })
            }
        },
        Command::List(a) => {
            if a.connection {
                return Ok(Plan::Conns(admin::ListConnectionsRequest {
                    service: a.service.parse()?.map(ServiceAddr::to_wire),
                    ..Default::default()
                }));
            }
            if a.timeout {
                return Ok(Plan::GetTimeouts);
            }
            let format = if a.stats {
                ListFormat::Stats
            } else if a.rate {
                ListFormat::Rate
            } else {
                ListFormat::Plain
            };
            Plan::List {
                key: a.service.parse()?.map(ServiceAddr::to_wire),
                format,
                exact: a.exact,
            }
        }
        Command::Stats(a) | Command::Rate(a) => Plan::List {
            key: a.service.parse()?.map(ServiceAddr::to_wire),
            format: if matches!(cli.command, Command::Stats(_)) {
                ListFormat::Stats
            } else {
                ListFormat::Rate
            },
            exact: a.exact,
        },
        Command::Conns(a) => Plan::Conns(conns_request(a)?),
        Command::Zero(a) => Plan::Zero(a.service.parse()?),
        Command::Timeout(t) => match &t.action {
            None | Some(TimeoutCmd::Get) => Plan::GetTimeouts,
            Some(TimeoutCmd::Set(s)) => {
                if s.tcp.is_none() && s.tcpfin.is_none() && s.udp.is_none() {
                    return Err(CtlError::usage(
                        "give at least one of --tcp, --tcpfin and --udp",
                    ));
                }
                Plan::SetTimeouts(admin::Timeouts {
                    tcp_s: timeout_value(s.tcp.as_deref(), "tcp timeout")?,
                    tcp_fin_s: timeout_value(s.tcpfin.as_deref(), "tcpfin timeout")?,
                    udp_s: timeout_value(s.udp.as_deref(), "udp timeout")?,
                    tcp_syn_s: 0,
                })
            }
        },
        Command::Status => Plan::Status,
        Command::Save(_) => Plan::Save,
        Command::Restore(r) => {
            let text = read_rules(r.file.as_deref())?;
            Plan::Replace(admin::ReplaceServicesRequest {
                services: rules::parse_rules(&text)?,
                dry_run: r.dry_run,
            })
        }
        Command::Clear => Plan::Replace(admin::ReplaceServicesRequest {
            services: Vec::new(),
            dry_run: false,
        }),
        Command::Reload(r) => Plan::Reload(admin::ReloadRequest { dry_run: r.dry_run }),
        Command::Completions(c) => Plan::Completions(c.shell),
    })
}

/// What a command prints: standard output, and a note for standard error (a truncated
/// connection list, say). Nothing is printed before the whole command has succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// For standard output.
    pub stdout: String,
    /// For standard error, if anything.
    pub note: Option<String>,
}

impl Outcome {
    fn out(stdout: String) -> Self {
        Outcome { stdout, note: None }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CtlError> {
    serde_json::to_string_pretty(v)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| CtlError::Failed(format!("cannot encode JSON: {e}")))
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tandemctl", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn change(
    r: admin::ChangeResponse,
    dry_run: bool,
    output: Output,
    verbose: bool,
) -> Result<Outcome, CtlError> {
    let v = view::ChangeView {
        changes: r.changes,
        generation: r.generation,
        dry_run,
    };
    Ok(Outcome::out(match output {
        Output::Json => json(&v)?,
        Output::Table if verbose || dry_run => view::render_changes(&v),
        Output::Table => String::new(),
    }))
}

/// Sends what `plan` asks for and renders the answer.
pub async fn execute(
    plan: Plan,
    conn: &mut Connection,
    output: Output,
    verbose: bool,
) -> Result<Outcome, CtlError> {
    let target = conn.target.clone();
    let st = |s: tonic::Status| CtlError::from_status(&s, &target);
    let c = &mut conn.client;
    match plan {
        Plan::AddService(r) => change(
            c.add_service(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::EditService(r) => change(
            c.edit_service(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::DeleteService(r) => change(
            c.delete_service(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::AddServer(r) => change(
            c.add_server(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::EditServer(r) => change(
            c.edit_server(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::DeleteServer(r) => change(
            c.delete_server(r).await.map_err(st)?.into_inner(),
            false,
            output,
            verbose,
        ),
        Plan::Replace(r) => {
            let dry = r.dry_run;
            change(
                c.replace_services(r).await.map_err(st)?.into_inner(),
                dry,
                output,
                verbose,
            )
        }
        Plan::Reload(r) => {
            let dry = r.dry_run;
            change(
                c.reload(r).await.map_err(st)?.into_inner(),
                dry,
                output,
                verbose,
            )
        }
        Plan::List { key, format, exact } => {
            let resp = c
                .list_services(admin::ListServicesRequest { key })
                .await
                .map_err(st)?
                .into_inner();
            // The role is for the header only: a director that cannot say it still lists.
            let role = c
                .get_status(admin::GetStatusRequest {})
                .await
                .ok()
                .map(|s| s.into_inner().role)
                .filter(|r| !r.is_empty());
            let v = view::list_view(&resp, role);
            Ok(Outcome::out(match output {
                Output::Json => json(&v)?,
                Output::Table => view::render_list(&v, format, exact),
            }))
        }
        Plan::Conns(r) => {
            let resp = c.list_connections(r).await.map_err(st)?.into_inner();
            let v = view::conns_view(&resp);
            let note = (v.truncated && output == Output::Table).then(|| {
                format!(
                    "tandemctl: {} connections shown; more matched (use --limit or filters)",
                    v.connections.len()
                )
            });
            Ok(Outcome {
                stdout: match output {
                    Output::Json => json(&v)?,
                    Output::Table => view::render_conns(&v),
                },
                note,
            })
        }
        Plan::Zero(svc) => {
            c.zero_counters(admin::ZeroCountersRequest {
                key: svc.map(ServiceAddr::to_wire),
            })
            .await
            .map_err(st)?;
            let what = svc.map_or_else(|| "all".to_string(), |s| s.to_string());
            Ok(Outcome::out(match output {
                Output::Json => json(&serde_json::json!({ "zeroed": what }))?,
                Output::Table if verbose => format!("zeroed the counters of {what}\n"),
                Output::Table => String::new(),
            }))
        }
        Plan::GetTimeouts | Plan::SetTimeouts(_) => {
            let set = matches!(plan, Plan::SetTimeouts(_));
            let t = match plan {
                Plan::SetTimeouts(t) => c.set_timeouts(t).await,
                _ => c.get_timeouts(admin::GetTimeoutsRequest {}).await,
            }
            .map_err(st)?
            .into_inner();
            let v = view::timeouts_view(&t);
            Ok(Outcome::out(match output {
                Output::Json => json(&v)?,
                Output::Table if set && !verbose => String::new(),
                Output::Table => view::render_timeouts(&v),
            }))
        }
        Plan::Status => {
            let s = c
                .get_status(admin::GetStatusRequest {})
                .await
                .map_err(st)?
                .into_inner();
            let v = view::status_view(&s);
            Ok(Outcome::out(match output {
                Output::Json => json(&v)?,
                Output::Table => view::render_status(&v),
            }))
        }
        Plan::Save => {
            let resp = c
                .list_services(admin::ListServicesRequest { key: None })
                .await
                .map_err(st)?
                .into_inner();
            let lines = rules::save_lines(&resp.services)?;
            Ok(Outcome::out(match output {
                Output::Json => json(&serde_json::json!({ "rules": lines }))?,
                Output::Table => lines.iter().map(|l| format!("{l}\n")).collect(),
            }))
        }
        Plan::Completions(shell) => Ok(Outcome::out(completions(shell))),
    }
}

/// Runs a parsed command line: checks it, connects (unless it needs no dataplane), sends the
/// requests and renders the answer.
pub async fn run(cli: &Cli) -> Result<Outcome, CtlError> {
    let plan = plan(cli)?;
    if let Plan::Completions(shell) = plan {
        return Ok(Outcome::out(completions(shell)));
    }
    let mut conn = crate::client::connect(cli).await?;
    execute(plan, &mut conn, cli.output, cli.verbose).await
}
