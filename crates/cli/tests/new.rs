//! `verge new` for each template, then `verge build` and a request to
//! `verge dev` on what it wrote.

mod common;

use common::{Dev, examples_target, verge};

/// Creates a project with `template` in a fresh directory and builds it;
/// `uses` is what `verge build` says the component imports from Verge.
fn create_and_build(name: &str, template: &str, uses: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join(name);
    let stdout = common::succeed(
        verge()
            .args(["new", name, "--template", template, "--dir"])
            .arg(&project),
    );
    assert!(
        stdout.contains(&format!("Created {name} from the {template} template")),
        "{stdout}"
    );
    for file in [
        "Cargo.toml",
        "verge.toml",
        "README.md",
        ".gitignore",
        "src/lib.rs",
    ] {
        assert!(project.join(file).exists(), "{file} missing");
    }
    let manifest = std::fs::read_to_string(project.join("verge.toml")).unwrap();
    assert!(
        manifest.contains(&format!("name = \"{name}\"")),
        "{manifest}"
    );

    let stdout = common::succeed(
        verge()
            .arg("build")
            .arg(&project)
            .env("CARGO_TARGET_DIR", examples_target()),
    );
    let artifact = format!("{}.wasm (", name.replace('-', "_"));
    assert!(
        stdout.starts_with("Ready ") && stdout.contains(&artifact),
        "{stdout}"
    );
    assert!(stdout.contains(uses), "{stdout}");
    dir
}

#[test]
fn the_hello_template_builds_and_answers() {
    common::build_examples();
    let dir = create_and_build(
        "my-hello",
        "hello",
        "a plain WASI HTTP component: it also runs on other wasi:http/proxy hosts",
    );
    let project = dir.path().join("my-hello");
    let dev = Dev::spawn(&project, dir, &[]);
    let reply = dev.get("/hello?name=Ada%20L");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello from Verge, Ada L!\n");
}

#[test]
fn the_rest_api_template_builds_and_answers() {
    common::build_examples();
    let dir = create_and_build("my-api", "rest-api", "uses Verge's verge:kv/store@0.1.0");
    let project = dir.path().join("my-api");
    let dev = Dev::spawn(&project, dir, &[]);
    let reply = dev.send("POST", "/todos", &[], Some(r#"{"title": "ship it"}"#));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/todos/1"));
    let listed = dev.get("/todos");
    assert!(listed.text().contains("ship it"), "{}", listed.text());
    // Its local state stays in the project, as .gitignore expects.
    assert!(project.join(".verge/kv.db").exists());
}

#[test]
fn bad_names_and_occupied_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = verge()
        .args(["new", "My_Worker", "--dir"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid worker name \"My_Worker\""),
        "{stderr}"
    );
    assert!(!dir.path().join("x").exists());

    // A directory whose files the template would overwrite is refused,
    // and left as it was.
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    std::fs::write(dir.path().join("verge.toml"), "name = \"mine\"\n").unwrap();
    let output = verge()
        .args(["new", "worker", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already has verge.toml"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("verge.toml")).unwrap(),
        "name = \"mine\"\n"
    );
    assert!(!dir.path().join("Cargo.toml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn no_build_before_any_build_says_to_build_first() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("unbuilt");
    common::succeed(verge().args(["new", "unbuilt", "--dir"]).arg(&project));
    let output = verge()
        .args(["dev", "--no-build", "--listen", "127.0.0.1:0"])
        .arg(&project)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("worker `unbuilt` has not been built yet"),
        "{stderr}"
    );
    assert!(stderr.contains("run without --no-build"), "{stderr}");
}
