//! `Problem`: the one `application/problem+json` body (RFC 9457) every HTTP error uses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::FieldError;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    /// Further response headers (a `WWW-Authenticate` challenge, for instance) (a boxed slice keeps the
    /// common problem small).
    #[serde(skip)]
    headers: Box<[(&'static str, String)]>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after_secs: None,
            headers: Box::default(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let mut headers = std::mem::take(&mut self.headers).into_vec();
        headers.push((name, value.into()));
        self.headers = headers.into_boxed_slice();
        self
    }

    /// The headers added with [`header`](Self::header).
    pub fn extra_headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 400 naming every invalid field.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| {
                if e.field.is_empty() {
                    e.message.clone()
                } else {
                    format!("{} {}", e.field, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-request",
                "The request is invalid",
            )
        }
        .detail(detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "/problems/invalid-request",
            "The request is invalid",
        )
        .detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "/problems/not-found", "Not found").detail(detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Service unavailable",
        )
        .detail(detail)
        .retry_after(1)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.extra_headers() {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(*name, value);
            }
        }
        response
    }
}

/// Turns axum's own rejections (and any plain-text error response from a layer) into problem
/// bodies, so clients see one error shape whatever produced the error.
pub async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (kind, title) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("/problems/too-large", "The request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("/problems/unsupported-media-type", "Unsupported content type"),
        StatusCode::NOT_FOUND => ("/problems/not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("/problems/method-not-allowed", "Method not allowed"),
        s if s.is_server_error() => ("/problems/internal", "Internal error"),
        _ => ("/problems/invalid-request", "The request is invalid"),
    };
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let allow = response.headers().get(header::ALLOW).cloned();
    let detail = if status.is_server_error() {
        None
    } else {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        (!text.is_empty()).then_some(text)
    };
    let mut problem = Problem::new(status, kind, title);
    problem.detail = detail;
    let mut response = problem.into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let Some(value) = allow {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
