//! `tandemctl`: administration of a director over gRPC, in the manner of `ipvsadm`.
//! Its content arrives with the control-plane issue.
#![forbid(unsafe_code)]
