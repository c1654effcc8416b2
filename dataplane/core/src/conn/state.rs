//! Connection states, the TCP state machine of IPVS, and the per-state timeouts.
//!
//! The transitions are the kernel's `tcp_states` table (`net/netfilter/ipvs/ip_vs_proto_tcp.c`,
//! current mainline, the non-`secure_tcp` table): one table per *view* of the connection
//! ([`TcpDir`]), one row per packet class ([`TcpFlags::class`]: RST, then SYN, then FIN, then
//! ACK), one column per current state. A packet with none of the four flags moves the
//! connection to CLOSE, as the kernel's `set_tcp_state` does.

use std::time::Duration;

/// The state of a connection-table entry. TCP entries take the IPVS TCP states (`ipvsadm -L -c`
/// names them the same way); UDP entries are always [`ConnState::Udp`]; persistence templates
/// stay in [`ConnState::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    /// No packet classified yet (`IP_VS_TCP_S_NONE`).
    None = 0,
    /// `ESTABLISHED`: the only state counted as active by default.
    Established = 1,
    /// `SYN_SENT`.
    SynSent = 2,
    /// `SYN_RECV`: the client's SYN went through.
    SynRecv = 3,
    /// `FIN_WAIT`.
    FinWait = 4,
    /// `TIME_WAIT`.
    TimeWait = 5,
    /// `CLOSE`: reset or closed; kept only for its short timeout.
    Close = 6,
    /// `CLOSE_WAIT`.
    CloseWait = 7,
    /// `LAST_ACK`.
    LastAck = 8,
    /// `LISTEN`.
    Listen = 9,
    /// `SYNACK`.
    SynAck = 10,
    /// The single state of a UDP entry (the kernel's `IP_VS_UDP_S_NORMAL`, listed as "UDP").
    Udp = 11,
}

impl ConnState {
    /// The number of states (array size for per-state tables).
    pub const COUNT: usize = 12;

    /// The TCP states, in the kernel's numbering (`TCP_STATES[s as usize] == s`).
    pub const TCP_STATES: [ConnState; 11] = [
        ConnState::None,
        ConnState::Established,
        ConnState::SynSent,
        ConnState::SynRecv,
        ConnState::FinWait,
        ConnState::TimeWait,
        ConnState::Close,
        ConnState::CloseWait,
        ConnState::LastAck,
        ConnState::Listen,
        ConnState::SynAck,
    ];

    /// The name `ipvsadm -L -c` prints.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::None => "NONE",
            ConnState::Established => "ESTABLISHED",
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::Listen => "LISTEN",
            ConnState::SynAck => "SYNACK",
            ConnState::Udp => "UDP",
        }
    }

    /// From the numeric value (`s as u8`), e.g. in a sync message.
    pub const fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => ConnState::None,
            1 => ConnState::Established,
            2 => ConnState::SynSent,
            3 => ConnState::SynRecv,
            4 => ConnState::FinWait,
            5 => ConnState::TimeWait,
            6 => ConnState::Close,
            7 => ConnState::CloseWait,
            8 => ConnState::LastAck,
            9 => ConnState::Listen,
            10 => ConnState::SynAck,
            11 => ConnState::Udp,
            _ => return None,
        })
    }

    /// Whether this is one of the TCP states.
    pub const fn is_tcp(self) -> bool {
        !matches!(self, ConnState::Udp)
    }
}

impl std::fmt::Display for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// TCP header flags as they sit in the flags byte of the header (RFC 9293 §3.1), so the glue
/// can pass the byte through: `TcpFlags(tcp_header[13])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No flag.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH (ignored by the state machine).
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The row of the transition table this packet selects, with the kernel's priority
    /// (`tcp_state_idx`): RST first, then SYN, then FIN, then ACK; `None` when none is set.
    pub const fn class(self) -> Option<FlagClass> {
        if self.contains(TcpFlags::RST) {
            Some(FlagClass::Rst)
        } else if self.contains(TcpFlags::SYN) {
            Some(FlagClass::Syn)
        } else if self.contains(TcpFlags::FIN) {
            Some(FlagClass::Fin)
        } else if self.contains(TcpFlags::ACK) {
            Some(FlagClass::Ack)
        } else {
            None
        }
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// Which flag decides a packet's transition (the kernel's `tcp_state_idx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlagClass {
    /// SYN set (and not RST).
    Syn = 0,
    /// FIN set (and neither RST nor SYN).
    Fin = 1,
    /// ACK only, among the four.
    Ack = 2,
    /// RST set.
    Rst = 3,
}

/// The direction a packet of a known connection travels, as found by the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → virtual service (`IP_VS_DIR_INPUT`): matched the client→VIP key.
    Input,
    /// Real server → client through the director (`IP_VS_DIR_OUTPUT`): matched the reply key.
    /// Only NAT connections are seen this way.
    Output,
}

/// Which of the three transition tables applies (the kernel's `tcp_state_off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpDir {
    /// A client packet of a connection whose replies come through the director (NAT).
    Input = 0,
    /// A real server's reply, seen only in NAT.
    Output = 1,
    /// A client packet of a connection whose replies bypass the director (TUN, DR): the
    /// kernel's `IP_VS_CONN_F_NOOUTPUT` connections.
    InputOnly = 2,
}

// Short names for the table below (the kernel's sXX names; NONE and SYNACK are never a
// target of the non-secure_tcp table).
const ES: ConnState = ConnState::Established;
const SS: ConnState = ConnState::SynSent;
const SR: ConnState = ConnState::SynRecv;
const FW: ConnState = ConnState::FinWait;
const TW: ConnState = ConnState::TimeWait;
const CL: ConnState = ConnState::Close;
const CW: ConnState = ConnState::CloseWait;
const LA: ConnState = ConnState::LastAck;
const LI: ConnState = ConnState::Listen;

/// `TRANSITIONS[dir][class][state]`, columns NONE ESTABLISHED SYN_SENT SYN_RECV FIN_WAIT
/// TIME_WAIT CLOSE CLOSE_WAIT LAST_ACK LISTEN SYNACK.
const TRANSITIONS: [[[ConnState; 11]; 4]; 3] = [
    // Input (client → director, NAT).
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // SYN
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW], // FIN
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ACK
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR], // RST
    ],
    // Output (real server → director, NAT).
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR], // SYN
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW], // FIN
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES], // ACK
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL], // RST
    ],
    // Input only (client → director, TUN and DR).
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // SYN
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW], // FIN
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ACK
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL], // RST
    ],
];

/// The state a TCP connection in `state` moves to on a packet with `flags` seen in `dir`.
///
/// A packet without RST, SYN, FIN or ACK moves it to CLOSE (the kernel's default when
/// `tcp_state_idx` finds no flag). [`ConnState::Udp`] is not a TCP state and stays as it is.
pub const fn tcp_next_state(state: ConnState, dir: TcpDir, flags: TcpFlags) -> ConnState {
    if !state.is_tcp() {
        return state;
    }
    match flags.class() {
        Some(class) => TRANSITIONS[dir as usize][class as usize][state as usize],
        None => ConnState::Close,
    }
}

/// Bit `i` set: a segment whose RST, SYN, FIN and ACK bits are `i` (RST, SYN and FIN as in the
/// TCP header's low bits, ACK as bit 3) leaves an ESTABLISHED connection ESTABLISHED in all
/// three tables. Derived from [`TRANSITIONS`] at compile time: SYN (with anything but RST)
/// and ACK alone.
const KEEPS_ESTABLISHED: u16 = {
    let mut mask = 0u16;
    let mut i = 0u8;
    while i < 16 {
        let flags = TcpFlags((i & 0x07) | (i & 0x08) << 1);
        let mut keeps = true;
        let mut dir = 0;
        while dir < 3 {
            let table = match dir {
                0 => TcpDir::Input,
                1 => TcpDir::Output,
                _ => TcpDir::InputOnly,
            };
            let next = tcp_next_state(ConnState::Established, table, flags);
            keeps = keeps && next as u8 == ConnState::Established as u8;
            dir += 1;
        }
        if keeps {
            mask |= 1 << i;
        }
        i += 1;
    }
    mask
};

/// Whether a segment with `flags` leaves an ESTABLISHED connection ESTABLISHED whichever
/// table applies (no state change, no event): what the established fast path takes.
#[inline]
pub const fn keeps_established(flags: TcpFlags) -> bool {
    let i = (flags.0 & 0x07) | (flags.0 & TcpFlags::ACK.0) >> 1;
    KEEPS_ESTABLISHED >> i & 1 == 1
}

/// Which states count a connection as *active* for its destination (`activeconns`); every
/// other state of a normal connection counts as inactive (`inactconns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ActivePolicy {
    /// Only ESTABLISHED is active: the spec ("ESTABLISHED = active; others = inactive"), and
    /// what the kernel did for most of IPVS's life (`new_state != IP_VS_TCP_S_ESTABLISHED`).
    #[default]
    EstablishedOnly,
    /// Current kernels' `tcp_state_active_table`: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK
    /// are active, so a SYN flood shows up in `activeconns` and lc/wlc see half-open load.
    PreEstablished,
}

impl ActivePolicy {
    /// Whether a TCP connection in `state` is counted active.
    pub const fn is_active(self, state: ConnState) -> bool {
        match self {
            ActivePolicy::EstablishedOnly => matches!(state, ConnState::Established),
            ActivePolicy::PreEstablished => matches!(
                state,
                ConnState::Established
                    | ConnState::SynSent
                    | ConnState::SynRecv
                    | ConnState::SynAck
            ),
        }
    }
}

/// How long an idle connection stays in the table, per state. Every packet of the connection
/// re-arms its timer with the timeout of the state it is in after that packet (as the kernel's
/// `ip_vs_conn_put` does), so these are idle times, not lifetimes.
///
/// Whole milliseconds are kept (sub-millisecond parts are dropped) and each must fit in
/// `u32` milliseconds (49 days); [`crate::conn::ConnTable::new`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// NONE (kernel: 2 s).
    pub none: Duration,
    /// ESTABLISHED (kernel and spec: 900 s; `ipvsadm --set` *tcp*).
    pub established: Duration,
    /// SYN_SENT (kernel: 120 s).
    pub syn_sent: Duration,
    /// SYN_RECV (kernel and spec "SYN": 60 s).
    pub syn_recv: Duration,
    /// FIN_WAIT (`ipvsadm --set` *tcpfin*). Kernel: 120 s; **the spec's "FIN 60 s" wins**, so
    /// the default here is 60 s. [`Timeouts::kernel`] has the kernel's value.
    pub fin_wait: Duration,
    /// TIME_WAIT (kernel: 120 s).
    pub time_wait: Duration,
    /// CLOSE (kernel: 10 s): reset or fully closed connections leave quickly.
    pub close: Duration,
    /// CLOSE_WAIT (kernel: 60 s).
    pub close_wait: Duration,
    /// LAST_ACK (kernel: 30 s).
    pub last_ack: Duration,
    /// LISTEN (kernel: 120 s).
    pub listen: Duration,
    /// SYNACK (kernel: 120 s).
    pub synack: Duration,
    /// UDP (kernel and spec: 300 s; `ipvsadm --set` *udp*).
    pub udp: Duration,
}

impl Default for Timeouts {
    /// The spec's defaults: the kernel's, except FIN_WAIT 60 s.
    fn default() -> Self {
        Timeouts {
            fin_wait: Duration::from_secs(60),
            ..Timeouts::kernel()
        }
    }
}

impl Timeouts {
    /// The kernel's defaults (`tcp_timeouts` and `udp_timeouts`), FIN_WAIT 120 s included.
    pub const fn kernel() -> Self {
        Timeouts {
            none: Duration::from_secs(2),
            established: Duration::from_secs(15 * 60),
            syn_sent: Duration::from_secs(2 * 60),
            syn_recv: Duration::from_secs(60),
            fin_wait: Duration::from_secs(2 * 60),
            time_wait: Duration::from_secs(2 * 60),
            close: Duration::from_secs(10),
            close_wait: Duration::from_secs(60),
            last_ack: Duration::from_secs(30),
            listen: Duration::from_secs(2 * 60),
            synack: Duration::from_secs(120),
            udp: Duration::from_secs(5 * 60),
        }
    }

    /// `ipvsadm --set tcp tcpfin udp`: sets ESTABLISHED, FIN_WAIT and UDP; a zero leaves that
    /// value unchanged, as ipvsadm does.
    pub fn set_ipvsadm(&mut self, tcp: Duration, tcpfin: Duration, udp: Duration) {
        if !tcp.is_zero() {
            self.established = tcp;
        }
        if !tcpfin.is_zero() {
            self.fin_wait = tcpfin;
        }
        if !udp.is_zero() {
            self.udp = udp;
        }
    }

    /// The timeout of `state`.
    pub const fn for_state(&self, state: ConnState) -> Duration {
        match state {
            ConnState::None => self.none,
            ConnState::Established => self.established,
            ConnState::SynSent => self.syn_sent,
            ConnState::SynRecv => self.syn_recv,
            ConnState::FinWait => self.fin_wait,
            ConnState::TimeWait => self.time_wait,
            ConnState::Close => self.close,
            ConnState::CloseWait => self.close_wait,
            ConnState::LastAck => self.last_ack,
            ConnState::Listen => self.listen,
            ConnState::SynAck => self.synack,
            ConnState::Udp => self.udp,
        }
    }

    /// The first state whose timeout is longer than `u32::MAX` milliseconds, if any.
    pub(crate) fn too_long(&self) -> Option<ConnState> {
        ConnState::TCP_STATES
            .iter()
            .chain(&[ConnState::Udp])
            .copied()
            .find(|&s| self.for_state(s).as_millis() > u128::from(u32::MAX))
    }

    /// Per-state timeouts in milliseconds, indexed by `state as usize`.
    pub(crate) fn millis(&self) -> [u32; ConnState::COUNT] {
        let mut out = [0; ConnState::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            let state = ConnState::from_u8(u8::try_from(i).unwrap_or(u8::MAX));
            if let Some(state) = state {
                *slot = duration_ms(self.for_state(state));
            }
        }
        out
    }
}

/// Whole milliseconds of `d`, saturating at `u32::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ConnTable::update` takes a shortcut for ESTABLISHED and a segment whose only
    /// transition flag is ACK (PSH, URG and the rest may be set): the state must stay in every
    /// table, for every such combination of flags.
    #[test]
    fn keeps_established_is_exactly_what_every_table_keeps() {
        let mut kept = 0;
        for bits in 0..=u8::MAX {
            let flags = TcpFlags(bits);
            let every = [TcpDir::Input, TcpDir::Output, TcpDir::InputOnly]
                .iter()
                .all(|&dir| {
                    tcp_next_state(ConnState::Established, dir, flags) == ConnState::Established
                });
            assert_eq!(keeps_established(flags), every, "{bits:#04x}");
            kept += usize::from(every);
        }
        // SYN without RST (16 values of PSH, URG, ECE and CWR, x 2 for FIN, x 2 for ACK), and
        // ACK alone among the four (16): the kernel's rows, not an accident of the mask.
        assert_eq!(kept, 16 * 4 + 16);
        assert!(keeps_established(TcpFlags::ACK));
        assert!(keeps_established(TcpFlags(
            TcpFlags::SYN.0 | TcpFlags::ACK.0
        )));
        assert!(!keeps_established(TcpFlags(
            TcpFlags::FIN.0 | TcpFlags::ACK.0
        )));
        assert!(!keeps_established(TcpFlags(
            TcpFlags::RST.0 | TcpFlags::SYN.0
        )));
        assert!(!keeps_established(TcpFlags(0)));
    }

    /// The kernel's `tcp_states` table (mainline `ip_vs_proto_tcp.c`), transcribed in its own
    /// notation: one line per (view, flag) row, columns sNO sES sSS sSR sFW sTW sCL sCW sLA sLI
    /// sSA.
    const KERNEL_TCP_STATES: &str = "
        INPUT       syn  sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
        INPUT       fin  sCL sCW sSS sTW sTW sTW sCL sCW sLA sLI sTW
        INPUT       ack  sES sES sSS sES sFW sTW sCL sCW sCL sLI sES
        INPUT       rst  sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sSR
        OUTPUT      syn  sSS sES sSS sSR sSS sSS sSS sSS sSS sLI sSR
        OUTPUT      fin  sTW sFW sSS sTW sFW sTW sCL sTW sLA sLI sTW
        OUTPUT      ack  sES sES sSS sES sFW sTW sCL sCW sLA sES sES
        OUTPUT      rst  sCL sCL sSS sCL sCL sTW sCL sCL sCL sCL sCL
        INPUT-ONLY  syn  sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
        INPUT-ONLY  fin  sCL sFW sSS sTW sFW sTW sCL sCW sLA sLI sTW
        INPUT-ONLY  ack  sES sES sSS sES sFW sTW sCL sCW sCL sLI sES
        INPUT-ONLY  rst  sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sCL
    ";

    fn kernel_state(name: &str) -> ConnState {
        match name {
            "sNO" => ConnState::None,
            "sES" => ConnState::Established,
            "sSS" => ConnState::SynSent,
            "sSR" => ConnState::SynRecv,
            "sFW" => ConnState::FinWait,
            "sTW" => ConnState::TimeWait,
            "sCL" => ConnState::Close,
            "sCW" => ConnState::CloseWait,
            "sLA" => ConnState::LastAck,
            "sLI" => ConnState::Listen,
            "sSA" => ConnState::SynAck,
            other => panic!("unknown kernel state {other}"),
        }
    }

    /// Packets of each class, with the other flags a real packet of that class carries: the
    /// priority RST > SYN > FIN > ACK must pick the row.
    fn packets(row: &str) -> Vec<TcpFlags> {
        use TcpFlags as F;
        match row {
            "syn" => vec![
                F::SYN,
                F::SYN | F::ACK,
                F::SYN | F::FIN,
                F::SYN | F::FIN | F::ACK,
            ],
            "fin" => vec![F::FIN, F::FIN | F::ACK, F::FIN | F::ACK | F::PSH],
            "ack" => vec![F::ACK, F::ACK | F::PSH],
            "rst" => vec![
                F::RST,
                F::RST | F::ACK,
                F::RST | F::SYN,
                F::RST | F::FIN | F::ACK,
                F::RST | F::SYN | F::FIN | F::ACK,
            ],
            other => panic!("unknown row {other}"),
        }
    }

    #[test]
    fn transitions_match_the_kernel_table_exactly() {
        let mut checked = 0;
        for line in KERNEL_TCP_STATES.lines().filter(|l| !l.trim().is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.len(), 13, "{line}");
            let dir = match words[0] {
                "INPUT" => TcpDir::Input,
                "OUTPUT" => TcpDir::Output,
                "INPUT-ONLY" => TcpDir::InputOnly,
                other => panic!("unknown view {other}"),
            };
            for (from, to) in ConnState::TCP_STATES.iter().zip(&words[2..]) {
                let expected = kernel_state(to);
                for flags in packets(words[1]) {
                    assert_eq!(
                        tcp_next_state(*from, dir, flags),
                        expected,
                        "{dir:?} {flags:?} from {from}"
                    );
                    checked += 1;
                }
            }
        }
        // 3 views × 11 states × (4 + 3 + 2 + 5) flag combinations.
        assert_eq!(checked, 3 * 11 * 14);
    }

    #[test]
    fn a_packet_without_syn_fin_ack_or_rst_closes() {
        for dir in [TcpDir::Input, TcpDir::Output, TcpDir::InputOnly] {
            for state in ConnState::TCP_STATES {
                for flags in [
                    TcpFlags::NONE,
                    TcpFlags::PSH,
                    TcpFlags(0x20),
                    TcpFlags(0xc0),
                ] {
                    assert_eq!(tcp_next_state(state, dir, flags), ConnState::Close);
                }
            }
        }
    }

    #[test]
    fn udp_has_one_state() {
        for dir in [TcpDir::Input, TcpDir::Output, TcpDir::InputOnly] {
            for flags in [TcpFlags::NONE, TcpFlags::SYN, TcpFlags::RST] {
                assert_eq!(tcp_next_state(ConnState::Udp, dir, flags), ConnState::Udp);
            }
        }
    }

    #[test]
    fn flag_priority_is_rst_syn_fin_ack() {
        use TcpFlags as F;
        assert_eq!(
            (F::RST | F::SYN | F::FIN | F::ACK).class(),
            Some(FlagClass::Rst)
        );
        assert_eq!((F::SYN | F::FIN | F::ACK).class(), Some(FlagClass::Syn));
        assert_eq!((F::FIN | F::ACK).class(), Some(FlagClass::Fin));
        assert_eq!((F::ACK | F::PSH).class(), Some(FlagClass::Ack));
        assert_eq!(F::PSH.class(), None);
    }

    #[test]
    fn default_timeouts_are_the_kernels_but_fin_wait_per_spec() {
        let s = Duration::from_secs;
        let t = Timeouts::default();
        let expected = [
            (ConnState::None, s(2)),
            (ConnState::Established, s(900)),
            (ConnState::SynSent, s(120)),
            (ConnState::SynRecv, s(60)),
            (ConnState::FinWait, s(60)),
            (ConnState::TimeWait, s(120)),
            (ConnState::Close, s(10)),
            (ConnState::CloseWait, s(60)),
            (ConnState::LastAck, s(30)),
            (ConnState::Listen, s(120)),
            (ConnState::SynAck, s(120)),
            (ConnState::Udp, s(300)),
        ];
        for (state, timeout) in expected {
            assert_eq!(t.for_state(state), timeout, "{state}");
        }
        let k = Timeouts::kernel();
        assert_eq!(k.fin_wait, s(120));
        assert_eq!(
            Timeouts {
                fin_wait: s(60),
                ..k
            },
            t
        );
        let ms = t.millis();
        assert_eq!(ms[ConnState::Established as usize], 900_000);
        assert_eq!(ms[ConnState::Udp as usize], 300_000);
    }

    #[test]
    fn ipvsadm_set_changes_tcp_tcpfin_udp_and_zero_keeps() {
        let s = Duration::from_secs;
        let mut t = Timeouts::default();
        t.set_ipvsadm(s(3600), Duration::ZERO, s(30));
        assert_eq!(t.established, s(3600));
        assert_eq!(t.fin_wait, s(60));
        assert_eq!(t.udp, s(30));
        assert_eq!(t.too_long(), None);
        t.close = Duration::from_millis(u64::from(u32::MAX) + 1);
        assert_eq!(t.too_long(), Some(ConnState::Close));
    }

    #[test]
    fn active_policies() {
        for s in ConnState::TCP_STATES {
            assert_eq!(
                ActivePolicy::EstablishedOnly.is_active(s),
                s == ConnState::Established
            );
            assert_eq!(
                ActivePolicy::PreEstablished.is_active(s),
                matches!(
                    s,
                    ConnState::Established
                        | ConnState::SynSent
                        | ConnState::SynRecv
                        | ConnState::SynAck
                )
            );
        }
    }

    #[test]
    fn state_numbers_round_trip() {
        for n in 0..=255u8 {
            if let Some(s) = ConnState::from_u8(n) {
                assert_eq!(s as u8, n);
            } else {
                assert!(usize::from(n) >= ConnState::COUNT);
            }
        }
        assert_eq!(ConnState::SynAck.name(), "SYNACK");
        assert_eq!(ConnState::Udp.to_string(), "UDP");
    }
}
