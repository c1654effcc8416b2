//! The admin API of the real `tandem-dataplane` binary (EAL on a `net_null` vdev), driven by
//! the generated tonic client over the Unix socket: every call changes what the listing
//! shows exactly as asked, a refused call leaves it unchanged, reload (RPC and SIGHUP) applies
//! a changed file and refuses a broken one, and SIGTERM removes the socket.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Director, scrape};
use tandem_proto::admin::admin_client::AdminClient;
use tandem_proto::admin::{self as pb};
use tonic::Code;
use tonic::transport::Channel;
const VIP: &str = "203.0.113.10";

fn config_text(prefix: &str, socket: &Path, metrics: u16, weight: &str) -> String {
    format!(
        r#"[eal]
args = ["-l", "0", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}",
        "--vdev", "net_null0", "--log-level", "lib.eal:warning"]
[dataplane]
idle_sleep_max_us = 100
[control]
socket = "{socket}"
metrics_listen = "127.0.0.1:{metrics}"
[[port]]
name = "outside"
device = "net_null0"
address = "203.0.113.11/24"
[[vip]]
address = "{VIP}"
port = "outside"
[[service]]
protocol = "tcp"
address = "{VIP}"
port = 80
scheduler = "wrr"
[[service.server]]
address = "203.0.113.20"
port = 80
method = "nat"
weight = {weight}
"#,
        socket = socket.display()
    )
}

/// The admin socket; its directory does not exist yet: the director creates it.
fn admin_socket(dir: &Path) -> PathBuf {
    dir.join("run").join("admin.sock")
}

fn key(port: u32) -> pb::ServiceKey {
    pb::ServiceKey {
        protocol: pb::Protocol::Tcp.into(),
        address: VIP.into(),
        port,
    }
}

fn server(addr: &str, port: u32, weight: u32) -> pb::ServerConfig {
    pb::ServerConfig {
        key: Some(pb::ServerKey {
            address: addr.into(),
            port,
        }),
        method: pb::ForwardMethod::Nat.into(),
        weight,
    }
}

fn service(port: u32, scheduler: &str, servers: Vec<pb::ServerConfig>) -> pb::ServiceDefinition {
    pb::ServiceDefinition {
        config: Some(pb::ServiceConfig {
            key: Some(key(port)),
            scheduler: scheduler.into(),
            ..Default::default()
        }),
        servers,
    }
}

/// The listing as (port, scheduler, [(server, weight)]).
async fn listing(c: &mut AdminClient<Channel>) -> (u64, Vec<(u32, String, Vec<(String, u32)>)>) {
    let r = c
        .list_services(pb::ListServicesRequest { key: None })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(r.counts_staleness_ms, 1);
    let list = r
        .services
        .iter()
        .map(|s| {
            let cfg = s.config.clone().unwrap_or_default();
            (
                cfg.key.map_or(0, |k| k.port),
                cfg.scheduler,
                s.servers
                    .iter()
                    .map(|d| {
                        let c = d.config.clone().unwrap_or_default();
                        let k = c.key.unwrap_or_default();
                        (format!("{}:{}", k.address, k.port), c.weight)
                    })
                    .collect(),
            )
        })
        .collect();
    (r.generation, list)
}

fn changes(r: Result<tonic::Response<pb::ChangeResponse>, tonic::Status>) -> (u64, Vec<String>) {
    let r = r.expect("change accepted").into_inner();
    (r.generation, r.changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_the_unix_socket() {
    let mut d = Director::start("admin", "api", |dir, prefix, metrics| {
        config_text(prefix, &admin_socket(dir), metrics, "1")
    });
    let socket = admin_socket(&d.dir);
    let mut c = AdminClient::new(d.channel(&socket).await);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the socket is for root only");

    // Server reflection (what grpcurl uses) lists the admin service.
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut r = ServerReflectionClient::new(d.channel(&socket).await);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = r
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("reflection stream")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("reflection answer")
            .expect("one answer");
        let names: Vec<String> = match answer.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        };
        assert!(
            names.iter().any(|n| n == "tandem.admin.v1.Admin"),
            "{names:?}"
        );
    }

    let web = (
        80,
        "wrr".to_string(),
        vec![("203.0.113.20:80".to_string(), 1)],
    );
    assert_eq!(listing(&mut c).await, (1, vec![web.clone()]));

    // Add a service with a server, then another server.
    let r = c
        .add_service(pb::AddServiceRequest {
            service: Some(service(443, "wlc", vec![server("203.0.113.21", 8443, 3)])),
        })
        .await;
    assert_eq!(
        changes(r),
        (
            2,
            vec![
                "added service TCP 203.0.113.10:443 (wlc)".to_string(),
                "added server 203.0.113.21:8443 to TCP 203.0.113.10:443 (nat weight 3)".into()
            ]
        )
    );
    let r = c
        .add_server(pb::AddServerRequest {
            service: Some(key(443)),
            server: Some(server("203.0.113.22", 8443, 1)),
        })
        .await;
    assert_eq!(changes(r).0, 3);
    let tls = (
        443,
        "wlc".to_string(),
        vec![
            ("203.0.113.21:8443".to_string(), 3),
            ("203.0.113.22:8443".to_string(), 1),
        ],
    );
    assert_eq!(listing(&mut c).await, (3, vec![web.clone(), tls.clone()]));

    // Refused requests: a clear status, and the listing is unchanged.
    let before = listing(&mut c).await;
    let e = c
        .add_server(pb::AddServerRequest {
            service: Some(key(8443)),
            server: Some(server("203.0.113.23", 80, 1)),
        })
        .await
        .expect_err("no such service");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        e.message(),
        "no service TCP 203.0.113.10:8443 (add it first)"
    );
    let e = c
        .add_service(pb::AddServiceRequest {
            service: Some(service(25, "wrrr", vec![])),
        })
        .await
        .expect_err("bad scheduler");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("unknown scheduler `wrrr`"),
        "{}",
        e.message()
    );
    let e = c
        .add_service(pb::AddServiceRequest {
            service: Some(service(70_000, "rr", vec![])),
        })
        .await
        .expect_err("bad port");
    assert_eq!(
        e.message(),
        "service port: port 70000 is out of range (1-65535)"
    );
    let mut other = service(25, "rr", vec![]);
    if let Some(k) = other.config.as_mut().and_then(|c| c.key.as_mut()) {
        k.address = "198.51.100.1".into();
    }
    let e = c
        .add_service(pb::AddServiceRequest {
            service: Some(other),
        })
        .await
        .expect_err("not a VIP");
    assert!(
        e.message().contains("is not a VIP of this director"),
        "{}",
        e.message()
    );
    let e = c
        .replace_services(pb::ReplaceServicesRequest {
            services: vec![
                service(25, "rr", vec![]),
                service(80, "rr", vec![server("203.0.113.30", 80, 1); 2]),
            ],
            dry_run: false,
        })
        .await
        .expect_err("a duplicate server");
    assert!(e.message().contains("listed twice"), "{}", e.message());
    assert_eq!(listing(&mut c).await, before);

    // Edit a weight, delete a server.
    let r = c
        .edit_server(pb::EditServerRequest {
            service: Some(key(443)),
            server: Some(pb::ServerKey {
                address: "203.0.113.22".into(),
                port: 8443,
            }),
            method: None,
            weight: Some(5),
        })
        .await;
    assert_eq!(
        changes(r),
        (
            4,
            vec!["server 203.0.113.22:8443 of TCP 203.0.113.10:443: weight 1 -> 5".to_string()]
        )
    );
    let r = c
        .delete_server(pb::DeleteServerRequest {
            service: Some(key(443)),
            server: Some(pb::ServerKey {
                address: "203.0.113.21".into(),
                port: 8443,
            }),
            flush: false,
        })
        .await;
    assert_eq!(
        changes(r).1,
        ["deleted server 203.0.113.21:8443 from TCP 203.0.113.10:443 (connections drain)"]
    );
    let r = c
        .edit_service(pb::EditServiceRequest {
            key: Some(key(443)),
            scheduler: Some("rr".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(
        changes(r).1,
        ["service TCP 203.0.113.10:443: scheduler wlc -> rr"]
    );
    assert_eq!(
        listing(&mut c).await.1,
        vec![
            web.clone(),
            (
                443,
                "rr".to_string(),
                vec![("203.0.113.22:8443".to_string(), 5)]
            )
        ]
    );

    // Replace everything (dry run first), then delete.
    let wanted = vec![service(8080, "sh", vec![server("203.0.113.40", 80, 2)])];
    let r = c
        .replace_services(pb::ReplaceServicesRequest {
            services: wanted.clone(),
            dry_run: true,
        })
        .await;
    let (generation, dry) = changes(r);
    assert_eq!(generation, 6, "a dry run applies nothing");
    assert_eq!(dry.len(), 4, "{dry:?}");
    let r = c
        .replace_services(pb::ReplaceServicesRequest {
            services: wanted,
            dry_run: false,
        })
        .await;
    assert_eq!(changes(r), (7, dry));
    assert_eq!(
        listing(&mut c).await.1,
        vec![(
            8080,
            "sh".to_string(),
            vec![("203.0.113.40:80".to_string(), 2)]
        )]
    );
    let r = c
        .delete_service(pb::DeleteServiceRequest {
            key: Some(key(8080)),
            flush: true,
        })
        .await;
    assert_eq!(
        changes(r).1,
        ["deleted service TCP 203.0.113.10:8080 (connections flushed)"]
    );
    assert_eq!(listing(&mut c).await, (8, vec![]));

    // Timeouts: a zero leaves a value unchanged.
    let t = c
        .get_timeouts(pb::GetTimeoutsRequest {})
        .await
        .expect("timeouts")
        .into_inner();
    assert_eq!(
        (t.tcp_s, t.tcp_fin_s, t.udp_s, t.tcp_syn_s),
        (900, 60, 300, 60)
    );
    let t = c
        .set_timeouts(pb::Timeouts {
            tcp_s: 100,
            udp_s: 30,
            ..Default::default()
        })
        .await
        .expect("set")
        .into_inner();
    assert_eq!(
        (t.tcp_s, t.tcp_fin_s, t.udp_s, t.tcp_syn_s),
        (100, 60, 30, 60)
    );

    // Connections (none: net_null's frames are not for us) and the status.
    let conns = c
        .list_connections(pb::ListConnectionsRequest {
            state: Some("established".into()),
            ..Default::default()
        })
        .await
        .expect("listing")
        .into_inner();
    assert!(conns.connections.is_empty() && !conns.truncated);
    let e = c
        .list_connections(pb::ListConnectionsRequest {
            state: Some("HALF_OPEN".into()),
            ..Default::default()
        })
        .await
        .expect_err("no such state");
    assert_eq!(e.code(), Code::InvalidArgument);
    let s = c
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(s.role, "standalone");
    assert_eq!(s.generation, 9);
    assert_eq!(s.config_file, d.config.display().to_string());
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].device, "net_null0");
    assert!(
        s.ports[0].rx_packets > 0,
        "DPDK port counters: {:?}",
        s.ports[0]
    );
    assert_eq!(s.lcores.len(), 1);
    assert_eq!(s.lcores[0].connection_capacity, 1 << 20);
    assert_eq!((s.services, s.servers), (0, 0));
    let not_for_us = s
        .drops
        .iter()
        .find(|d| d.reason == "not_for_us_mac")
        .map(|d| d.count);
    assert!(not_for_us.is_some_and(|n| n > 0), "{:?}", s.drops);

    // The Prometheus endpoint tells the same story.
    let text = scrape(d.metrics).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.lines().any(|l| l == "tandem_config_generation 9"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"tandem_dropped_packets_total{reason="not_for_us_mac"} "#)),
        "{text}"
    );

    // Reload the file: it brings back its service (and its timeouts, unchanged there).
    let r = c.reload(pb::ReloadRequest { dry_run: false }).await;
    let (generation, lines) = changes(r);
    assert_eq!(generation, 10);
    assert_eq!(
        lines,
        [
            "added service TCP 203.0.113.10:80 (wrr)",
            "added server 203.0.113.20:80 to TCP 203.0.113.10:80 (nat weight 1)",
            "timeouts tcp 100 -> 900, tcpfin 60 -> 60, udp 30 -> 300, tcp_syn 60 -> 60"
        ]
    );
    // A broken file changes nothing and says where.
    let text = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, text.replace("weight = 1", "weight = \"heavy\"")).expect("write");
    let e = c
        .reload(pb::ReloadRequest { dry_run: false })
        .await
        .expect_err("broken file");
    assert!(
        e.message().contains("line 25") && e.message().contains("(key `weight`)"),
        "{}",
        e.message()
    );
    assert_eq!(listing(&mut c).await, (10, vec![web.clone()]));
    // SIGHUP applies a changed file.
    std::fs::write(&d.config, text.replace("weight = 1", "weight = 7")).expect("write");
    d.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (g, list) = listing(&mut c).await;
        if g == 11 {
            assert_eq!(
                list,
                [(
                    80,
                    "wrr".to_string(),
                    vec![("203.0.113.20:80".to_string(), 7)]
                )]
            );
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(c);
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!socket.exists(), "the socket is removed on exit");
}
