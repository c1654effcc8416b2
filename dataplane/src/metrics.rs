//! The Prometheus endpoint: `GET /metrics` on the `[control] metrics_listen` address, in the
//! Prometheus text format (OpenMetrics), rendered with `prometheus-client`.
//!
//! The figures are the admin API's own answers ([`admin::Status`] and
//! [`admin::ListServicesResponse`]), taken at scrape time: one source of truth for
//! `tandemctl` and the metrics, and nothing runs between scrapes. Counters are cumulative
//! since the process started (zeroing with `tandemctl zero` affects the listing only, as
//! Prometheus expects counters never to go back); rates are left to PromQL (`rate()`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tandem_proto::admin;

/// Labels of a per-port series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: String,
    device: String,
}

/// Labels of a per-lcore series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LcoreLabels {
    lcore: String,
}

/// Labels of a per-drop-reason series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: String,
}

/// Labels of a per-service series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    protocol: String,
    service: String,
    scheduler: String,
}

/// Labels of a per-real-server series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    protocol: String,
    service: String,
    server: String,
    method: String,
}

/// Labels of the sync daemon's info series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncInfoLabels {
    role: String,
    reason: String,
    peer_role: String,
    sync_link: String,
    replication: String,
    dataplane_link: String,
}

/// Labels of the info series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    role: String,
}

type U64Counter = Counter<u64, AtomicU64>;
type U64Gauge = Gauge<i64, std::sync::atomic::AtomicI64>;

fn counter_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, U64Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, U64Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, U64Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, U64Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let g = U64Gauge::default();
    g.set(clamp(v));
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = U64Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

/// The `tandem_sync_*` series: what tandem-syncd last reported (`Status.sync`). Without a
/// report only `tandem_sync_reported 0` is present. syncd's counters restart from zero when
/// syncd restarts (Prometheus' `rate()` handles the reset).
fn render_sync(reg: &mut Registry, sync: Option<&admin::SyncStatus>) {
    gauge(
        reg,
        "sync_reported",
        "1 if the sync daemon has reported its status since the dataplane started",
        u64::from(sync.is_some()),
    );
    let Some(s) = sync else {
        return;
    };
    let info = gauge_family::<SyncInfoLabels>(
        reg,
        "sync_info",
        "The sync daemon's role, reason, peer role and links (value 1)",
    );
    info.get_or_create(&SyncInfoLabels {
        role: s.role.clone(),
        reason: s.reason.clone(),
        peer_role: s.peer_role.clone(),
        sync_link: s.sync_link.clone(),
        replication: s.replication.clone(),
        dataplane_link: s.dataplane_link.clone(),
    })
    .set(1);
    let gauges: [(&str, &str, u64); 18] = [
        (
            "sync_peer_both_paths",
            "1 if the peer's heartbeats come by both paths (0: one path down, the one-path dead interval holds)",
            u64::from(s.peer_both_paths),
        ),
        (
            "sync_dead_interval_milliseconds",
            "The dead interval in effect",
            s.dead_interval_ms,
        ),
        (
            "sync_longest_silence_milliseconds",
            "Longest wait between two heartbeats of the peer on both paths since the sync daemon started",
            s.longest_silence_ms,
        ),
        (
            "sync_active",
            "1 if the sync daemon's role is active",
            u64::from(s.role == "active"),
        ),
        (
            "sync_report_age_milliseconds",
            "Age of the sync daemon's latest status report",
            s.report_age_ms,
        ),
        (
            "sync_report_stale",
            "1 if the latest report is older than three report intervals",
            u64::from(s.stale),
        ),
        (
            "sync_peer_alive",
            "1 if the peer director is heard",
            u64::from(s.peer_alive),
        ),
        (
            "sync_complete",
            "1 if this director holds a complete copy of the table (always 1 when active)",
            u64::from(s.sync_complete),
        ),
        (
            "sync_epoch",
            "Replication epoch (the sender's, when active)",
            s.epoch,
        ),
        (
            "sync_head_sequence",
            "Highest sequence number assigned (active) or announced by the peer (standby)",
            s.head_seq,
        ),
        (
            "sync_last_sent_sequence",
            "Highest sequence number sent to the peer (active)",
            s.last_sent_seq,
        ),
        (
            "sync_last_acked_sequence",
            "Highest sequence number acked by the peer (active) or applied (standby)",
            s.last_acked_seq,
        ),
        (
            "sync_lag_events",
            "Replication lag: events not yet acked (active) or not yet applied (standby)",
            s.lag_events,
        ),
        (
            "sync_lag_milliseconds",
            "Replication lag: age of the oldest unacked event (active)",
            s.lag_ms,
        ),
        (
            "sync_queue_depth",
            "Events in the sender's replay log",
            s.queue_depth,
        ),
        (
            "sync_queue_bytes",
            "Bytes in the sender's replay log (wire estimate)",
            s.queue_bytes,
        ),
        (
            "sync_role_for_milliseconds",
            "Time in the current role",
            s.role_for_ms,
        ),
        (
            "sync_peer_node_id",
            "The peer's node id (0: never heard)",
            u64::from(s.peer_node_id),
        ),
    ];
    for (name, help, v) in gauges {
        gauge(reg, name, help, v);
    }
    let counters: [(&str, &str, u64); 13] = [
        (
            "sync_stalls",
            "Times the sync daemon found it had not run for over half a heartbeat interval",
            s.stalls,
        ),
        (
            "sync_snapshots",
            "Full snapshots sent (active) or applied (standby)",
            s.snapshots,
        ),
        (
            "sync_resyncs",
            "Snapshots forced by a sender log overflow or lost local events",
            s.resyncs,
        ),
        (
            "sync_overflow_drops",
            "Events dropped from the sender's full replay log",
            s.overflow_drops,
        ),
        (
            "sync_lcore_lost",
            "Events the dataplane lost before the sync daemon took them",
            s.lcore_lost,
        ),
        (
            "sync_retransmits",
            "Go-back-N retransmissions to the peer",
            s.retransmits,
        ),
        (
            "sync_receiver_gaps",
            "Batches from the peer dropped for a gap",
            s.receiver_gaps,
        ),
        (
            "sync_receiver_resumes",
            "Resume requests sent to the peer",
            s.receiver_resumes,
        ),
        (
            "sync_apply_dropped",
            "Peer entries dropped because the dataplane's apply queue was full",
            s.apply_dropped,
        ),
        (
            "sync_apply_resets",
            "Full resyncs asked because the local copy became incomplete",
            s.apply_resets,
        ),
        (
            "sync_malformed",
            "Malformed messages dropped by the sync daemon",
            s.malformed,
        ),
        (
            "sync_takeovers",
            "Takeovers by the role machine",
            s.takeovers,
        ),
        ("sync_role_transitions", "Role transitions", s.transitions),
    ];
    for (name, help, v) in counters {
        counter(reg, name, help, v);
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn protocol_name(p: i32) -> &'static str {
    match admin::Protocol::try_from(p) {
        Ok(admin::Protocol::Tcp) => "tcp",
        Ok(admin::Protocol::Udp) => "udp",
        _ => "unknown",
    }
}

fn method_name(m: i32) -> &'static str {
    match admin::ForwardMethod::try_from(m) {
        Ok(admin::ForwardMethod::Nat) => "nat",
        Ok(admin::ForwardMethod::Tunnel) => "tun",
        Ok(admin::ForwardMethod::DirectRoute) => "dr",
        _ => "unknown",
    }
}

fn endpoint(address: &str, port: u32) -> String {
    format!("{address}:{port}")
}

fn add_stats<L>(families: &StatFamilies<L>, labels: &L, s: &admin::Stats)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    families
        .connections
        .get_or_create(labels)
        .inc_by(s.connections);
    families
        .packets_in
        .get_or_create(labels)
        .inc_by(s.packets_in);
    families
        .packets_out
        .get_or_create(labels)
        .inc_by(s.packets_out);
    families.bytes_in.get_or_create(labels).inc_by(s.bytes_in);
    families.bytes_out.get_or_create(labels).inc_by(s.bytes_out);
}

/// The five IPVS counters of a service or a server.
struct StatFamilies<L> {
    connections: Family<L, U64Counter>,
    packets_in: Family<L, U64Counter>,
    packets_out: Family<L, U64Counter>,
    bytes_in: Family<L, U64Counter>,
    bytes_out: Family<L, U64Counter>,
}

impl<L> StatFamilies<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn new(reg: &mut Registry, prefix: &str, what: &str) -> Self {
        StatFamilies {
            connections: counter_family(
                reg,
                &format!("{prefix}_connections"),
                &format!("Connections scheduled to the {what}"),
            ),
            packets_in: counter_family(
                reg,
                &format!("{prefix}_in_packets"),
                &format!("Packets from clients forwarded to the {what}"),
            ),
            packets_out: counter_family(
                reg,
                &format!("{prefix}_out_packets"),
                &format!("Reply packets of the {what} forwarded to clients (NAT only)"),
            ),
            bytes_in: counter_family(
                reg,
                &format!("{prefix}_in_bytes"),
                &format!("Bytes from clients forwarded to the {what}"),
            ),
            bytes_out: counter_family(
                reg,
                &format!("{prefix}_out_bytes"),
                &format!("Reply bytes of the {what} forwarded to clients (NAT only)"),
            ),
        }
    }
}

/// Renders one scrape. Pure: the unit tests check the text.
pub fn render(status: &admin::Status, services: &admin::ListServicesResponse) -> String {
    let mut reg = Registry::with_prefix("tandem");

    let info = gauge_family::<InfoLabels>(
        &mut reg,
        "director_info",
        "The director's version and role (value 1)",
    );
    info.get_or_create(&InfoLabels {
        version: status.version.clone(),
        role: status.role.clone(),
    })
    .set(1);
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since the dataplane started",
        status.uptime_s,
    );
    gauge(
        &mut reg,
        "config_generation",
        "Configuration generation running (one more per applied change)",
        status.generation,
    );
    gauge(
        &mut reg,
        "connections",
        "Entries in the connection tables of all lcores",
        status.connections,
    );
    gauge(
        &mut reg,
        "connection_capacity",
        "Capacity of the connection tables of all lcores",
        status.connection_capacity,
    );

    let link = gauge_family::<PortLabels>(&mut reg, "port_link_up", "1 if the port's link is up");
    let rx_p =
        counter_family::<PortLabels>(&mut reg, "port_rx_packets", "Packets received by the port");
    let tx_p =
        counter_family::<PortLabels>(&mut reg, "port_tx_packets", "Packets sent by the port");
    let rx_b =
        counter_family::<PortLabels>(&mut reg, "port_rx_bytes", "Bytes received by the port");
    let tx_b = counter_family::<PortLabels>(&mut reg, "port_tx_bytes", "Bytes sent by the port");
    let missed = counter_family::<PortLabels>(
        &mut reg,
        "port_rx_missed_packets",
        "Packets the NIC dropped for lack of receive descriptors",
    );
    let rx_e =
        counter_family::<PortLabels>(&mut reg, "port_rx_errors", "Receive errors of the port");
    let tx_e =
        counter_family::<PortLabels>(&mut reg, "port_tx_errors", "Transmit errors of the port");
    for p in &status.ports {
        let l = PortLabels {
            port: p.name.clone(),
            device: p.device.clone(),
        };
        link.get_or_create(&l).set(i64::from(p.link_up));
        rx_p.get_or_create(&l).inc_by(p.rx_packets);
        tx_p.get_or_create(&l).inc_by(p.tx_packets);
        rx_b.get_or_create(&l).inc_by(p.rx_bytes);
        tx_b.get_or_create(&l).inc_by(p.tx_bytes);
        missed.get_or_create(&l).inc_by(p.rx_missed);
        rx_e.get_or_create(&l).inc_by(p.rx_errors);
        tx_e.get_or_create(&l).inc_by(p.tx_errors);
    }

    let l_rx = counter_family::<LcoreLabels>(
        &mut reg,
        "lcore_rx_packets",
        "Frames a worker lcore received",
    );
    let l_tx =
        counter_family::<LcoreLabels>(&mut reg, "lcore_tx_packets", "Frames a worker lcore sent");
    let l_fwd = counter_family::<LcoreLabels>(
        &mut reg,
        "lcore_forwarded_packets",
        "Frames a worker lcore forwarded",
    );
    let l_red = counter_family::<LcoreLabels>(
        &mut reg,
        "lcore_redirected_packets",
        "Frames a worker lcore handed to the lcore owning their connection",
    );
    let l_drop = counter_family::<LcoreLabels>(
        &mut reg,
        "lcore_dropped_packets",
        "Frames a worker lcore dropped",
    );
    let l_conns = gauge_family::<LcoreLabels>(
        &mut reg,
        "lcore_connections",
        "Entries in a worker lcore's connection table",
    );
    let l_cap = gauge_family::<LcoreLabels>(
        &mut reg,
        "lcore_connection_capacity",
        "Capacity of a worker lcore's connection table",
    );
    let l_q = gauge_family::<LcoreLabels>(
        &mut reg,
        "lcore_sync_events_queued",
        "Connection events waiting for the sync daemon",
    );
    let l_ovf = counter_family::<LcoreLabels>(
        &mut reg,
        "lcore_sync_events_overflow",
        "Connection events lost because the sync queue was full",
    );
    for c in &status.lcores {
        let l = LcoreLabels {
            lcore: c.lcore.to_string(),
        };
        l_rx.get_or_create(&l).inc_by(c.rx_packets);
        l_tx.get_or_create(&l).inc_by(c.tx_packets);
        l_fwd.get_or_create(&l).inc_by(c.forwarded);
        l_red.get_or_create(&l).inc_by(c.redirected);
        l_drop.get_or_create(&l).inc_by(c.dropped);
        l_conns.get_or_create(&l).set(clamp(c.connections));
        l_cap.get_or_create(&l).set(clamp(c.connection_capacity));
        l_q.get_or_create(&l).set(clamp(c.sync_events_queued));
        l_ovf.get_or_create(&l).inc_by(c.sync_events_overflow);
    }

    let drops =
        counter_family::<DropLabels>(&mut reg, "dropped_packets", "Frames dropped, by reason");
    for d in &status.drops {
        drops
            .get_or_create(&DropLabels {
                reason: d.reason.clone(),
            })
            .inc_by(d.count);
    }

    render_sync(&mut reg, status.sync.as_ref());

    let svc_stats = StatFamilies::<ServiceLabels>::new(&mut reg, "service", "virtual service");
    let srv_stats = StatFamilies::<ServerLabels>::new(&mut reg, "server", "real server");
    let weight = gauge_family::<ServerLabels>(
        &mut reg,
        "server_weight",
        "A real server's weight (0: quiesced)",
    );
    let active = gauge_family::<ServerLabels>(
        &mut reg,
        "server_active_connections",
        "A real server's active (ESTABLISHED) connections, all lcores",
    );
    let inactive = gauge_family::<ServerLabels>(
        &mut reg,
        "server_inactive_connections",
        "A real server's other connections, all lcores",
    );
    let up = gauge_family::<ServerLabels>(
        &mut reg,
        "server_up",
        "0 if the last health verdict on a real server is DOWN, 1 if UP or never checked",
    );
    let health_changes = counter_family::<ServerLabels>(
        &mut reg,
        "server_health_changes",
        "Health state changes of a real server (the first verdict included)",
    );
    for s in &services.services {
        let Some(cfg) = s.config.as_ref() else {
            continue;
        };
        let Some(key) = cfg.key.as_ref() else {
            continue;
        };
        let sl = ServiceLabels {
            protocol: protocol_name(key.protocol).to_string(),
            service: endpoint(&key.address, key.port),
            scheduler: cfg.scheduler.clone(),
        };
        if let Some(st) = s.stats.as_ref() {
            add_stats(&svc_stats, &sl, st);
        }
        for r in &s.servers {
            let Some(rc) = r.config.as_ref() else {
                continue;
            };
            let Some(rk) = rc.key.as_ref() else { continue };
            let l = ServerLabels {
                protocol: sl.protocol.clone(),
                service: sl.service.clone(),
                server: endpoint(&rk.address, rk.port),
                method: method_name(rc.method).to_string(),
            };
            weight.get_or_create(&l).set(i64::from(rc.weight));
            active.get_or_create(&l).set(clamp(r.active_connections));
            inactive
                .get_or_create(&l)
                .set(clamp(r.inactive_connections));
            let down = r
                .health
                .as_ref()
                .is_some_and(|h| h.state == i32::from(admin::HealthState::Down));
            up.get_or_create(&l).set(i64::from(!down));
            health_changes
                .get_or_create(&l)
                .inc_by(r.health.as_ref().map_or(0, |h| h.changes));
            if let Some(st) = r.stats.as_ref() {
                add_stats(&srv_stats, &l, st);
            }
        }
    }

    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        // Writing into a String cannot fail; keep the endpoint alive regardless.
        out.clear();
    }
    out
}

/// Where a scrape gets its figures: the control plane's current status and service listing.
pub type Source = Arc<
    dyn Fn() -> Pin<
            Box<
                dyn Future<Output = Result<(admin::Status, admin::ListServicesResponse), String>>
                    + Send,
            >,
        > + Send
        + Sync,
>;

/// Serves `GET /metrics` on `listener` (bound by the caller, so a bad address is reported
/// at startup) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let source = Arc::clone(&source);
            async move {
                match source().await {
                    Ok((status, services)) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(&status, &services),
                    )
                        .into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (admin::Status, admin::ListServicesResponse) {
        let status = admin::Status {
            version: "0.1.0".into(),
            role: "standalone".into(),
            uptime_s: 42,
            generation: 3,
            connections: 7,
            connection_capacity: 1024,
            ports: vec![admin::PortStatus {
                name: "outside".into(),
                device: "net_ring0".into(),
                link_up: true,
                rx_packets: 100,
                tx_packets: 90,
                ..Default::default()
            }],
            lcores: vec![admin::LcoreStatus {
                lcore: 1,
                worker: 0,
                connections: 7,
                connection_capacity: 1024,
                forwarded: 55,
                ..Default::default()
            }],
            drops: vec![admin::DropCount {
                reason: "no_service".into(),
                count: 4,
            }],
            ..Default::default()
        };
        let services = admin::ListServicesResponse {
            services: vec![admin::ServiceStatus {
                config: Some(admin::ServiceConfig {
                    key: Some(admin::ServiceKey {
                        protocol: admin::Protocol::Tcp.into(),
                        address: "203.0.113.10".into(),
                        port: 80,
                    }),
                    scheduler: "wrr".into(),
                    ..Default::default()
                }),
                servers: vec![admin::ServerStatus {
                    config: Some(admin::ServerConfig {
                        key: Some(admin::ServerKey {
                            address: "172.16.0.3".into(),
                            port: 8000,
                        }),
                        method: admin::ForwardMethod::Nat.into(),
                        weight: 2,
                    }),
                    health: None,
                    active_connections: 5,
                    inactive_connections: 2,
                    stats: Some(admin::Stats {
                        connections: 9,
                        packets_in: 30,
                        packets_out: 25,
                        bytes_in: 3000,
                        bytes_out: 2500,
                    }),
                    rates: None,
                }],
                stats: Some(admin::Stats {
                    connections: 9,
                    packets_in: 30,
                    packets_out: 25,
                    bytes_in: 3000,
                    bytes_out: 2500,
                }),
                rates: None,
            }],
            generation: 3,
            counts_staleness_ms: 1,
        };
        (status, services)
    }

    #[test]
    fn sync_series_say_none_without_syncd_and_the_report_with_it() {
        let (mut status, services) = sample();
        let text = render(&status, &services);
        assert!(text.contains("tandem_sync_reported 0"), "{text}");
        assert!(!text.contains("tandem_sync_lag_events"), "{text}");
        status.sync = Some(admin::SyncStatus {
            role: "active".into(),
            reason: "PeerDead".into(),
            peer_role: "standby".into(),
            sync_link: "up".into(),
            replication: "sending".into(),
            dataplane_link: "up".into(),
            last_sent_seq: 900,
            last_acked_seq: 880,
            lag_events: 20,
            lag_ms: 3,
            resyncs: 2,
            sync_complete: true,
            peer_both_paths: true,
            dead_interval_ms: 181,
            longest_silence_ms: 57,
            stalls: 4,
            ..Default::default()
        });
        let text = render(&status, &services);
        for line in [
            "tandem_sync_reported 1",
            r#"tandem_sync_info{role="active",reason="PeerDead",peer_role="standby",sync_link="up",replication="sending",dataplane_link="up"} 1"#,
            "tandem_sync_active 1",
            "tandem_sync_last_sent_sequence 900",
            "tandem_sync_last_acked_sequence 880",
            "tandem_sync_lag_events 20",
            "tandem_sync_lag_milliseconds 3",
            "tandem_sync_complete 1",
            "tandem_sync_resyncs_total 2",
            "tandem_sync_peer_both_paths 1",
            "tandem_sync_dead_interval_milliseconds 181",
            "tandem_sync_longest_silence_milliseconds 57",
            "tandem_sync_stalls_total 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn scrape_has_the_series_an_operator_graphs() {
        let (status, services) = sample();
        let text = render(&status, &services);
        for line in [
            r#"tandem_director_info{version="0.1.0",role="standalone"} 1"#,
            "tandem_config_generation 3",
            "tandem_connections 7",
            r#"tandem_port_link_up{port="outside",device="net_ring0"} 1"#,
            r#"tandem_port_rx_packets_total{port="outside",device="net_ring0"} 100"#,
            r#"tandem_lcore_forwarded_packets_total{lcore="1"} 55"#,
            r#"tandem_dropped_packets_total{reason="no_service"} 4"#,
            r#"tandem_service_connections_total{protocol="tcp",service="203.0.113.10:80",scheduler="wrr"} 9"#,
            r#"tandem_server_weight{protocol="tcp",service="203.0.113.10:80",server="172.16.0.3:8000",method="nat"} 2"#,
            r#"tandem_server_active_connections{protocol="tcp",service="203.0.113.10:80",server="172.16.0.3:8000",method="nat"} 5"#,
            r#"tandem_server_out_bytes_total{protocol="tcp",service="203.0.113.10:80",server="172.16.0.3:8000",method="nat"} 2500"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics terminator");
    }

    #[tokio::test]
    async fn the_endpoint_answers_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let source: Source = Arc::new(|| Box::pin(async { Ok(sample()) }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, source, async {
            let _ = stop_rx.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.expect("reply");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("tandem_config_generation 3"), "{reply}");
        let _ = stop_tx.send(());
        server.await.expect("join").expect("serve");
    }

    #[test]
    fn server_up_is_0_only_for_a_down_verdict_and_changes_are_counted() {
        let (status, mut services) = sample();
        let labels =
            r#"{protocol="tcp",service="203.0.113.10:80",server="172.16.0.3:8000",method="nat"}"#;
        let text = render(&status, &services);
        for line in [
            format!("tandem_server_up{labels} 1"),
            format!("tandem_server_health_changes_total{labels} 0"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        services.services[0].servers[0].health = Some(admin::ServerHealth {
            state: admin::HealthState::Down.into(),
            action: admin::HealthAction::Quiesce.into(),
            checker: "http".into(),
            reason: "connect: connection refused".into(),
            since_unix_ms: 1_700_000_000_000,
            changes: 3,
        });
        let text = render(&status, &services);
        for line in [
            format!("tandem_server_up{labels} 0"),
            format!("tandem_server_health_changes_total{labels} 3"),
            // The configured weight, whatever the health.
            format!("tandem_server_weight{labels} 2"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        if let Some(h) = services.services[0].servers[0].health.as_mut() {
            h.state = admin::HealthState::Up.into();
            h.changes = 4;
        }
        let text = render(&status, &services);
        let line = format!("tandem_server_up{labels} 1");
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    #[test]
    fn a_service_without_config_is_skipped_not_a_panic() {
        let (status, mut services) = sample();
        services.services.push(admin::ServiceStatus::default());
        let text = render(&status, &services);
        assert_eq!(
            text.matches("tandem_service_connections_total{").count(),
            1,
            "{text}"
        );
    }
}
