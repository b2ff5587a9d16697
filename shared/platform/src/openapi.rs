//! What every distlab OpenAPI document says about errors, added in one place so that no route can forget
//! it: the shared extractors ([`crate::Json`], [`crate::Path`], [`crate::Query`]) refuse malformed JSON
//! (400), a wrong content type (415), a body over the limit (413) and a body or value of the wrong shape
//! (422); a handler that needs a database or another service answers 503 when it is down. Each of these is
//! documented on every operation it can come from, with the shared error body. A handler documents its own
//! other errors (404, 409, …) itself.

use serde_json::{Value, json};

/// `#/components/schemas/ErrorBody`, the body of every error.
const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// Adds the shared errors to every operation of `doc` that lacks them.
pub fn document_shared_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let path_parameters = item.get("parameters").is_some_and(non_empty);
        for (method, operation) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            let has_body = operation.get("requestBody").is_some();
            let has_parameters =
                path_parameters || operation.get("parameters").is_some_and(non_empty);
            let mut shared = Vec::new();
            if has_body {
                shared.extend([
                    (
                        "400",
                        "The body is not JSON (`malformed_json`), or a value cannot be read.",
                    ),
                    ("413", "The body is over the limit (`payload_too_large`)."),
                    (
                        "415",
                        "The body is not `application/json` (`unsupported_media_type`).",
                    ),
                    (
                        "422",
                        "The body has the wrong shape or breaks a rule; every bad field is named.",
                    ),
                ]);
            }
            if has_parameters {
                shared.extend([
                    ("400", "A path or query value cannot be read."),
                    ("422", "A path or query value breaks a rule."),
                ]);
            }
            shared.push((
                "503",
                "A dependency (database, broker, coordinator, lock store, quorum) is unavailable; \
                 `Retry-After` says when to try again.",
            ));
            let Some(responses) = operation
                .as_object_mut()
                .map(|o| o.entry("responses").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, description) in shared {
                responses.entry(status).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}}
                    })
                });
            }
        }
    }
}

fn non_empty(value: &Value) -> bool {
    value.as_array().is_some_and(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_errors_are_added_where_they_can_happen_and_nothing_is_overwritten() {
        let mut doc = json!({"paths": {
            "/things/{id}": {
                "parameters": [{"name": "id", "in": "path"}],
                "get": {"responses": {"200": {"description": "the thing"}}},
                "put": {"requestBody": {}, "responses": {"422": {"description": "own"}}}
            },
            "/health": {"get": {"responses": {"200": {"description": "ok"}}}}
        }});
        document_shared_errors(&mut doc);
        let codes = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(codes("/things/{id}", "get"), ["200", "400", "422", "503"]);
        assert_eq!(
            codes("/things/{id}", "put"),
            ["400", "413", "415", "422", "503"]
        );
        assert_eq!(
            doc["paths"]["/things/{id}"]["put"]["responses"]["422"]["description"],
            "own"
        );
        assert_eq!(codes("/health", "get"), ["200", "503"]);
        assert_eq!(
            doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
                ["$ref"],
            ERROR_BODY
        );
    }
}
