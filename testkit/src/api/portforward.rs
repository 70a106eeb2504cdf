//! Port-forward over WebSocket, subprotocol `v4.channel.k8s.io`, as the
//! kubelet serves it (`kubelet/pkg/cri/streaming/portforward/websocket.go`)
//! and kube-rs's `Api::<Pod>::portforward` speaks it:
//!
//! - every binary message starts with a channel byte; port `i` of the
//!   `?ports=` list has data channel `2i` and error channel `2i+1`;
//! - the server first writes the port, little-endian `u16`, once on each of
//!   the two channels (kube-rs rejects a port whose first frame is not that);
//! - then it connects to the port in the pod's network namespace: a failure
//!   is written as text on the error channel and the port is done;
//! - bytes flow both ways on the data channel; v4 has no per-channel close, so
//!   a port is done when the pod side ends, and when every port is done the
//!   server closes the WebSocket (close frame); a close from the client ends
//!   the forwarding.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Connector;
use super::pod_port::{connect, forward_error};

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Serves one upgraded port-forward connection to its end.
pub(crate) async fn serve_v4(upgraded: Upgraded, ports: Vec<u16>, connector: Option<Connector>, sandbox: String) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = m.is_close();
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });

    for (i, port) in ports.iter().enumerate() {
        let le = port.to_le_bytes();
        let _ = tx.send(frame(2 * i as u8, &le)).await;
        let _ = tx.send(frame(2 * i as u8 + 1, &le)).await;
    }

    // One reader task per connected port (pod -> client); their ends arrive on `done`.
    let (done_tx, mut done) = mpsc::channel::<usize>(ports.len().max(1));
    let mut writers: Vec<Option<OwnedWriteHalf>> = Vec::with_capacity(ports.len());
    let mut readers = tokio::task::JoinSet::new();
    let mut open = 0;
    for (i, port) in ports.iter().enumerate() {
        match connect(connector.clone(), *port).await {
            Ok(tcp) => {
                let (mut r, w) = tcp.into_split();
                writers.push(Some(w));
                open += 1;
                let (tx, done_tx) = (tx.clone(), done_tx.clone());
                readers.spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(frame(2 * i as u8, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = done_tx.send(i).await;
                });
            }
            Err(e) => {
                writers.push(None);
                let _ = tx.send(frame(2 * i as u8 + 1, forward_error(*port, &sandbox, &e).as_bytes())).await;
            }
        }
    }

    // When the pod side of a port ends, the client gets a moment to finish
    // (containerd waits up to 1 s for the other direction), then the port is done.
    let mut ending: Vec<Option<tokio::time::Instant>> = vec![None; ports.len()];
    let mut client_gone = false;
    while open > 0 {
        let next = ending.iter().flatten().min().copied();
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() > 1 && b[0] % 2 == 0 => {
                    let i = b[0] as usize / 2;
                    if let Some(Some(w)) = writers.get_mut(i)
                        && w.write_all(&b[1..]).await.is_err()
                    {
                        writers[i] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    client_gone = true;
                    break;
                }
                Some(Ok(_)) => {}
            },
            Some(i) = done.recv() => ending[i] = Some(tokio::time::Instant::now() + Duration::from_millis(200)),
            _ = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {
                let now = tokio::time::Instant::now();
                for (i, e) in ending.iter_mut().enumerate() {
                    if e.is_some_and(|t| t <= now) {
                        *e = None;
                        writers[i] = None;
                        open -= 1;
                    }
                }
            }
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    readers.abort_all();
    if !client_gone {
        let _ = tx.send(Message::Close(None)).await;
    }
    drop(tx);
    let _ = writer.await;
    // Read until the client's close reply (or its end), so the close handshake completes.
    if !client_gone {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// kubectl's port-forward: SPDY carried in WebSocket binary messages (no
/// framing of its own: the messages concatenate to the SPDY byte stream).
pub(crate) async fn serve_spdy_tunnel(upgraded: Upgraded, connector: Option<Connector>, sandbox: String) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (near, far) = tokio::io::duplex(256 * 1024);
    let spdy = tokio::spawn(super::spdy::serve(near, connector, sandbox));
    let (mut far_rd, mut far_wr) = tokio::io::split(far);
    let up = async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) if far_wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = far_wr.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = far_rd.read(&mut buf).await {
            if n == 0 || sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    };
    tokio::join!(up, down);
    let _ = spdy.await;
}
