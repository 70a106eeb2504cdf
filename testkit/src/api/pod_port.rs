//! The pod side of a forwarded port, shared by the WebSocket and SPDY
//! port-forward protocols: connecting to it, and the kubelet's words when that fails.

use super::Connector;
use std::io;

/// What the kubelet (with containerd) writes on the error channel when the
/// pod side of a port cannot be reached.
pub(crate) fn forward_error(port: u16, sandbox: &str, err: &io::Error) -> String {
    let cause = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        _ => format!("connect: {err}"),
    };
    format!(
        "error forwarding port {port} to pod {sandbox}, uid : failed to execute portforward in network namespace \
         \"/var/run/netns/cni-{}-{}-{}-{}-{}\": failed to connect to localhost:{port} inside namespace \"{sandbox}\", \
         IPv4: dial tcp4 127.0.0.1:{port}: {cause} IPv6 dial tcp6 [::1]:{port}: {cause} ",
        &sandbox[..8],
        &sandbox[8..12],
        &sandbox[12..16],
        &sandbox[16..20],
        &sandbox[20..32],
    )
}

/// Connects to a port in the pod, off the async threads: the connector is
/// the test's blocking function.
pub(crate) async fn connect(connector: Option<Connector>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let connector = connector.ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
    let std = tokio::task::spawn_blocking(move || connector(port)).await.map_err(io::Error::other)??;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}
