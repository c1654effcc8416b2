//! Bytes per connection at one million entries (slab + index + wheel + counts), printed;
//! the target is at most 128.

use tandem_core::conn::{ConnConfig, ConnTable, MemoryUsage};

fn per_conn(m: &MemoryUsage, capacity: usize) -> f64 {
    m.total() as f64 / capacity as f64
}

#[test]
fn bytes_per_connection_at_one_million_entries() {
    for capacity in [1_000_000, 1 << 20] {
        let table = ConnTable::new(ConnConfig::new(capacity, 1024)).expect("valid");
        let m = table.memory();
        let total = per_conn(&m, capacity);
        println!(
            "capacity {capacity}: entry {} B ({} B/conn), index {} B ({:.1} B/conn), wheel {} B, \
             dest counts {} B; total {:.1} MiB = {total:.1} bytes per connection",
            size_of::<tandem_core::conn::Conn>(),
            m.entries / capacity,
            m.index,
            m.index as f64 / capacity as f64,
            m.wheel,
            m.dests,
            m.total() as f64 / (1024.0 * 1024.0),
        );
        assert!(total <= 128.0, "{total} bytes per connection");
    }
    // One cache line per entry (58 bytes of fields, aligned to 64).
    assert_eq!(size_of::<tandem_core::conn::Conn>(), 64);
}
