//! Verge KV end to end: a guest calling `verge:kv/store` through a real
//! `verge dev` over HTTP, on the SQLite store in the project's data dir.

mod common;

use common::{Dev, Reply, agent};

const BOUND: &str = "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"data\"\n";

fn kv_dev(extra_args: &[&str]) -> Dev {
    Dev::start(common::project(common::KV_FIXTURE, BOUND), extra_args)
}

impl Dev {
    fn put(&self, query: &str, value: &[u8]) -> Reply {
        Reply::from(agent().put(&self.url(&format!("/put?{query}"))).send(value))
    }
}

#[test]
fn the_whole_interface_over_http() {
    let dev = kv_dev(&[]);
    let generation: u64 = dev
        .put("key=todo:1&meta=7", b"buy milk")
        .text()
        .parse()
        .unwrap();
    let got = dev.get("/get?key=todo:1");
    assert_eq!((got.status, got.text().as_str()), (200, "buy milk"));
    assert_eq!(got.header("x-metadata"), Some("7"));
    assert_eq!(
        got.header("x-generation"),
        Some(generation.to_string().as_str())
    );
    let timing = got.header("server-timing").unwrap();
    assert!(
        timing.contains("kv;dur=") && timing.contains("desc=\"1 ops\""),
        "{timing}"
    );
    let line = dev.log_entry(&format!("id={}", got.request_id()))[0].clone();
    assert!(line.contains("kv=1 ops/"), "{line}");

    // Compare-and-swap on the generation, and put-if-absent.
    let stale = dev.put(&format!("key=todo:1&if={}", generation + 100), b"x");
    assert_eq!(stale.text(), "error: Error::ConditionFailed");
    let newer: u64 = dev
        .put(&format!("key=todo:1&if={generation}"), b"buy oat milk")
        .text()
        .parse()
        .unwrap();
    assert!(newer > generation);
    assert_eq!(
        dev.put("key=todo:1&if=absent", b"x").text(),
        "error: Error::ConditionFailed"
    );

    // Atomic increments, deletes, bulk get.
    assert_eq!(dev.get("/incr?key=hits&by=5").text(), "5");
    assert_eq!(dev.get("/incr?key=hits&by=-2").text(), "3");
    assert_eq!(
        dev.get("/incr?key=todo:1").text(),
        "error: Error::NotAnInteger"
    );
    assert_eq!(
        dev.get("/get-many?keys=hits,nope,todo:1").text(),
        "3,-,buy oat milk"
    );
    assert_eq!(dev.get("/delete?key=hits").text(), "true");
    assert_eq!(dev.get("/delete?key=hits").text(), "false");
    assert_eq!(dev.get("/get?key=hits").status, 404);

    // Listing pages through cursors, in byte order, by prefix.
    for i in 0..7 {
        dev.put(&format!("key=item:{i}"), b"x");
    }
    let mut names = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = dev.get(&format!("/list?prefix=item:&limit=3{cursor}"));
        names.extend(page.text().lines().map(String::from));
        match page.header("x-cursor") {
            Some(c) => cursor = format!("&cursor={c}"),
            None => {
                assert_eq!(page.header("x-complete"), Some("true"));
                break;
            }
        }
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("item:{i}")).collect::<Vec<_>>()
    );
}

#[test]
fn every_limit_is_an_error_value_at_its_boundary() {
    // Moving 25 MiB through a debug build takes more than 50 ms of CPU; the
    // limit under test here is KV's, not the CPU's.
    let manifest = format!("{BOUND}[limits]\ncpu_ms = 5000\n");
    let dev = Dev::start(
        common::project(common::KV_FIXTURE, &manifest),
        &["--max-cpu-ms", "5000"],
    );
    let key = |n: usize| "k".repeat(n);
    assert_eq!(dev.put(&format!("key={}", key(512)), b"v").status, 200);
    assert_eq!(
        dev.put(&format!("key={}", key(513)), b"v").text(),
        "error: Error::KeyTooLong(513)"
    );
    // A JSON array of exactly n bytes, with no characters a query escapes.
    let meta = |n: usize| {
        let tail = if n.is_multiple_of(2) { "10]" } else { "100]" };
        let text = format!("[{}{tail}", "0,".repeat((n - 1 - tail.len()) / 2));
        assert_eq!(text.len(), n);
        text
    };
    assert_eq!(
        dev.put(&format!("key=m&meta={}", meta(1024)), b"v").status,
        200
    );
    assert_eq!(
        dev.put(&format!("key=m&meta={}", meta(1025)), b"v").text(),
        "error: Error::MetadataTooLarge(1025)"
    );
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(
        dev.get(&format!("/get-many?keys={}", keys(100))).status,
        200
    );
    assert_eq!(
        dev.get(&format!("/get-many?keys={}", keys(101))).text(),
        "error: Error::TooManyKeys(101)"
    );
    assert_eq!(dev.get("/list?limit=1000").status, 200);
    assert_eq!(
        dev.get("/list?limit=1001").text(),
        "error: Error::BadLimit(1001)"
    );
    let max = 25 * 1024 * 1024;
    let stored = dev.get(&format!("/put?key=big&bytes={max}"));
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(dev.get("/get?key=big").body.unwrap().len(), max);
    assert_eq!(
        dev.get(&format!("/put?key=big&bytes={}", max + 1)).text(),
        format!("error: Error::ValueTooLarge({})", max + 1)
    );
    assert_eq!(
        dev.put("key=t&ttl=0", b"v").text(),
        "error: Error::BadExpiration(\"TTL must be at least 1 s\")"
    );
}

#[test]
fn a_worker_reaches_only_the_namespaces_bound_to_it() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    // Another worker on the same store fills namespace `secrets`.
    let other = Dev::start(
        common::project(
            common::KV_FIXTURE,
            "[[kv_namespaces]]\nbinding = \"KV\"\nnamespace = \"secrets\"\n",
        ),
        &["--data-dir", &data_arg],
    );
    assert_eq!(other.put("key=token", b"hunter2").status, 200);
    drop(other);

    let dev = Dev::start(
        common::project(common::KV_FIXTURE, BOUND),
        &["--data-dir", &data_arg],
    );
    for guess in ["secrets", "SECRETS", "data"] {
        let reply = dev.get(&format!("/get?key=token&b={guess}"));
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.text(),
            format!("error: Error::NamespaceNotBound(\"{guess}\")")
        );
    }
    assert_eq!(
        dev.get("/get?key=token").status,
        404,
        "the bound namespace is a different one"
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap().to_string();
    let dir = common::project(common::KV_FIXTURE, BOUND);
    let manifest = std::fs::read_to_string(dir.path().join("verge.toml")).unwrap();
    let dev = Dev::start(dir, &["--data-dir", &data_arg]);
    for i in 0..100 {
        assert_eq!(
            dev.put(&format!("key=k{i}"), i.to_string().as_bytes())
                .status,
            200
        );
    }
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(dev.pid() as i32, libc::SIGKILL) };
    drop(dev);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("verge.toml"), manifest).unwrap();
    let dev = Dev::start(dir, &["--data-dir", &data_arg]);
    for i in 0..100 {
        assert_eq!(
            dev.get(&format!("/get?key=k{i}")).text(),
            i.to_string(),
            "write {i} lost"
        );
    }
}

#[test]
fn concurrent_increments_from_many_guests_lose_none() {
    let dev = kv_dev(&[]);
    let url = dev.url("/incr?key=counter");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let reply = Reply::from(agent().get(&url).call());
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(dev.get("/get?key=counter").text(), "200");
}

#[test]
fn verge_dev_runs_cron_triggers_on_schedule_and_by_hand() {
    // Every second, on the single node `verge dev` runs (SQLite).
    let manifest = format!("{BOUND}[triggers]\ncrons = [\"* * * * * *\"]\n");
    let dev = Dev::start(common::project(common::KV_FIXTURE, &manifest), &[]);
    // By hand, as a developer would with curl: no time given.
    let fired = Reply::from(
        agent()
            .post(&dev.url("/.well-known/verge/scheduled?cron=*+*+*+*+*+*"))
            .send_empty(),
    );
    assert_eq!((fired.status, fired.text().as_str()), (200, "1"));
    // Scheduled ticks carry their time; the hand-fired run had none.
    let ticks = || {
        dev.get("/list?prefix=tick:1")
            .text()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    common::node::eventually("three scheduled ticks", || ticks().len() >= 3);
    for key in ticks() {
        let time: u64 = key.strip_prefix("tick:").unwrap().parse().unwrap();
        assert_eq!(time % 1000, 0, "ticks fall on whole seconds: {key}");
        assert_eq!(
            dev.get(&format!("/get?key={key}")).text(),
            "1",
            "{key} ran once"
        );
    }
    assert_eq!(dev.get("/get?key=tick:").text(), "1", "the run by hand");
    dev.wait_line("POST /.well-known/verge/scheduled 200");
}
