//! ipvsadm `-S` lines: writing the running configuration ([`save_lines`]) and reading it back
//! ([`parse_rules`]) for `restore`, which replaces the whole configuration in one call.

use std::collections::HashSet;

use clap::Parser as _;
use tandem_proto::admin;

use crate::cli::{self, Cli, Command, ServerCmd, ServiceCmd};
use crate::commands;
use crate::compat;
use crate::error::CtlError;
use crate::parse::{Method, Proto};

/// The `-A` and `-a` lines that recreate `services`, in order, as `ipvsadm -S -n` writes them.
pub fn save_lines(services: &[admin::ServiceStatus]) -> Result<Vec<String>, CtlError> {
    let mut lines = Vec::new();
    for s in services {
        let config = s.config.clone().unwrap_or_default();
        let key = config.key.clone().unwrap_or_default();
        let proto = Proto::from_wire(key.protocol).ok_or_else(|| {
            CtlError::Failed(format!(
                "the dataplane listed service {}:{} with an unknown protocol ({})",
                key.address, key.port, key.protocol
            ))
        })?;
        let svc = format!("{} {}:{}", proto.switch(), key.address, key.port);
        let scheduler = if config.scheduler.trim().is_empty() {
            tandem_proto::DEFAULT_SCHEDULER.name()
        } else {
            config.scheduler.trim()
        };
        let mut line = format!("-A {svc} -s {scheduler}");
        if !config.flags.is_empty() {
            line.push_str(&format!(" -b {}", config.flags.join(",")));
        }
        if config.persistence_timeout_s > 0 {
            line.push_str(&format!(" -p {}", config.persistence_timeout_s));
            let m = config.persistence_netmask.trim();
            if !m.is_empty() && m != "255.255.255.255" {
                line.push_str(&format!(" -M {m}"));
            }
        }
        lines.push(line);
        for d in &s.servers {
            let c = d.config.clone().unwrap_or_default();
            let k = c.key.clone().unwrap_or_default();
            let method = Method::from_wire(c.method).ok_or_else(|| {
                CtlError::Failed(format!(
                    "the dataplane listed real server {}:{} with an unknown forwarding method ({})",
                    k.address, k.port, c.method
                ))
            })?;
            lines.push(format!(
                "-a {svc} -r {}:{} {} -w {}",
                k.address,
                k.port,
                method.switch(),
                c.weight
            ));
        }
    }
    Ok(lines)
}

fn at(line: usize, e: CtlError) -> CtlError {
    CtlError::usage(format!("line {line}: {e}"))
}

/// Reads `-A` / `-a` lines (as `save` writes them, or as typed for ipvsadm; a leading
/// `ipvsadm` word, blank lines and `#` comments are allowed) into the whole set of services.
/// Every value is checked; an error names its line, and nothing is sent.
pub fn parse_rules(text: &str) -> Result<Vec<admin::ServiceDefinition>, CtlError> {
    let mut defs: Vec<admin::ServiceDefinition> = Vec::new();
    let mut keys: Vec<crate::parse::ServiceAddr> = Vec::new();
    let mut reals: HashSet<(crate::parse::ServiceAddr, String, u32)> = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words
            .first()
            .is_some_and(|w| w == "ipvsadm" || w.ends_with("/ipvsadm"))
        {
            words.remove(0);
        }
        if !compat::is_ipvsadm_form(&words) {
            return Err(at(
                n,
                CtlError::usage(format!("`{line}` is not an ipvsadm -A or -a line")),
            ));
        }
        let argv = compat::translate(&words).map_err(|e| at(n, e))?;
        if argv.first().is_some_and(|a| a.starts_with('-')) {
            return Err(at(
                n,
                CtlError::usage(format!("`{}` is not allowed in a rules file", argv[0])),
            ));
        }
        let parsed = Cli::try_parse_from(std::iter::once("tandemctl".to_string()).chain(argv))
            .map_err(|e| at(n, CtlError::usage(cli::one_line(&e.render().to_string()))))?;
        match parsed.command {
            Command::Service {
                action: ServiceCmd::Add(a),
            } => {
                let config = commands::service_config(&a).map_err(|e| at(n, e))?;
                let svc = a.service.parse().map_err(|e| at(n, e))?;
                if keys.contains(&svc) {
                    return Err(at(
                        n,
                        CtlError::usage(format!("service {svc} is defined twice")),
                    ));
                }
                keys.push(svc);
                defs.push(admin::ServiceDefinition {
                    config: Some(config),
                    servers: Vec::new(),
                });
            }
            Command::Server {
                action: ServerCmd::Add(a),
            } => {
                let (svc, server) = commands::server_config(&a).map_err(|e| at(n, e))?;
                let Some(idx) = keys.iter().position(|k| *k == svc) else {
                    return Err(at(
                        n,
                        CtlError::usage(format!(
                            "real server for service {svc}, which no earlier -A line defines"
                        )),
                    ));
                };
                let k = server.key.clone().unwrap_or_default();
                if !reals.insert((svc, k.address.clone(), k.port)) {
                    return Err(at(
                        n,
                        CtlError::usage(format!(
                            "real server {}:{} of service {svc} is defined twice",
                            k.address, k.port
                        )),
                    ));
                }
                if let Some(def) = defs.get_mut(idx) {
                    def.servers.push(server);
                }
            }
            _ => {
                return Err(at(
                    n,
                    CtlError::usage("only -A and -a lines can be restored".to_string()),
                ));
            }
        }
    }
    // The domain's own checks too, so that the dataplane cannot refuse what passed here.
    for (def, key) in defs.iter().zip(&keys) {
        tandem_core::service::ServiceSpec::try_from(def)
            .map_err(|e| CtlError::usage(format!("service {key}: {e}")))?;
    }
    Ok(defs)
}
