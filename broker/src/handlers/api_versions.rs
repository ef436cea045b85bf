//! ApiVersions: the table of `SUPPORTED` versions. A client asking with a newer version than
//! we know gets UNSUPPORTED_VERSION in a v0 response carrying the table (KIP-511), so it can
//! retry with one we speak.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use sluice_proto::request::RequestFrame;

use super::{encode, Dispatch, SUPPORTED};

pub(crate) fn response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|&(api, min, max)| {
                    ApiVersion::default()
                        .with_api_key(api as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}

pub(crate) fn handle(frame: &RequestFrame) -> Dispatch {
    let (version, corr) = (frame.version(), frame.correlation_id());
    let (body, at) = if super::supported(ApiKey::ApiVersions, version) {
        (response(0), version)
    } else {
        (response(ResponseError::UnsupportedVersion.code()), 0)
    };
    let out = encode(ApiKey::ApiVersions, at, corr, &body);
    Dispatch::Respond(Box::pin(async move { out }))
}
