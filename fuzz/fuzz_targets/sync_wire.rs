//! The sync protocol's messages as they arrive from the network or the local dataplane:
//! protobuf decoding, then the checked conversions of `tandem_syncd::wire`, then (for the
//! peer's messages) the replication state machines themselves. First byte: which message;
//! the rest: its encoded bytes. Must never panic; whatever converts must convert back to the
//! same message.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tandem_proto::sync as pb;
use tandem_syncd::repl::{ModelReplica, Receiver, ReceiverConfig, Sender, SenderConfig};
use tandem_syncd::wire;

struct Peers {
    receiver: Receiver,
    replica: ModelReplica,
    sender: Sender,
    now: u64,
}

thread_local! {
    static PEERS: RefCell<Peers> = RefCell::new({
        let mut receiver = Receiver::new(ReceiverConfig::default());
        receiver.connected(0);
        let mut sender = Sender::new(SenderConfig::default(), 7);
        sender.connected(0);
        Peers {
            receiver,
            replica: ModelReplica::new(4096),
            sender,
            now: 0,
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    PEERS.with(|p| {
        let p = &mut *p.borrow_mut();
        p.now += 1_000_000;
        let now = p.now;
        match which % 5 {
            0 => {
                let Ok(m) = pb::EventBatch::decode(bytes) else {
                    return;
                };
                if let Ok(b) = wire::batch_from(&m) {
                    assert_eq!(wire::batch_from(&wire::batch_to(&b)).as_ref(), Ok(&b));
                    p.receiver.handle(&b, now, &mut p.replica);
                    let _ = p.receiver.poll_transmit(now);
                }
            }
            1 => {
                let Ok(m) = pb::ReceiverMessage::decode(bytes) else {
                    return;
                };
                if let Ok(f) = wire::feedback_from(&m) {
                    assert_eq!(wire::feedback_from(&wire::feedback_to(&f)), Ok(f));
                    p.sender.handle(f, now);
                    let _ = p.sender.poll_transmit(now);
                }
            }
            2 => {
                let Ok(m) = pb::HeartbeatMessage::decode(bytes) else {
                    return;
                };
                if let Ok(h) = wire::heartbeat_from(&m) {
                    assert_eq!(wire::heartbeat_from(&wire::heartbeat_to(&h)), Ok(h));
                }
            }
            3 => {
                let Ok(m) = pb::LocalEvents::decode(bytes) else {
                    return;
                };
                if let Ok(wire::LocalMsg::Events(items)) = wire::local_from(&m) {
                    for (lcore, item) in &items {
                        p.sender.push_lcore(*lcore, item, now);
                    }
                }
            }
            _ => {
                let Ok(e) = pb::Entry::decode(bytes) else {
                    return;
                };
                if let Ok(i) = wire::item_from(&e) {
                    assert_eq!(wire::item_from(&wire::item_to(&i)), Ok(i));
                }
            }
        }
    });
});
