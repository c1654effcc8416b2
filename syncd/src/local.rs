//! The local side: what the daemon needs from its own dataplane ([`LocalDataplane`], at the
//! level of `tandem.sync.v1.Local`'s messages so the daemon's conversions and counters stay
//! in one place), and the real client of that service on the dataplane's Unix socket
//! ([`GrpcLocal`]). [`crate::localref`] is an in-process server of the same service backed
//! by the core's `ConnTable`: the tests' dataplane, and the reference for the real one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use hyper_util::rt::TokioIo;
use tandem_proto::sync as pb;
use tandem_proto::sync::local_client::LocalClient;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A boxed stream of results, as the gRPC client returns them.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
/// Messages to send (a concrete type: tonic's streaming requests want it `Sync`).
pub type OutStream<T> = tokio_stream::wrappers::ReceiverStream<T>;

/// The local dataplane's `Local` service, as the daemon uses it. Every call may fail with a
/// `tonic::Status`; the daemon retries with backoff and reports the dataplane down meanwhile.
pub trait LocalDataplane: Clone + Send + Sync + 'static {
    /// `WatchConnections`: a consistent snapshot, then the events.
    fn watch_connections(
        &self,
        chunk: u32,
    ) -> impl Future<Output = Result<BoxStream<pb::LocalEvents>, tonic::Status>> + Send;
    /// `ApplyConnections`: the peer's entries to install, in order; ends with a summary.
    fn apply_connections(
        &self,
        requests: OutStream<pb::ApplyRequest>,
    ) -> impl Future<Output = Result<pb::ApplySummary, tonic::Status>> + Send;
    /// `SetRole`.
    fn set_role(
        &self,
        role: pb::Role,
    ) -> impl Future<Output = Result<pb::Role, tonic::Status>> + Send;
    /// `ExchangeHeartbeats`: ours out over the service network, the peer's back.
    fn exchange_heartbeats(
        &self,
        out: OutStream<pb::HeartbeatMessage>,
    ) -> impl Future<Output = Result<BoxStream<pb::HeartbeatMessage>, tonic::Status>> + Send;
    /// `ReportStatus`: our status, for the dataplane's admin API and metrics.
    fn report_status(
        &self,
        report: pb::SyncReport,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// The gRPC client of the dataplane's `Local` service on its Unix socket. The channel
/// connects lazily and reconnects on the next call after a failure.
#[derive(Debug, Clone)]
pub struct GrpcLocal {
    client: LocalClient<Channel>,
}

impl GrpcLocal {
    /// A client for the socket at `path` (nothing is connected yet).
    pub fn new(path: PathBuf) -> Result<GrpcLocal, tonic::transport::Error> {
        // The URI is a placeholder: the connector ignores it and dials the socket.
        let channel = Endpoint::try_from("http://dataplane.local")?.connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }),
        );
        Ok(GrpcLocal {
            client: LocalClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        })
    }
}

impl LocalDataplane for GrpcLocal {
    async fn watch_connections(
        &self,
        chunk: u32,
    ) -> Result<BoxStream<pb::LocalEvents>, tonic::Status> {
        let s = self
            .client
            .clone()
            .watch_connections(pb::WatchConnectionsRequest { chunk })
            .await?
            .into_inner();
        Ok(Box::pin(s))
    }

    fn apply_connections(
        &self,
        requests: OutStream<pb::ApplyRequest>,
    ) -> impl Future<Output = Result<pb::ApplySummary, tonic::Status>> + Send {
        let mut client = self.client.clone();
        async move { Ok(client.apply_connections(requests).await?.into_inner()) }
    }

    async fn set_role(&self, role: pb::Role) -> Result<pb::Role, tonic::Status> {
        let r = self
            .client
            .clone()
            .set_role(pb::SetRoleRequest { role: role as i32 })
            .await?
            .into_inner();
        Ok(pb::Role::try_from(r.role).unwrap_or(pb::Role::Unspecified))
    }

    fn exchange_heartbeats(
        &self,
        out: OutStream<pb::HeartbeatMessage>,
    ) -> impl Future<Output = Result<BoxStream<pb::HeartbeatMessage>, tonic::Status>> + Send {
        let mut client = self.client.clone();
        async move {
            let s = client.exchange_heartbeats(out).await?.into_inner();
            let s: BoxStream<pb::HeartbeatMessage> = Box::pin(s);
            Ok(s)
        }
    }

    fn report_status(
        &self,
        report: pb::SyncReport,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send {
        let mut client = self.client.clone();
        async move {
            client.report_status(report).await?;
            Ok(())
        }
    }
}
