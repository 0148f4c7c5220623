//! `Cors`: which browser origins may call the API (`--cors-origins`): preflights answered,
//! credentials (cookies, `Authorization`) allowed for exactly those origins, `Vary: Origin` on
//! every response so caches never hand one origin's answer to another.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use clap::Args;

use crate::problem::Problem;

/// Request headers a page may send: the token, an order body, a retry key, the resume position
/// and the trace context.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, last-event-id, traceparent";
/// Response headers a page may read besides the always-visible ones.
pub const EXPOSED_HEADERS: &str = "location, idempotent-replayed, retry-after, www-authenticate";
pub const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

#[derive(Args, Debug, Clone, Default)]
pub struct CorsArgs {
    /// Browser origins allowed to call the API, comma-separated, each exactly
    /// `scheme://host[:port]` (e.g. https://shop.example,http://localhost:5173). Empty: no CORS
    /// headers, so only same-origin pages can read responses.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
}

/// An origin as browsers send it: scheme, host and an optional port, nothing else.
/// An empty entry (an empty `CORS_ORIGINS`, a trailing comma) is no origin.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().to_ascii_lowercase();
    if origin.is_empty() {
        return Ok(origin);
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("`{text}` must start with http:// or https://"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok || rest.contains('/') || origin == "null" {
        return Err(format!(
            "`{text}` is not an origin: write scheme://host[:port] with no path or trailing slash"
        ));
    }
    Ok(origin)
}

#[derive(Debug, Default)]
pub struct Cors {
    origins: HashSet<String>,
}

impl Cors {
    pub fn new(args: &CorsArgs) -> Arc<Self> {
        Arc::new(Self {
            origins: args.cors_origins.iter().filter(|o| !o.is_empty()).cloned().collect(),
        })
    }

    pub fn is_enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The request's origin when it is allowed.
    pub fn allowed<'a>(&self, origin: Option<&'a [u8]>) -> Option<&'a str> {
        let origin = std::str::from_utf8(origin?).ok()?;
        self.origins.contains(origin).then_some(origin)
    }

    /// Headers for a response to a request from `origin` (empty with CORS off).
    pub fn response_headers(&self, origin: Option<&[u8]>) -> Vec<(&'static str, String)> {
        if !self.is_enabled() {
            return Vec::new();
        }
        let mut headers = vec![("vary", "origin".to_owned())];
        if let Some(origin) = self.allowed(origin) {
            headers.push(("access-control-allow-origin", origin.to_owned()));
            headers.push(("access-control-allow-credentials", "true".to_owned()));
            headers.push(("access-control-expose-headers", EXPOSED_HEADERS.to_owned()));
        }
        headers
    }

    /// The same headers as lines of an HTTP/1.1 response head.
    pub fn head_lines(&self, origin: Option<&[u8]>) -> String {
        self.response_headers(origin)
            .into_iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect()
    }

    fn preflight(&self, headers: &HeaderMap) -> Response {
        let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
        let Some(origin) = self.allowed(origin) else {
            let mut response = Problem::new(StatusCode::FORBIDDEN, "/problems/forbidden", "Forbidden")
                .detail("this origin may not call the API (see --cors-origins)")
                .into_response();
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("origin"));
            return response;
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.insert(name, value);
            }
        };
        put("access-control-allow-origin", origin);
        put("access-control-allow-credentials", "true");
        put("access-control-allow-methods", ALLOWED_METHODS);
        put("access-control-allow-headers", ALLOWED_HEADERS);
        put("access-control-max-age", &PREFLIGHT_MAX_AGE_SECS.to_string());
        put(
            "vary",
            "origin, access-control-request-method, access-control-request-headers",
        );
        response
    }

    /// Wraps `router` (outermost, so preflights never reach routing and error responses get the
    /// headers too).
    pub fn apply(self: &Arc<Self>, router: Router) -> Router {
        if !self.is_enabled() {
            return router;
        }
        let cors = self.clone();
        router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let cors = cors.clone();
            async move { cors.handle(request, next).await }
        }))
    }

    async fn handle(&self, request: Request, next: Next) -> Response {
        let is_preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ORIGIN)
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            return self.preflight(request.headers());
        }
        let origin = request.headers().get(header::ORIGIN).cloned();
        let mut response = next.run(request).await;
        let headers = response.headers_mut();
        for (name, value) in self.response_headers(origin.as_ref().map(HeaderValue::as_bytes)) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                if name == "vary" {
                    headers.append(name, value);
                } else {
                    headers.insert(name, value);
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn cors(origins: &[&str]) -> Arc<Cors> {
        Cors::new(&CorsArgs {
            cors_origins: origins.iter().map(|o| parse_origin(o).unwrap()).collect(),
        })
    }

    #[test]
    fn origins_must_be_exact() {
        assert_eq!(parse_origin("HTTPS://Shop.Example").unwrap(), "https://shop.example");
        assert_eq!(parse_origin("http://localhost:5173").unwrap(), "http://localhost:5173");
        assert_eq!(parse_origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(parse_origin(" ").unwrap(), "");
        assert!(
            !Cors::new(&CorsArgs {
                cors_origins: vec![String::new()]
            })
            .is_enabled()
        );
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://a.example/path",
            "*",
            "null",
            "ftp://x",
            "http://x:",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    async fn call(router: Router, request: axum::http::Request<Body>) -> Response {
        router.oneshot(request).await.unwrap()
    }

    fn app(cors: &Arc<Cors>) -> Router {
        cors.apply(Router::new().route("/api/x", get(|| async { "ok" })))
    }

    #[tokio::test]
    async fn preflight_from_an_allowed_origin_is_answered() {
        let cors = cors(&["http://page.test:8000"]);
        let request = axum::http::Request::options("/api/x")
            .header("origin", "http://page.test:8000")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization, last-event-id")
            .body(Body::empty())
            .unwrap();
        let response = call(app(&cors), request).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], "http://page.test:8000");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("last-event-id")
        );
        assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));

        let other = axum::http::Request::options("/api/x")
            .header("origin", "http://evil.test")
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap();
        let response = call(app(&cors), other).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn responses_name_the_exact_origin_and_vary_on_it() {
        let cors = cors(&["http://page.test"]);
        let request = axum::http::Request::get("/api/x")
            .header("origin", "http://page.test")
            .body(Body::empty())
            .unwrap();
        let response = call(app(&cors), request).await;
        assert_eq!(response.headers()["access-control-allow-origin"], "http://page.test");
        assert_eq!(response.headers()["vary"], "origin");
        let request = axum::http::Request::get("/api/x")
            .header("origin", "http://other.test")
            .body(Body::empty())
            .unwrap();
        let response = call(app(&cors), request).await;
        assert!(response.headers().get("access-control-allow-origin").is_none());
        assert_eq!(response.headers()["vary"], "origin");
        // CORS off: nothing added.
        let off = Cors::new(&CorsArgs::default());
        assert!(off.response_headers(Some(b"http://page.test")).is_empty());
    }
}
