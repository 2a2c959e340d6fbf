//! One unary gRPC call on a member's connection — the path every forwarded unary RPC takes:
//! the request's message encoded once into one DATA frame, the answer's one message decoded from
//! the collected body, its status read from the trailers (or from the headers, where etcd puts
//! the status of an error it answers without a message). tonic's client does the same through
//! an encoder and a decoder stream per call, each with a buffer of its own.
//!
//! Failures are reported as tonic reports them, so that `errors::retryable` reads them alike:
//! a failure of the connection is a `Status` carrying its error as its source; a status etcd
//! sent carries none.

use super::Conn;
use crate::grpc_frame;
use crate::h2::client::{CallError, UnaryRequest};
use crate::headers;
use crate::method;
use crate::mirror::RangeAnswer;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use keygate_proto::etcdserverpb::RangeRequest;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Code, Extensions, Status};

/// The caller's headers that are not passed on: gRPC's own, set here again, and compression,
/// which keygate neither asks etcd for nor decodes.
const NOT_FORWARDED: [HeaderName; 7] = [
    TE,
    CONTENT_TYPE,
    headers::GRPC_STATUS,
    headers::GRPC_MESSAGE,
    headers::GRPC_MESSAGE_TYPE,
    headers::GRPC_ENCODING,
    headers::GRPC_ACCEPT_ENCODING,
];

/// Calls `path` (`/service/Method`) on `conn` with `request`'s message and metadata.
pub async fn unary<Req, Resp>(
    conn: Conn,
    path: &'static str,
    request: tonic::Request<Req>,
) -> Result<tonic::Response<Resp>, Status>
where
    Req: Message,
    Resp: Message + Default,
{
    let response = unary_encoded(conn, path, request).await?;
    let (metadata, message, extensions) = response.into_parts();
    Ok(tonic::Response::from_parts(
        metadata,
        decode(message)?,
        extensions,
    ))
}

/// A forwarded Range whose answer goes back to its client as etcd encoded it: only the
/// header is read (for its revision), however many keys the answer holds.
pub async fn range_encoded(
    conn: Conn,
    request: tonic::Request<RangeRequest>,
) -> Result<tonic::Response<RangeAnswer>, Status> {
    let response = unary_encoded(conn, method::RANGE.path, request).await?;
    let (metadata, message, extensions) = response.into_parts();
    let answer = RangeAnswer::from_encoded(message).map_err(|_| not_one_message())?;
    Ok(tonic::Response::from_parts(metadata, answer, extensions))
}

/// Calls `path` on `conn` and returns the answer's one message, still encoded.
async fn unary_encoded<Req: Message>(
    conn: Conn,
    path: &'static str,
    request: tonic::Request<Req>,
) -> Result<tonic::Response<Bytes>, Status> {
    let (metadata, _, message) = request.into_parts();
    let mut headers = metadata.into_headers();
    for name in &NOT_FORWARDED {
        headers.remove(name);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let call = UnaryRequest {
        path: Bytes::from_static(path.as_bytes()),
        headers,
        body: grpc_frame::encode(&message)?,
    };
    let response = conn.unary(call).await.map_err(call_failed)?;
    // etcd answers an error with its status in the headers and no message.
    if let Some(status) = Status::from_header_map(&response.headers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    check_status(response.trailers.as_ref(), response.status)?;
    let message = message_of(&response.body)?;
    let metadata = MetadataMap::from_headers(response.headers);
    Ok(tonic::Response::from_parts(
        metadata,
        message,
        Extensions::new(),
    ))
}

/// A call that got no answer, as tonic reports a failure of its connection: a call that never
/// left is a connection error (`errors::retryable` may send even a write elsewhere), one that
/// may have reached the member a broken connection.
fn call_failed(e: CallError) -> Status {
    let message = e.to_string();
    let source: Box<dyn std::error::Error + Send + Sync> = match e {
        CallError::NotSent(why) => Box::new(tonic::ConnectError(why.into())),
        CallError::Failed(why) => Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            why,
        )),
    };
    let mut status = Status::unavailable(message);
    status.set_source(source.into());
    status
}

/// The call's status from its trailers; without one, from the HTTP status as gRPC maps it.
fn check_status(trailers: Option<&HeaderMap>, http: StatusCode) -> Result<(), Status> {
    if let Some(status) = trailers.and_then(Status::from_header_map) {
        return match status.code() {
            Code::Ok => Ok(()),
            _ => Err(status),
        };
    }
    let code = match http {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Err(Status::new(
        code,
        format!("the member's answer had no grpc-status (HTTP {http})"),
    ))
}

/// The answer's one message, still encoded.
fn message_of(body: &Bytes) -> Result<Bytes, Status> {
    grpc_frame::one_message_bytes(body).ok_or_else(not_one_message)
}

fn decode<M: Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|_| not_one_message())
}

fn not_one_message() -> Status {
    Status::internal("the member's answer was not one uncompressed message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use keygate_proto::etcdserverpb::PutResponse;

    fn one_message<M: Message + Default>(body: &Bytes) -> Result<M, Status> {
        decode(message_of(body)?)
    }

    fn framed(flag: u8, message: &[u8], declared: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(flag);
        b.put_u32(declared);
        b.put_slice(message);
        b.freeze()
    }

    #[test]
    fn a_framed_message_decodes_back() {
        let response = PutResponse {
            prev_kv: None,
            header: None,
        };
        let bytes = grpc_frame::encode(&response).expect("encodes");
        assert_eq!(bytes.len(), grpc_frame::PREFIX);
        assert_eq!(one_message::<PutResponse>(&bytes).ok(), Some(response));
    }

    #[test]
    fn answers_that_are_not_one_plain_message_are_internal_errors() {
        for body in [
            Bytes::new(),
            framed(0, &[], 3),
            framed(1, &[], 0),
            framed(0, &[0xff, 0xff], 2),
        ] {
            let code = one_message::<PutResponse>(&body).err().map(|s| s.code());
            assert_eq!(code, Some(Code::Internal));
        }
    }

    #[test]
    fn the_status_comes_from_the_trailers_or_else_the_http_status() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_status(Some(&trailers), StatusCode::OK).is_ok());
        trailers.insert("grpc-status", HeaderValue::from_static("8"));
        trailers.insert("grpc-message", HeaderValue::from_static("too%20many"));
        let status = check_status(Some(&trailers), StatusCode::OK).err();
        let status = status.map(|s| (s.code(), s.message().to_string()));
        assert_eq!(status, Some((Code::ResourceExhausted, "too many".into())));
        let code = |http| check_status(None, http).err().map(|s| s.code());
        assert_eq!(
            code(StatusCode::SERVICE_UNAVAILABLE),
            Some(Code::Unavailable)
        );
        assert_eq!(code(StatusCode::OK), Some(Code::Unknown));
    }
}
