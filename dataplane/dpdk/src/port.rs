use std::ffi::{CStr, CString, c_char};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::burst::Burst;
use crate::error::{Error, Result, check};
use crate::mempool::Mempool;

// rte_ethdev.h: RTE_ETH_RSS_* are RTE_BIT64 macros bindgen cannot evaluate.
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;

/// How to configure a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Rx queues (one per worker lcore). With more than one, RSS spreads IPv4 flows over them.
    pub rx_queues: u16,
    /// Tx queues (one per worker lcore).
    pub tx_queues: u16,
    /// Descriptors per rx queue.
    pub rx_descriptors: u16,
    /// Descriptors per tx queue.
    pub tx_descriptors: u16,
    /// Receive every frame, whatever its destination MAC (needed on vdevs such as af_packet).
    pub promiscuous: bool,
    /// MTU to set, if any.
    pub mtu: Option<u16>,
}

impl PortConfig {
    /// Checks the numbers before DPDK sees them.
    pub fn validate(&self) -> Result<()> {
        if self.rx_queues == 0 || self.tx_queues == 0 {
            return Err(Error::Invalid(
                "a port needs at least one rx and one tx queue".into(),
            ));
        }
        for (what, n) in [
            ("rx_descriptors", self.rx_descriptors),
            ("tx_descriptors", self.tx_descriptors),
        ] {
            if n < 32 || !n.is_power_of_two() {
                return Err(Error::Invalid(format!(
                    "{what} = {n}: must be a power of two, at least 32"
                )));
            }
        }
        if let Some(mtu) = self.mtu
            && !(68..=9600).contains(&mtu)
        {
            return Err(Error::Invalid(format!(
                "mtu = {mtu}: must be within 68..=9600"
            )));
        }
        Ok(())
    }
}

/// Link state as DPDK reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link up.
    pub up: bool,
    /// Speed in Mb/s (0 when unknown).
    pub speed_mbps: u32,
}

/// The port's hardware/driver counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets dropped by the hardware because no rx descriptor was free.
    pub imissed: u64,
    /// Erroneous packets received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// A configured, started ethdev port. Dropping it stops and closes the device.
#[derive(Debug)]
pub struct Port<'m> {
    id: u16,
    name: String,
    rx_claimed: Vec<AtomicBool>,
    tx_claimed: Vec<AtomicBool>,
    _pool: std::marker::PhantomData<&'m Mempool<'m>>,
}

/// The DPDK port id of the device called `name` (a vdev name such as `net_af_xdp0`, or a PCI
/// address such as `0000:03:00.0`).
pub fn port_id_by_name(name: &str) -> Result<u16> {
    let cname = CString::new(name)
        .map_err(|_| Error::Invalid(format!("device name {name:?} has a NUL")))?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer; the EAL is up (ports exist only after init).
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if ret < 0 {
        return Err(Error::Invalid(format!(
            "no DPDK device named {name:?} (known: {})",
            device_names().join(", ")
        )));
    }
    Ok(id)
}

/// Names of every probed ethdev.
pub fn device_names() -> Vec<String> {
    let mut out = Vec::new();
    for id in 0..u16::try_from(dpdk_sys::RTE_MAX_ETHPORTS).unwrap_or(u16::MAX) {
        // SAFETY: any port id may be asked about.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 0 {
            continue;
        }
        let mut buf = [0 as c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes as the API requires.
        if unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
            // SAFETY: DPDK wrote a NUL-terminated name into buf.
            out.push(
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out
}

impl<'m> Port<'m> {
    /// Configures the device called `name` with `cfg`, sets up its queues on `pool`, and starts it.
    pub fn start(name: &str, cfg: &PortConfig, pool: &'m Mempool<'m>) -> Result<Port<'m>> {
        cfg.validate()?;
        let id = port_id_by_name(name)?;
        let port = Port {
            id,
            name: name.to_owned(),
            rx_claimed: (0..cfg.rx_queues).map(|_| AtomicBool::new(false)).collect(),
            tx_claimed: (0..cfg.tx_queues).map(|_| AtomicBool::new(false)).collect(),
            _pool: std::marker::PhantomData,
        };
        // From here on, `port` stops/closes the device on any early return.
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        check(|| format!("rte_eth_dev_info_get({name})"), ret)?;
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(Error::Invalid(format!(
                "{name}: {} rx / {} tx queues requested, the device has at most {} / {}",
                cfg.rx_queues, cfg.tx_queues, info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        if cfg.rx_queues > 1 {
            let hf = (RSS_IPV4 | RSS_FRAG_IPV4 | RSS_NONFRAG_IPV4_TCP | RSS_NONFRAG_IPV4_UDP)
                & info.flow_type_rss_offloads;
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = hf;
        }
        // SAFETY: valid port id; conf is a fully initialised rte_eth_conf.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(
            || {
                format!(
                    "rte_eth_dev_configure({name}, {} rxq, {} txq)",
                    cfg.rx_queues, cfg.tx_queues
                )
            },
            ret,
        )?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid port id.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            check(|| format!("rte_eth_dev_set_mtu({name}, {mtu})"), ret)?;
        }
        let (mut nb_rxd, mut nb_txd) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: valid port id and pointers to our locals.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rxd, &mut nb_txd) };
        check(|| format!("rte_eth_dev_adjust_nb_rx_tx_desc({name})"), ret)?;
        // SAFETY: valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY
        for q in 0..cfg.rx_queues {
            // SAFETY: valid port/queue; NULL rx_conf means driver defaults; pool outlives the port.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    nb_rxd,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(|| format!("rte_eth_rx_queue_setup({name}, queue {q})"), ret)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: valid port/queue; NULL tx_conf means driver defaults.
            let ret = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, nb_txd, socket, std::ptr::null())
            };
            check(|| format!("rte_eth_tx_queue_setup({name}, queue {q})"), ret)?;
        }
        if cfg.promiscuous {
            // SAFETY: valid port id. Some vdevs cannot change it; that is not fatal.
            let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
        }
        // SAFETY: valid, configured port id.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        check(|| format!("rte_eth_dev_start({name})"), ret)?;
        Ok(port)
    }

    /// DPDK's port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        check(|| format!("rte_eth_macaddr_get({})", self.name), ret)?;
        Ok(addr.addr_bytes)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<LinkStatus> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        check(|| format!("rte_eth_link_get_nowait({})", self.name), ret)?;
        Ok(LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
        })
    }

    /// The device's counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        check(|| format!("rte_eth_stats_get({})", self.name), ret)?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Claims rx queue `q` for the calling worker. Each queue can be held by one owner at a time.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue<'_, 'm>> {
        claim(&self.rx_claimed, q, &self.name, "rx")?;
        Ok(RxQueue {
            port: self,
            queue: q,
        })
    }

    /// Claims tx queue `q` for the calling worker.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue<'_, 'm>> {
        claim(&self.tx_claimed, q, &self.name, "tx")?;
        Ok(TxQueue {
            port: self,
            queue: q,
        })
    }
}

fn claim(flags: &[AtomicBool], q: u16, name: &str, dir: &str) -> Result<()> {
    let flag = flags.get(usize::from(q)).ok_or_else(|| {
        Error::Invalid(format!("{name}: no {dir} queue {q} (has {})", flags.len()))
    })?;
    if flag.swap(true, Ordering::AcqRel) {
        return Err(Error::Invalid(format!(
            "{name}: {dir} queue {q} is already claimed"
        )));
    }
    Ok(())
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // SAFETY: queue tokens borrow the port, so no worker is using it any more.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
        }
        // SAFETY: as above; the device is stopped. Closing releases vdev resources (e.g. the
        // AF_XDP socket and its XDP program).
        unsafe {
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

/// Exclusive use of one rx queue of a port.
#[derive(Debug)]
pub struct RxQueue<'p, 'm> {
    port: &'p Port<'m>,
    queue: u16,
}

impl<'m> RxQueue<'_, 'm> {
    /// Receives up to the burst's free room; returns how many arrived.
    pub fn rx_burst(&mut self, burst: &mut Burst<'m>) -> usize {
        let (ptr, room) = burst.spare_ptr();
        if room == 0 {
            return 0;
        }
        // SAFETY: we hold the only token for this queue; `ptr` has `room` writable slots.
        let n =
            usize::from(unsafe { dpdk_sys::rte_eth_rx_burst(self.port.id, self.queue, ptr, room) });
        // SAFETY: DPDK wrote `n` valid mbufs, now owned by the burst.
        unsafe { burst.filled(n) };
        n
    }

    /// The port this queue belongs to.
    pub fn port(&self) -> &Port<'m> {
        self.port
    }
}

impl Drop for RxQueue<'_, '_> {
    fn drop(&mut self) {
        if let Some(f) = self.port.rx_claimed.get(usize::from(self.queue)) {
            f.store(false, Ordering::Release);
        }
    }
}

/// Exclusive use of one tx queue of a port.
#[derive(Debug)]
pub struct TxQueue<'p, 'm> {
    port: &'p Port<'m>,
    queue: u16,
}

impl<'m> TxQueue<'_, 'm> {
    /// Hands the burst's mbufs to the device. Returns how many were taken; the ones it could not
    /// take stay in the burst (in order), to be retried or dropped by the caller.
    pub fn tx_burst(&mut self, burst: &mut Burst<'m>) -> usize {
        let (ptr, n) = burst.held_ptr();
        if n == 0 {
            return 0;
        }
        // SAFETY: we hold the only token for this queue; `ptr` has `n` valid owned mbufs; the
        // first `sent` of them now belong to the driver.
        let sent =
            usize::from(unsafe { dpdk_sys::rte_eth_tx_burst(self.port.id, self.queue, ptr, n) });
        burst.consumed(sent);
        sent
    }

    /// The port this queue belongs to.
    pub fn port(&self) -> &Port<'m> {
        self.port
    }
}

impl Drop for TxQueue<'_, '_> {
    fn drop(&mut self) {
        if let Some(f) = self.port.tx_claimed.get(usize::from(self.queue)) {
            f.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PortConfig {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            promiscuous: false,
            mtu: None,
        }
    }

    #[test]
    fn valid_config_passes() {
        assert_eq!(cfg().validate(), Ok(()));
    }

    #[test]
    fn zero_queues_rejected() {
        let c = PortConfig {
            rx_queues: 0,
            ..cfg()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn descriptor_count_must_be_power_of_two() {
        let c = PortConfig {
            rx_descriptors: 1000,
            ..cfg()
        };
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "rx_descriptors = 1000: must be a power of two, at least 32"
        );
    }

    #[test]
    fn mtu_range_checked() {
        assert!(
            PortConfig {
                mtu: Some(9000),
                ..cfg()
            }
            .validate()
            .is_ok()
        );
        assert!(
            PortConfig {
                mtu: Some(20),
                ..cfg()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn queue_claims_are_exclusive() {
        let flags: Vec<AtomicBool> = (0..2).map(|_| AtomicBool::new(false)).collect();
        assert!(claim(&flags, 0, "p", "rx").is_ok());
        assert!(claim(&flags, 0, "p", "rx").is_err());
        assert!(claim(&flags, 1, "p", "rx").is_ok());
        assert!(claim(&flags, 2, "p", "rx").is_err());
    }
}
