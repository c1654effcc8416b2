//! The established fast path: a TCP segment or UDP datagram of the common shape (IPv4
//! without options, unfragmented, every length and the header checksum right) whose
//! connection the burst's prefetch passes already found, which changes nothing but the
//! connection's idle timer, and whose next hop is cached. It takes the decisions of
//! [`Balancer::handle_flow`] for such a frame, in the same order, reading each one once and
//! keeping the parsed flow in registers; anything it does not cover (a new connection, a
//! state change, a redirect, a TTL about to expire, a hop to resolve) returns `None` before
//! anything is written, and the general path decides. `the_fast_path_changes_no_outcome` (in
//! `tests/engine.rs`) checks that both give the same frames, verdicts, counters, table and
//! events.

use super::{Balancer, Ctx, owner};
use crate::buf::PacketBuf;
use crate::conn::{Direction, TcpFlags};
use crate::counters::Counters;
use crate::director::Act;
use crate::fwd::{self, ParsedFlow};
use crate::lb::ForwardMethod;

/// What the fast path did with a frame it took.
pub(crate) enum Fast {
    /// Rewritten, to leave by this port (NAT, DR).
    Forward(usize),
    /// What [`Balancer::tunnel`] decided (VS/TUN: encapsulated, or an ICMP error, or a
    /// drop), as the general path would have.
    Tunnel(Act),
}

impl Balancer {
    /// The fast path for the frame in `buf`, which `pf` was parsed from: what became of it,
    /// everything counted but `rx_*` (the caller's); `None` leaves the frame and every state
    /// untouched for [`handle_flow`](Self::handle_flow).
    #[inline(always)]
    pub(crate) fn fast<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pf: &ParsedFlow,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Option<Fast> {
        // A TTL of 0 or 1 is the rewrites' refusal, after the connection was updated.
        if pf.ttl <= 1 {
            return None;
        }
        let flow = &pf.flow;
        let (id, dir) = self.conns.at_hint(&ctx.hint, flow)?;
        let c = self.conns.get(id)?;
        if !c.steady(TcpFlags(pf.tcp_flags.0)) {
            return None;
        }
        // handle_flow's decisions for a found connection: a request keeps the service that
        // still serves its key and is handled by the client's worker; a reply is one only if
        // its destination is no VIP, and is handled by its destination's (the client's)
        // worker.
        let (to, toward) = match dir {
            Direction::Input => {
                self.conn_service(id, flow)?;
                if owner(flow.src, self.workers) != self.worker {
                    return None;
                }
                (c.real(), c.real().addr)
            }
            Direction::Output => {
                if self.services.is_vip(flow.dst.addr)
                    || owner(flow.dst, self.workers) != self.worker
                {
                    return None;
                }
                (c.vip(), c.client().addr)
            }
        };
        let (method, dest) = (c.method(), c.dest());
        if method == ForwardMethod::Tunnel && dir == Direction::Input {
            return Some(Fast::Tunnel(
                self.fast_tunnel(*ctx, id, dest, to, buf, counters),
            ));
        }
        let hop = ctx.hops.get(toward, ctx.neighbours, ctx.now)?;
        let frame = buf.data_mut();
        let len = frame.len();
        match (method, dir) {
            (ForwardMethod::Nat, _) => {
                fwd::nat_common(frame, pf, dir == Direction::Output, to, hop.macs)?;
            }
            (ForwardMethod::DirectRoute, Direction::Input) => {
                fwd::direct_route_common(frame, hop.macs)?;
            }
            // A TUN or DR reply cannot be found (its key is not indexed).
            _ => return None,
        }
        self.conns.refresh_steady(id.0, dir, ctx.now);
        match dir {
            Direction::Input => self.count_in(dest, len),
            Direction::Output => self.count_out(dest, len),
        }
        counters.forwarded += 1;
        Some(Fast::Forward(hop.port))
    }

    /// The fast path's VS/TUN request, in the general path's order: the update, the count,
    /// then the tunnel (which finds its hop itself, and may answer "fragmentation needed"
    /// instead). Out of line: the tunnel's code would crowd the NAT and DR path's registers.
    /// `ctx` by value: only this branch needs it in memory, the NAT and DR path keeps its
    /// fields in registers.
    #[inline(never)]
    fn fast_tunnel<B: PacketBuf>(
        &mut self,
        ctx: Ctx<'_>,
        id: crate::conn::ConnId,
        dest: crate::lb::DestId,
        real: crate::lb::Endpoint,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        let len = buf.data().len();
        self.conns.refresh_steady(id.0, Direction::Input, ctx.now);
        self.count_in(dest, len);
        self.tunnel(&ctx, real, buf, counters)
    }
}
