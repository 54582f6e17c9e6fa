//! Pins the protobuf wire format of `mutr.AnalysisService` to CONTRACT.md: the expected bytes are
//! written out by hand from the field numbers and wire types, so renumbering or retyping a field
//! fails this test (and with it the build in CI).

use mutr_proto::{AnalysisRequest, AnalysisResponse};
use prost::Message;

#[test]
fn analysis_request_field_numbers() {
    let request = AnalysisRequest {
        content: "hi".into(),
        parent_topic: "p".into(),
        baseline_topic: "b".into(),
        full_context: "ctx".into(),
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x0a, 2, b'h', b'i',          // field 1 (content), wire type 2 (length-delimited)
        0x12, 1, b'p',                // field 2 (parent_topic)
        0x1a, 1, b'b',                // field 3 (baseline_topic)
        0x22, 3, b'c', b't', b'x',    // field 4 (full_context)
    ];
    assert_eq!(request.encode_to_vec(), expected);
    assert_eq!(AnalysisRequest::decode(expected).unwrap(), request);
}

#[test]
fn analysis_response_field_numbers() {
    let response = AnalysisResponse {
        topic: "봄".into(),
        emotion: "joy".into(),
        confidence: 0.5,
        mutation_score: 1.0,
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x0a, 3, 0xeb, 0xb4, 0x84,        // field 1 (topic), UTF-8 of "봄"
        0x12, 3, b'j', b'o', b'y',        // field 2 (emotion)
        0x1d, 0x00, 0x00, 0x00, 0x3f,     // field 3 (confidence), wire type 5 (fixed32): 0.5f32 LE
        0x25, 0x00, 0x00, 0x80, 0x3f,     // field 4 (mutation_score), fixed32: 1.0f32 LE
    ];
    assert_eq!(response.encode_to_vec(), expected);
    assert_eq!(AnalysisResponse::decode(expected).unwrap(), response);
}

#[test]
fn empty_messages_encode_to_nothing() {
    // proto3 omits default values: an old client that sends nothing but `content` still decodes.
    assert!(AnalysisRequest::default().encode_to_vec().is_empty());
    let only_content = [0x0a, 1, b'x'];
    let decoded = AnalysisRequest::decode(&only_content[..]).unwrap();
    assert_eq!(decoded.content, "x");
    assert!(decoded.parent_topic.is_empty());
}

#[test]
fn descriptor_set_describes_the_service() {
    // Reflection serves this set; it must name the service existing clients call.
    let fds = prost_types::FileDescriptorSet::decode(mutr_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = fds
        .file
        .iter()
        .find(|f| f.package() == "mutr")
        .expect("package mutr");
    let service = &file.service[0];
    assert_eq!(
        format!("{}.{}", file.package(), service.name()),
        mutr_proto::ANALYSIS_SERVICE_NAME
    );
    assert_eq!(service.method[0].name(), "AnalyzeNode");
}
