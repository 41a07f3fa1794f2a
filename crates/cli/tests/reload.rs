//! `verge dev` rebuilds and swaps in a worker when its sources change, and
//! keeps serving the last good version when a change does not build.

mod common;

use std::time::{Duration, Instant};

use common::{Dev, verge};

/// Polls `path` until its body is `want`.
fn wait_for_body(dev: &Dev, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let reply = dev.get(path);
        if reply.status == 200 && reply.text() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {:?}; log: {:#?}",
            reply.text(),
            dev.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_edit_is_served_after_a_rebuild_and_a_broken_edit_is_not() {
    common::build_examples();
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("live");
    common::succeed(verge().args(["new", "live", "--dir"]).arg(&project));
    common::succeed(
        verge()
            .arg("build")
            .arg(&project)
            .env("CARGO_TARGET_DIR", common::examples_target()),
    );

    let source = project.join("src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    let dev = Dev::spawn(&project, dir, &[]);
    wait_for_body(&dev, "/hello?name=Ada", "Hello from Verge, Ada!\n");

    // An edit: the next version answers once it is built.
    let edited = original.replace("{}, {name}!\\n", "{}, {name}! (edited)\\n");
    assert_ne!(edited, original, "the template changed; update this test");
    std::fs::write(&source, &edited).unwrap();
    wait_for_body(&dev, "/hello?name=Ada", "Hello from Verge, Ada! (edited)\n");
    dev.wait_line_err("Reloaded");

    // A vars change in verge.toml is picked up too.
    let manifest = std::fs::read_to_string(project.join("verge.toml")).unwrap();
    std::fs::write(
        project.join("verge.toml"),
        manifest.replace("Hello from Verge", "Howdy"),
    )
    .unwrap();
    wait_for_body(&dev, "/hello?name=Ada", "Howdy, Ada! (edited)\n");

    // A broken edit: the compiler's error is shown, the last good version
    // keeps answering.
    std::fs::write(&source, format!("{edited}\nfn broken( {{\n")).unwrap();
    dev.wait_line_err("still serving the last good version");
    let log = dev.stderr().join("\n");
    assert!(log.contains("error"), "{log}");
    let reply = dev.get("/hello?name=Ada");
    assert_eq!(reply.text(), "Howdy, Ada! (edited)\n");

    // Fixed again: served again.
    std::fs::write(&source, &original).unwrap();
    wait_for_body(&dev, "/hello?name=Ada", "Howdy, Ada!\n");
}
