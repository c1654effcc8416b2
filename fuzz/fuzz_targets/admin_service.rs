//! The admin API's service definitions (what `AddService`, `ReplaceServices` and tandemctl's
//! `restore` hand the dataplane): protobuf decoding, the checked conversion into the core's
//! `ServiceSpec`, and the core's own validation (`ServiceSet::new`). Must never panic; a
//! definition that converts converts back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tandem_core::service::{ServiceSet, ServiceSpec};
use tandem_proto::admin;

fuzz_target!(|data: &[u8]| {
    let Ok(def) = admin::ServiceDefinition::decode(data) else {
        return;
    };
    let Ok(spec) = ServiceSpec::try_from(&def) else {
        return;
    };
    let back = admin::ServiceDefinition::from(&spec);
    assert_eq!(ServiceSpec::try_from(&back).as_ref(), Ok(&spec));
    let _ = ServiceSet::new(std::slice::from_ref(&spec), 64);
});
