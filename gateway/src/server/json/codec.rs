//! The JSON side of etcd's grpc-gateway: request bodies into prost messages with Go's
//! encoding/json semantics (the first JSON value of the body counts, `null` and an empty body
//! are an empty request, bytes are strict standard base64), responses out as jsonpb writes them
//! (original field names, int64 as strings, defaults omitted — pbjson with preserved names),
//! and gRPC errors as grpc-gateway v1's `{"error","code","message"}` bodies and HTTP statuses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tonic::body::Body;
use tonic::{Code, Status};

/// The HTTP status grpc-gateway v1 (`runtime.HTTPStatusFromCode`) gives each gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A unary error as etcd's gateway answers it.
pub fn error_response(status: &Status) -> Response<Body> {
    let message = quoted(status.message());
    let code = i32::from(status.code());
    let body = format!(r#"{{"error":{message},"code":{code},"message":{message}}}"#);
    json_response(http_status(status.code()), body.into())
}

/// One error inside a response stream, as grpc-gateway v1 frames it.
pub fn stream_error(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let body = format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        i32::from(status.code()),
        http.as_u16(),
        quoted(status.message()),
        quoted(http.canonical_reason().unwrap_or_default()),
    );
    body.into()
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// One message of a response stream: `{"result":...}` and a newline.
pub fn stream_result<T: Serialize>(message: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"result\":");
    if serde_json::to_writer(&mut out, message).is_err() {
        // pbjson cannot fail on the messages it generated; keep the stream well-formed anyway.
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"}\n");
    out.into()
}

/// A successful unary answer.
pub fn ok_response<T: Serialize>(message: &T) -> Response<Body> {
    match serde_json::to_vec(message) {
        Ok(body) => {
            let mut resp = json_response(StatusCode::OK, body.into());
            resp.headers_mut().insert(
                "grpc-metadata-content-type",
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(e) => error_response(&Status::internal(e.to_string())),
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::new(Full::new(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors(h);
    resp
}

/// The CORS headers etcd puts on every gateway answer.
pub fn cors(h: &mut http::HeaderMap) {
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
}

/// Go's `http.Error`: a plain-text status line, as grpc-gateway answers unknown paths.
pub fn plain_error(status: StatusCode) -> Response<Body> {
    let text = format!("{}\n", status.canonical_reason().unwrap_or_default());
    let mut resp = Response::new(Body::new(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    cors(h);
    resp
}

/// Decodes one JSON value (already split off the body) into a request message.
pub fn from_value<T: DeserializeOwned + Default>(value: Value) -> Result<T, Status> {
    match &value {
        Value::Null => return Ok(T::default()),
        Value::Object(_) => {}
        other => {
            return Err(Status::invalid_argument(format!(
                "json: cannot unmarshal {} into Go value of type map[string]json.RawMessage",
                go_kind(other)
            )))
        }
    }
    check_base64(&value)?;
    serde_json::from_value(value).map_err(|e| Status::invalid_argument(go_type_error(&e)))
}

/// serde's "invalid type: string \"x\", expected a boolean" in encoding/json's words.
fn go_type_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let Some((found, expected)) = text
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return text;
    };
    let found = match found.split(' ').next() {
        Some("string") => "string",
        Some("integer" | "floating") => "number",
        Some("boolean") => "bool",
        Some("map") => "object",
        Some("sequence") => "array",
        _ => return text,
    };
    let expected = match expected {
        "a boolean" => "bool",
        "a base64 string" => "[]uint8",
        "a string" => "string",
        _ => return text,
    };
    format!("json: cannot unmarshal {found} into Go value of type {expected}")
}

/// The first JSON value of a unary body; an empty body is an empty request.
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match values.next() {
        None => Ok(T::default()),
        Some(Ok(value)) => from_value(value),
        Some(Err(e)) => Err(syntax_error(&e, body)),
    }
}

/// Go's wording for a body that is not JSON.
pub fn syntax_error(e: &serde_json::Error, body: &[u8]) -> Status {
    if e.is_eof() {
        return Status::invalid_argument("unexpected EOF");
    }
    let offending = offending_char(body, e.line(), e.column());
    Status::invalid_argument(match offending {
        Some(c) => format!("invalid character '{c}' looking for beginning of value"),
        None => e.to_string(),
    })
}

fn offending_char(body: &[u8], line: usize, column: usize) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let l = text.lines().nth(line.checked_sub(1)?)?;
    l.chars().nth(column.checked_sub(1)?)
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// pbjson also accepts unpadded and URL-safe base64, which etcd (Go's StdEncoding) refuses.
/// The fields named like etcd's bytes fields (key, range_end, value) are held to Go's rules;
/// `name` is bytes in lock/election but a string in auth requests, so it keeps pbjson's.
fn check_base64(value: &Value) -> Result<(), Status> {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if is_bytes_field(k) => {
                        if let Some(at) = go_base64_error(s) {
                            return Err(Status::invalid_argument(format!(
                                "illegal base64 data at input byte {at}"
                            )));
                        }
                    }
                    _ => check_base64(v)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_base64),
        _ => Ok(()),
    }
}

/// The fields that are `bytes` in etcd's request messages (under either JSON name).
fn is_bytes_field(name: &str) -> bool {
    matches!(name, "key" | "range_end" | "rangeEnd" | "value")
}

/// Where Go's `base64.StdEncoding` stops on `s`, or None when it decodes.
fn go_base64_error(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let is_alpha = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let mut i = 0;
    while i < b.len() {
        let quantum = &b[i..b.len().min(i + 4)];
        for (j, &c) in quantum.iter().enumerate() {
            if c == b'=' {
                // Padding is only valid in the last quantum, after at least two characters.
                let valid = j >= 2
                    && i + 4 == b.len()
                    && quantum[j..].iter().all(|&p| p == b'=')
                    && quantum.len() == 4;
                return (!valid).then_some(i + j);
            }
            if !is_alpha(c) {
                return Some(i + j);
            }
        }
        if quantum.len() < 4 {
            return Some(i);
        }
        i += 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_go_sees_it() {
        assert_eq!(go_base64_error("Zm9v"), None);
        assert_eq!(go_base64_error("YQ=="), None);
        assert_eq!(go_base64_error("YWI="), None);
        assert_eq!(go_base64_error(""), None);
        assert_eq!(go_base64_error("!!"), Some(0));
        assert_eq!(go_base64_error("Zm9v_"), Some(4));
        assert_eq!(go_base64_error("Zm9v-_"), Some(4));
        assert_eq!(go_base64_error("Zm9"), Some(0));
        assert_eq!(go_base64_error("Y==="), Some(1));
    }

    #[test]
    fn statuses_as_grpc_gateway_maps_them() {
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unknown),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
