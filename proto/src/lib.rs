//! Every `.proto` file of Tandem and the prost/tonic code generated from it (with `protox`,
//! no system `protoc`). Its content arrives with the control-plane issue.
#![forbid(unsafe_code)]
