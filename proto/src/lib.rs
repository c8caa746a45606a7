//! Code generated from `proto/lextral/v1`: messages, clients and servers;
//! and the user-facing names of its enums.

pub mod names;

/// The `lextral.v1` package.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    tonic::include_proto!("lextral.v1");
}

/// Encoded `FileDescriptorSet` of every Lextral proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lextral_descriptor.bin"));

/// The most neighbours one `RetrieverService.Search` may ask for, and so
/// one kNN request: the contract's limit, checked by both services.
pub const MAX_SEARCH_K: u32 = 100;
