//! A dataplane admin API for the health tests, served on a Unix socket by the test process:
//! `ListServices` lists one TCP service (`192.0.2.1:80`) with the servers the test sets,
//! with the verdicts `SetServerHealth` left; every `SetServerHealth` is recorded (and
//! refused with UNIMPLEMENTED while `unimplemented` is set, as the dataplane does before the
//! health change). Every other call is UNIMPLEMENTED. The real dataplane needs DPDK; the
//! rack tests run the checks against it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tandem_proto::admin as apb;
use tandem_proto::admin::admin_server::{Admin, AdminServer};
use tonic::{Request, Response, Status};

pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[derive(Default)]
pub struct AdminState {
    pub servers: Vec<SocketAddrV4>,
    pub health: Vec<(SocketAddrV4, apb::ServerHealth)>,
    pub calls: Vec<apb::SetServerHealthRequest>,
    pub unimplemented: bool,
}

#[derive(Clone, Default)]
pub struct TestAdmin(pub Arc<Mutex<AdminState>>);

fn no<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl Admin for TestAdmin {
    async fn add_service(
        &self,
        _: Request<apb::AddServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn edit_service(
        &self,
        _: Request<apb::EditServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn delete_service(
        &self,
        _: Request<apb::DeleteServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn add_server(
        &self,
        _: Request<apb::AddServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn edit_server(
        &self,
        _: Request<apb::EditServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn delete_server(
        &self,
        _: Request<apb::DeleteServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn replace_services(
        &self,
        _: Request<apb::ReplaceServicesRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn reload(
        &self,
        _: Request<apb::ReloadRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn list_connections(
        &self,
        _: Request<apb::ListConnectionsRequest>,
    ) -> Result<Response<apb::ListConnectionsResponse>, Status> {
        no()
    }
    async fn zero_counters(
        &self,
        _: Request<apb::ZeroCountersRequest>,
    ) -> Result<Response<apb::ZeroCountersResponse>, Status> {
        no()
    }
    async fn get_timeouts(
        &self,
        _: Request<apb::GetTimeoutsRequest>,
    ) -> Result<Response<apb::Timeouts>, Status> {
        no()
    }
    async fn set_timeouts(
        &self,
        _: Request<apb::Timeouts>,
    ) -> Result<Response<apb::Timeouts>, Status> {
        no()
    }
    async fn get_status(
        &self,
        _: Request<apb::GetStatusRequest>,
    ) -> Result<Response<apb::Status>, Status> {
        no()
    }

    async fn list_services(
        &self,
        _: Request<apb::ListServicesRequest>,
    ) -> Result<Response<apb::ListServicesResponse>, Status> {
        let st = self.0.lock().unwrap();
        let servers = st
            .servers
            .iter()
            .map(|s| apb::ServerStatus {
                config: Some(apb::ServerConfig {
                    key: Some(apb::ServerKey {
                        address: s.ip().to_string(),
                        port: s.port().into(),
                    }),
                    method: apb::ForwardMethod::Nat as i32,
                    weight: 1,
                }),
                health: st.health.iter().find(|h| h.0 == *s).map(|h| h.1.clone()),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(apb::ListServicesResponse {
            services: vec![apb::ServiceStatus {
                config: Some(apb::ServiceConfig {
                    key: Some(apb::ServiceKey {
                        protocol: apb::Protocol::Tcp as i32,
                        address: VIP.to_string(),
                        port: 80,
                    }),
                    ..Default::default()
                }),
                servers,
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    async fn set_server_health(
        &self,
        req: Request<apb::SetServerHealthRequest>,
    ) -> Result<Response<apb::SetServerHealthResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.0.lock().unwrap();
        st.calls.push(req.clone());
        if st.unimplemented {
            return Err(Status::unimplemented(
                "SetServerHealth is not implemented yet",
            ));
        }
        let k = req.server.clone().unwrap();
        let addr = SocketAddrV4::new(k.address.parse().unwrap(), u16::try_from(k.port).unwrap());
        let h = apb::ServerHealth {
            state: req.state,
            action: req.action,
            checker: req.checker.clone(),
            reason: req.reason.clone(),
            since_unix_ms: 1,
            ..Default::default()
        };
        let changed = match st.health.iter_mut().find(|x| x.0 == addr) {
            Some(x) => {
                let c = x.1.state != h.state || x.1.action != h.action;
                x.1 = h;
                c
            }
            None => {
                st.health.push((addr, h));
                true
            }
        };
        Ok(Response::new(apb::SetServerHealthResponse {
            message: format!("{addr} {}", req.state),
            changed,
        }))
    }
}

impl TestAdmin {
    /// Serves a new admin on `sock` (inside a tokio runtime) listing `servers`.
    pub fn serve(sock: &Path, servers: Vec<SocketAddrV4>) -> TestAdmin {
        let admin = TestAdmin::default();
        admin.0.lock().unwrap().servers = servers;
        let listener = tokio::net::UnixListener::bind(sock).unwrap();
        let svc = AdminServer::new(admin.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });
        admin
    }

    /// The recorded `SetServerHealth` calls: (server, state, action, reason).
    pub fn calls(&self) -> Vec<(String, i32, i32, String)> {
        self.0
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| {
                let s = c.server.clone().unwrap();
                (
                    format!("{}:{}", s.address, s.port),
                    c.state,
                    c.action,
                    c.reason.clone(),
                )
            })
            .collect()
    }
}
