//! `docs/openapi.yaml` is the API's contract: it documents exactly the routes `template.yaml`
//! deploys, no more and no fewer, each behind the API key and with its transport errors.

use std::collections::BTreeSet;
use std::path::PathBuf;

use fcfs_template::{Placement, Template};
use yaml_serde::Value;

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn openapi() -> Value {
    let path = repo_file("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::from_str(&text).expect("docs/openapi.yaml is YAML")
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

#[test]
fn openapi_documents_exactly_the_template_routes() {
    let template = Template::load(
        &repo_file("template.yaml"),
        &Default::default(),
        Placement::local("http://127.0.0.1:4566", "us-east-1"),
    )
    .unwrap();
    let deployed: BTreeSet<(String, String)> = template
        .functions()
        .unwrap()
        .into_iter()
        .flat_map(|f| f.routes)
        .map(|r| (r.method.to_uppercase(), r.path))
        .collect();
    assert!(!deployed.is_empty(), "template.yaml declares routes");
    let doc = openapi();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1"
    );
    let paths = doc["paths"].as_mapping().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().unwrap().to_owned();
            METHODS
                .iter()
                .filter(move |m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let missing: Vec<_> = deployed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&deployed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes in template.yaml but not docs/openapi.yaml: {missing:?}; documented but not deployed: {extra:?}"
    );
}

#[test]
fn every_operation_is_behind_the_api_key_and_documents_its_transport_errors() {
    let doc = openapi();
    let uses_key_header = doc["components"]["securitySchemes"].as_mapping().is_some_and(|m| {
        m.values()
            .any(|s| s["type"] == "apiKey" && s["in"] == "header" && s["name"] == "X-API-KEY")
    });
    assert!(uses_key_header, "an apiKey security scheme on the X-API-KEY header");
    assert!(
        doc["security"].as_sequence().is_some_and(|s| !s.is_empty()),
        "security applies to every operation"
    );
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let responses = op["responses"].as_mapping().expect("responses");
            for status in ["401", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path:?} does not document {status}"
                );
            }
        }
    }
}
