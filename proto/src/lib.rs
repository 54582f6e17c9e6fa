//! MUTR's gRPC wire contract: the `mutr` protobuf package, with the tonic client (used by the API)
//! and server (implemented by the AI server), generated at build time without a system `protoc`.

#![forbid(unsafe_code)]

/// Generated types and services of the `mutr` protobuf package.
pub mod mutr {
    tonic::include_proto!("mutr");
}

pub use mutr::analysis_service_client::AnalysisServiceClient;
pub use mutr::analysis_service_server::{AnalysisService, AnalysisServiceServer};
pub use mutr::{AnalysisRequest, AnalysisResponse};

/// Encoded `FileDescriptorSet` of `mutr.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mutr_descriptor.bin"));

/// Fully qualified gRPC service name, as used by `grpc.health.v1` and reflection.
pub const ANALYSIS_SERVICE_NAME: &str = "mutr.AnalysisService";
