//! The OpenAPI document (`GET /v1/openapi.json`) and the docs page (`GET /docs`) on a real
//! server: the document is 3.1 and lists every route of `v1_router` (read from routes.rs itself,
//! so a new route without `#[utoipa::path]` fails here), every documented operation exists, the
//! golden fixtures used as examples and real responses validate against their schemas, and the
//! page and its assets are served with a strict CSP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{TestServer, on_each_db};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ROUTES_RS: &str = include_str!("../../api/src/routes.rs");
/// Routes merged into `v1_router` from their own modules (`fn routes()` in each).
const MERGED_ROUTES: &[&str] = &[
    include_str!("../../api/src/lnurlw.rs"),
    include_str!("../../api/src/lnurlp.rs"),
    include_str!("../../api/src/lnurlp_pay.rs"),
    include_str!("../../api/src/nodes.rs"),
];
/// Routes merged at the root (not under `/v1`), from `fn well_known_routes()`.
const ROOT_ROUTES: &[&str] = &[include_str!("../../api/src/lnurlp.rs")];

/// (METHOD, path) of every route in `v1_router`, read from its source: each
/// `.route("/p", get(h).post(h2))` gives one pair per method call, paths prefixed with `/v1`.
fn v1_routes_from_source() -> BTreeSet<(String, String)> {
    let start = ROUTES_RS
        .find("pub fn v1_router()")
        .expect("v1_router in routes.rs");
    let body = &ROUTES_RS[start..];
    let body = &body[..body.find("\n}\n").expect("end of v1_router")];
    let mut bodies = vec![body.to_owned()];
    for src in MERGED_ROUTES {
        let start = src
            .find("pub fn routes()")
            .expect("fn routes() in a merged module");
        let b = &src[start..];
        bodies.push(b[..b.find("\n}\n").expect("end of routes()")].to_owned());
    }
    for src in ROOT_ROUTES {
        let start = src
            .find("pub fn well_known_routes()")
            .expect("fn well_known_routes()");
        let b = &src[start..];
        bodies.push(b[..b.find("\n}\n").expect("end of well_known_routes()")].to_owned());
    }
    let body = bodies.join("\n");
    let mut out = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let rest = chunk
            .trim_start()
            .strip_prefix('"')
            .expect("route path literal");
        let (path, handlers) = rest.split_once('"').expect("closing quote");
        // The handlers end where this `.route(…)` call closes: balance the parentheses.
        let mut depth = 1i32;
        let mut end = handlers.len();
        for (i, ch) in handlers.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let handlers = &handlers[..end];
        let mut found = false;
        for m in ["get", "post", "put", "patch", "delete"] {
            let bytes = handlers.as_bytes();
            let mut from = 0;
            while let Some(pos) = handlers[from..].find(&format!("{m}(")) {
                let at = from + pos;
                let before = if at == 0 { b' ' } else { bytes[at - 1] };
                if !(before.is_ascii_alphanumeric() || before == b'_') {
                    // `/.well-known/…` is served at the root (wallets derive it from addresses).
                    let full = if path.starts_with("/.well-known/") {
                        path.to_owned()
                    } else {
                        format!("/v1{path}")
                    };
                    out.insert((m.to_uppercase(), full));
                    found = true;
                }
                from = at + m.len();
            }
        }
        assert!(found, "no method router found for route {path}: {handlers}");
    }
    out
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

async fn fetch_doc(s: &TestServer) -> Value {
    let r = s.http.get(s.v1("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    serde_json::from_str(&r.text().await.unwrap()).expect("document is JSON")
}

// ---------------------------------------------------------------------------------------------
// A small JSON Schema (2020-12 subset) validator: the keywords the document uses.
// ---------------------------------------------------------------------------------------------

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..20 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                s = doc
                    .pointer(r.trim_start_matches('#'))
                    .expect("ref resolves")
            }
            None => break,
        }
    }
    s
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Validates `v` against `schema`; errors carry the JSON path. Objects may not carry properties
/// the schema does not list (when it lists any), so an example cannot hide a renamed field.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        // allOf (serde flatten): each part checks its own properties; unknown ones are judged
        // against the union of all parts.
        let mut known: BTreeSet<String> = BTreeSet::new();
        for part in all {
            let part = resolve(doc, part);
            if let Some(p) = part.get("properties").and_then(Value::as_object) {
                known.extend(p.keys().cloned());
            }
            let mut relaxed = part.clone();
            relaxed["x-allow-extra"] = json!(true);
            validate(doc, &relaxed, v, at, errors);
        }
        if let Some(obj) = v.as_object() {
            for k in obj.keys() {
                if !known.contains(k) {
                    errors.push(format!("{at}: property {k} is not in the schema"));
                }
            }
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let matching = alts
                .iter()
                .filter(|alt| {
                    let mut e = Vec::new();
                    validate(doc, alt, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "oneOf" {
                matching == 1
            } else {
                matching >= 1
            };
            if !ok {
                errors.push(format!("{at}: {matching} alternatives of {key} match {v}"));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| type_matches(t, v)) {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in {e:?}"));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        errors.push(format!("{at}: {n} < minimum {min}"));
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: required property {r} is missing"));
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(doc, ps, val, &format!("{at}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: additional property {k}"))
                    }
                    Some(ap @ Value::Object(_)) => {
                        validate(doc, ap, val, &format!("{at}.{k}"), errors)
                    }
                    _ if props.is_some() && schema.get("x-allow-extra").is_none() => {
                        errors.push(format!("{at}: property {k} is not in the schema"))
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let p = format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    );
    doc.pointer(&p)
        .unwrap_or_else(|| panic!("no schema for {method} {path} {status}"))
}

fn assert_valid(doc: &Value, method: &str, path: &str, status: &str, body: &Value) {
    let mut errors = Vec::new();
    validate(
        doc,
        response_schema(doc, method, path, status),
        body,
        "$",
        &mut errors,
    );
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match its schema: {errors:#?}\n{body:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn route_list_parser_reads_v1_router() {
    let routes = v1_routes_from_source();
    // Spot checks of the parser on known routes (a chained method router included).
    assert!(routes.contains(&("POST".into(), "/v1/wallet".into())));
    assert!(routes.contains(&("GET".into(), "/v1/webhooks".into())));
    assert!(routes.contains(&("POST".into(), "/v1/webhooks".into())));
    assert!(routes.contains(&("GET".into(), "/v1/openapi.json".into())));
    assert!(routes.len() >= 19, "{routes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_3_1_and_lists_every_route() {
    on_each_db(|s| async move {
        let doc = fetch_doc(&s).await;
        let version = doc["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "{version}");
        assert_eq!(doc["info"]["title"], "Satchel LNPay v1 API");

        // Every route of v1_router is documented, and nothing else is.
        let routes = v1_routes_from_source();
        let documented = documented_operations(&doc);
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");

        // Each documented operation answers on the live server (not the 404/405 of an
        // unknown route), keyless requests get the 401 envelope unless the operation is open.
        for (method, path) in &documented {
            let url = format!("{}{}", s.base, path.replace(['{', '}'], ""));
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = s.http.request(m, &url).send().await.unwrap();
            let op = &doc["paths"][path][method.to_lowercase()];
            let open = op["security"] == json!([{}]);
            if open {
                assert_eq!(r.status(), StatusCode::OK, "{method} {path}");
            } else {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }

        // The three key transports.
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes["api_key"],
            json!({"type": "apiKey", "in": "header", "name": "X-Api-Key",
                "description": schemes["api_key"]["description"]})
        );
        assert_eq!(schemes["access_token"]["in"], "query");
        assert_eq!(schemes["access_token"]["name"], "access-token");
        assert_eq!(schemes["basic"]["scheme"], "basic");
        assert_eq!(
            doc["security"],
            json!([{"api_key": []}, {"access_token": []}, {"basic": []}])
        );

        for (method, path) in &documented {
            let op = &doc["paths"][path][method.to_lowercase()];
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}: no success response"
            );
            for status in ["400", "404", "429", "500", "503"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorEnvelope",
                    "{method} {path} {status}"
                );
            }
            // Path parameters are declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
            // Bodies may be JSON or form-encoded, as `Params` parses.
            if method == "POST" && op.get("requestBody").is_some() {
                let content = op["requestBody"]["content"].as_object().unwrap();
                assert!(content.contains_key("application/json"), "{path}");
                assert!(
                    content.contains_key("application/x-www-form-urlencoded"),
                    "{path}"
                );
            }
        }
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_examples_validate_against_their_schemas() {
    on_each_db(|s| async move {
        let doc = fetch_doc(&s).await;
        let mut checked = 0;
        let mut names = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, resp) in op["responses"].as_object().unwrap() {
                    let Some(media) = resp["content"].get("application/json") else {
                        continue;
                    };
                    let mut values: Vec<(String, &Value)> = Vec::new();
                    if let Some(ex) = media.get("example") {
                        values.push(("example".into(), ex));
                    }
                    for (name, ex) in media["examples"].as_object().into_iter().flatten() {
                        names.insert(name.clone());
                        values.push((name.clone(), &ex["value"]));
                    }
                    for (name, value) in values {
                        let mut errors = Vec::new();
                        validate(&doc, &media["schema"], value, "$", &mut errors);
                        assert!(
                            errors.is_empty(),
                            "{method} {path} {status} example {name}: {errors:#?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        // Every golden fixture is an example somewhere, so none drifts unchecked.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let name = file.trim_end_matches(".json");
            assert!(
                names.contains(name),
                "golden {file} is not an example in the document"
            );
        }
        eprintln!("{checked} examples validated");
        assert!(checked >= 43, "{checked}");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_responses_validate_against_the_document() {
    on_each_db(|s| async move {
        let doc = fetch_doc(&s).await;
        let r = s
            .post(&s.sak, "/wallet", json!({"user_label": "Schema"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_valid(&doc, "post", "/v1/wallet", "201", &r.json);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let waka = r.json["access_keys"]["Wallet Admin"][0]
            .as_str()
            .unwrap()
            .to_owned();

        let r = s.get(&s.sak, &format!("/wallet/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_valid(&doc, "get", "/v1/wallet/{key}", "200", &r.json);

        let r = s.get(&s.sak, "/wallets").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_valid(&doc, "get", "/v1/wallets", "200", &r.json);

        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{waka}/invoice"),
                json!({"num_satoshis": 21, "memo": "schema", "passThru": {"a": 1}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_valid(&doc, "post", "/v1/wallet/{key}/invoice", "201", &r.json);
        let lntx = r.json["id"].as_str().unwrap().to_owned();

        let r = s.get(&s.sak, &format!("/lntx/{lntx}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_valid(&doc, "get", "/v1/lntx/{id}", "200", &r.json);

        let r = s.get(&s.sak, &format!("/wallet/{waka}/transactions")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_valid(&doc, "get", "/v1/wallet/{key}/transactions", "200", &r.json);

        // The error envelope, for a documented status.
        let r = s.get("sak_nope", "/wallets").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_valid(&doc, "get", "/v1/wallets", "401", &r.json);
        let r = s
            .post(&s.sak, &format!("/wallet/{waka}/withdraw"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_valid(&doc, "post", "/v1/wallet/{key}/withdraw", "400", &r.json);

        // A mismatch is caught (the validator is not vacuous).
        let mut bad = s.get(&s.sak, &format!("/wallet/{waka}")).await.json;
        bad["balance"] = json!("12");
        let mut errors = Vec::new();
        validate(
            &doc,
            response_schema(&doc, "get", "/v1/wallet/{key}", "200"),
            &bad,
            "$",
            &mut errors,
        );
        assert!(!errors.is_empty());
        bad.as_object_mut().unwrap().remove("balance");
        bad["balanse"] = json!(12);
        let mut errors = Vec::new();
        validate(
            &doc,
            response_schema(&doc, "get", "/v1/wallet/{key}", "200"),
            &bad,
            "$",
            &mut errors,
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_and_assets_are_served_with_a_strict_csp() {
    on_each_db(|s| async move {
        let r = s.http.get(format!("{}/docs", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(!csp.contains("http"), "no other origin: {csp}");
        let html = r.text().await.unwrap();
        // No inline script and nothing fetched from elsewhere.
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src=\"/docs/"), "inline script: {open}");
            assert!(tag[tag.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("style=\""));
        for (asset, ct, needle) in [
            ("/docs/docs.js", "text/javascript", "/v1/openapi.json"),
            ("/docs/docs.css", "text/css", "article.op"),
        ] {
            assert!(html.contains(asset), "{asset} linked");
            let r = s
                .http
                .get(format!("{}{asset}", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{asset}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(ct)
            );
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            let text = r.text().await.unwrap();
            assert!(text.contains(needle), "{asset}");
            assert!(!text.contains("https://") && !text.contains("http://"));
            assert!(!text.contains("innerHTML"));
        }
        s
    })
    .await;
}
