//! The OpenAPI document's schemas are the types': generated with schemars
//! and compared with `openapi.json`. `VERGE_BLESS=1` rewrites the
//! document's `components.schemas` instead of failing.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::*;

/// The schemas of every type on the wire, by name.
fn generated() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    macro_rules! register {
        ($($t:ty),* $(,)?) => { $( generator.subschema_for::<$t>(); )* };
    }
    register!(
        ErrorBody,
        Health,
        WhoAmI,
        ComponentStored,
        WorkerList,
        Worker,
        VersionList,
        NewVersion,
        Deployed,
        Rollback,
        RolledBack,
        Schedules,
        RunSchedule,
        ScheduleRan,
        SecretList,
        SecretValue,
        NamespaceList,
        NewNamespace,
        NamespaceCreated,
        KeyPage,
        ValueWritten,
        ValueDeleted,
        BulkPair,
        BulkWritten,
        TailScope,
        TailEvent,
        TailDropped,
    );
    generator.take_definitions(true)
}

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_documents_schemas_are_generated_from_the_types() {
    let generated = Value::Object(generated());
    let mut doc = document();
    if doc["components"]["schemas"] == generated {
        return;
    }
    if std::env::var_os("VERGE_BLESS").is_some() {
        doc["components"]["schemas"] = generated;
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        std::fs::write(PATH, text).expect("write openapi.json");
        return;
    }
    let documented = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let generated = generated.as_object().unwrap();
    let differ: std::collections::BTreeSet<&String> = generated
        .keys()
        .chain(documented.keys())
        .filter(|name| generated.get(*name) != documented.get(*name))
        .collect();
    panic!(
        "openapi.json's components.schemas differ from the types for {differ:?}\n  help: run \
         `VERGE_BLESS=1 cargo test -p verge-api` and review the diff"
    );
}

/// Every JSON body in the document is one of the generated schemas (or an
/// array of them), so no body is described by hand.
#[test]
fn every_json_body_refers_to_a_generated_schema() {
    let doc = document();
    let names = generated();
    let mut used = std::collections::BTreeSet::new();
    let mut check = |at: String, schema: &Value| {
        let schema = match schema.get("items") {
            Some(items) if schema["type"] == "array" => items,
            _ => schema,
        };
        if schema.get("type").is_some_and(|t| t == "string") {
            return; // An array of keys.
        }
        let reference = schema["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: a JSON body must be a $ref to a generated schema"));
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{at}: {reference} is not a component schema"));
        assert!(names.contains_key(name), "{at}: no type named {name}");
        used.insert(name.to_string());
    };
    let json_bodies = |op: &Value| -> Vec<(String, Value)> {
        let mut bodies = Vec::new();
        if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
            bodies.push(("request".to_string(), schema.clone()));
        }
        for (status, response) in op["responses"].as_object().into_iter().flatten() {
            if let Some(schema) = response.pointer("/content/application~1json/schema") {
                bodies.push((status.clone(), schema.clone()));
            }
            // A stream of server-sent events names each event's data.
            for (event, schema) in response["x-events"].as_object().into_iter().flatten() {
                bodies.push((format!("{status} event {event}"), schema.clone()));
            }
        }
        bodies
    };
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            if path == "/openapi.json" || method == "parameters" {
                continue;
            }
            for (what, schema) in json_bodies(op) {
                check(format!("{method} {path} {what}"), &schema);
            }
        }
    }
    for (name, response) in doc["components"]["responses"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if let Some(schema) = response.pointer("/content/application~1json/schema") {
            check(format!("response {name}"), schema);
        }
    }
    // And the schemas those refer to.
    let mut pending: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        let text = names[&name].to_string();
        for (at, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[at + "#/components/schemas/".len()..];
            let inner = rest[..rest.find('"').unwrap()].to_string();
            if used.insert(inner.clone()) {
                pending.push(inner);
            }
        }
    }
    let unused: Vec<&String> = names.keys().filter(|n| !used.contains(*n)).collect();
    assert!(unused.is_empty(), "types no route uses: {unused:?}");
}

#[test]
fn the_document_follows_openapi_3() {
    let _: openapiv3::OpenAPI =
        serde_json::from_str(OPENAPI).expect("openapi.json follows OpenAPI 3.0");
    // Every reference points at something the document defines.
    let doc = document();
    let marker = "\"$ref\": \"#";
    for (at, _) in OPENAPI.match_indices(marker) {
        let rest = &OPENAPI[at + marker.len()..];
        let target = &rest[..rest.find('"').unwrap()];
        assert!(doc.pointer(target).is_some(), "dangling $ref #{target}");
    }
}

#[test]
fn error_codes_round_trip_and_unknown_ones_are_kept_apart() {
    for (code, wire) in [
        (ErrorCode::Invalid, "invalid"),
        (ErrorCode::KeyNotFound, "key_not_found"),
        (ErrorCode::StoreUnavailable, "store_unavailable"),
    ] {
        let text = serde_json::to_string(&code).unwrap();
        assert_eq!(text, format!("\"{wire}\""));
        assert_eq!(serde_json::from_str::<ErrorCode>(&text).unwrap(), code);
    }
    let newer: ErrorCode = serde_json::from_str("\"rate_limited\"").unwrap();
    assert_eq!(newer, ErrorCode::Unknown);
}
