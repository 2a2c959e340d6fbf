//! A Range answer as the request path carries it: decoded (to be rewritten for a tenant, or
//! for a caller that needs the message), or as an encoded RangeResponse — the mirror's,
//! possibly from its LIST cache, or etcd's own for a forwarded Range — which goes to the
//! client as it is.

use crate::namespace::{Namespace, Strip};
use crate::revision::Revisioned;
use bytes::{Buf, BufMut, Bytes};
use keygate_proto::etcdserverpb::{RangeResponse, ResponseHeader};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::Status;

#[derive(Clone, Debug)]
pub enum RangeAnswer {
    Decoded(RangeResponse),
    /// The bytes of an encoded RangeResponse, and its header's revision.
    Encoded {
        bytes: Bytes,
        revision: i64,
    },
}

impl Default for RangeAnswer {
    fn default() -> Self {
        RangeAnswer::Decoded(RangeResponse::default())
    }
}

/// A RangeResponse read for its header alone: the keys that follow are skipped, not decoded.
#[derive(Clone, PartialEq, Message)]
struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

impl RangeAnswer {
    /// An answer etcd encoded, kept as it is; decoded only when it has no header to take the
    /// revision from.
    pub fn from_encoded(bytes: Bytes) -> Result<RangeAnswer, DecodeError> {
        match HeaderOnly::decode(bytes.clone())?.header {
            Some(header) => Ok(RangeAnswer::Encoded {
                bytes,
                revision: header.revision,
            }),
            None => Ok(RangeAnswer::Decoded(RangeResponse::decode(bytes)?)),
        }
    }

    /// The answer as a RangeResponse.
    pub fn decoded(self) -> Result<RangeResponse, Status> {
        match self {
            RangeAnswer::Decoded(resp) => Ok(resp),
            RangeAnswer::Encoded { bytes, .. } => RangeResponse::decode(bytes)
                .map_err(|e| Status::internal(format!("re-reading the mirror's answer: {e}"))),
        }
    }
}

/// Encodes as the RangeResponse it holds (encoded bytes are written as they are).
impl Message for RangeAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            RangeAnswer::Decoded(resp) => resp.encode_raw(buf),
            RangeAnswer::Encoded { bytes, .. } => buf.put_slice(bytes),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if let RangeAnswer::Encoded { bytes, .. } = self {
            *self = RangeAnswer::Decoded(RangeResponse::decode(bytes.clone())?);
        }
        match self {
            RangeAnswer::Decoded(resp) => resp.merge_field(tag, wire_type, buf, ctx),
            RangeAnswer::Encoded { .. } => Ok(()),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            RangeAnswer::Decoded(resp) => resp.encoded_len(),
            RangeAnswer::Encoded { bytes, .. } => bytes.len(),
        }
    }

    fn clear(&mut self) {
        *self = RangeAnswer::default();
    }
}

impl Revisioned for RangeAnswer {
    fn revision(&self) -> Option<i64> {
        match self {
            RangeAnswer::Decoded(resp) => resp.revision(),
            RangeAnswer::Encoded { revision, .. } => Some(*revision),
        }
    }
}

impl Strip for RangeAnswer {
    fn strip(&mut self, ns: &Namespace) -> Result<(), Status> {
        let mut resp = std::mem::take(self).decoded()?;
        resp.strip(ns)?;
        *self = RangeAnswer::Decoded(resp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_proto::mvccpb::KeyValue;

    #[test]
    fn encoded_and_decoded_answers_are_the_same_bytes() {
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            }],
            count: 1,
            more: false,
        };
        let bytes = Bytes::from(resp.encode_to_vec());
        let encoded = RangeAnswer::Encoded {
            bytes: bytes.clone(),
            revision: 7,
        };
        assert_eq!(encoded.encode_to_vec(), bytes.to_vec());
        assert_eq!(encoded.encoded_len(), bytes.len());
        assert_eq!(encoded.revision(), Some(7));
        assert_eq!(encoded.decoded().expect("decodes"), resp);
        let decoded = RangeAnswer::Decoded(resp);
        assert_eq!(decoded.encode_to_vec(), bytes.to_vec());
    }

    #[test]
    fn an_answer_from_etcd_is_kept_as_its_bytes_with_its_header_revision() {
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                revision: 42,
                ..Default::default()
            }),
            kvs: (0..3)
                .map(|i| KeyValue {
                    key: Bytes::from(format!("k{i}")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })
                .collect(),
            count: 3,
            more: true,
        };
        let bytes = Bytes::from(resp.encode_to_vec());
        match RangeAnswer::from_encoded(bytes.clone()).expect("decodes") {
            RangeAnswer::Encoded {
                bytes: kept,
                revision,
            } => {
                assert_eq!(kept, bytes);
                assert_eq!(revision, 42);
            }
            RangeAnswer::Decoded(_) => panic!("an answer with a header is kept encoded"),
        }
        // Without a header there is no revision to carry: decoded.
        let headless = RangeResponse {
            header: None,
            ..resp.clone()
        };
        let answer = RangeAnswer::from_encoded(headless.encode_to_vec().into()).expect("decodes");
        assert!(matches!(answer, RangeAnswer::Decoded(r) if r == headless));
        // Bytes that are not a RangeResponse are refused.
        assert!(RangeAnswer::from_encoded(Bytes::from_static(b"\x0a\xff")).is_err());
    }
}
