//! `ApplyConnections` as the dataplane receives it from syncd: an `ApplyRequest`'s protobuf
//! bytes, decoded, then each entry through the dataplane's checked conversion
//! (`tandem_proto::local::apply_entry_from`). Must never panic; whatever converts must
//! convert back to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tandem_proto::local::{self, ApplyEntry};
use tandem_proto::sync as pb;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::ApplyRequest::decode(data) else {
        return;
    };
    for e in &req.entries {
        let Ok(entry) = local::apply_entry_from(e) else {
            continue;
        };
        use pb::entry::Item;
        let again = match &entry {
            // A record converts back; its event kind is not kept (only upsert or remove).
            ApplyEntry::Upsert(r) | ApplyEntry::Remove(r) => {
                assert_eq!(local::record_from(Some(&local::record_to(r))).as_ref(), Ok(r));
                continue;
            }
            ApplyEntry::SnapshotBegin | ApplyEntry::SnapshotEnd => continue,
            ApplyEntry::LocalitySet(l) => Item::LocalitySet(local::locality_to(l)),
            ApplyEntry::LocalityRemoved(l) => Item::LocalityRemoved(local::locality_key_to(l)),
        };
        let back = local::apply_entry_from(&pb::Entry { item: Some(again) });
        assert_eq!(back.as_ref(), Ok(&entry));
    }
});
