//! Makes the Workload API server accept the `:authority` that gRPC clients send over Unix
//! sockets.
//!
//! The HTTP/2 server under tonic (h2) answers a request whose `:authority` is not a valid URI
//! authority with RST_STREAM PROTOCOL_ERROR, and offers no switch for it (hyperium/h2#487).
//! grpcio — the gRPC core under the Python `spiffe` package, and under C++, Ruby and PHP
//! clients — sends the percent-encoded socket path (`tmp%2Fagent.sock`) as the authority of a
//! `unix:` target, so every one of their calls failed. grpc-go sends `localhost` and tonic what
//! its endpoint says; both are valid and pass unchanged.
//!
//! [`AuthorityFix`] sits between the socket and h2 on the client-to-server side. It follows the
//! HTTP/2 frames, decodes each header block with the client's HPACK context and re-encodes it
//! with every field a literal that is never indexed, replacing an invalid `:authority` by
//! `localhost` (the Workload API does not route by authority). Re-encoding every block, not
//! only the bad ones, keeps h2's HPACK table empty and so in step with what it is sent. Frames
//! other than HEADERS and CONTINUATION stream through unbuffered; the server-to-client side is
//! untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may announce: re-encoded blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// A header block (all its frames) larger than this ends the connection: h2's own limit on
/// header lists is lower, so no valid request is refused.
const MAX_BLOCK: usize = 1 << 20;
/// The HPACK table size h2 allows its peers (the protocol default; the server never changes it).
const HPACK_TABLE_SIZE: usize = 4096;
/// What an invalid `:authority` becomes.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// A connection whose client-to-server header blocks are rewritten as the module says.
pub(crate) struct AuthorityFix<S> {
    inner: S,
    /// Bytes read from the client and not yet processed.
    raw: BytesMut,
    /// Processed bytes for the server to read.
    ready: BytesMut,
    /// Where the frame parser is.
    state: State,
    /// The client's HPACK context.
    decoder: loona_hpack::Decoder<'static>,
    /// The client closed its side.
    eof: bool,
}

enum State {
    /// Waiting for the connection preface.
    Preface,
    /// At a frame boundary.
    FrameStart,
    /// Inside a frame that streams through; this many payload bytes are left.
    PassThrough(usize),
    /// A HEADERS frame without END_HEADERS was read; CONTINUATION frames follow.
    Continuation(PendingBlock),
    /// Not HTTP/2 with prior knowledge: everything streams through for h2 to refuse.
    Opaque,
}

/// A header block being collected across frames.
struct PendingBlock {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    /// Wraps the server's side of a freshly accepted connection.
    pub(crate) fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        Self {
            inner,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            state: State::Preface,
            decoder,
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `ready`; `Ok(false)` when more input is needed.
    fn process(&mut self) -> io::Result<bool> {
        let before = self.ready.len();
        while self.step()? {}
        Ok(self.ready.len() > before)
    }

    /// One parser step; `Ok(false)` when it needs more input.
    fn step(&mut self) -> io::Result<bool> {
        match &mut self.state {
            State::Preface => {
                let n = self.raw.len().min(PREFACE.len());
                if self.raw[..n] != PREFACE[..n] {
                    self.state = State::Opaque;
                    return Ok(true);
                }
                if n < PREFACE.len() {
                    return Ok(false);
                }
                self.ready.extend_from_slice(&self.raw.split_to(n));
                self.state = State::FrameStart;
                Ok(true)
            }
            State::Opaque | State::PassThrough(_) => {
                let left = match self.state {
                    State::PassThrough(left) => left,
                    _ => usize::MAX,
                };
                let n = self.raw.len().min(left);
                if n == 0 && left > 0 {
                    return Ok(false);
                }
                self.ready.extend_from_slice(&self.raw.split_to(n));
                if let State::PassThrough(left) = &mut self.state {
                    *left -= n;
                    if *left == 0 {
                        self.state = State::FrameStart;
                    }
                }
                Ok(true)
            }
            State::FrameStart | State::Continuation(_) => self.frame(),
        }
    }

    /// Handles the frame at the start of `raw`, or waits for it.
    fn frame(&mut self) -> io::Result<bool> {
        let Some(header) = self.raw.get(..FRAME_HEADER_LEN) else {
            return Ok(false);
        };
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let in_block = matches!(self.state, State::Continuation(_));
        if kind != HEADERS && kind != CONTINUATION {
            if in_block {
                return Err(protocol(
                    "a frame other than CONTINUATION inside a header block",
                ));
            }
            self.ready
                .extend_from_slice(&self.raw.split_to(FRAME_HEADER_LEN));
            self.state = State::PassThrough(len);
            return Ok(true);
        }
        if len > MAX_BLOCK {
            return Err(protocol("header frame too large"));
        }
        if self.raw.len() < FRAME_HEADER_LEN + len {
            return Ok(false);
        }
        self.raw.advance(FRAME_HEADER_LEN);
        let payload = self.raw.split_to(len);
        let block = match std::mem::replace(&mut self.state, State::FrameStart) {
            State::Continuation(mut block)
                if kind == CONTINUATION && stream_id == block.stream_id =>
            {
                block.fragment.extend_from_slice(&payload);
                block
            }
            State::FrameStart if kind == HEADERS => headers_frame(stream_id, flags, &payload)?,
            _ => return Err(protocol("CONTINUATION out of place")),
        };
        if block.fragment.len() > MAX_BLOCK {
            return Err(protocol("header block too large"));
        }
        if flags & END_HEADERS == 0 {
            self.state = State::Continuation(block);
        } else {
            self.emit(block)?;
        }
        Ok(true)
    }

    /// Decodes a complete header block and writes it out re-encoded.
    fn emit(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16);
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                    tracing::debug!(authority = %String::from_utf8_lossy(&value), "replacing an invalid :authority");
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_literal(&name, value, &mut encoded);
            })
            .map_err(|e| protocol(&format!("undecodable header block: {e:?}")))?;
        write_block(&mut self.ready, &block, &encoded);
        Ok(())
    }
}

/// Reads a HEADERS frame's payload: padding dropped, priority kept.
fn headers_frame(stream_id: u32, flags: u8, payload: &[u8]) -> io::Result<PendingBlock> {
    let mut body = payload;
    if flags & PADDED != 0 {
        let (&pad, rest) = body
            .split_first()
            .ok_or_else(|| protocol("empty padded HEADERS"))?;
        body = rest
            .get(
                ..rest
                    .len()
                    .checked_sub(usize::from(pad))
                    .ok_or_else(|| protocol("padding longer than HEADERS"))?,
            )
            .unwrap_or_default();
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let p = body
            .get(..5)
            .ok_or_else(|| protocol("HEADERS too short for its priority"))?;
        priority = Some([p[0], p[1], p[2], p[3], p[4]]);
        body = &body[5..];
    }
    Ok(PendingBlock {
        stream_id,
        flags,
        priority,
        fragment: body.to_vec(),
    })
}

/// Writes a HEADERS frame (and CONTINUATION frames when needed) carrying `encoded`.
fn write_block(out: &mut BytesMut, block: &PendingBlock, encoded: &[u8]) {
    let mut first = Vec::with_capacity(5 + encoded.len().min(MAX_FRAME));
    let mut flags = block.flags & END_STREAM;
    if let Some(p) = block.priority {
        first.extend_from_slice(&p);
        flags |= PRIORITY;
    }
    let take = encoded.len().min(MAX_FRAME - first.len());
    first.extend_from_slice(&encoded[..take]);
    let mut rest = encoded[take..].chunks(MAX_FRAME).peekable();
    if rest.peek().is_none() {
        flags |= END_HEADERS;
    }
    write_frame(out, HEADERS, flags, block.stream_id, &first);
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        write_frame(out, CONTINUATION, flags, block.stream_id, chunk);
    }
}

fn write_frame(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A literal header field never indexed, with a literal name (RFC 7541 §6.2.3); strings raw.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x10);
    for s in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the client: {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A truncated frame is handed on as it is, for h2 to report.
                let rest = this.raw.split();
                this.ready.extend_from_slice(&rest);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.process()? {
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(read.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs `client_bytes` through the adapter and returns what the server reads.
    async fn through(client_bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&client_bytes).await?;
        drop(client);
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame(&mut out, kind, flags, stream, payload);
        out.to_vec()
    }

    /// Splits the server's bytes into frames: (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    const GRPCIO_HEADERS: [(&[u8], &[u8]); 5] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
        (b":authority", b"tmp%2Fwarden%2Fagent.sock"),
        (b"workload.spiffe.io", b"true"),
    ];

    #[tokio::test]
    async fn a_percent_encoded_authority_becomes_localhost_and_indexed_fields_survive() {
        // The client's encoder indexes everything, so the second request is all table references.
        // As grpcio encodes: static `:method`/`:scheme`, then `:path`, `:authority` and the
        // security header indexed into the dynamic table; the second request refers to them
        // by index alone (62 newest … 64 oldest).
        let path = GRPCIO_HEADERS[2].1;
        let authority = GRPCIO_HEADERS[3].1;
        let mut first = vec![0x83, 0x86, 0x40 | 4, path.len() as u8];
        first.extend(path);
        first.extend([0x40 | 1, authority.len() as u8]);
        first.extend(authority);
        first.extend([0x40, 18]);
        first.extend(b"workload.spiffe.io");
        first.extend([4]);
        first.extend(b"true");
        let second = vec![0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let out = frames(&through(input).await.unwrap());
        let kinds: Vec<u8> = out.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [0x4, HEADERS, 0x0, HEADERS]);
        assert_eq!(out[2].3, b"\0\0\0\0\0");
        assert_eq!(out[3].1, END_HEADERS | END_STREAM);
        let mut server = loona_hpack::Decoder::new();
        for block in [&out[1].3, &out[3].3] {
            let decoded = server.decode(block).unwrap();
            let authorities: Vec<&[u8]> = decoded
                .iter()
                .filter(|(n, _)| n == b":authority")
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(authorities, [b"localhost".as_slice()]);
            assert!(decoded.contains(&(b":path".to_vec(), GRPCIO_HEADERS[2].1.to_vec())));
            assert!(decoded.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        }
    }

    #[tokio::test]
    async fn a_valid_authority_padding_priority_and_continuation_are_handled() {
        let mut encoder = loona_hpack::Encoder::new();
        let headers: [(&[u8], &[u8]); 2] = [
            (b":authority", b"localhost:8080"),
            (b"big", &[b'x'; 20_000]),
        ];
        let block = encoder.encode(headers);
        let (a, b) = block.split_at(10);
        let mut headers_payload = vec![3u8]; // pad length
        headers_payload.extend([0x80, 0, 0, 0, 16]); // exclusive dependency on 0, weight 16
        headers_payload.extend(a);
        headers_payload.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &headers_payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let out = frames(&through(input).await.unwrap());
        assert_eq!(out[0].0, HEADERS);
        assert_eq!(
            out[0].1 & (PADDED | END_HEADERS | PRIORITY),
            PRIORITY,
            "no padding, more to come"
        );
        assert_eq!(&out[0].3[..5], &[0x80, 0, 0, 0, 16]);
        assert_eq!(out[1].0, CONTINUATION);
        assert_eq!(out.last().unwrap().1, END_HEADERS);
        let mut block = out[0].3[5..].to_vec();
        for f in &out[1..] {
            assert!(f.3.len() <= MAX_FRAME);
            block.extend(&f.3);
        }
        let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(
            decoded[0],
            (b":authority".to_vec(), b"localhost:8080".to_vec())
        );
        assert_eq!(decoded[1].1.len(), 20_000);
    }

    #[tokio::test]
    async fn broken_input_ends_the_connection_or_passes_for_the_server_to_refuse() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b"\x82"));
        assert!(
            through(input).await.is_err(),
            "CONTINUATION without HEADERS"
        );
        for block in [
            &b"\xff\xff\xff\xff\xff\xff\xff"[..],
            b"\x3f",
            b"\x82\x3f\xe1",
        ] {
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, 1, block));
            assert!(through(input).await.is_err(), "undecodable block {block:?}");
        }
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(http1.clone()).await.unwrap(), http1);
    }
}
