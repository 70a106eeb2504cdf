//! Port-forward over SPDY/3.1, subprotocol `portforward.k8s.io`: what
//! `kubectl port-forward` speaks, either tunneled in WebSocket binary
//! messages (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl's first try
//! since 1.31) or after an `Upgrade: SPDY/3.1` POST (its fallback).
//!
//! The client opens two streams per forwarded connection with SYN_STREAM,
//! headers `streamtype: error|data`, `port`, `requestid`; the server answers
//! each with SYN_REPLY, and once both of a request are there connects to the
//! port in the pod (the [`Connector`]) and copies bytes both ways on the data
//! stream. A failure is written on the error stream. When either direction
//! ends the other gets a moment (containerd waits up to 1 s), then the
//! server half-closes both streams (FIN), which is how kubectl learns the
//! connection is over.
//!
//! Header blocks are zlib-compressed with the SPDY/3 dictionary, one zlib
//! stream per direction. Incoming blocks are inflated with the dictionary
//! preloaded in the output window; outgoing blocks are zlib stored blocks
//! ended by a sync-flush marker, which need no compressor and which every
//! inflater reads.

use std::collections::HashMap;
use std::time::Duration;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Connector;
use super::pod_port::{connect, forward_error};

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): these
/// header names and values, each with a 4-byte big-endian length, then a
/// run of status lines, dates and media types.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// The receiving side of a connection's header compression.
pub(crate) struct HeaderInflater {
    state: Box<DecompressorOxide>,
    /// The dictionary, then everything inflated so far: the window back
    /// references point into.
    window: Vec<u8>,
    started: bool,
}

impl HeaderInflater {
    pub(crate) fn new() -> HeaderInflater {
        HeaderInflater { state: Box::default(), window: dictionary(), started: false }
    }

    /// Inflates one header block (a sync-flushed piece of the zlib stream).
    pub(crate) fn inflate(&mut self, mut block: &[u8]) -> Result<Vec<u8>, String> {
        if !self.started {
            let [cmf, flg, ..] = *block else { return Err("short zlib header".into()) };
            if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                return Err("not a zlib stream".into());
            }
            block = &block[2..];
            if flg & 0x20 != 0 {
                let id = block.get(..4).ok_or("short zlib header")?;
                if u32::from_be_bytes([id[0], id[1], id[2], id[3]]) != adler32(&self.window) {
                    return Err("the header block uses another dictionary".into());
                }
                block = &block[4..];
            }
            self.started = true;
        }
        let start = self.window.len();
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            let pos = self.window.len();
            self.window.resize(pos + 16 * 1024, 0);
            let (status, used, written) = decompress(&mut self.state, block, &mut self.window, pos, flags);
            self.window.truncate(pos + written);
            block = &block[used..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if block.is_empty() => break,
                TINFLStatus::NeedsMoreInput if used > 0 || written > 0 => continue,
                other => return Err(format!("inflating a header block: {other:?}")),
            }
        }
        Ok(self.window[start..].to_vec())
    }
}

/// The sending side: a zlib stream of stored blocks.
pub(crate) struct HeaderDeflater {
    started: bool,
}

impl HeaderDeflater {
    pub(crate) fn new() -> HeaderDeflater {
        HeaderDeflater { started: false }
    }

    pub(crate) fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 8);
        if !self.started {
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in data.chunks(0xffff) {
            let len = chunk.len() as u16;
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The sync-flush marker (an empty stored block), as zlib's
        // Z_SYNC_FLUSH ends every SPDY header block: Go's inflater hands
        // out a block's bytes only when it reaches the next block header,
        // and reading past the frame would break the stream.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }
}

/// A header block: name/value pairs with 4-byte big-endian counts and lengths.
pub(crate) fn parse_headers(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut at = 0;
    let mut next = |with_body: bool| -> Result<(usize, String), String> {
        let n = b.get(at..at + 4).ok_or("truncated header block")?;
        let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
        at += 4;
        if !with_body {
            return Ok((n, String::new()));
        }
        let s = b.get(at..at + n).ok_or("truncated header block")?;
        at += n;
        Ok((n, String::from_utf8_lossy(s).into_owned()))
    };
    let (count, _) = next(false)?;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (_, name) = next(true)?;
        let (_, value) = next(true)?;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

pub(crate) fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        for s in [k, v] {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 1;

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8003u16).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
}

enum ToPod {
    Data(Vec<u8>),
    Fin,
    Reset,
}

#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<(u32, mpsc::Receiver<ToPod>)>,
    error: Option<u32>,
}

/// Serves one SPDY port-forward connection to its end.
pub(crate) async fn serve<S>(io: S, connector: Option<Connector>, sandbox: String)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut inflater = HeaderInflater::new();
    let mut deflater = HeaderDeflater::new();
    let mut streams: HashMap<u32, mpsc::Sender<ToPod>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwarders = tokio::task::JoinSet::new();
    let mut head = [0u8; 8];
    loop {
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let flags = head[4];
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        if head[0] & 0x80 == 0 {
            // A data frame.
            let id = be32(&head);
            if let Some(tx) = streams.get(&id) {
                if !payload.is_empty() {
                    let _ = tx.send(ToPod::Data(payload)).await;
                }
                if flags & FLAG_FIN != 0 {
                    let _ = tx.send(ToPod::Fin).await;
                    streams.remove(&id);
                }
            }
            continue;
        }
        match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM if payload.len() >= 10 => {
                let id = be32(&payload);
                let headers = match inflater.inflate(&payload[10..]).and_then(|b| parse_headers(&b)) {
                    Ok(h) => h,
                    Err(_) => break,
                };
                let mut reply = id.to_be_bytes().to_vec();
                reply.extend(deflater.deflate(&encode_headers(&[])));
                let _ = out.send(control_frame(SYN_REPLY, 0, &reply)).await;
                let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                let request = get("requestid");
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = get("port").parse().unwrap_or(0);
                match get("streamtype").as_str() {
                    "data" => {
                        let (tx, rx) = mpsc::channel(64);
                        streams.insert(id, tx);
                        pair.data = Some((id, rx));
                    }
                    "error" => pair.error = Some(id),
                    _ => {
                        let mut rst = id.to_be_bytes().to_vec();
                        rst.extend_from_slice(&1u32.to_be_bytes());
                        let _ = out.send(control_frame(RST_STREAM, 0, &rst)).await;
                    }
                }
                if pair.data.is_some() && pair.error.is_some() {
                    let pair = pairs.remove(&request).unwrap_or_default();
                    if let (Some((data, rx)), Some(error)) = (pair.data, pair.error) {
                        let (out, connector, sandbox) = (out.clone(), connector.clone(), sandbox.clone());
                        forwarders.spawn(forward(pair.port, data, error, rx, out, connector, sandbox));
                    }
                }
            }
            SYN_REPLY | HEADERS if payload.len() >= 4 && inflater.inflate(&payload[4..]).is_err() => break,
            RST_STREAM if payload.len() >= 4 => {
                if let Some(tx) = streams.remove(&be32(&payload)) {
                    let _ = tx.send(ToPod::Reset).await;
                }
            }
            PING => {
                let _ = out.send(control_frame(PING, flags, &payload)).await;
            }
            GOAWAY => break,
            _ => {}
        }
    }
    drop(streams);
    forwarders.abort_all();
    while forwarders.join_next().await.is_some() {}
    drop(out);
    let _ = writer.await;
}

/// One forwarded connection: like the kubelet's `portForward` with
/// containerd's copy loops.
async fn forward(
    port: u16,
    data: u32,
    error: u32,
    mut from_client: mpsc::Receiver<ToPod>,
    out: mpsc::Sender<Vec<u8>>,
    connector: Option<Connector>,
    sandbox: String,
) {
    match connect(connector, port).await {
        Err(e) => {
            let _ = out.send(data_frame(error, 0, forward_error(port, &sandbox, &e).as_bytes())).await;
        }
        Ok(tcp) => {
            let (mut r, mut w) = tcp.into_split();
            let to_client = {
                let out = out.clone();
                async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || out.send(data_frame(data, 0, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            };
            // Ends at the client's FIN (true when the client reset the stream).
            let to_pod = async move {
                while let Some(m) = from_client.recv().await {
                    match m {
                        ToPod::Data(d) => {
                            if w.write_all(&d).await.is_err() {
                                break;
                            }
                        }
                        ToPod::Fin => break,
                        ToPod::Reset => return true,
                    }
                }
                let _ = w.shutdown().await;
                false
            };
            tokio::pin!(to_client);
            tokio::pin!(to_pod);
            tokio::select! {
                _ = &mut to_client => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut to_pod).await;
                }
                reset = &mut to_pod => {
                    if !reset {
                        let _ = tokio::time::timeout(Duration::from_secs(1), &mut to_client).await;
                    }
                }
            }
        }
    }
    let _ = out.send(data_frame(data, FLAG_FIN, &[])).await;
    let _ = out.send(data_frame(error, FLAG_FIN, &[])).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_inflate_with_the_dictionary_across_frames() {
        // zlib (level 9, SPDY dictionary, sync flush per block) of two
        // port-forward SYN_STREAM header blocks; the second refers back
        // into the first.
        let mut inf = HeaderInflater::new();
        let first = inf
            .inflate(&unhex(
                "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c600e4c0f409ab308128d99a0e4cd6800000000ffff",
            ))
            .unwrap();
        assert_eq!(
            parse_headers(&first).unwrap(),
            [("streamtype".into(), "error".into()), ("port".into(), "7450".into()), ("requestid".into(), "0".into())]
        );
        let second = inf.inflate(&unhex("c2aa19540e2512d60b000000ffff")).unwrap();
        assert_eq!(parse_headers(&second).unwrap()[0], ("streamtype".into(), "data".into()));
    }

    #[test]
    fn stored_blocks_round_trip() {
        let mut def = HeaderDeflater::new();
        let mut inf = HeaderInflater::new();
        for h in [encode_headers(&[]), encode_headers(&[("a", "b")])] {
            assert_eq!(inf.inflate(&def.deflate(&h)).unwrap(), h);
        }
    }
}
