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

/// Every method path (`/lextral.v1.Service/Method`) the Lextral protos
/// define, read from the embedded descriptor set.
pub fn method_paths() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    set.file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.iter().flat_map(move |service| {
                let package = package.clone();
                service
                    .method
                    .iter()
                    .map(move |method| format!("/{package}.{}/{}", service.name(), method.name()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn method_paths_come_from_the_descriptors() {
        let paths = super::method_paths();
        assert!(paths.contains(&"/lextral.v1.RetrieverService/Delete".to_owned()));
        assert!(paths.contains(&"/lextral.v1.OrchestratorService/Classify".to_owned()));
    }
}
