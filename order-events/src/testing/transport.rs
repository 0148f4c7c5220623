//! `Transport`: the HTTP a test's streams travel over, so one test body runs over each.

use super::SseClient;

/// How a test client reaches the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 with a fresh connection per request: the gateway's fast path serves the stream.
    Http1,
    /// HTTP/2 with prior knowledge over cleartext: hyper serves the stream.
    H2c,
}

impl Transport {
    /// A client speaking this transport. Its HTTP/1.1 requests never reuse a connection: a
    /// stream request after another on the same connection would go to hyper instead.
    pub fn client(self) -> reqwest::Client {
        let builder = reqwest::Client::builder();
        let builder = match self {
            Transport::Http1 => builder.http1_only().pool_max_idle_per_host(0),
            Transport::H2c => builder.http2_prior_knowledge(),
        };
        builder.build().expect("the test client builds")
    }

    pub fn version(self) -> reqwest::Version {
        match self {
            Transport::Http1 => reqwest::Version::HTTP_11,
            Transport::H2c => reqwest::Version::HTTP_2,
        }
    }

    /// Reads `response` as SSE after checking that it came over this transport and opened a
    /// stream (over HTTP/1.1, served by the fast path, which closes the connection after it).
    pub fn stream(self, response: reqwest::Response) -> SseClient {
        assert_eq!(response.version(), self.version(), "the response came over {self:?}");
        assert_eq!(response.status(), 200, "the stream opens over {self:?}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        if self == Transport::Http1 {
            assert_eq!(
                headers.get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "the fast path served the stream"
            );
        }
        SseClient::from_response(response)
    }
}
