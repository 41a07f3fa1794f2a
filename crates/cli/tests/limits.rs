//! Every limit, enforced on a real `verge dev` over real sockets: the request
//! that breaks it ends alone, with its status, a reason and a request id.

mod common;

use std::time::{Duration, Instant};

use common::Dev;
use common::node::{Node, eventually, fixtures, worker};

/// The request-log line of the request with this id.
fn logged(dev: &Dev, id: &str) -> String {
    dev.log_entry(&format!("id={id}")).join("\n")
}

fn measured_cpu_ms(line: &str) -> f64 {
    let value = line
        .split("measured=")
        .nth(1)
        .expect("measured= in the log line");
    value.split(" ms").next().unwrap().parse().unwrap()
}

#[test]
fn infinite_loop_is_stopped_at_the_cpu_limit() {
    let dev = Dev::fixtures("", &[]);
    dev.get("/hello"); // warm up: the first request pays one-time costs
    let before = dev.process_cpu();
    let started = Instant::now();
    let reply = dev.get("/loop");
    let process_cpu = dev.process_cpu() - before;

    assert_eq!(reply.status, 503);
    let id = reply.request_id();
    assert!(
        reply.text().contains("CPU time limit (50.000 ms)"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains(&id));
    let line = logged(&dev, &id);
    assert!(
        line.contains("GET /loop 503") && line.contains("limit=cpu"),
        "{line}"
    );
    let guest_cpu = measured_cpu_ms(&line);
    assert!(
        (50.0..=60.0).contains(&guest_cpu),
        "guest ran {guest_cpu} ms of CPU: {line}"
    );
    // The whole process (HTTP, epoch thread and all) stays close to it.
    assert!(
        process_cpu < Duration::from_millis(75),
        "process used {process_cpu:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn other_requests_are_served_while_a_guest_spins() {
    let node = Node::start(&["--max-cpu-ms", "1000"]);
    let fixtures = worker("spins", &fixtures(), "[limits]\ncpu_ms = 1000\n");
    common::succeed(node.cli().arg("deploy").arg(fixtures.path()));
    std::thread::scope(|scope| {
        let spinner = scope.spawn(|| node.get("spins.localhost", "/loop").status);
        // The loop holds an instance from its start to its second of CPU.
        eventually("the loop holds an instance", || node.instances_busy() == 1);
        let hello = node.get("spins.localhost", "/hello");
        assert_eq!(hello.status, 200, "{}", hello.text());
        assert_eq!(
            node.instances_busy(),
            1,
            "hello was answered only after the loop ended"
        );
        assert_eq!(spinner.join().unwrap(), 503);
    });
}

#[test]
fn sleeping_is_not_cpu_time() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/sleep?ms=200");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "slept 200 ms\n");
    let timing = reply.header("server-timing").unwrap().to_string();
    let cpu = timing_cpu_ms(&reply);
    let total: f64 = timing.split("total;dur=").nth(1).unwrap().parse().unwrap();
    assert!(cpu < 50.0 && total >= 200.0, "{timing}");
}

fn timing_cpu_ms(reply: &common::Reply) -> f64 {
    let timing = reply.header("server-timing").expect("Server-Timing");
    timing
        .split("cpu;dur=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn server_timing_reports_the_cpu_the_guest_used() {
    let dev = Dev::fixtures("", &[]);
    dev.get("/hello");
    let light = dev.get("/burn?iterations=1000");
    let heavy = dev.get("/burn?iterations=5000000");
    assert_eq!((light.status, heavy.status), (200, 200));
    let (light, heavy) = (timing_cpu_ms(&light), timing_cpu_ms(&heavy));
    assert!(
        heavy > 4.0 && heavy > 4.0 * light,
        "light {light} ms, heavy {heavy} ms"
    );
}

#[test]
fn sleeping_past_the_wall_limit_is_504() {
    let dev = Dev::fixtures("[limits]\nwall_ms = 300\n", &[]);
    let started = Instant::now();
    let reply = dev.get("/sleep?ms=5000");
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        reply.text().contains("wall time limit (300.000 ms)"),
        "{}",
        reply.text()
    );
    let line = logged(&dev, &reply.request_id());
    assert!(line.contains("limit=wall"), "{line}");
}

#[test]
fn memory_bomb_is_500_with_reason_memory() {
    let dev = Dev::fixtures("[limits]\nmemory_mib = 64\n", &[]);
    let reply = dev.get("/alloc?mib=1000");
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().contains("memory limit (64 MiB)"),
        "{}",
        reply.text()
    );
    let line = logged(&dev, &reply.request_id());
    assert!(
        line.contains("limit=memory") && line.contains("limit=64 MiB"),
        "{line}"
    );
    // Within the limit, the same route works.
    let ok = dev.get("/alloc?mib=16");
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn panic_and_trap_are_500_with_the_request_id_in_body_and_log() {
    let dev = Dev::fixtures("", &[]);
    let panic = dev.get("/panic");
    assert_eq!(panic.status, 500);
    let id = panic.request_id();
    assert!(
        panic.text().contains("the worker panicked"),
        "{}",
        panic.text()
    );
    assert!(panic.text().contains(&format!("request id: {id}")));
    let line = logged(&dev, &id);
    assert!(
        line.contains("reason=panic") && line.contains("boom from the fixtures"),
        "{line}"
    );

    let trap = dev.get("/trap");
    assert_eq!(trap.status, 500);
    let id = trap.request_id();
    assert!(trap.text().contains("the worker crashed (trap)") && trap.text().contains(&id));
    assert!(logged(&dev, &id).contains("unreachable"));

    // The node goes on.
    assert_eq!(dev.get("/hello").status, 200);
}

#[test]
fn a_response_the_guest_finished_reaches_the_client_though_it_fails_after() {
    let dev = Dev::fixtures("", &[]);
    // Small and large bodies, the failure before and after the node has
    // seen the response, and HEAD: the outcome must not depend on timing.
    let paths = [
        ("GET", "/finish-then-panic", 6),
        ("GET", "/finish-then-panic?wait=1", 6),
        ("GET", "/finish-then-panic?bytes=300000", 300_000),
        ("GET", "/finish-then-panic?bytes=300000&wait=1", 300_000),
        ("HEAD", "/finish-then-panic", 0),
    ];
    for n in 0..50 {
        let (method, path, bytes) = paths[n % paths.len()];
        let reply = dev.send(method, path, &[], None);
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
        let body = reply.body.as_ref().expect("a whole body");
        assert_eq!(body.len(), bytes, "{method} {path}");
        if bytes > 0 {
            assert!(body.ends_with(b"\n"), "{method} {path}");
        }
        // The failure is in the log, with the guest's status.
        let line = logged(&dev, &reply.request_id());
        assert!(
            line.contains(" 200 ") && line.contains("reason=panic"),
            "{line}"
        );
        assert!(line.contains("after the response"), "{line}");
    }
}

#[test]
fn failure_details_stay_out_of_responses_unless_dev_shows_them() {
    // `verge dev` opts in to details; the runtime's default (covered in the
    // runtime's tests) keeps them in the log only.
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/panic");
    let text = reply.text();
    assert!(text.contains("panicked at"), "{text}");
    assert!(text.contains("boom from the fixtures"), "{text}");
    assert!(!text.contains("RUST_BACKTRACE"), "{text}");
    let line = logged(&dev, &reply.request_id());
    let detail = &line[line.find("detail=").expect("a detail")..];
    assert!(
        detail.contains("panicked at") && detail.contains("boom from the fixtures"),
        "{line}"
    );

    // Without it (`--no-error-detail`, a node's default) the client gets
    // the status and the request id alone; the log still has the detail.
    let quiet = Dev::fixtures("", &["--no-error-detail"]);
    let reply = quiet.get("/panic");
    assert_eq!(reply.status, 500);
    let text = reply.text();
    assert!(!text.contains("panicked at"), "{text}");
    assert!(!text.contains("boom from the fixtures"), "{text}");
    assert!(text.contains(&reply.request_id()), "{text}");
    let line = logged(&quiet, &reply.request_id());
    assert!(line.contains("boom from the fixtures"), "{line}");
}

/// Sends only the headers of a request declaring `length` body bytes and
/// returns the status line of the answer.
fn status_for_declared_length(dev: &Dev, path: &str, length: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let address = dev.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn oversized_request_bodies_are_413() {
    let dev = Dev::fixtures("[limits]\nbody_mib = 1\n", &[]);
    // Declared too large: refused before the guest starts or the body is sent.
    let status = status_for_declared_length(&dev, "/consume", 1024 * 1024 + 1);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");

    // Streamed without a length: refused when the limit is crossed.
    let big = vec![7u8; 2 * 1024 * 1024];
    let streamed = dev.post_streamed("/consume", &big);
    assert_eq!(streamed.status, 413);
    assert!(
        streamed.text().contains("exceeds the limit of 1 MiB"),
        "{}",
        streamed.text()
    );
    let line = logged(&dev, &streamed.request_id());
    assert!(line.contains("limit=request-body"), "{line}");

    // At the limit exactly, it passes.
    let exact = vec![1u8; 1024 * 1024];
    let ok = dev.post("/consume", &exact);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), (1024 * 1024).to_string());
}

#[test]
fn a_request_body_crossing_the_limit_after_the_response_began_aborts_it() {
    let dev = Dev::fixtures("[limits]\nbody_mib = 1\n", &[]);
    let big = vec![7u8; 3 * 1024 * 1024];
    let reply = dev.post_streamed("/echo", &big);
    // The echo had already answered 200; the body must not look complete.
    assert!(reply.body.is_err() || reply.body.as_ref().unwrap().len() < big.len());
    let line = logged(&dev, &reply.request_id());
    assert!(line.contains("limit=request-body"), "{line}");
}

#[test]
fn oversized_response_bodies_are_cut_off() {
    // A generous CPU limit: on a loaded machine, writing 3 MiB can take
    // more than 50 ms, and this test is about the body limit.
    let dev = Dev::fixtures(
        "[limits]\nbody_mib = 1\ncpu_ms = 2000\n",
        &["--max-cpu-ms", "2000"],
    );
    let reply = dev.get("/big?mib=3");
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.is_err(),
        "a truncated body must not look complete"
    );
    let line = logged(&dev, &reply.request_id());
    assert!(line.contains("limit=response-body"), "{line}");
    assert_eq!(dev.get("/big?mib=1").body.unwrap().len(), 1024 * 1024);
}

#[test]
fn instance_cap_queues_then_answers_503() {
    let node = Node::start(&["--max-instances", "1", "--queue-timeout-ms", "100"]);
    let fixtures = worker("capped", &fixtures(), "");
    common::succeed(node.cli().arg("deploy").arg(fixtures.path()));
    std::thread::scope(|scope| {
        let holder = scope.spawn(|| node.get("capped.localhost", "/sleep?ms=1500").status);
        eventually("the sleeper holds the one instance", || {
            node.instances_busy() == 1
        });
        let refused = node.get("capped.localhost", "/hello");
        assert_eq!(refused.status, 503);
        assert!(
            refused.text().contains("instance limit"),
            "{}",
            refused.text()
        );
        assert_eq!(holder.join().unwrap(), 200);
    });
    assert_eq!(node.get("capped.localhost", "/hello").status, 200);
}

#[test]
fn a_guest_that_crashes_mid_body_aborts_the_response() {
    let dev = Dev::fixtures("", &[]);
    let reply = dev.get("/stream-then-trap");
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_err(), "got a complete body: {:?}", reply.body);
    let line = logged(&dev, &reply.request_id());
    assert!(line.contains("reason=trap"), "{line}");
}
