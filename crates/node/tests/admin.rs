//! The admin API's router in process, as axum's own examples test routers:
//! each request goes through `tower::ServiceExt::oneshot`, no socket, and
//! every answer is decoded into the `verge-api` type the CLI reads, so a
//! body that drifts from the contract fails here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use verge_api::{
    BulkPair, BulkWritten, ComponentStored, Deployed, ErrorBody, ErrorCode, Health, HealthStatus,
    KeyPage, NamespaceCreated, NewVersion, SecretList, ValueDeleted, ValueWritten, VersionList,
    WhoAmI, WorkerList,
};
use verge_node::admin::{AdminState, router};
use verge_node::config::AdminToken;
use verge_node::{ConfigLayer, Node, NodeConfig};
use verge_runtime::TracingSink;

const OPS: &str = "0123456789abcdef0123";
const VIEWER: &str = "fedcba9876543210fedc";

struct Admin {
    router: Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: {}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error's code, after checking the body is the API's error.
    fn code(&self) -> ErrorCode {
        let ErrorBody { error } = self.json();
        assert!(!error.message.is_empty());
        error.code
    }
}

async fn admin() -> Admin {
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str, token: &str, read_only| AdminToken {
        name: name.into(),
        token: token.into(),
        read_only,
    };
    let config = NodeConfig::from_layer(ConfigLayer {
        data_dir: Some(dir.path().to_path_buf()),
        admin_tokens: vec![token("ops", OPS, false), token("viewer", VIEWER, true)],
        ..ConfigLayer::default()
    })
    .unwrap();
    let stores = verge_node::sqlite_stores(dir.path(), Arc::new(verge_kv::SystemClock)).unwrap();
    let node = Node::start(config, stores, Arc::new(TracingSink))
        .await
        .unwrap();
    let data_addr: SocketAddr = "127.0.0.1:8787".parse().unwrap();
    Admin {
        router: router(Arc::new(AdminState { node, data_addr })),
        _dir: dir,
    }
}

impl Admin {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(OPS), &[], Body::empty())
            .await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, Some(OPS), &[], Body::empty())
            .await
    }

    async fn send(&self, method: Method, path: &str, body: &impl serde::Serialize) -> Answer {
        let json = serde_json::to_vec(body).unwrap();
        self.call(
            method,
            path,
            Some(OPS),
            &[("content-type", "application/json")],
            json,
        )
        .await
    }

    /// Stores the KV fixture and deploys it as `worker`.
    async fn deploy(&self, worker: &str, namespace: &str) -> Answer {
        let component = std::fs::read(verge_test_programs::KV_FIXTURE).unwrap();
        let hash = verge_runtime::component_hash(&component);
        let stored = self
            .call(
                Method::PUT,
                &format!("/v1/components/{hash}"),
                Some(OPS),
                &[],
                component,
            )
            .await;
        assert_eq!(stored.status, StatusCode::CREATED);
        let stored: ComponentStored = stored.json();
        assert_eq!(stored.hash, hash);
        let manifest = format!(
            "name = \"{worker}\"\ncomponent = \"kv_fixture.wasm\"\n\
             [[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"{namespace}\"\n"
        );
        let body = NewVersion {
            component: hash,
            manifest,
            percentage: None,
        };
        self.send(
            Method::POST,
            &format!("/v1/workers/{worker}/versions"),
            &body,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_whoami_answer_their_types() {
    let admin = admin().await;
    let health = admin
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let health: Health = health.json();
    assert_eq!((health.status, health.workers), (HealthStatus::Ok, 0));

    let me = admin
        .call(Method::GET, "/v1/whoami", Some(VIEWER), &[], Body::empty())
        .await;
    let me: WhoAmI = me.json();
    assert_eq!((me.token.as_str(), me.read_only), ("viewer", true));
    assert_eq!(me.store, "sqlite");
    assert_eq!(me.version, env!("CARGO_PKG_VERSION"));

    let document = admin
        .call(Method::GET, "/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(document.body, verge_api::OPENAPI.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_code_a_client_matches_on() {
    let admin = admin().await;
    let none = admin
        .call(Method::GET, "/v1/workers", None, &[], Body::empty())
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.code(), ErrorCode::Unauthorized);
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = admin
        .call(Method::GET, "/v1/workers", Some("nope"), &[], Body::empty())
        .await;
    assert_eq!(wrong.code(), ErrorCode::Unauthorized);

    let read_only = admin
        .call(
            Method::POST,
            "/v1/kv/namespaces",
            Some(VIEWER),
            &[("content-type", "application/json")],
            r#"{"name":"todos"}"#,
        )
        .await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    assert_eq!(read_only.code(), ErrorCode::Forbidden);

    let unknown = admin.get("/v1/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), ErrorCode::NotFound);
    let no_worker = admin.get("/v1/workers/ghost").await;
    assert_eq!(no_worker.code(), ErrorCode::NotFound);

    let bad_json = admin
        .call(
            Method::POST,
            "/v1/kv/namespaces",
            Some(OPS),
            &[("content-type", "application/json")],
            r#"{"name":"todos","extra":1}"#,
        )
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.code(), ErrorCode::Invalid);

    // A missing namespace and a missing key are told apart by code.
    let no_namespace = admin.get("/v1/kv/namespaces/nope/values/k").await;
    assert_eq!(no_namespace.status, StatusCode::NOT_FOUND);
    assert_eq!(no_namespace.code(), ErrorCode::NamespaceNotFound);
    let created = admin
        .send(
            Method::POST,
            "/v1/kv/namespaces",
            &verge_api::NewNamespace { name: "ns".into() },
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let no_key = admin.get("/v1/kv/namespaces/ns/values/k").await;
    assert_eq!(no_key.status, StatusCode::NOT_FOUND);
    assert_eq!(no_key.code(), ErrorCode::KeyNotFound);
    let delete_missing = admin.delete("/v1/kv/namespaces/nope").await;
    assert_eq!(delete_missing.code(), ErrorCode::NamespaceNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_answers_typed_versions_and_workers() {
    let admin = admin().await;
    let first = admin.deploy("shop", "carts").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let first: Deployed = first.json();
    assert_eq!(first.created_namespaces, ["carts"]);
    assert_eq!(first.url, "http://shop.localhost:8787");
    assert_eq!(first.version.traffic_percent, 100);
    assert_eq!(first.version.author, "ops");
    assert_eq!(first.deployment.stable, first.version.id);
    assert_eq!(first.deployment.traffic.len(), 1);
    assert!(first.deployment.canary.is_none());
    assert!(first.version.id.starts_with(&first.version.short_id));

    // The same component and manifest again: the same version, 200.
    let again = admin.deploy("shop", "carts").await;
    assert_eq!(again.status, StatusCode::OK);
    let again: Deployed = again.json();
    assert_eq!(again.version.id, first.version.id);
    assert!(again.created_namespaces.is_empty());

    let workers: WorkerList = admin.get("/v1/workers").await.json();
    assert_eq!(workers.workers.len(), 1);
    assert_eq!(workers.workers[0].name, "shop");
    assert_eq!(workers.workers[0].deployment, again.deployment);

    let versions: VersionList = admin.get("/v1/workers/shop/versions").await.json();
    assert_eq!(versions.versions, std::slice::from_ref(&first.version));

    // Nothing to roll back to: a refusal, not a change.
    let rollback = admin
        .send(
            Method::POST,
            "/v1/workers/shop/rollback",
            &verge_api::Rollback::default(),
        )
        .await;
    assert_eq!(rollback.status, StatusCode::BAD_REQUEST);
    assert_eq!(rollback.code(), ErrorCode::Invalid);

    // Secrets go in; only their names come out.
    let put = admin
        .send(
            Method::PUT,
            "/v1/workers/shop/secrets/API_KEY",
            &serde_json::json!({ "value": "s3cret-value" }),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let secrets = admin.get("/v1/workers/shop/secrets").await;
    assert!(!String::from_utf8_lossy(&secrets.body).contains("s3cret-value"));
    let secrets: SecretList = secrets.json();
    assert_eq!(secrets.secrets, ["API_KEY"]);

    // Secrets are bounded like [vars]: each value, and all together.
    let admin = &admin;
    let put_secret = |name: &str, value: String| {
        let path = format!("/v1/workers/shop/secrets/{name}");
        async move {
            admin
                .send(Method::PUT, &path, &serde_json::json!({ "value": value }))
                .await
        }
    };
    let too_big = put_secret("BIG", "x".repeat(verge_manifest::MAX_VAR_BYTES + 1)).await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_big.code(), ErrorCode::Invalid);
    for n in 0..15 {
        let put = put_secret(&format!("S{n}"), "y".repeat(4096)).await;
        assert_eq!(put.status, StatusCode::NO_CONTENT, "secret {n}");
    }
    let past_total = put_secret("S15", "y".repeat(4096)).await;
    assert_eq!(past_total.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&past_total.body).contains("the limit is 65536"),
        "{:?}",
        String::from_utf8_lossy(&past_total.body)
    );
    // Replacing one does not count it twice.
    let replaced = put_secret("S0", "y".repeat(4096)).await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routes_answer_typed_bodies_and_headers() {
    let admin = admin().await;
    let new = verge_api::NewNamespace {
        name: "todos".into(),
    };
    let created: NamespaceCreated = admin
        .send(Method::POST, "/v1/kv/namespaces", &new)
        .await
        .json();
    assert!(created.created);
    let existed = admin.send(Method::POST, "/v1/kv/namespaces", &new).await;
    assert_eq!(existed.status, StatusCode::OK);
    assert!(!existed.json::<NamespaceCreated>().created);

    let put = admin
        .call(
            Method::PUT,
            "/v1/kv/namespaces/todos/values/a?expiration_ttl=3600",
            Some(OPS),
            &[(verge_api::METADATA_HEADER, r#"{"done":false}"#)],
            "first",
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let written: ValueWritten = put.json();

    // An expiration no store can keep is refused, not stored as one that
    // has passed already.
    let far = admin
        .call(
            Method::PUT,
            "/v1/kv/namespaces/todos/values/far?expiration=18446744073709551615",
            Some(OPS),
            &[],
            "lost?",
        )
        .await;
    assert_eq!(far.status, StatusCode::BAD_REQUEST);
    assert_eq!(far.code(), ErrorCode::Invalid);
    assert!(String::from_utf8_lossy(&far.body).contains("9999-12-31"));
    let far = admin.get("/v1/kv/namespaces/todos/values/far").await;
    assert_eq!(far.code(), ErrorCode::KeyNotFound);

    // Any value KV takes, the API takes (25 MiB, past the 10 MiB of a
    // component); one byte more is KV's refusal, with its reason.
    let put_big = |len: usize| {
        admin.call(
            Method::PUT,
            "/v1/kv/namespaces/todos/values/big",
            Some(OPS),
            &[],
            vec![b'v'; len],
        )
    };
    let put = put_big(verge_kv::MAX_VALUE_BYTES).await;
    assert_eq!(
        put.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&put.body)
    );
    let big = admin.get("/v1/kv/namespaces/todos/values/big").await;
    assert_eq!(big.body.len(), verge_kv::MAX_VALUE_BYTES);
    let put = put_big(verge_kv::MAX_VALUE_BYTES + 1).await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
    let refusal = String::from_utf8_lossy(&put.body).into_owned();
    assert!(refusal.contains("26214401"), "{refusal}");
    admin.delete("/v1/kv/namespaces/todos/values/big").await;

    let got = admin.get("/v1/kv/namespaces/todos/values/a").await;
    assert_eq!(got.body, "first");
    assert_eq!(
        got.headers[verge_api::GENERATION_HEADER],
        written.generation.to_string()
    );
    assert_eq!(got.headers[verge_api::METADATA_HEADER], r#"{"done":false}"#);
    assert!(got.headers.contains_key(verge_api::EXPIRATION_HEADER));

    let pairs: Vec<BulkPair> = (0..3)
        .map(|i| BulkPair {
            key: format!("b{i}"),
            value: "aGk=".into(),
            expiration: None,
            expiration_ttl: None,
            metadata: None,
            base64: true,
        })
        .collect();
    let bulk: BulkWritten = admin
        .send(Method::PUT, "/v1/kv/namespaces/todos/bulk", &pairs)
        .await
        .json();
    assert_eq!(bulk.written, 3);
    assert_eq!(
        admin.get("/v1/kv/namespaces/todos/values/b1").await.body,
        "hi"
    );

    let page: KeyPage = admin
        .get("/v1/kv/namespaces/todos/keys?limit=2")
        .await
        .json();
    let names: Vec<&str> = page.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b0"]);
    assert!(!page.list_complete);
    assert_eq!(
        page.keys[0].metadata,
        Some(serde_json::json!({ "done": false }))
    );
    let cursor = page.cursor.expect("a cursor for the next page");
    let rest: KeyPage = admin
        .get(&format!(
            "/v1/kv/namespaces/todos/keys?cursor={}",
            form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
        ))
        .await
        .json();
    assert!(rest.list_complete);
    assert_eq!(rest.keys.len(), 2);

    let deleted: ValueDeleted = admin
        .delete("/v1/kv/namespaces/todos/values/a")
        .await
        .json();
    assert!(deleted.deleted);
    let again: ValueDeleted = admin
        .delete("/v1/kv/namespaces/todos/values/a")
        .await
        .json();
    assert!(!again.deleted);
}
