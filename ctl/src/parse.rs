//! Parsing of what operators type: service and real-server addresses, ports, schedulers and
//! their flags, weights, netmasks. Every refusal is one line that quotes the input.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Serialize;
use tandem_core::sched::{SchedulerKind, SchedulerOptions};
use tandem_proto::admin;

use crate::error::CtlError;

/// TCP or UDP, as `-t` / `-u` choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// `-t`
    Tcp,
    /// `-u`
    Udp,
}

impl Proto {
    /// `TCP` / `UDP`, as listings show it.
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// `-t` / `-u`, as `-S` lines show it.
    pub fn switch(self) -> &'static str {
        match self {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        }
    }

    /// The wire enum.
    pub fn to_wire(self) -> admin::Protocol {
        match self {
            Proto::Tcp => admin::Protocol::Tcp,
            Proto::Udp => admin::Protocol::Udp,
        }
    }

    /// From the wire enum; `None` for an unspecified or unknown value.
    pub fn from_wire(value: i32) -> Option<Self> {
        match admin::Protocol::try_from(value) {
            Ok(admin::Protocol::Tcp) => Some(Proto::Tcp),
            Ok(admin::Protocol::Udp) => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// A virtual service as given on the command line: protocol, VIP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAddr {
    /// TCP or UDP.
    pub proto: Proto,
    /// The virtual IP address.
    pub addr: Ipv4Addr,
    /// The virtual port.
    pub port: u16,
}

impl ServiceAddr {
    /// The wire key.
    pub fn to_wire(self) -> admin::ServiceKey {
        admin::ServiceKey {
            protocol: self.proto.to_wire().into(),
            address: self.addr.to_string(),
            port: u32::from(self.port),
        }
    }
}

impl std::fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}:{}", self.proto.upper(), self.addr, self.port)
    }
}

/// How a real server is reached (`-m` / `-i` / `-g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// NAT, `-m`, listed as `Masq`.
    Nat,
    /// IPIP, `-i`, listed as `Tunnel`.
    Tunnel,
    /// Direct routing, `-g`, listed as `Route` (ipvsadm's default).
    DirectRoute,
}

impl Method {
    /// The ipvsadm listing name.
    pub fn listing(self) -> &'static str {
        match self {
            Method::Nat => "Masq",
            Method::Tunnel => "Tunnel",
            Method::DirectRoute => "Route",
        }
    }

    /// The ipvsadm switch.
    pub fn switch(self) -> &'static str {
        match self {
            Method::Nat => "-m",
            Method::Tunnel => "-i",
            Method::DirectRoute => "-g",
        }
    }

    /// The wire enum.
    pub fn to_wire(self) -> admin::ForwardMethod {
        match self {
            Method::Nat => admin::ForwardMethod::Nat,
            Method::Tunnel => admin::ForwardMethod::Tunnel,
            Method::DirectRoute => admin::ForwardMethod::DirectRoute,
        }
    }

    /// From the wire enum; `None` for an unspecified or unknown value.
    pub fn from_wire(value: i32) -> Option<Self> {
        match admin::ForwardMethod::try_from(value) {
            Ok(admin::ForwardMethod::Nat) => Some(Method::Nat),
            Ok(admin::ForwardMethod::Tunnel) => Some(Method::Tunnel),
            Ok(admin::ForwardMethod::DirectRoute) => Some(Method::DirectRoute),
            _ => None,
        }
    }
}

/// Persistence timeout `-p` gets when given without a value (ipvsadm's default).
pub const DEFAULT_PERSISTENCE_S: u32 = 300;
/// Weight a real server gets when `-w` is not given (ipvsadm's default).
pub const DEFAULT_WEIGHT: u32 = 1;
/// Highest weight (ipvsadm's limit).
pub const MAX_WEIGHT: u32 = tandem_proto::MAX_WEIGHT;

/// An IPv4 address; refuses host names and IPv6 with a message that says so.
pub fn parse_addr(s: &str, what: &str) -> Result<Ipv4Addr, CtlError> {
    let t = s.trim();
    if let Ok(a) = Ipv4Addr::from_str(t) {
        return Ok(a);
    }
    if t.contains(':') || t.starts_with('[') {
        return Err(CtlError::usage(format!(
            "{what} `{s}`: only IPv4 addresses are supported"
        )));
    }
    Err(CtlError::usage(format!(
        "{what} `{s}` is not an IPv4 address (host names are not resolved)"
    )))
}

/// A port 1..=65535.
pub fn parse_port(s: &str, what: &str) -> Result<u16, CtlError> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CtlError::usage(format!(
            "{what} `{s}` is not a port number"
        )));
    }
    match t.parse::<u64>() {
        Ok(p) if (1..=65_535).contains(&p) => u16::try_from(p)
            .map_err(|_| CtlError::usage(format!("{what} {p} is out of range (1-65535)"))),
        _ => Err(CtlError::usage(format!(
            "{what} {t} is out of range (1-65535)"
        ))),
    }
}

/// Splits `ADDR:PORT`; `None` for the port when there is no colon.
fn split_addr_port(s: &str) -> (&str, Option<&str>) {
    match s.trim().rsplit_once(':') {
        // `::1` style: let the address parser refuse it as IPv6.
        Some((a, _)) if a.contains(':') => (s.trim(), None),
        Some((a, p)) => (a, Some(p)),
        None => (s.trim(), None),
    }
}

/// A virtual service address `VIP:PORT` (the port is required: Tandem has no port-0 services).
pub fn parse_service(proto: Proto, s: &str) -> Result<ServiceAddr, CtlError> {
    let (a, p) = split_addr_port(s);
    let addr = parse_addr(a, "service address")?;
    let Some(p) = p else {
        return Err(CtlError::usage(format!(
            "service address `{s}` needs a port (VIP:PORT, e.g. 203.0.113.10:80)"
        )));
    };
    let port = parse_port(p, "service port")?;
    Ok(ServiceAddr { proto, addr, port })
}

/// A real server address `RIP[:PORT]`; the port defaults to the virtual port (as in ipvsadm).
pub fn parse_real(s: &str, virtual_port: u16) -> Result<(Ipv4Addr, u16), CtlError> {
    let (a, p) = split_addr_port(s);
    let addr = parse_addr(a, "real server address")?;
    let port = match p {
        Some(p) => parse_port(p, "real server port")?,
        None => virtual_port,
    };
    Ok((addr, port))
}

/// A scheduler name (`rr wrr lc wlc lblc lblcr dh sh sed nq mh`).
pub fn parse_scheduler(s: &str) -> Result<SchedulerKind, CtlError> {
    SchedulerKind::from_str(s.trim()).map_err(|e| CtlError::usage(e.to_string()))
}

/// Scheduler flags (`-b sh-fallback,sh-port`), checked against the scheduler they go with.
/// An empty string means no flags.
pub fn parse_sched_flags(kind: SchedulerKind, s: &str) -> Result<Vec<String>, CtlError> {
    let options =
        SchedulerOptions::with_flags(kind, s).map_err(|e| CtlError::usage(e.to_string()))?;
    Ok(options.flags(kind).iter().map(|f| f.to_string()).collect())
}

/// A weight 0..=65535 (0 quiesces the server).
pub fn parse_weight(s: &str) -> Result<u32, CtlError> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(w) if w <= u64::from(MAX_WEIGHT) => u32::try_from(w)
            .map_err(|_| CtlError::usage(format!("weight {w} is out of range (0-65535)"))),
        Ok(w) => Err(CtlError::usage(format!(
            "weight {w} is out of range (0-{MAX_WEIGHT})"
        ))),
        Err(_) => Err(CtlError::usage(format!("weight `{s}` is not a number"))),
    }
}

/// A number of seconds (timeouts, persistence).
pub fn parse_seconds(s: &str, what: &str) -> Result<u32, CtlError> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| CtlError::usage(format!("{what} `{s}` is not a number of seconds")))
}

/// A contiguous IPv4 netmask (`-M 255.255.255.0`).
pub fn parse_netmask(s: &str) -> Result<Ipv4Addr, CtlError> {
    let m = Ipv4Addr::from_str(s.trim())
        .map_err(|_| CtlError::usage(format!("netmask `{s}` is not an IPv4 netmask")))?;
    let bits = m.to_bits();
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(CtlError::usage(format!(
            "netmask `{s}` is not a contiguous IPv4 netmask"
        )));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, CtlError>) -> String {
        match r {
            Err(CtlError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn service_addresses() {
        assert_eq!(
            parse_service(Proto::Tcp, "203.0.113.10:80").ok(),
            Some(ServiceAddr {
                proto: Proto::Tcp,
                addr: Ipv4Addr::new(203, 0, 113, 10),
                port: 80
            })
        );
        assert_eq!(
            err(parse_service(Proto::Tcp, "203.0.113.10")),
            "service address `203.0.113.10` needs a port (VIP:PORT, e.g. 203.0.113.10:80)"
        );
        assert_eq!(
            err(parse_service(Proto::Udp, "203.0.113.10:70000")),
            "service port 70000 is out of range (1-65535)"
        );
        assert_eq!(
            err(parse_service(Proto::Udp, "203.0.113.10:0")),
            "service port 0 is out of range (1-65535)"
        );
        assert_eq!(
            err(parse_service(Proto::Udp, "203.0.113.10:http")),
            "service port `http` is not a port number"
        );
        assert_eq!(
            err(parse_service(Proto::Tcp, "10.0.0.300:80")),
            "service address `10.0.0.300` is not an IPv4 address (host names are not resolved)"
        );
        assert_eq!(
            err(parse_service(Proto::Tcp, "[2001:db8::1]:80")),
            "service address `[2001:db8::1]:80`: only IPv4 addresses are supported"
        );
        assert!(err(parse_service(Proto::Tcp, "2001:db8::1")).contains("only IPv4"));
        assert!(err(parse_service(Proto::Tcp, ":80")).contains("not an IPv4"));
        assert!(err(parse_service(Proto::Tcp, "")).contains("not an IPv4"));
        assert!(
            err(parse_service(Proto::Tcp, "1.2.3.4:99999999999999999999")).contains("out of range")
        );
    }

    #[test]
    fn real_servers_default_to_the_virtual_port() {
        assert_eq!(
            parse_real("172.16.0.2", 80).ok(),
            Some((Ipv4Addr::new(172, 16, 0, 2), 80))
        );
        assert_eq!(
            parse_real("172.16.0.3:8000", 80).ok(),
            Some((Ipv4Addr::new(172, 16, 0, 3), 8000))
        );
        assert_eq!(
            err(parse_real("172.16.0.3:65536", 80)),
            "real server port 65536 is out of range (1-65535)"
        );
        assert!(err(parse_real("web1", 80)).contains("host names are not resolved"));
    }

    #[test]
    fn schedulers_and_flags() {
        for k in SchedulerKind::ALL {
            assert_eq!(parse_scheduler(k.name()).ok(), Some(k));
        }
        let e = err(parse_scheduler("wrrr"));
        assert!(e.starts_with("unknown scheduler `wrrr`"), "{e}");
        assert!(e.contains("wlc"), "{e}");
        assert_eq!(
            parse_sched_flags(SchedulerKind::Sh, "sh-port,sh-fallback").ok(),
            Some(vec!["sh-fallback".to_string(), "sh-port".to_string()])
        );
        assert_eq!(parse_sched_flags(SchedulerKind::Rr, "").ok(), Some(vec![]));
        assert!(err(parse_sched_flags(SchedulerKind::Rr, "sh-port")).contains("sh-port"));
        assert!(err(parse_sched_flags(SchedulerKind::Mh, "bogus")).contains("bogus"));
    }

    #[test]
    fn weights_seconds_netmasks() {
        assert_eq!(parse_weight("0").ok(), Some(0));
        assert_eq!(parse_weight("65535").ok(), Some(65_535));
        assert_eq!(
            err(parse_weight("65536")),
            "weight 65536 is out of range (0-65535)"
        );
        assert_eq!(err(parse_weight("-1")), "weight `-1` is not a number");
        assert_eq!(err(parse_weight("two")), "weight `two` is not a number");
        assert_eq!(parse_seconds("300", "persistence").ok(), Some(300));
        assert_eq!(
            err(parse_seconds("5m", "persistence timeout")),
            "persistence timeout `5m` is not a number of seconds"
        );
        assert_eq!(
            parse_netmask("255.255.255.0").ok(),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            err(parse_netmask("255.0.255.0")),
            "netmask `255.0.255.0` is not a contiguous IPv4 netmask"
        );
        assert!(err(parse_netmask("/24")).contains("not an IPv4 netmask"));
    }
}
