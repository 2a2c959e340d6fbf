//! A request's header block into a `RequestHead`, refusing what HTTP/2 calls malformed
//! (RFC 9113, 8.1.1): missing or repeated pseudo-headers, pseudo-headers after regular ones or
//! in trailers, uppercase or connection-specific names, values with control characters.

use super::RequestHead;
use crate::h2::hpack::Name;
use crate::h2::writer::is_connection_specific;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Uri};

/// A header block's fields as they are decoded.
#[derive(Default)]
pub struct Fields {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    pub headers: HeaderMap,
    regular: bool,
    pseudo: bool,
    pub malformed: Option<&'static str>,
}

impl Fields {
    pub fn add(&mut self, name: Name, value: Bytes) {
        if self.malformed.is_some() {
            return;
        }
        let slot = match name {
            Name::Method => &mut self.method,
            Name::Scheme => &mut self.scheme,
            Name::Authority => &mut self.authority,
            Name::Path => &mut self.path,
            Name::Status => return self.refuse(":status in a request"),
            Name::Invalid(_) => return self.refuse("an invalid header name"),
            Name::Header(name) => return self.regular(name, value),
        };
        if self.regular {
            return self.refuse("a pseudo-header after a regular header");
        }
        if slot.is_some() {
            return self.refuse("a repeated pseudo-header");
        }
        *slot = Some(value);
        self.pseudo = true;
    }

    fn regular(&mut self, name: HeaderName, value: Bytes) {
        self.regular = true;
        if is_connection_specific(&name) {
            return self.refuse("a connection-specific header");
        }
        if name == header::TE && value.as_ref() != b"trailers" {
            return self.refuse("te other than trailers");
        }
        match HeaderValue::from_maybe_shared(value) {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(_) => self.refuse("a header value with control characters"),
        }
    }

    fn refuse(&mut self, why: &'static str) {
        self.malformed.get_or_insert(why);
    }

    /// The request's head; `Err` with why it is malformed.
    pub fn into_head(self) -> Result<RequestHead, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let method = self.method.ok_or("no :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "an invalid :method")?;
        if method == Method::CONNECT {
            return Err("CONNECT is not served");
        }
        let scheme = self.scheme.ok_or("no :scheme")?;
        let path = self.path.filter(|p| !p.is_empty()).ok_or("no :path")?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::try_from(&scheme[..]).map_err(|_| "an invalid :scheme")?);
        parts.authority = match self.authority {
            Some(a) => Some(Authority::from_maybe_shared(a).map_err(|_| "an invalid :authority")?),
            None => None,
        };
        parts.path_and_query =
            Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "an invalid :path")?);
        let uri = Uri::from_parts(parts).map_err(|_| "an invalid request URI")?;
        Ok(RequestHead {
            method,
            uri,
            headers: self.headers,
        })
    }

    /// The block as trailers: regular fields only.
    pub fn into_trailers(self) -> Result<HeaderMap, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        if self.pseudo {
            return Err("a pseudo-header in trailers");
        }
        Ok(self.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (n, v) in list {
            f.add(
                Name::parse(n.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            );
        }
        f
    }

    const GOOD: [(&str, &str); 5] = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.KV/Range"),
        (":authority", "127.0.0.1:2379"),
        ("content-type", "application/grpc"),
    ];

    #[test]
    fn a_grpc_request_is_read() {
        let head = fields(&GOOD).into_head().expect("well formed");
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri.path(), "/etcdserverpb.KV/Range");
        assert_eq!(
            head.uri.authority().map(|a| a.as_str()),
            Some("127.0.0.1:2379")
        );
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            GOOD[1..].to_vec(),                           // no :method
            vec![GOOD[0], GOOD[1], GOOD[3]],              // no :path
            [&GOOD[..], &[(":path", "/again")]].concat(), // pseudo after regular
            [&GOOD[..2], &GOOD[..]].concat(),             // repeated
            [&GOOD[..], &[("connection", "close")]].concat(),
            [&GOOD[..], &[("te", "gzip")]].concat(),
            [&GOOD[..], &[("X-Upper", "1")]].concat(),
            [&GOOD[..], &[("x-bad", "a\nb")]].concat(),
            vec![(":status", "200")],
            vec![(":method", "CONNECT"), (":authority", "a:1")],
        ];
        for case in cases {
            assert!(fields(&case).into_head().is_err(), "{case:?}");
        }
        assert!(fields(&[("te", "trailers")]).into_trailers().is_ok());
        assert!(fields(&GOOD).into_trailers().is_err());
    }
}
