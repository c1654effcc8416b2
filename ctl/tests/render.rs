//! The tables and JSON documents, rendered from hand-made responses and compared with the
//! exact text an ipvsadm user expects.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tandem_proto::admin;
use tandemctl::view::{self, ListFormat};

#[test]
fn the_listing_is_ipvsadms() {
    let v = view::list_view(&demo(), Some("standalone".into()));
    let expected = "\
Tandem director (generation 7, standalone)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health
TCP  203.0.113.10:80 wrr
  -> 172.16.0.2:80                Masq    1      0          0          -
  -> 172.16.0.3:8000              Masq    2      0          0          -
TCP  203.0.113.10:21 wlc persistent 300
  -> 172.16.0.3:21                Route   1      0          0          -
";
    assert_eq!(view::render_list(&v, ListFormat::Plain, false), expected);
}

#[test]
fn flags_masks_tunnels_udp_and_counts() {
    use admin::ForwardMethod::*;
    use admin::Protocol::*;
    let mut sh = service(
        key(Udp, "203.0.113.20", 53),
        "sh",
        600,
        "255.255.255.0",
        vec![
            server("10.1.2.3", 5353, Tunnel, 65535, 1234567, 89),
            server("10.1.2.4", 53, DirectRoute, 0, 0, 12),
        ],
    );
    if let Some(c) = sh.config.as_mut() {
        c.flags = vec!["sh-fallback".into(), "sh-port".into()];
    }
    let resp = admin::ListServicesResponse {
        services: vec![
            sh,
            service(key(Tcp, "198.51.100.1", 443), "", 0, "", vec![]),
        ],
        generation: 1,
        counts_staleness_ms: 0,
    };
    let v = view::list_view(&resp, None);
    let expected = "\
Tandem director (generation 1)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health
UDP  203.0.113.20:53 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0
  -> 10.1.2.3:5353                Tunnel  65535  1234567    89         -
  -> 10.1.2.4:53                  Route   0      0          12         -
TCP  198.51.100.1:443 wlc
";
    assert_eq!(view::render_list(&v, ListFormat::Plain, false), expected);
}

fn with_counters() -> admin::ListServicesResponse {
    let mut r = demo();
    r.services.truncate(1);
    let s = &mut r.services[0];
    s.stats = Some(admin::Stats {
        connections: 1_500,
        packets_in: 123_456_789,
        packets_out: 99_999_999,
        bytes_in: 12_345_678_901,
        bytes_out: 123_456_789_012_345,
    });
    s.rates = Some(admin::Rates {
        connections_per_s: 12,
        packets_in_per_s: 3_400,
        packets_out_per_s: 3_000,
        bytes_in_per_s: 250_000_000,
        bytes_out_per_s: 1_000,
    });
    s.servers[0].stats = Some(admin::Stats {
        connections: 1_000,
        packets_in: 100,
        packets_out: 200,
        bytes_in: 3_000,
        bytes_out: 4_000,
    });
    s.servers[0].rates = Some(admin::Rates {
        connections_per_s: 123_456_789,
        packets_in_per_s: 2,
        packets_out_per_s: 3,
        bytes_in_per_s: 123_456_789,
        bytes_out_per_s: 5,
    });
    r
}

#[test]
fn stats_with_suffixes_and_exact() {
    let v = view::list_view(&with_counters(), Some("active".into()));
    let expected = "\
Tandem director (generation 7, active)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  203.0.113.10:80                  1500  123456K 99999999   12345M     123T
  -> 172.16.0.2:80                    1000      100      200     3000     4000
  -> 172.16.0.3:8000                     0        0        0        0        0
";
    assert_eq!(view::render_list(&v, ListFormat::Stats, false), expected);
    let exact = "\
Tandem director (generation 7, active)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  203.0.113.10:80                  1500 123456789 99999999 12345678901 123456789012345
  -> 172.16.0.2:80                    1000      100      200     3000     4000
  -> 172.16.0.3:8000                     0        0        0        0        0
";
    assert_eq!(view::render_list(&v, ListFormat::Stats, true), exact);
}

#[test]
fn rates() {
    let v = view::list_view(&with_counters(), Some("standby".into()));
    let expected = "\
Tandem director (generation 7, standby)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  203.0.113.10:80                    12     3400     3000  250000K     1000
  -> 172.16.0.2:80                123456789        2        3  123456K        5
  -> 172.16.0.3:8000                     0        0        0        0        0
";
    assert_eq!(view::render_list(&v, ListFormat::Rate, false), expected);
}

#[test]
fn large_numbers_as_ipvsadm_shortens_them() {
    let cases: [(u64, &str); 10] = [
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, "  100000K"),
        (999_999_999, "  999999K"),
        (1_000_000_000, "     1000M"),
        (99_999_999_999, " 99999M"),
        (100_000_000_000, "      100G"),
        (99_999_999_999_999, "   99999G"),
        (100_000_000_000_000, "      100T"),
        (u64::MAX, " 18446744T"),
    ];
    for (n, want) in cases {
        let got = view::large_number(n, false);
        assert_eq!(got.trim(), want.trim(), "{n}");
        assert_eq!(got.len(), 9, "{n}: `{got}` fills the 9-character column");
    }
    assert_eq!(view::large_number(12, true), "       12");
    assert_eq!(view::large_number(123_456_789, true), " 123456789");
    assert_eq!(view::large_number(u64::MAX, true), " 18446744073709551615");
}

#[test]
fn connections_as_ipvsadm_lists_them() {
    let resp = admin::ListConnectionsResponse {
        connections: vec![
            admin::Connection {
                protocol: admin::Protocol::Tcp.into(),
                client_address: "198.51.100.7".into(),
                client_port: 51234,
                virtual_address: "203.0.113.10".into(),
                virtual_port: 80,
                server_address: "172.16.0.2".into(),
                server_port: 80,
                method: admin::ForwardMethod::Nat.into(),
                state: "ESTABLISHED".into(),
                expires_ms: 899_400,
                lcore: 1,
                template: false,
            },
            admin::Connection {
                protocol: admin::Protocol::Udp.into(),
                client_address: "198.51.100.8".into(),
                client_port: 0,
                virtual_address: "203.0.113.20".into(),
                virtual_port: 53,
                server_address: "10.1.2.3".into(),
                server_port: 5353,
                method: admin::ForwardMethod::Tunnel.into(),
                state: String::new(),
                expires_ms: 6_000_999,
                lcore: 2,
                template: true,
            },
        ],
        truncated: true,
    };
    let v = view::conns_view(&resp);
    let expected = "\
Tandem connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 198.51.100.7:51234 203.0.113.10:80    172.16.0.2:80
UDP 100:00 NONE        198.51.100.8:0     203.0.113.20:53    10.1.2.3:5353
";
    assert_eq!(view::render_conns(&v), expected);
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(j["truncated"], true);
    assert_eq!(j["connections"][0]["method"], "nat");
    assert_eq!(j["connections"][1]["protocol"], "udp");
    assert_eq!(j["connections"][1]["template"], true);
    assert_eq!(j["connections"][0]["expires_ms"], 899_400);
}

#[test]
fn timeouts_line() {
    let t = view::timeouts_view(&admin::Timeouts {
        tcp_s: 900,
        tcp_fin_s: 60,
        udp_s: 300,
        tcp_syn_s: 30,
    });
    assert_eq!(
        view::render_timeouts(&t),
        "Timeout (tcp tcpfin udp): 900 60 300\n"
    );
    assert_eq!(
        serde_json::to_value(t).unwrap(),
        serde_json::json!({"tcp_s": 900, "tcp_fin_s": 60, "udp_s": 300, "tcp_syn_s": 30})
    );
}

#[test]
fn the_listing_json_schema() {
    let v = view::list_view(&demo(), Some("standalone".into()));
    let j = serde_json::to_value(&v).unwrap();
    let expected = serde_json::json!({
        "generation": 7,
        "role": "standalone",
        "counts_staleness_ms": 100,
        "services": [
            {
                "protocol": "tcp", "address": "203.0.113.10", "port": 80, "scheduler": "wrr",
                "flags": [], "persistence_timeout_s": 0, "persistence_netmask": null,
                "stats": {"connections": 0, "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0},
                "rates": {"connections_per_s": 0, "packets_in_per_s": 0, "packets_out_per_s": 0, "bytes_in_per_s": 0, "bytes_out_per_s": 0},
                "servers": [
                    {"address": "172.16.0.2", "port": 80, "method": "nat", "weight": 1,
                     "active_connections": 0, "inactive_connections": 0, "health": null,
                     "stats": {"connections": 0, "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0},
                     "rates": {"connections_per_s": 0, "packets_in_per_s": 0, "packets_out_per_s": 0, "bytes_in_per_s": 0, "bytes_out_per_s": 0}},
                    {"address": "172.16.0.3", "port": 8000, "method": "nat", "weight": 2,
                     "active_connections": 0, "inactive_connections": 0, "health": null,
                     "stats": {"connections": 0, "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0},
                     "rates": {"connections_per_s": 0, "packets_in_per_s": 0, "packets_out_per_s": 0, "bytes_in_per_s": 0, "bytes_out_per_s": 0}}
                ]
            },
            {
                "protocol": "tcp", "address": "203.0.113.10", "port": 21, "scheduler": "wlc",
                "flags": [], "persistence_timeout_s": 300, "persistence_netmask": null,
                "stats": {"connections": 0, "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0},
                "rates": {"connections_per_s": 0, "packets_in_per_s": 0, "packets_out_per_s": 0, "bytes_in_per_s": 0, "bytes_out_per_s": 0},
                "servers": [
                    {"address": "172.16.0.3", "port": 21, "method": "direct_route", "weight": 1,
                     "active_connections": 0, "inactive_connections": 0, "health": null,
                     "stats": {"connections": 0, "packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0},
                     "rates": {"connections_per_s": 0, "packets_in_per_s": 0, "packets_out_per_s": 0, "bytes_in_per_s": 0, "bytes_out_per_s": 0}}
                ]
            }
        ]
    });
    assert_eq!(j, expected);
}

/// A health checker's verdicts: the extra column (`-` unchecked), the configured weight of a
/// quiesced server, and the health object in JSON.
#[test]
fn the_listing_shows_health() {
    let mut r = demo();
    r.services[0].servers[0].health = Some(admin::ServerHealth {
        state: admin::HealthState::Up.into(),
        action: admin::HealthAction::Quiesce.into(),
        checker: "http".into(),
        reason: "200 OK".into(),
        since_unix_ms: 1_700_000_000_000,
        changes: 1,
    });
    r.services[0].servers[1].health = Some(admin::ServerHealth {
        state: admin::HealthState::Down.into(),
        action: admin::HealthAction::Unspecified.into(),
        checker: "tcp".into(),
        reason: "connect: connection refused (3 failures)".into(),
        since_unix_ms: 1_700_000_001_000,
        changes: 2,
    });
    // A server that sent UNSPECIFIED is unchecked.
    r.services[1].servers[0].health = Some(admin::ServerHealth::default());
    let v = view::list_view(&r, Some("standalone".into()));
    let expected = "\
Tandem director (generation 7, standalone)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health
TCP  203.0.113.10:80 wrr
  -> 172.16.0.2:80                Masq    1      0          0          up
  -> 172.16.0.3:8000              Masq    2      0          0          down
TCP  203.0.113.10:21 wlc persistent 300
  -> 172.16.0.3:21                Route   1      0          0          -
";
    assert_eq!(view::render_list(&v, ListFormat::Plain, false), expected);
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(
        j["services"][0]["servers"][1]["health"],
        serde_json::json!({
            "state": "down", "action": "quiesce", "checker": "tcp",
            "reason": "connect: connection refused (3 failures)",
            "since_unix_ms": 1_700_000_001_000u64, "changes": 2
        })
    );
    assert_eq!(j["services"][0]["servers"][1]["weight"], 2);
    assert_eq!(j["services"][0]["servers"][0]["health"]["state"], "up");
    assert_eq!(
        j["services"][1]["servers"][0]["health"],
        serde_json::Value::Null
    );
    // The stats and rate listings are ipvsadm's, without the column.
    let stats = view::render_list(&v, ListFormat::Stats, false);
    assert!(
        !stats.contains("Health") && !stats.contains("down"),
        "{stats}"
    );
}

#[test]
fn status_summary() {
    let s = admin::Status {
        version: "0.1.0".into(),
        role: "active".into(),
        uptime_s: 3 * 86_400 + 4 * 3_600 + 5 * 60 + 6,
        config_file: "/etc/tandem/tandem.toml".into(),
        generation: 12,
        ports: vec![admin::PortStatus {
            name: "ext".into(),
            device: "0000:3b:00.0".into(),
            port_id: 0,
            mac: "02:00:00:00:00:01".into(),
            address: "203.0.113.2".into(),
            link_up: true,
            speed_mbps: 25_000,
            rx_packets: 10,
            tx_packets: 20,
            rx_bytes: 1_000,
            tx_bytes: 2_000,
            rx_missed: 1,
            rx_errors: 0,
            tx_errors: 0,
        }],
        lcores: vec![admin::LcoreStatus {
            lcore: 2,
            worker: 0,
            connections: 250,
            connection_capacity: 1_000,
            rx_packets: 10,
            tx_packets: 9,
            forwarded: 9,
            redirected: 0,
            dropped: 1,
            sync_events_queued: 0,
            sync_events_overflow: 0,
        }],
        connections: 250,
        connection_capacity: 1_000,
        services: 2,
        servers: 3,
        drops: vec![
            admin::DropCount {
                reason: "no_service".into(),
                count: 1,
            },
            admin::DropCount {
                reason: "bad_checksum".into(),
                count: 0,
            },
        ],
        sync: None,
    };
    let v = view::status_view(&s);
    let text = view::render_status(&v);
    for want in [
        "Tandem director 0.1.0\n",
        "  role        active\n",
        "  generation  12\n",
        "  uptime      3d 04:05:06\n",
        "  config      /etc/tandem/tandem.toml\n",
        "  services    2 (3 real servers)\n",
        "  connections 250 / 1000 (25.0%)\n",
        "up 25G",
        "02:00:00:00:00:01",
        "  no_service                              1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("bad_checksum"),
        "zero drops are not shown:\n{text}"
    );
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(j["role"], "active");
    assert_eq!(j["ports"][0]["speed_mbps"], 25_000);
    assert_eq!(j["lcores"][0]["connection_capacity"], 1_000);
    assert_eq!(j["drops"][1]["reason"], "bad_checksum");
    assert_eq!(view::uptime(59), "00:00:59");
    assert!(
        text.contains("Sync: none (no tandem-syncd has reported to this dataplane)\n"),
        "{text}"
    );
    assert!(j["sync"].is_null());
}

#[test]
fn status_sync_section() {
    let sync = admin::SyncStatus {
        role: "active".into(),
        reason: "PeerDead".into(),
        role_for_ms: 12_345,
        node_id: 1,
        priority: 200,
        pid: 4242,
        report_age_ms: 120,
        peer_alive: true,
        peer_role: "syncing".into(),
        peer_node_id: 2,
        peer_heard_sync_link_ms_ago: 12,
        peer_heard_service_ms_ago: -1,
        sync_link: "up".into(),
        replication: "sending".into(),
        dataplane_link: "up".into(),
        sync_complete: true,
        epoch: 7,
        head_seq: 1_000,
        last_sent_seq: 1_000,
        last_acked_seq: 990,
        lag_events: 10,
        lag_ms: 3,
        queue_depth: 10,
        queue_bytes: 640,
        snapshots: 3,
        resyncs: 2,
        overflow_drops: 5,
        reports: 9,
        peer_both_paths: false,
        dead_interval_ms: 361,
        longest_silence_ms: 216,
        stalls: 3,
        ..Default::default()
    };
    let s = admin::Status {
        role: "active".into(),
        sync: Some(sync.clone()),
        ..Default::default()
    };
    let v = view::status_view(&s);
    let text = view::render_status(&v);
    for want in [
        "Sync (reported 120 ms ago)\n",
        "  role        active (PeerDead, for 12.3 s), node 1 priority 200, pid 4242\n",
        "  peer        syncing (node 2), alive, sync complete no\n",
        "  heard       sync link 12 ms ago, service network never\n",
        "  dead        after 361 ms of silence (ONE PATH: the peer is heard on one path only); longest silence 216 ms, 3 stalls of syncd\n",
        "  links       sync link up, replication sending, dataplane up\n",
        "  complete    yes\n",
        "  sequence    epoch 7 head 1000 sent 1000 acked 990\n",
        "  lag         10 events, 3 ms\n",
        "  queue       10 events, 640 bytes\n",
        "  resyncs     2 (snapshots 3), overflow drops 5, lost by lcores 0, retransmits 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(j["sync"]["last_acked_seq"], 990);
    assert_eq!(j["sync"]["lag_ms"], 3);
    assert_eq!(j["sync"]["peer_role"], "syncing");
    assert_eq!(j["sync"]["peer_both_paths"], false);
    assert_eq!(j["sync"]["longest_silence_ms"], 216);

    let stale = admin::Status {
        sync: Some(admin::SyncStatus {
            stale: true,
            report_age_ms: 4_200,
            peer_role: "unknown".into(),
            ..sync
        }),
        ..Default::default()
    };
    let text = view::render_status(&view::status_view(&stale));
    assert!(
        text.contains("Sync (STALE: last report 4.2 s ago)\n"),
        "{text}"
    );
    assert!(text.contains("  peer        never heard\n"), "{text}");
}

#[test]
fn unknown_enums_from_a_newer_server_do_not_break_the_listing() {
    let mut r = demo();
    if let Some(c) = r.services[0].servers[0].config.as_mut() {
        c.method = 42;
    }
    if let Some(k) = r.services[1].config.as_mut().and_then(|c| c.key.as_mut()) {
        k.protocol = 9;
    }
    let text = view::render_list(&view::list_view(&r, None), ListFormat::Plain, false);
    assert!(
        text.contains("  -> 172.16.0.2:80                ?       1"),
        "{text}"
    );
    assert!(text.contains("UNKNOWN  203.0.113.10:21 wlc"), "{text}");
    assert!(tandemctl::rules::save_lines(&r.services).is_err());
}
