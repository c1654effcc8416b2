//! syncd's status reports (`Local.ReportStatus`): the latest one is kept, with the time it
//! arrived, and turned into the admin API's `Status.sync` on demand. Written by the `Local`
//! service and read by the control thread; the workers never touch it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tandem_proto::admin;
use tandem_proto::sync as pb;

/// A report older than this many report intervals is stale (syncd gone or stuck).
const STALE_INTERVALS: u64 = 3;
/// The least staleness threshold, whatever interval syncd announces.
const STALE_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Latest {
    report: pb::SyncReport,
    at: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    latest: Option<Latest>,
    count: u64,
}

/// The latest report and how many arrived.
#[derive(Debug, Default)]
pub struct ReportSlot {
    inner: Mutex<Slot>,
}

impl ReportSlot {
    /// Keeps `report`, received at `at`, replacing the previous one.
    pub fn store(&self, report: pb::SyncReport, at: Instant) {
        // A poisoned lock only means a reader panicked: the data is a plain value, keep going.
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.latest = Some(Latest { report, at });
        s.count += 1;
    }

    /// The admin API's view of the latest report at `now`; `None` if none arrived yet.
    pub fn status(&self, now: Instant) -> Option<admin::SyncStatus> {
        let s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let l = s.latest.as_ref()?;
        Some(to_admin(
            &l.report,
            now.saturating_duration_since(l.at),
            s.count,
        ))
    }
}

/// A role's name in the admin API (`stopped` for the report syncd sends as it exits).
pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Init) => "init",
        Ok(pb::Role::Syncing) => "syncing",
        Ok(pb::Role::Standby) => "standby",
        Ok(pb::Role::Active) => "active",
        Ok(pb::Role::Fault) => "fault",
        Ok(pb::Role::Unspecified) | Err(_) => "stopped",
    }
}

fn peer_role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Unspecified) | Err(_) => "unknown",
        Ok(_) => role_name(role),
    }
}

/// `r`, received `age` ago, as `Status.sync`.
pub fn to_admin(r: &pb::SyncReport, age: Duration, count: u64) -> admin::SyncStatus {
    let threshold =
        Duration::from_millis(r.interval_ms.saturating_mul(STALE_INTERVALS)).max(STALE_MIN);
    admin::SyncStatus {
        role: role_name(r.role).into(),
        reason: r.reason.clone(),
        role_for_ms: r.role_for_ms,
        node_id: r.node_id,
        priority: r.priority,
        pid: r.pid,
        report_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        stale: age > threshold,
        peer_alive: r.peer_alive,
        peer_role: peer_role_name(r.peer_role).into(),
        peer_node_id: r.peer_node_id,
        peer_sync_complete: r.peer_sync_complete,
        peer_heard_sync_link_ms_ago: r.peer_heard_sync_link_ms_ago,
        peer_heard_service_ms_ago: r.peer_heard_service_ms_ago,
        sync_link: r.sync_link.clone(),
        replication: r.replication.clone(),
        dataplane_link: r.dataplane_link.clone(),
        sync_complete: r.sync_complete,
        epoch: r.epoch,
        head_seq: r.head_seq,
        last_sent_seq: r.last_sent_seq,
        last_acked_seq: r.last_acked_seq,
        lag_events: r.lag_events,
        lag_ms: r.lag_ms,
        queue_depth: r.queue_depth,
        queue_bytes: r.queue_bytes,
        snapshots: r.snapshots,
        resyncs: r.resyncs,
        overflow_drops: r.overflow_drops,
        lcore_lost: r.lcore_lost,
        retransmits: r.retransmits,
        receiver_gaps: r.receiver_gaps,
        receiver_resumes: r.receiver_resumes,
        apply_dropped: r.apply_dropped,
        apply_resets: r.apply_resets,
        malformed: r.malformed,
        takeovers: r.takeovers,
        transitions: r.transitions,
        reports: count,
        peer_both_paths: r.peer_both_paths,
        dead_interval_ms: r.dead_interval_ms,
        longest_silence_ms: r.longest_silence_ms,
        stalls: r.stalls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_report_is_none_and_a_report_is_kept_with_its_age() {
        let slot = ReportSlot::default();
        let t0 = Instant::now();
        assert!(slot.status(t0).is_none());
        slot.store(
            pb::SyncReport {
                role: pb::Role::Active as i32,
                peer_role: pb::Role::Standby as i32,
                interval_ms: 500,
                last_sent_seq: 42,
                ..Default::default()
            },
            t0,
        );
        let s = slot
            .status(t0 + Duration::from_millis(200))
            .expect("a report");
        assert_eq!(
            (s.role.as_str(), s.peer_role.as_str()),
            ("active", "standby")
        );
        assert_eq!((s.report_age_ms, s.stale, s.reports), (200, false, 1));
        assert_eq!(s.last_sent_seq, 42);
        let s = slot.status(t0 + Duration::from_secs(2)).expect("a report");
        assert!(s.stale, "older than three intervals");
    }

    #[test]
    fn the_last_report_of_a_stopping_syncd_says_stopped() {
        let s = to_admin(&pb::SyncReport::default(), Duration::ZERO, 1);
        assert_eq!(
            (s.role.as_str(), s.peer_role.as_str()),
            ("stopped", "unknown")
        );
    }
}
