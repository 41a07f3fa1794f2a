//! `verge kv` on a project's local store, including beside a running
//! `verge dev` that serves from the same store.

mod common;

use std::process::Output;

use common::{Dev, run_with_stdin, verge};

fn kv(dir: &std::path::Path, args: &[&str]) -> Output {
    verge()
        .arg("kv")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn err(output: Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn keys_round_trip_and_list_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(err(kv(d, &["key", "list", "-n", "todos"])).contains("there is no local KV store"));
    ok(kv(d, &["namespace", "create", "todos"]));
    ok(kv(
        d,
        &[
            "key",
            "put",
            "a",
            "from an argument",
            "-n",
            "todos",
            "--metadata",
            "{\"v\":1}",
            "--ttl",
            "60",
        ],
    ));
    let file = d.join("value.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).unwrap();
    ok(kv(
        d,
        &[
            "key",
            "put",
            "b",
            "-n",
            "todos",
            "--path",
            file.to_str().unwrap(),
        ],
    ));
    let put = run_with_stdin(
        verge().args([
            "kv",
            "--dir",
            d.to_str().unwrap(),
            "key",
            "put",
            "c",
            "-n",
            "todos",
        ]),
        "from stdin",
    );
    assert!(put.status.success(), "{put:?}");

    assert_eq!(
        ok(kv(d, &["key", "get", "a", "-n", "todos"])),
        "from an argument"
    );
    assert_eq!(
        kv(d, &["key", "get", "b", "-n", "todos"]).stdout,
        [0u8, 1, 2, 255]
    );
    assert_eq!(ok(kv(d, &["key", "get", "c", "-n", "todos"])), "from stdin");
    let info: serde_json::Value =
        serde_json::from_str(&ok(kv(d, &["key", "get", "a", "-n", "todos", "--info"]))).unwrap();
    assert_eq!(info["metadata"]["v"], 1);
    assert!(info["expiration"].as_u64().is_some());

    let page: serde_json::Value =
        serde_json::from_str(&ok(kv(d, &["key", "list", "-n", "todos", "--limit", "2"]))).unwrap();
    assert_eq!(page["keys"][0]["name"], "a");
    assert_eq!(page["keys"][1]["name"], "b");
    assert_eq!(page["list_complete"], false);
    let cursor = page["cursor"].as_str().unwrap();
    let rest: serde_json::Value = serde_json::from_str(&ok(kv(
        d,
        &["key", "list", "-n", "todos", "--cursor", cursor],
    )))
    .unwrap();
    assert_eq!(rest["keys"][0]["name"], "c");
    assert_eq!(rest["list_complete"], true);

    ok(kv(d, &["key", "delete", "a", "-n", "todos"]));
    assert!(
        err(kv(d, &["key", "get", "a", "-n", "todos"])).contains("no key `a` in namespace `todos`")
    );
    assert!(err(kv(d, &["namespace", "delete", "nope"])).contains("does not exist"));
}

#[test]
fn every_limit_is_refused_at_its_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(kv(d, &["namespace", "create", "ns"]));
    let put =
        |key: &str, extra: &[&str]| kv(d, &[&["key", "put", key, "-n", "ns"], extra].concat());
    ok(put(&"k".repeat(512), &["v"]));
    assert!(
        err(put(&"k".repeat(513), &["v"])).contains("key is 513 bytes, above the limit of 512")
    );
    let meta = |n: usize| format!("\"{}\"", "m".repeat(n - 2));
    ok(put("m", &["v", "--metadata", &meta(1024)]));
    assert!(
        err(put("m", &["v", "--metadata", &meta(1025)]))
            .contains("metadata is 1025 bytes, above the limit of 1024")
    );
    let value = d.join("value");
    std::fs::write(&value, vec![b'v'; 25 * 1024 * 1024]).unwrap();
    ok(put("big", &["--path", value.to_str().unwrap()]));
    std::fs::write(&value, vec![b'v'; 25 * 1024 * 1024 + 1]).unwrap();
    assert!(
        err(put("big", &["--path", value.to_str().unwrap()]))
            .contains("value is 26214401 bytes, above the limit of 26214400")
    );
    ok(kv(d, &["key", "list", "-n", "ns", "--limit", "1000"]));
    assert!(
        err(kv(d, &["key", "list", "-n", "ns", "--limit", "1001"]))
            .contains("list limit 1001 is outside 1..=1000")
    );
    assert!(err(put("t", &["v", "--ttl", "0"])).contains("TTL must be at least 1 s"));
}

#[test]
fn bulk_put_and_delete_from_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(kv(d, &["namespace", "create", "ns"]));
    let pairs: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({ "key": format!("k{i:05}"), "value": "v", "metadata": { "i": i } }))
        .collect();
    let file = d.join("pairs.json");
    std::fs::write(&file, serde_json::to_string(&pairs).unwrap()).unwrap();
    ok(kv(d, &["bulk", "put", file.to_str().unwrap(), "-n", "ns"]));
    std::fs::write(
        &file,
        r#"[{"key": "b64", "value": "aGk=", "base64": true}]"#,
    )
    .unwrap();
    ok(kv(d, &["bulk", "put", file.to_str().unwrap(), "-n", "ns"]));
    assert_eq!(ok(kv(d, &["key", "get", "b64", "-n", "ns"])), "hi");

    let too_many: Vec<String> = (0..10_001).map(|i| format!("k{i:05}")).collect();
    std::fs::write(&file, serde_json::to_string(&too_many).unwrap()).unwrap();
    assert!(
        err(kv(
            d,
            &["bulk", "delete", file.to_str().unwrap(), "-n", "ns"]
        ))
        .contains("10001 keys in one call, above the limit of 10000")
    );
    std::fs::write(&file, r#"["k00000", "k00001"]"#).unwrap();
    ok(kv(
        d,
        &["bulk", "delete", file.to_str().unwrap(), "-n", "ns"],
    ));
    assert!(err(kv(d, &["key", "get", "k00001", "-n", "ns"])).contains("no key"));
    std::fs::write(&file, r#"[{"key": "x", "valu": "typo"}]"#).unwrap();
    assert!(
        err(kv(d, &["bulk", "put", file.to_str().unwrap(), "-n", "ns"]))
            .contains("not the expected JSON")
    );
}

#[test]
fn the_cli_and_a_running_dev_node_share_the_store() {
    let dir = common::project(
        common::KV_FIXTURE,
        "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"data\"\n",
    );
    let project = dir.path().to_path_buf();
    let dev = Dev::start(dir, &[]);
    ok(kv(
        &project,
        &["key", "put", "greeting", "set by the CLI", "-n", "data"],
    ));
    assert_eq!(dev.get("/get?key=greeting").text(), "set by the CLI");
    assert_eq!(dev.get("/incr?key=n&by=2").text(), "2");
    assert_eq!(ok(kv(&project, &["key", "get", "n", "-n", "data"])), "2");
    // Generations stay unique across the two writers.
    let from_cli: serde_json::Value = serde_json::from_str(&ok(kv(
        &project,
        &["key", "get", "greeting", "-n", "data", "--info"],
    )))
    .unwrap();
    let from_guest = dev.get("/get?key=n");
    assert_ne!(
        from_cli["generation"].to_string(),
        from_guest.header("x-generation").unwrap()
    );
    ok(kv(&project, &["key", "put", "later", "x", "-n", "data"]));
    let after: u64 = dev.put_value("later2").parse().unwrap();
    let later: serde_json::Value = serde_json::from_str(&ok(kv(
        &project,
        &["key", "get", "later", "-n", "data", "--info"],
    )))
    .unwrap();
    assert!(after > later["generation"].as_u64().unwrap());
}

impl Dev {
    fn put_value(&self, key: &str) -> String {
        common::Reply::from(
            common::agent()
                .put(&self.url(&format!("/put?key={key}")))
                .send(&b"v"[..]),
        )
        .text()
    }
}
