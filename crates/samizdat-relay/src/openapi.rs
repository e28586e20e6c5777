//! The relay's OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes
//! and the wire types of `samizdat-proto` (their `ToSchema` derives follow the serde
//! attributes), so it cannot drift from the code. Served at `/v1/openapi.json`;
//! `docs/openapi.json` is a copy that a test keeps identical (regenerate it with
//! `SAMIZDAT_WRITE_OPENAPI=1 cargo nextest run -p samizdat-relay openapi`); CI runs
//! schemathesis against a real relay from it.

use utoipa::OpenApi;

/// A raw byte body (blob pieces and downloads).
pub(crate) struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// Refusals any route may answer besides its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Rejected {
    #[response(status = 400, description = "malformed request")]
    BadRequest(samizdat_proto::ErrorBody),
    #[response(status = 429, description = "rate limited or quota exceeded")]
    RateLimited(samizdat_proto::ErrorBody),
    #[response(
        status = 503,
        description = "relay unavailable (shutting down or storage failure)"
    )]
    Unavailable(samizdat_proto::ErrorBody),
}

/// A JSON body over the relay's limit.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
#[response(status = 413, description = "body too large")]
pub(crate) struct TooLarge(samizdat_proto::ErrorBody);

/// What only an owner-signed mailbox route refuses with (with `Rejected` and `TooLarge`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum OwnerRefusals {
    #[response(
        status = 401,
        description = "missing, wrong, stale or replayed signature"
    )]
    Unsigned(samizdat_proto::ErrorBody),
    #[response(status = 404, description = "no such mailbox")]
    NotFound(samizdat_proto::ErrorBody),
}

/// The owner signature of a mailbox request (docs/PROTOCOL.md "Owner signatures").
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct OwnerSigned {
    /// Unix seconds when the request was signed.
    #[param(rename = "x-samizdat-timestamp")]
    timestamp: u64,
    /// A fresh random nonce.
    #[param(rename = "x-samizdat-nonce")]
    nonce: samizdat_proto::Id,
    /// Ed25519 signature by the mailbox's owner key.
    #[param(rename = "x-samizdat-signature")]
    signature: samizdat_proto::Bytes,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Samizdat relay",
        version = "1",
        description = "The HTTP API of a Samizdat relay. All binary values are unpadded base64url. Every error is a JSON {code, message}. See docs/PROTOCOL.md."
    ),
    paths(
        crate::http::healthz,
        crate::http::create_mailbox,
        crate::http::drop_message,
        crate::http::read_mailbox,
        crate::http::ack,
        crate::http::upload_key_packages,
        crate::http::key_package_count,
        crate::http::claim_key_package,
        crate::http::create_group,
        crate::http::append,
        crate::http::read_entries,
        crate::http::turn_credentials,
        crate::ws::upgrade,
        crate::blobs::create,
        crate::blobs::offset,
        crate::blobs::append,
        crate::blobs::download,
        crate::channels::store_record,
        crate::channels::head,
        crate::channels::segment,
    )
)]
struct ApiDoc;

/// The document as served (pretty JSON, with a final newline).
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the generated document, byte for byte.
    #[test]
    fn openapi_json_in_docs_is_the_generated_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::document();
        if std::env::var("SAMIZDAT_WRITE_OPENAPI").is_ok() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).expect("read docs/openapi.json");
        assert!(
            committed == generated,
            "docs/openapi.json differs from the document generated from the code; regenerate it with SAMIZDAT_WRITE_OPENAPI=1 cargo nextest run -p samizdat-relay openapi"
        );
    }
}
