//! `save` writes ipvsadm -S lines, `restore` reads them back: the round trip is an identity and
//! every error names its line.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tandem_proto::admin;
use tandemctl::CtlError;
use tandemctl::rules::{parse_rules, save_lines};

/// A definition as the listing would show it after a restore.
fn as_status(defs: &[admin::ServiceDefinition]) -> Vec<admin::ServiceStatus> {
    defs.iter()
        .map(|d| admin::ServiceStatus {
            config: d.config.clone(),
            servers: d
                .servers
                .iter()
                .map(|s| admin::ServerStatus {
                    config: Some(s.clone()),
                    ..Default::default()
                })
                .collect(),
            stats: None,
            rates: None,
        })
        .collect()
}

fn rich() -> Vec<admin::ServiceStatus> {
    use admin::ForwardMethod::*;
    use admin::Protocol::*;
    let mut r = demo().services;
    let mut mh = service(
        key(Udp, "203.0.113.20", 53),
        "mh",
        600,
        "255.255.255.0",
        vec![
            server("10.1.2.3", 5353, Tunnel, 65535, 0, 0),
            server("10.1.2.4", 53, DirectRoute, 0, 0, 0),
        ],
    );
    if let Some(c) = mh.config.as_mut() {
        c.flags = vec!["mh-fallback".into(), "mh-port".into()];
    }
    r.push(mh);
    r.push(service(key(Tcp, "198.51.100.1", 443), "rr", 0, "", vec![]));
    r
}

#[test]
fn save_writes_ipvsadm_lines() {
    let lines = save_lines(&rich()).unwrap();
    assert_eq!(
        lines,
        vec![
            "-A -t 203.0.113.10:80 -s wrr",
            "-a -t 203.0.113.10:80 -r 172.16.0.2:80 -m -w 1",
            "-a -t 203.0.113.10:80 -r 172.16.0.3:8000 -m -w 2",
            "-A -t 203.0.113.10:21 -s wlc -p 300",
            "-a -t 203.0.113.10:21 -r 172.16.0.3:21 -g -w 1",
            "-A -u 203.0.113.20:53 -s mh -b mh-fallback,mh-port -p 600 -M 255.255.255.0",
            "-a -u 203.0.113.20:53 -r 10.1.2.3:5353 -i -w 65535",
            "-a -u 203.0.113.20:53 -r 10.1.2.4:53 -g -w 0",
            "-A -t 198.51.100.1:443 -s rr",
        ]
    );
}

#[test]
fn save_then_restore_is_an_identity() {
    let services = rich();
    let text = save_lines(&services).unwrap().join("\n");
    let defs = parse_rules(&text).unwrap();
    assert_eq!(defs.len(), 4);
    let back = as_status(&defs);
    assert_eq!(save_lines(&back).unwrap().join("\n"), text);
    // And the definitions are what the listing held, field for field.
    for (d, s) in defs.iter().zip(&services) {
        assert_eq!(d.config, s.config);
        let servers: Vec<_> = s
            .servers
            .iter()
            .map(|x| x.config.clone().unwrap())
            .collect();
        assert_eq!(d.servers, servers);
    }
}

#[test]
fn restore_reads_what_operators_write() {
    let text = "\
# the web farm
ipvsadm -A -t 203.0.113.10:80 -s wrr

/sbin/ipvsadm -a -t 203.0.113.10:80 -r 172.16.0.2 -m
  -a -t 203.0.113.10:80 -r 172.16.0.3:8000 -m -w 2
-A -t 203.0.113.10:21 -p
--add-server --tcp-service 203.0.113.10:21 --real-server 172.16.0.3
-A -u 203.0.113.20:53
";
    let defs = parse_rules(text).unwrap();
    let lines = save_lines(&as_status(&defs)).unwrap();
    assert_eq!(
        lines,
        vec![
            "-A -t 203.0.113.10:80 -s wrr",
            "-a -t 203.0.113.10:80 -r 172.16.0.2:80 -m -w 1",
            "-a -t 203.0.113.10:80 -r 172.16.0.3:8000 -m -w 2",
            "-A -t 203.0.113.10:21 -s wlc -p 300",
            "-a -t 203.0.113.10:21 -r 172.16.0.3:21 -g -w 1",
            "-A -u 203.0.113.20:53 -s wlc",
        ]
    );
    assert_eq!(parse_rules("").unwrap(), vec![], "an empty file clears");
    assert_eq!(parse_rules("# nothing\n\n").unwrap(), vec![]);
}

fn error(text: &str) -> String {
    match parse_rules(text) {
        Err(CtlError::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn restore_errors_name_the_line() {
    let head = "-A -t 203.0.113.10:80 -s wrr\n# comment\n";
    assert_eq!(
        error(&format!("{head}-a -t 203.0.113.11:80 -r 172.16.0.2 -m\n")),
        "line 3: real server for service TCP 203.0.113.11:80, which no earlier -A line defines"
    );
    assert!(
        error(&format!("{head}-A -t 203.0.113.10:81 -s wrrr\n"))
            .starts_with("line 3: unknown scheduler `wrrr`")
    );
    assert_eq!(
        error(&format!("{head}-A -t 203.0.113.10:70000\n")),
        "line 3: service port 70000 is out of range (1-65535)"
    );
    assert_eq!(
        error(&format!(
            "{head}-a -t 203.0.113.10:80 -r 172.16.0.2 -m -i\n"
        )),
        "line 3: `-m` and `-i` cannot be used together: choose one forwarding method (-m NAT, -i tunnel, -g direct routing)"
    );
    assert_eq!(
        error(&format!(
            "{head}-a -t 203.0.113.10:80 -r 172.16.0.2 -w 70000\n"
        )),
        "line 3: weight 70000 is out of range (0-65535)"
    );
    assert_eq!(
        error(&format!("{head}-A -t 203.0.113.10:80 -s rr\n")),
        "line 3: service TCP 203.0.113.10:80 is defined twice"
    );
    assert_eq!(
        error(&format!(
            "{head}-a -t 203.0.113.10:80 -r 172.16.0.2 -m\n-a -t 203.0.113.10:80 -r 172.16.0.2:80 -g\n"
        )),
        "line 4: real server 172.16.0.2:80 of service TCP 203.0.113.10:80 is defined twice"
    );
    assert_eq!(
        error(&format!("{head}-D -t 203.0.113.10:80\n")),
        "line 3: only -A and -a lines can be restored"
    );
    assert_eq!(
        error(&format!("{head}list\n")),
        "line 3: `list` is not an ipvsadm -A or -a line"
    );
    assert_eq!(
        error(&format!("{head}-o json -A -t 203.0.113.10:81\n")),
        "line 3: `-o` is not allowed in a rules file"
    );
    assert_eq!(
        error(&format!("{head}-A -t 203.0.113.10:81 -M 255.255.255.0\n")),
        "line 3: a persistence netmask (-M) needs persistence (-p)"
    );
    assert!(
        error(&format!("{head}-A -t 203.0.113.10:81 -s rr -b sh-port\n")).starts_with("line 3: ")
    );
    assert!(
        error("-A -t 203.0.113.10:81 --bogus\n").starts_with("line 1: unknown option `--bogus`")
    );
}
