//! The OpenAPI 3 document: generated from the handlers (utoipa), completed here with the title,
//! version and security scheme. `docs/openapi.json` is a snapshot a test keeps in sync.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};

/// Adds the document's info and the bearer-token security scheme.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    doc.info = InfoBuilder::new()
        .title("Warren API")
        .version("1")
        .description(Some(
            "Warren's control-plane API. Authenticate with `Authorization: Bearer <token>`. \
             Errors are JSON `{code, message, hint}` with a stable `code`.",
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("wrn_<id>_<secret>")
                .build(),
        ),
    );
    doc
}
