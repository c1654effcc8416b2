/* Small C shim for the parts of DPDK that are macros or thread-local state.
 * The static inline functions (rx/tx bursts, mbuf alloc/free, ...) are wrapped by bindgen's
 * wrap_static_fns into a generated C file compiled beside this one. */
#include "wrapper.h"

int tandem_rte_errno(void) { return rte_errno; }

void *tandem_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

uint16_t tandem_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }

uint32_t tandem_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

unsigned tandem_max_lcore(void) { return RTE_MAX_LCORE; }

unsigned tandem_max_ethports(void) { return RTE_MAX_ETHPORTS; }
