//! Configuring a director the way an operator does: with `tandemctl`, in ipvsadm's short forms,
//! over the dataplane's admin socket. The rack's demo applies its whole service configuration
//! this way and prints `tandemctl -L -n` at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_dataplane::config::{MethodName, ProtocolName, ServiceSection};

use crate::error::{Error, Result};
use crate::exec::{Cmd, CmdOutput};

/// The client's file name.
pub const CTL_BIN: &str = "tandemctl";

/// Environment variable naming the `tandemctl` binary.
pub const CTL_ENV: &str = "TANDEM_CTL";

/// Bound on one `tandemctl` call.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds `tandemctl`: `explicit`, else `$TANDEM_CTL`, else next to the running executable or
/// in its parent directory.
pub fn locate_ctl(explicit: Option<&Path>) -> Result<PathBuf> {
    crate::process::locate_named(
        CTL_BIN,
        explicit,
        std::env::var_os(CTL_ENV),
        std::env::current_exe().ok(),
    )
    .map_err(|looked_at| Error::BinaryNotFound {
        binary: CTL_BIN,
        env: CTL_ENV,
        looked_at,
    })
}

fn proto_flag(p: ProtocolName) -> &'static str {
    match p {
        ProtocolName::Tcp => "-t",
        ProtocolName::Udp => "-u",
    }
}

fn method_flag(m: MethodName) -> &'static str {
    match m {
        MethodName::Nat => "-m",
        MethodName::Tun => "-i",
        MethodName::Dr => "-g",
    }
}

/// The ipvsadm-form `tandemctl` commands that create `services`: one `-A` per service, then
/// one `-a` per real server, in order.
pub fn ipvsadm_commands(services: &[ServiceSection]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for s in services {
        let vip = format!("{}:{}", s.address, s.port);
        let mut add = vec![
            "-A".to_owned(),
            proto_flag(s.protocol).to_owned(),
            vip.clone(),
            "-s".to_owned(),
            s.scheduler.clone(),
        ];
        if s.persistence_timeout_s > 0 {
            add.extend(["-p".to_owned(), s.persistence_timeout_s.to_string()]);
        }
        if !s.flags.is_empty() {
            add.extend(["-b".to_owned(), s.flags.join(",")]);
        }
        cmds.push(add);
        for r in &s.servers {
            cmds.push(vec![
                "-a".to_owned(),
                proto_flag(s.protocol).to_owned(),
                vip.clone(),
                "-r".to_owned(),
                format!("{}:{}", r.address, r.port),
                method_flag(r.method).to_owned(),
                "-w".to_owned(),
                r.weight.to_string(),
            ]);
        }
    }
    cmds
}

/// `tandemctl` bound to one director's admin socket.
#[derive(Debug, Clone)]
pub struct Ctl {
    binary: PathBuf,
    socket: PathBuf,
}

impl Ctl {
    /// A client of the dataplane listening on `socket`.
    pub fn new(binary: PathBuf, socket: PathBuf) -> Self {
        Self { binary, socket }
    }

    /// The admin socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn cmd(&self, args: &[String]) -> Cmd {
        let mut argv = vec![
            self.binary.display().to_string(),
            "--socket".to_owned(),
            self.socket.display().to_string(),
        ];
        argv.extend(args.iter().cloned());
        Cmd::new(argv).timeout(CTL_TIMEOUT)
    }

    /// Runs `tandemctl --socket S args...`; a non-zero exit is an error carrying its stderr.
    pub fn run(&self, args: &[String]) -> Result<CmdOutput> {
        self.cmd(args).run()
    }

    /// Runs it and returns the output whatever the exit status (for tests of refusals).
    pub fn output(&self, args: &[String]) -> Result<CmdOutput> {
        self.cmd(args).output()
    }

    /// Applies `services` with one ipvsadm-form command each; returns the commands run.
    pub fn apply(&self, services: &[ServiceSection]) -> Result<Vec<Vec<String>>> {
        let cmds = ipvsadm_commands(services);
        for c in &cmds {
            self.run(c)?;
        }
        Ok(cmds)
    }

    /// `tandemctl -L -n`.
    pub fn listing(&self) -> Result<String> {
        Ok(self.run(&["-L".to_owned(), "-n".to_owned()])?.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tandem_dataplane::config::ServerSection;

    #[test]
    fn seed_002_services_become_ipvsadm_forms() {
        let services = vec![
            ServiceSection {
                protocol: ProtocolName::Tcp,
                address: Ipv4Addr::new(203, 0, 113, 10),
                port: 80,
                scheduler: "wrr".into(),
                persistence_timeout_s: 0,
                flags: vec![],
                servers: vec![
                    ServerSection {
                        address: Ipv4Addr::new(172, 16, 0, 2),
                        port: 80,
                        method: MethodName::Nat,
                        weight: 1,
                    },
                    ServerSection {
                        address: Ipv4Addr::new(172, 16, 0, 3),
                        port: 8000,
                        method: MethodName::Nat,
                        weight: 2,
                    },
                ],
            },
            ServiceSection {
                protocol: ProtocolName::Udp,
                address: Ipv4Addr::new(203, 0, 113, 20),
                port: 53,
                scheduler: "sh".into(),
                persistence_timeout_s: 300,
                flags: vec!["sh-port".into()],
                servers: vec![ServerSection {
                    address: Ipv4Addr::new(172, 16, 0, 4),
                    port: 53,
                    method: MethodName::Tun,
                    weight: 3,
                }],
            },
        ];
        let got: Vec<String> = ipvsadm_commands(&services)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "-A -t 203.0.113.10:80 -s wrr",
                "-a -t 203.0.113.10:80 -r 172.16.0.2:80 -m -w 1",
                "-a -t 203.0.113.10:80 -r 172.16.0.3:8000 -m -w 2",
                "-A -u 203.0.113.20:53 -s sh -p 300 -b sh-port",
                "-a -u 203.0.113.20:53 -r 172.16.0.4:53 -i -w 3",
            ]
        );
    }
}
