//! gRPC's framing of a message in an HTTP/2 body — a compression flag, a 4-byte length, the
//! message — for the paths that encode and decode bodies themselves: KV's direct server path
//! (`server/unary.rs`) and keygate's unary calls to the members (`upstream/unary.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;

/// The message prefix: the compression flag and the length.
pub const PREFIX: usize = 5;

/// The length a message prefix declares.
pub fn declared_len(bytes: &[u8]) -> Option<usize> {
    let len = bytes.get(1..PREFIX)?;
    let len = u32::from_be_bytes(len.try_into().ok()?);
    usize::try_from(len).ok()
}

/// The body's message when it is exactly one uncompressed message that decodes.
pub fn one_message<M: Message + Default>(bytes: &Bytes) -> Option<M> {
    let mut message = one_message_bytes(bytes)?;
    let decoded = M::decode(&mut message).ok()?;
    (!message.has_remaining()).then_some(decoded)
}

/// The encoded message of a body that is exactly one uncompressed message.
pub fn one_message_bytes(bytes: &Bytes) -> Option<Bytes> {
    let (&flag, _) = bytes.split_first()?;
    let len = declared_len(bytes)?;
    if flag != 0 || bytes.len() != PREFIX.checked_add(len)? {
        return None;
    }
    Some(bytes.slice(PREFIX..))
}

/// `message` framed as one uncompressed message.
pub fn encode<M: Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let declared =
        u32::try_from(len).map_err(|_| Status::internal("message too large to frame"))?;
    let mut data = BytesMut::with_capacity(PREFIX + len);
    data.put_u8(0);
    data.put_u32(declared);
    message
        .encode(&mut data)
        .map_err(|e| Status::internal(format!("encoding the message: {e}")))?;
    Ok(data.freeze())
}
