//! `Guarded`: the connection's reads on their way to hyper. Every HTTP/1 request head, the
//! first and each later one on a keep-alive connection, is held back until it is complete and
//! checked here, so a malformed or oversized head gets the same problem+json answer whichever
//! request of the connection it is (hyper's own answer to a bad head is a bare 400). Request
//! bodies pass through, followed by their `Content-Length` or their chunked framing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::http;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::{Activity, MAX_HEAD_BYTES, WireProtocol, refusal};
use crate::metrics::Metrics;
use crate::problem::Problem;

/// The most header fields a head may carry (hyper's own limit).
const MAX_HEADERS: usize = 100;

/// Where the connection's byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// At a request head: nothing passes until it is complete and checked.
    Head,
    /// Inside a request body with this many bytes still to come.
    Body(u64),
    /// Inside a chunked request body.
    Chunked(Chunked),
    /// On an HTTP/2 connection, or past a chunked body this reader could not follow (hyper
    /// refuses it): bytes pass unchecked.
    Through,
    /// A head was refused: hyper reads nothing more, the connection is shut down gracefully
    /// (responses to earlier requests are finished) and the answer goes out as it closes.
    Refused,
}

/// Where a chunked body is (RFC 9112, 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// In a chunk-size line: the size so far, the line's length, whether a digit was seen and
    /// whether an extension began.
    Size {
        size: u64,
        line: usize,
        digits: bool,
        extension: bool,
    },
    /// In a chunk's data, with this many bytes to come.
    Data(u64),
    /// After a chunk's data, before its line end.
    DataEnd,
    /// In the trailer section: the current line's length.
    Trailer { line: usize },
}

impl Chunked {
    const START: Chunked = Chunked::Size {
        size: 0,
        line: 0,
        digits: false,
        extension: false,
    };
}

/// The longest chunk-size or trailer line followed; a longer one is left to hyper.
const MAX_CHUNK_LINE: usize = 4096;

/// Follows a chunked body through `bytes`: how many of them belong to it, and where it is then
/// (`Framing::Head` once it ended, `Framing::Through` when the framing is broken).
fn follow_chunked(mut state: Chunked, bytes: &[u8]) -> (usize, Framing) {
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        state = match state {
            Chunked::Data(left) => {
                let taken = left.min((bytes.len() - at) as u64);
                at += taken as usize;
                match left - taken {
                    0 => Chunked::DataEnd,
                    left => Chunked::Data(left),
                }
            }
            Chunked::DataEnd => {
                at += 1;
                match byte {
                    b'\r' => Chunked::DataEnd,
                    b'\n' => Chunked::START,
                    _ => return (at, Framing::Through),
                }
            }
            Chunked::Size {
                size,
                line,
                digits,
                extension,
            } => {
                at += 1;
                if line >= MAX_CHUNK_LINE {
                    return (at, Framing::Through);
                }
                let line = line + 1;
                let more = |extension| Chunked::Size {
                    size,
                    line,
                    digits,
                    extension,
                };
                match byte {
                    // A size line needs its size.
                    b'\r' | b'\n' | b';' | b' ' | b'\t' if !digits => return (at, Framing::Through),
                    b'\n' if size == 0 => Chunked::Trailer { line: 0 },
                    b'\n' => Chunked::Data(size),
                    b'\r' => more(extension),
                    _ if extension => more(true),
                    b';' | b' ' | b'\t' => more(true),
                    _ => match (byte as char)
                        .to_digit(16)
                        .and_then(|digit| size.checked_mul(16)?.checked_add(digit.into()))
                    {
                        Some(size) => Chunked::Size {
                            size,
                            line,
                            digits: true,
                            extension,
                        },
                        None => return (at, Framing::Through),
                    },
                }
            }
            Chunked::Trailer { line } => {
                at += 1;
                match byte {
                    b'\n' if line == 0 => return (at, Framing::Head),
                    b'\n' => Chunked::Trailer { line: 0 },
                    b'\r' => Chunked::Trailer { line },
                    _ if line >= MAX_CHUNK_LINE => return (at, Framing::Through),
                    _ => Chunked::Trailer { line: line + 1 },
                }
            }
        };
    }
    (at, Framing::Chunked(state))
}

/// What a head's bytes amount to.
#[derive(Debug)]
enum Checked {
    /// A head of `len` bytes, followed by `next`.
    Complete { len: usize, next: Framing },
    /// More bytes are needed.
    Partial,
    /// Answer with `problem` and close; `reason` labels the closed connection.
    Refused { reason: &'static str, problem: Problem },
}

pub(super) struct Guarded {
    inner: TcpStream,
    /// Checked bytes not yet passed on.
    ready: Bytes,
    /// Bytes read and not yet checked.
    unread: BytesMut,
    framing: Framing,
    /// The answer to a refused head, written once hyper has written everything before it.
    refusal: Option<Bytes>,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
}

impl Guarded {
    /// `read` holds what was already read from `inner`, from the start of the connection.
    pub(super) fn new(
        inner: TcpStream,
        read: BytesMut,
        protocol: WireProtocol,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            ready: Bytes::new(),
            unread: read,
            framing: match protocol {
                WireProtocol::Http1 => Framing::Head,
                WireProtocol::H2 => Framing::Through,
            },
            refusal: None,
            activity,
            metrics,
        }
    }

    /// Moves checked bytes from `unread` to `ready`, or decides the head is refused. False when
    /// more bytes must be read first.
    fn advance(&mut self) -> bool {
        match self.framing {
            Framing::Refused => true,
            Framing::Through => {
                self.ready = self.unread.split().freeze();
                !self.ready.is_empty()
            }
            Framing::Chunked(state) => {
                if self.unread.is_empty() {
                    return false;
                }
                let (taken, next) = follow_chunked(state, &self.unread);
                self.ready = self.unread.split_to(taken).freeze();
                self.framing = next;
                true
            }
            Framing::Body(remaining) => {
                if self.unread.is_empty() {
                    return false;
                }
                let taken = remaining.min(self.unread.len() as u64);
                self.ready = self.unread.split_to(taken as usize).freeze();
                self.framing = match remaining - taken {
                    0 => Framing::Head,
                    left => Framing::Body(left),
                };
                true
            }
            Framing::Head => {
                // Blank lines between requests are allowed and skipped (RFC 9112, 2.2).
                let blank = self.unread.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                self.unread.advance(blank);
                if self.unread.is_empty() {
                    return false;
                }
                match check_head(&self.unread) {
                    Checked::Partial => false,
                    Checked::Complete { len, next } => {
                        self.ready = self.unread.split_to(len).freeze();
                        self.framing = next;
                        true
                    }
                    Checked::Refused { reason, problem } => {
                        self.metrics.connections_closed.with_label_values(&[reason]).inc();
                        self.refusal = Some(refusal(&problem));
                        self.framing = Framing::Refused;
                        self.unread.clear();
                        self.activity.refuse();
                        true
                    }
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.framing == Framing::Refused {
                // Not the end of input: hyper would abandon a response still being written.
                // The graceful shutdown that `refuse` starts wakes the connection instead.
                return Poll::Pending;
            }
            if this.advance() {
                continue;
            }
            if this.unread.capacity() - this.unread.len() < 1024 {
                this.unread.reserve(8 * 1024);
            }
            let read = ready!(poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.unread))?;
            if read == 0 {
                // The client is done; a head it left unfinished is dropped.
                this.unread.clear();
                return Poll::Ready(Ok(()));
            }
            this.activity.bytes_arrived();
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Writes a refused head's answer after everything hyper wrote, then closes.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while let Some(answer) = this.refusal.as_mut().filter(|a| !a.is_empty()) {
            match ready!(Pin::new(&mut this.inner).poll_write(cx, answer)) {
                Ok(written) if written > 0 => answer.advance(written),
                _ => break,
            }
        }
        this.refusal = None;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Drop for Guarded {
    /// hyper may drop a connection without closing it (it failed to start): the answer still
    /// goes out if the socket takes it without waiting.
    fn drop(&mut self) {
        if let Some(answer) = self.refusal.take().filter(|a| !a.is_empty()) {
            let _ = self.inner.try_write(&answer);
        }
    }
}

/// Checks the head at the start of `bytes` and works out how its body is framed.
fn check_head(bytes: &[u8]) -> Checked {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD_BYTES => return Checked::Partial,
        Ok(_) => {
            return Checked::Refused {
                reason: "head_too_large",
                problem: head_too_large(),
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Checked::Refused {
                reason: "head_too_large",
                problem: head_too_large().detail(format!("a request may carry at most {MAX_HEADERS} header fields")),
            };
        }
        Err(error) => {
            return Checked::Refused {
                reason: "malformed_head",
                problem: Problem::bad_request(format!("the request head is malformed: {error}")),
            };
        }
    };
    let named = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let mut lengths = named("content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(value), None) => match content_length(value) {
            Some(length) => Some(length),
            None => {
                return malformed("Content-Length must be a decimal number of bytes");
            }
        },
        (Some(_), Some(_)) => return malformed("a request must not carry more than one Content-Length header"),
    };
    // The last coding of the last Transfer-Encoding field is the one that frames the body.
    let coding = named("transfer-encoding").next_back().map(|value| {
        let value = String::from_utf8_lossy(value);
        value.rsplit(',').next().unwrap_or("").trim().to_ascii_lowercase()
    });
    if coding.is_some() && length.is_some() {
        // Either framing could be the one a proxy in front used: refuse rather than guess.
        return malformed("a request must not carry both Content-Length and Transfer-Encoding");
    }
    // An `Upgrade` or `CONNECT` is only a request here: no route answers 101 or opens a tunnel,
    // so the connection stays HTTP/1.1 and its next head is checked like any other.
    let next = match (coding.as_deref(), length) {
        (Some("chunked"), _) => Framing::Chunked(Chunked::START),
        (Some(_), _) => return malformed("a request's Transfer-Encoding must end with chunked"),
        (None, Some(0) | None) => Framing::Head,
        (None, Some(length)) => Framing::Body(length),
    };
    Checked::Complete { len, next }
}

fn malformed(detail: &str) -> Checked {
    Checked::Refused {
        reason: "malformed_head",
        problem: Problem::bad_request(detail),
    }
}

pub(super) fn head_too_large() -> Problem {
    Problem::new(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "/problems/head-too-large",
        "Request head too large",
    )
    .detail(format!(
        "the request line and headers must fit in {MAX_HEAD_BYTES} bytes"
    ))
}

/// `1*DIGIT` (RFC 9110, 8.6), as a number that fits.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing_of(head: &str) -> Framing {
        match check_head(head.as_bytes()) {
            Checked::Complete { len, next } => {
                assert_eq!(len, head.len());
                next
            }
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn refusal_of(head: &[u8]) -> (&'static str, u16) {
        match check_head(head) {
            Checked::Refused { reason, problem } => (reason, problem.status),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn a_head_is_followed_by_its_body_then_the_next_head() {
        assert_eq!(framing_of("GET / HTTP/1.1\r\nhost: a\r\n\r\n"), Framing::Head);
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"),
            Framing::Head
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nhost: a\r\nContent-Length: 42\r\n\r\n"),
            Framing::Body(42)
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: Chunked\r\n\r\n"),
            Framing::Chunked(Chunked::START)
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked(Chunked::START)
        );
        assert_eq!(
            framing_of("GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n"),
            Framing::Head
        );
        assert!(matches!(check_head(b"GET / HTTP/1.1\r\nhost: a\r\n"), Checked::Partial));
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        assert_eq!(
            refusal_of(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            ("malformed_head", 400)
        );
        assert_eq!(refusal_of(b"G(T / HTTP/1.1\r\n\r\n"), ("malformed_head", 400));
        assert_eq!(refusal_of(b"\x00\x01garbage\r\n\r\n"), ("malformed_head", 400));
        for length in ["-1", "1e3", " ", "0x10", "99999999999999999999999", "1,1"] {
            let head = format!("POST / HTTP/1.1\r\ncontent-length: {length}\r\n\r\n");
            assert_eq!(refusal_of(head.as_bytes()), ("malformed_head", 400), "{length:?}");
        }
        assert_eq!(
            refusal_of(b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n"),
            ("malformed_head", 400)
        );
        assert_eq!(
            refusal_of(b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"),
            ("malformed_head", 400)
        );
        assert_eq!(
            refusal_of(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            ("malformed_head", 400)
        );
        let huge = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(refusal_of(huge.as_bytes()), ("head_too_large", 431));
        assert_eq!(
            refusal_of(&huge.as_bytes()[..MAX_HEAD_BYTES + 10]),
            ("head_too_large", 431)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(refusal_of(many.as_bytes()), ("head_too_large", 431));
    }

    /// Feeds `body` to the chunked follower `step` bytes at a time.
    fn follow_in_steps(body: &[u8], step: usize) -> (usize, Framing) {
        let mut state = Chunked::START;
        let mut at = 0;
        while at < body.len() {
            let end = (at + step).min(body.len());
            let (taken, next) = follow_chunked(state, &body[at..end]);
            at += taken;
            match next {
                Framing::Chunked(more) => state = more,
                done => return (at, done),
            }
        }
        (at, Framing::Chunked(state))
    }

    #[test]
    fn a_chunked_body_is_followed_to_its_end_however_it_arrives() {
        let body = b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        let next = b"GET / HTTP/1.1\r\n\r\n";
        let stream = [&body[..], next].concat();
        for step in [1, 2, 3, 7, stream.len()] {
            assert_eq!(
                follow_in_steps(&stream, step),
                (body.len(), Framing::Head),
                "step {step}"
            );
        }
        let empty = b"0\r\n\r\n";
        assert_eq!(follow_chunked(Chunked::START, empty), (empty.len(), Framing::Head));
        // Broken framing is left to hyper, which refuses it.
        for broken in [&b"zz\r\n"[..], b"\r\n", b"5\r\nhelloX", b"ffffffffffffffffff\r\n"] {
            assert_eq!(follow_chunked(Chunked::START, broken).1, Framing::Through, "{broken:?}");
        }
        // Incomplete: still inside the body.
        assert_eq!(
            follow_chunked(Chunked::START, b"5\r\nhel"),
            (6, Framing::Chunked(Chunked::Data(2)))
        );
    }
}
