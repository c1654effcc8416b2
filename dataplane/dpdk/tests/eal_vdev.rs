//! Runs the real EAL (`--no-huge --no-pci`) with `net_ring` and `net_null` vdevs and pushes
//! packets through ports. The EAL can start only once per process, so this file holds a single
//! test that walks through every step.

use tandem_dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig};

fn frame(m: &mut Mbuf<'_>, seq: u32) {
    let data = m.append(64).expect("room for 64 bytes");
    data[..6].copy_from_slice(&[0xff; 6]);
    data[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    data[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    data[14..18].copy_from_slice(&seq.to_be_bytes());
}

#[test]
fn packets_flow_through_ring_and_null_ports() {
    let args = [
        "--no-huge",
        "--no-pci",
        "-m",
        "256",
        "-l",
        "0",
        "--file-prefix",
        "tandem-dpdk-test",
        "--log-level",
        "lib.eal:error",
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_null0",
    ];
    let eal = Eal::init("tandem-dpdk-test", &args).expect("EAL init");
    assert_eq!(eal.lcores(), vec![0]);
    assert!(
        Eal::init("again", &args).is_err(),
        "second EAL init must be refused"
    );

    let pool = Mempool::new(&eal, "test_pool", 1023, 32).expect("mempool");
    let before = pool.available();

    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 512,
        tx_descriptors: 512,
        promiscuous: true,
        mtu: None,
    };
    let ring = Port::start("net_ring0", &cfg, &pool).expect("start net_ring0");
    let null = Port::start("net_null0", &cfg, &pool).expect("start net_null0");
    assert!(Port::start("net_nonexistent", &cfg, &pool).is_err());
    assert!(ring.rx_queue(0).is_ok() && ring.rx_queue(1).is_err());

    // net_ring without arguments uses one ring for rx and tx: what we send comes back.
    let mut rxq = ring.rx_queue(0).expect("rx queue");
    let mut txq = ring.tx_queue(0).expect("tx queue");
    assert!(
        ring.tx_queue(0).is_err(),
        "a claimed queue cannot be claimed twice"
    );
    let total = 100u32;
    let mut seq = 0u32;
    let mut received = Vec::new();
    while seq < total || received.len() < total as usize {
        let mut tx = Burst::new();
        while seq < total && !tx.is_full() {
            let mut m = pool.alloc().expect("mbuf");
            frame(&mut m, seq);
            tx.push(m).expect("room in burst");
            seq += 1;
        }
        let queued = tx.len();
        let sent = txq.tx_burst(&mut tx);
        assert_eq!(sent + tx.len(), queued, "unsent tail stays in the burst");
        drop(tx); // frees any unsent tail
        let mut rx = Burst::new();
        let n = rxq.rx_burst(&mut rx);
        assert_eq!(n, rx.len());
        for m in rx.drain() {
            assert_eq!(m.len(), 64);
            assert_eq!(m.segments(), 1);
            let d = m.data();
            received.push(u32::from_be_bytes([d[14], d[15], d[16], d[17]]));
        }
        if sent == 0 && n == 0 {
            break;
        }
    }
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "every packet came back, in order"
    );
    let st = ring.stats().expect("stats");
    assert_eq!(
        (st.opackets, st.ipackets),
        (u64::from(total), u64::from(total))
    );

    // net_null: rx yields zero-filled frames, tx frees what it is given.
    let mut nrx = null.rx_queue(0).expect("null rx");
    let mut ntx = null.tx_queue(0).expect("null tx");
    let mut b = Burst::new();
    assert_eq!(nrx.rx_burst(&mut b), tandem_dpdk::BURST_SIZE);
    let sent = ntx.tx_burst(&mut b);
    assert_eq!(sent, tandem_dpdk::BURST_SIZE);
    assert!(b.is_empty());
    assert_eq!(
        null.stats().expect("stats").opackets,
        tandem_dpdk::BURST_SIZE as u64
    );

    // Mbuf surgery used by encapsulation.
    let mut m = pool.alloc().expect("mbuf");
    frame(&mut m, 7);
    let room = m.headroom();
    assert!(m.prepend(20).is_some());
    assert_eq!(m.headroom(), room - 20);
    assert_eq!(m.len(), 84);
    assert!(m.adj(20));
    assert!(m.trim(4));
    assert_eq!(m.len(), 60);
    drop(m);

    drop(b);
    drop((rxq, txq, nrx, ntx));
    drop((ring, null));
    assert_eq!(pool.available(), before, "no mbuf leaked");
    drop(pool);
    drop(eal);
    // rte_eal_cleanup leaves the runtime directory; remove what this test created.
    let _ = std::fs::remove_dir_all("/var/run/dpdk/tandem-dpdk-test");
}
