//! The commands around a node that are not deploys: `login`, `whoami`,
//! `list`, `delete`, `init`, and what every command says when the node
//! refuses its token or is not a node at all.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

use common::node::{Node, TOKEN, fixtures, worker};
use common::{run_with_stdin, succeed, verge};

const WRONG: &str = "wrong-token-0123456789";

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_command_reports_a_refused_token_as_such() {
    let node = Node::start(&[]);
    let project = worker(
        "app",
        &fixtures(),
        "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"data\"\n",
    );
    succeed(node.cli().arg("deploy").arg(project.path()));

    // A bulk file of ~8 MiB: the node refuses it on its headers and closes
    // the connection while the CLI is still sending.
    let bulk = tempfile::tempdir().unwrap();
    let pairs: Vec<serde_json::Value> = (0..8)
        .map(|n| serde_json::json!({ "key": format!("k{n}"), "value": "x".repeat(1 << 20) }))
        .collect();
    let bulk_file = bulk.path().join("bulk.json");
    std::fs::write(&bulk_file, serde_json::to_vec(&pairs).unwrap()).unwrap();
    let bulk_file = bulk_file.to_str().unwrap();

    let commands: Vec<Vec<&str>> = vec![
        vec!["deploy", project.path().to_str().unwrap()],
        vec!["deploy", project.path().to_str().unwrap(), "--no-build"],
        vec!["list"],
        vec!["whoami"],
        vec!["delete", "app", "--yes"],
        vec!["versions", "--name", "app"],
        vec!["rollback", "--name", "app"],
        vec!["secret", "list", "--name", "app"],
        vec!["secret", "delete", "KEY", "--name", "app"],
        vec!["tail", "--name", "app"],
        vec!["cron", "list", "--name", "app"],
        vec!["kv", "--remote", "namespace", "list"],
        vec!["kv", "--remote", "key", "get", "k", "-n", "data"],
        vec!["kv", "--remote", "bulk", "put", bulk_file, "-n", "data"],
    ];
    for args in &commands {
        let output = node
            .cli()
            .env("VERGE_TOKEN", WRONG)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let error = failed(&output);
        assert!(
            error.contains("refused the admin token from VERGE_TOKEN"),
            "verge {args:?}: {error}"
        );
        assert!(!error.contains("cannot reach"), "verge {args:?}: {error}");
    }
    // A secret's value is never asked for once the token is refused.
    let error = failed(&run_with_stdin(
        node.cli()
            .env("VERGE_TOKEN", WRONG)
            .args(["secret", "put", "KEY", "--name", "app"]),
        "value",
    ));
    assert!(error.contains("refused the admin token"), "{error}");
    // Nothing changed.
    assert_eq!(node.get("app.localhost", "/plain").status, 200);
}

#[test]
fn login_checks_and_keeps_the_token_then_whoami_list_and_delete_use_it() {
    let node = Node::start(&[]);
    let home = tempfile::tempdir().unwrap();
    // A CLI with nothing but the config file to go on.
    let cli = || {
        let mut command = verge();
        command
            .env_remove("VERGE_NODE")
            .env_remove("VERGE_TOKEN")
            .env("VERGE_CONFIG_HOME", home.path())
            .env("NO_COLOR", "1");
        command
    };
    let config = home.path().join("config.toml");

    // A wrong token is refused and nothing is written.
    let error = failed(&run_with_stdin(
        cli().args(["login", "--node", &node.admin]),
        WRONG,
    ));
    assert!(
        error.contains("refused the admin token from stdin"),
        "{error}"
    );
    assert!(!config.exists());

    let output = run_with_stdin(cli().args(["login", "--node", &node.admin]), TOKEN);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("as token `admin` (read-write)"), "{said}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(saved["node"].as_str(), Some(node.admin.as_str()));
    assert_eq!(saved["token"].as_str(), Some(TOKEN));

    let whoami = succeed(cli().arg("whoami"));
    assert!(whoami.contains(&node.admin), "{whoami}");
    assert!(whoami.contains("Token: admin (read-write)"), "{whoami}");
    assert!(whoami.contains("sqlite store, 0 workers"), "{whoami}");

    let empty = succeed(cli().arg("list"));
    assert!(empty.contains("No workers"), "{empty}");
    let project = worker("app", &fixtures(), "routes = [\"shop.test/*\"]\n");
    succeed(cli().arg("deploy").arg(project.path()));
    let other = worker("other", &fixtures(), "");
    succeed(cli().arg("deploy").arg(other.path()));
    let list = succeed(cli().arg("list"));
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(
        rows[0].starts_with("app ") && rows[0].contains("100%"),
        "{list}"
    );
    assert!(rows[0].contains("routes: shop.test/*"), "{list}");
    assert!(
        rows[1].starts_with("other ") && rows[1].contains("http://other."),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&succeed(cli().args(["list", "--json"]))).unwrap();
    assert_eq!(json["workers"].as_array().unwrap().len(), 2);

    // Deleting asks for confirmation, which a pipe cannot give.
    let error = failed(
        &cli()
            .args(["delete", "app"])
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert!(error.contains("pass --yes"), "{error}");
    let error = failed(&cli().args(["delete", "nope", "--yes"]).output().unwrap());
    assert!(error.contains("no worker named `nope`"), "{error}");
    let deleted = succeed(cli().args(["delete", "app", "--yes"]));
    assert!(deleted.contains("Deleted app"), "{deleted}");
    assert_eq!(node.get("app.localhost", "/plain").status, 404);
    assert_eq!(node.get("other.localhost", "/plain").status, 200);
    let list = succeed(cli().arg("list"));
    assert!(!list.contains("app ") && list.contains("other "), "{list}");
}

#[test]
fn a_node_address_that_is_not_an_admin_api_is_named() {
    let node = Node::start(&[]);
    // The data plane answers 404 in plain text, not the admin API's JSON.
    let error = failed(
        &node
            .cli()
            .env("VERGE_NODE", &node.data)
            .arg("list")
            .output()
            .unwrap(),
    );
    assert!(error.contains("is not a Verge admin API"), "{error}");
    assert!(error.contains("admin_listen"), "{error}");
    // The admin API speaks plain HTTP.
    let https = node.admin.replace("http://", "https://");
    let error = failed(
        &node
            .cli()
            .env("VERGE_NODE", &https)
            .arg("list")
            .output()
            .unwrap(),
    );
    assert!(error.contains("plain HTTP"), "{error}");
    // Nothing listens there at all.
    let error = failed(
        &node
            .cli()
            .env("VERGE_NODE", "http://127.0.0.1:1")
            .arg("list")
            .output()
            .unwrap(),
    );
    assert!(error.contains("cannot reach the node"), "{error}");
}

#[test]
fn secrets_need_a_valid_name_and_a_deployed_worker_unless_asked() {
    let node = Node::start(&[]);
    let project = worker("app", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(project.path()));

    let error = failed(&run_with_stdin(
        node.cli()
            .args(["secret", "put", "API KEY", "--name", "app"]),
        "v",
    ));
    assert!(error.contains("invalid secret name \"API KEY\""), "{error}");
    let error = failed(&run_with_stdin(
        node.cli().args(["secret", "put", "KEY", "--name", "apq"]),
        "v",
    ));
    assert!(error.contains("no worker named `apq`"), "{error}");
    assert!(error.contains("--undeployed"), "{error}");
    let later = run_with_stdin(
        node.cli()
            .args(["secret", "put", "KEY", "--name", "later", "--undeployed"]),
        "v",
    );
    assert!(later.status.success(), "{later:?}");
    let names = succeed(node.cli().args(["secret", "list", "--name", "later"]));
    assert_eq!(names.trim(), "KEY");
    let error = failed(
        &node
            .cli()
            .args(["versions", "--name", "Bad Name"])
            .output()
            .unwrap(),
    );
    assert!(error.contains("invalid worker name"), "{error}");
}

#[test]
fn init_makes_an_existing_crate_a_worker_and_new_fills_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cli = || {
        let mut command = verge();
        command.current_dir(dir.path()).env("NO_COLOR", "1");
        command
    };

    // An existing crate: verge.toml is written, Cargo.toml left as it was,
    // and what it lacks is named.
    let existing = dir.path().join("my_api");
    std::fs::create_dir_all(existing.join("src")).unwrap();
    let cargo = "[package]\nname = \"my_api\"\nversion = \"0.1.0\"\nedition = \"2024\"\n";
    std::fs::write(existing.join("Cargo.toml"), cargo).unwrap();
    std::fs::write(existing.join("src/lib.rs"), "// mine\n").unwrap();
    let said = succeed(cli().args(["init", "my_api"]));
    assert!(said.contains("for worker my-api"), "{said}");
    assert!(said.contains("crate-type = [\"cdylib\"]"), "{said}");
    assert!(said.contains("verge-sdk = "), "{said}");
    assert_eq!(
        std::fs::read_to_string(existing.join("Cargo.toml")).unwrap(),
        cargo
    );
    assert_eq!(
        std::fs::read_to_string(existing.join("src/lib.rs")).unwrap(),
        "// mine\n"
    );
    let manifest = std::fs::read_to_string(existing.join("verge.toml")).unwrap();
    assert!(manifest.contains("name = \"my-api\""), "{manifest}");
    let again = failed(&cli().args(["init", "my_api"]).output().unwrap());
    assert!(again.contains("exists already"), "{again}");

    // A crate that has everything gets no list.
    let ready = dir.path().join("ready");
    std::fs::create_dir_all(&ready).unwrap();
    std::fs::write(
        ready.join("Cargo.toml"),
        "[package]\nname = \"ready\"\n[lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nverge-sdk = \"0.1\"\n",
    )
    .unwrap();
    let said = succeed(cli().args(["init", "ready"]));
    assert!(!said.contains("still needs"), "{said}");

    // A directory in use, without a crate: `new --dir .` and `init` both
    // write the template around what is there.
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("NOTES.md"), "keep me\n").unwrap();
    let mut new_here = cli();
    new_here.current_dir(&notes);
    let said = succeed(new_here.args(["new", "notes-api", "--dir", "."]));
    assert!(said.contains("Created notes-api"), "{said}");
    assert!(notes.join("verge.toml").exists() && notes.join("src/lib.rs").exists());
    assert_eq!(
        std::fs::read_to_string(notes.join("NOTES.md")).unwrap(),
        "keep me\n"
    );
    // A second time, the files it would write are there: nothing is
    // overwritten, and the error names them.
    let mut again = cli();
    again.current_dir(&notes);
    let error = failed(
        &again
            .args(["new", "notes-api", "--dir", "."])
            .output()
            .unwrap(),
    );
    assert!(
        error.contains("Cargo.toml") && error.contains("verge init"),
        "{error}"
    );

    let fresh = dir.path().join("Fresh_Dir");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("notes.txt"), "mine\n").unwrap();
    let said = succeed(cli().args(["init", "Fresh_Dir"]));
    assert!(said.contains("Created fresh-dir"), "{said}");
    let manifest = std::fs::read_to_string(fresh.join("verge.toml")).unwrap();
    assert!(manifest.contains("name = \"fresh-dir\""), "{manifest}");
    assert_eq!(
        std::fs::read_to_string(fresh.join("notes.txt")).unwrap(),
        "mine\n"
    );
}
