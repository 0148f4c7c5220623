//! Just enough HTTP/1.1 for a load generator: request heads written by hand, response heads
//! parsed from a small buffer, and a keep-alive connection for POSTs.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HttpUrl;

/// Response heads larger than this are refused (ours are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

/// The parts of a response head the load generator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// `Connection: close`: the server will not take another request on this connection.
    pub close: bool,
    pub event_stream: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response head")]
    Closed,
    #[error("malformed response head")]
    Malformed,
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
}

/// `path` confined to `customer` by a `customerId` query argument, after any query it has.
pub fn with_customer(path: &str, customer: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}customerId={customer}")
}

/// The request an SSE connection sends.
pub fn subscribe_request(url: &HttpUrl, customer: Option<&str>, token: Option<&str>) -> Vec<u8> {
    let path = match customer {
        Some(customer) => with_customer(&url.path, customer),
        None => url.path.clone(),
    };
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{authorization}User-Agent: sse-orders-loadgen\r\n\r\n",
        url.authority
    )
    .into_bytes()
}

/// An HS256 token for the server under test: `scope` and, when given, `customer_id`, valid for
/// a day.
pub fn bench_token(secret: &str, scope: &str, customer: Option<&str>) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = serde_json::json!({"sub": "loadgen", "scope": scope, "iat": now, "exp": now + 86_400});
    if let Some(customer) = customer {
        claims["customer_id"] = serde_json::Value::from(customer);
    }
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Parses the head at the start of `buf`; `Ok(None)` when it is not complete yet,
/// otherwise the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HttpError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(HttpError::Malformed)?;
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed);
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or(HttpError::Malformed)?;
    let mut head = ResponseHead {
        status,
        chunked: false,
        content_length: None,
        close: version == "HTTP/1.0",
        event_stream: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().map_err(|_| HttpError::Malformed)?);
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        }
    }
    Ok(Some((head, end + 4)))
}

/// A keep-alive connection that POSTs one body at a time and reads the whole response.
pub struct PostConnection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl PostConnection {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            request: Vec::with_capacity(1024),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `POST url` with `body` and returns the response status. The connection is
    /// reopened on the next call when the server closed it or anything failed.
    /// `extra_headers`: complete header lines (`Name: value\r\n`), or empty.
    pub async fn post(
        &mut self,
        url: &HttpUrl,
        content_type: &str,
        extra_headers: &str,
        body: &[u8],
    ) -> Result<u16, HttpError> {
        let result = self.exchange(url, content_type, extra_headers, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        url: &HttpUrl,
        content_type: &str,
        extra_headers: &str,
        body: &[u8],
    ) -> Result<u16, HttpError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(HttpError::Closed);
        };
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}User-Agent: sse-orders-loadgen\r\n\r\n",
                url.path,
                url.authority,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        stream.write_all(&self.request).await?;

        self.buf.clear();
        let (head, head_len) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(HttpError::Closed);
            }
        };
        let mut body_seen = self.buf.len() - head_len;
        if head.chunked {
            // Read until the terminating zero-size chunk.
            let mut decoder = crate::sse::ChunkedDecoder::default();
            let mut open = decoder
                .feed(&self.buf[head_len..], &mut |_| {})
                .map_err(|_| HttpError::Malformed)?;
            while open {
                self.buf.clear();
                if stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(HttpError::Closed);
                }
                open = decoder.feed(&self.buf, &mut |_| {}).map_err(|_| HttpError::Malformed)?;
            }
        } else if let Some(length) = head.content_length {
            while body_seen < length {
                self.buf.clear();
                let n = stream.read_buf(&mut self.buf).await?;
                if n == 0 {
                    return Err(HttpError::Closed);
                }
                body_seen += n;
            }
        } else {
            // No length: the body runs to the close.
            self.stream = None;
            return Ok(head.status);
        }
        if head.close {
            self.stream = None;
        }
        Ok(head.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_argument_starts_the_query_or_joins_the_one_there() {
        assert_eq!(with_customer("/sub", "c7"), "/sub?customerId=c7");
        assert_eq!(with_customer("/sub?x=1", "c7"), "/sub?x=1&customerId=c7");
    }

    #[test]
    fn head_is_incomplete_until_the_blank_line() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n").unwrap(),
            None
        );
    }

    #[test]
    fn sse_head_is_recognised_with_its_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nretry";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 5);
        assert!(head.event_stream && head.chunked && !head.close);
        assert_eq!(head.status, 200);
    }

    #[test]
    fn connection_close_is_noticed() {
        let raw = b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let (head, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!((head.status, head.content_length, head.close), (202, Some(3), true));
    }
}
