//! Code generated from `proto/lextral/v1`: messages, clients and servers.

/// The `lextral.v1` package.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    tonic::include_proto!("lextral.v1");
}

/// Encoded `FileDescriptorSet` of every Lextral proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lextral_descriptor.bin"));
