//! HPACK (RFC 7541), the header compression of HTTP/2: a complete decoder, and an encoder that
//! indexes only the fields that repeat on every response.

mod decoder;
mod encoder;
mod huffman;
mod table;

#[cfg(test)]
mod random_tests;

pub use decoder::{DecodeError, Decoder};
pub use encoder::Encoder;
pub use table::Name;
