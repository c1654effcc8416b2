/* The DPDK API surface Tandem binds. bindgen reads this header; the shim below adds what
 * bindgen cannot reach (macros, per-lcore thread-local variables). */
#ifndef TANDEM_DPDK_WRAPPER_H
#define TANDEM_DPDK_WRAPPER_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>

/* rte_errno is a per-lcore thread-local variable (RTE_DEFINE_PER_LCORE); Rust cannot name it. */
int tandem_rte_errno(void);
/* rte_pktmbuf_mtod is a macro. Returns the start of the data in the first segment. */
void *tandem_pktmbuf_mtod(struct rte_mbuf *m);
/* rte_pktmbuf_data_len/pkt_len are macros over the mbuf fields. */
uint16_t tandem_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t tandem_pktmbuf_pkt_len(const struct rte_mbuf *m);
/* RTE_MAX_LCORE / RTE_MAX_ETHPORTS as values the Rust side can assert against. */
unsigned tandem_max_lcore(void);
unsigned tandem_max_ethports(void);

#endif
