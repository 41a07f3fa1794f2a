//! Workers sharing a node: one worker's load cannot take what the others
//! need.

mod common;

use std::time::{Duration, Instant};

use common::node::{Node, TOKEN, eventually, fixtures, serve_refused, worker};
use common::succeed;

/// Sends `count` requests for `path` to worker `host` at once; returns each
/// one's status and body, in the order they finished.
fn at_once(node: &Node, host: &str, path: &str, count: usize) -> Vec<(u16, String)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|_| {
                scope.spawn(|| {
                    let reply = node.get(host, path);
                    (reply.status, reply.text())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_worker_takes_at_most_its_share_of_the_instances() {
    let node = Node::start(&[
        "--max-instances",
        "4",
        "--max-instances-per-worker",
        "2",
        "--queue-timeout-ms",
        "200",
    ]);
    let busy = worker("busy", &fixtures(), "");
    let capped = worker("capped", &fixtures(), "[limits]\nconcurrency = 1\n");
    let other = worker("other", &fixtures(), "");
    for project in [&busy, &capped, &other] {
        succeed(node.cli().arg("deploy").arg(project.path()));
    }

    std::thread::scope(|scope| {
        // Three slow requests for a worker whose share is two: two run, the
        // third is refused after the queue timeout, naming the limit.
        let flood = scope.spawn(|| at_once(&node, "busy.localhost", "/sleep?ms=1500", 3));
        // Meanwhile the node's other instances serve another worker.
        eventually("two of the flood run", || node.instances_busy() == 2);
        let started = Instant::now();
        let reply = node.get("other.localhost", "/plain");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(started.elapsed() < Duration::from_millis(1000));
        let metrics = node.admin_call("GET", "/metrics", None, None).text();
        assert!(
            metrics.contains("verge_worker_instances_busy{worker=\"busy\"} 2"),
            "{metrics}"
        );

        let mut results = flood.join().unwrap();
        results.sort();
        assert_eq!(results[0].0, 200, "{results:?}");
        assert_eq!(results[1].0, 200, "{results:?}");
        assert_eq!(results[2].0, 503, "{results:?}");
        assert!(
            results[2]
                .1
                .contains("the worker is at its limit of 2 requests at once"),
            "{results:?}"
        );
    });
    let line = node
        .stderr()
        .into_iter()
        .find(|l| l.contains("limit=worker-concurrency"))
        .expect("the refusal is logged");
    assert!(line.contains("limit=2") && line.contains(" 503 "), "{line}");

    // A manifest may ask for fewer than the node's share.
    let mut results = at_once(&node, "capped.localhost", "/sleep?ms=800", 2);
    results.sort();
    assert_eq!((results[0].0, results[1].0), (200, 503), "{results:?}");
    assert!(results[1].1.contains("limit of 1 requests"), "{results:?}");

    // Everything is free again afterwards.
    let metrics = node.admin_call("GET", "/metrics", Some(TOKEN), None).text();
    assert!(
        metrics.contains("verge_worker_instances_busy{worker=\"busy\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("verge_instances_busy 0"), "{metrics}");
}

#[test]
fn a_share_above_the_node_is_refused_at_start() {
    let error = serve_refused(&["--max-instances", "4", "--max-instances-per-worker", "5"]);
    assert!(error.contains("`max_instances_per_worker`"), "{error}");
    assert!(error.contains("outside 1..=4"), "{error}");
}

/// Opens a connection to `node`'s data plane and sends the headers of a
/// POST to `path` on `host` announcing `length` body bytes, then `body`.
fn start_upload(
    node: &Node,
    host: &str,
    path: &str,
    length: usize,
    body: &[u8],
) -> std::net::TcpStream {
    use std::io::Write;
    let address = node.data.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {length}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// The status line of the answer on `stream`, read within 10 s.
fn status_line(stream: &mut std::net::TcpStream) -> String {
    use std::io::{BufRead, BufReader};
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn slow_request_bodies_get_408_and_hold_no_instance() {
    let node = Node::start(&["--max-instances", "2", "--body-read-timeout-ms", "1500"]);
    let app = worker("app", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(app.path()));

    // Ten clients announce 100,000 bytes and trickle them a byte at a time:
    // none reaches the guest, so the node's two instances stay free.
    let mut trickling: Vec<_> = (0..10)
        .map(|_| start_upload(&node, "app.localhost", "/consume", 100_000, b"x"))
        .collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        for stream in &mut trickling {
            use std::io::Write;
            let _ = stream.write_all(b"x");
        }
        let reply = node.get("app.localhost", "/plain");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let metrics = node.admin_call("GET", "/metrics", None, None).text();
    assert!(metrics.contains("verge_instances_busy 0"), "{metrics}");
    for stream in &mut trickling {
        assert_eq!(status_line(stream), "HTTP/1.1 408 Request Timeout");
    }

    // A client that sends the start of its body, then stops: the guest has
    // begun reading it, and the node answers 408 when nothing more comes.
    let mut stalled = start_upload(
        &node,
        "app.localhost",
        "/consume",
        300_000,
        &[b'y'; 100_000],
    );
    assert_eq!(status_line(&mut stalled), "HTTP/1.1 408 Request Timeout");
    let line = node
        .stderr()
        .into_iter()
        .find(|l| l.contains("POST /consume 408") && l.contains("limit=request-body-timeout"));
    assert!(line.is_some(), "{:?}", node.stderr());

    // A body that comes at once is read whole, past the part read before
    // the guest starts.
    let mut whole = start_upload(
        &node,
        "app.localhost",
        "/consume",
        200_000,
        &[b'z'; 200_000],
    );
    assert_eq!(status_line(&mut whole), "HTTP/1.1 200 OK");
}

#[test]
fn clients_that_stop_reading_free_their_instances_at_the_wall_limit() {
    use std::io::Write;
    // CPU enough to fill the connections' buffers on a debug build: the
    // wall limit is what must end these requests.
    let node = Node::start(&["--max-instances", "40", "--max-cpu-ms", "2000"]);
    let big = worker(
        "big",
        &fixtures(),
        "[limits]\nwall_ms = 1500\ncpu_ms = 2000\n",
    );
    let other = worker("other", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(big.path()));
    succeed(node.cli().arg("deploy").arg(other.path()));
    let busy = || {
        let metrics = node.admin_call("GET", "/metrics", None, None).text();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("verge_instances_busy "))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .expect("verge_instances_busy in the metrics")
    };

    // Twenty clients ask for 60 MiB each and never read a byte.
    let address = node.data.trim_start_matches("http://").to_string();
    let silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"GET /big?mib=60 HTTP/1.1\r\nhost: big.localhost\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    while busy() < 20 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        busy(),
        20,
        "the twenty responses are being written: {:?}",
        node.stderr()
    );
    assert_eq!(node.get("other.localhost", "/plain").status, 200);

    // The wall limit ends them by the clock, whatever the clients do.
    while busy() > 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        busy(),
        0,
        "instances still held {:?} after the start",
        started.elapsed()
    );
    let ended = node
        .stderr()
        .into_iter()
        .filter(|l| l.contains("GET /big 200") && l.contains("limit=wall"))
        .count();
    assert_eq!(ended, 20, "{:?}", node.stderr());
    drop(silent);
}

#[test]
fn a_worker_answers_while_another_loops_on_eight_connections() {
    let node = Node::start(&[]);
    let spinner = worker("spinner", &fixtures(), "");
    let other = worker("other", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(spinner.path()));
    succeed(node.cli().arg("deploy").arg(other.path()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Each one runs into the 50 ms CPU limit.
                    assert_eq!(node.get("spinner.localhost", "/loop").status, 503);
                }
            });
        }
        eventually("the spinners run", || node.instances_busy() > 0);
        for _ in 0..50 {
            let reply = node.get("other.localhost", "/hello");
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn long_running_guests_share_the_cpu_by_worker_not_by_request() {
    let node = Node::start(&[]);
    let many = worker("many", &fixtures(), "");
    let one = worker("one", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(many.path()));
    succeed(node.cli().arg("deploy").arg(one.path()));
    // Each request computes for some milliseconds, well past the point where
    // guests move to the background threads, and well within 50 ms.
    let path = "/burn?iterations=15000000";
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut by_many, mut by_one) = (0u32, 0u32);
    std::thread::scope(|scope| {
        let looping = |host: &'static str| {
            let stop = &stop;
            let node = &node;
            scope.spawn(move || {
                let mut done = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = node.get(host, path);
                    assert_eq!(reply.status, 200, "{host}: {}", reply.text());
                    done += 1;
                }
                done
            })
        };
        let many: Vec<_> = (0..8).map(|_| looping("many.localhost")).collect();
        let one = looping("one.localhost");
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        by_many = many.into_iter().map(|h| h.join().unwrap()).sum();
        by_one = one.join().unwrap();
    });
    // Shared by request, `one` would get about a ninth of the CPU, an
    // eighth of what `many` gets; shared by worker, as much as `many`.
    assert!(
        by_one * 3 >= by_many,
        "one connection to `one` got {by_one} requests done, eight to `many` {by_many}"
    );
}

/// The `verge_…` gauge `name` in `metrics`.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[test]
fn requests_past_the_memory_budget_get_503_and_the_node_lives() {
    let node = Node::start(&[
        "--memory-budget-mib",
        "300",
        "--max-instances",
        "8",
        "--max-instances-per-worker",
        "8",
        // Copying header maps into the host takes CPU time.
        "--max-cpu-ms",
        "5000",
    ]);
    let hog = worker("hog", &fixtures(), "");
    let small = worker(
        "small",
        &fixtures(),
        "[limits]\nmemory_mib = 8\ncpu_ms = 5000\n",
    );
    succeed(node.cli().arg("deploy").arg(hog.path()));
    succeed(node.cli().arg("deploy").arg(small.path()));

    // Four requests holding 100 MiB each for a while: the budget takes two
    // of them (the third would pass 300 MiB), the others are refused.
    let results = at_once(&node, "hog.localhost", "/alloc?mib=100&hold_ms=3000", 4);
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 503)
        .collect();
    assert!((1..=2).contains(&ok), "{results:?}");
    assert_eq!(ok + refused.len(), 4, "{results:?}");
    for (_, body) in &refused {
        assert!(
            body.contains("the node is at its memory budget"),
            "{results:?}"
        );
    }
    let line = node
        .stderr()
        .into_iter()
        .find(|l| l.contains("limit=node-memory"))
        .expect("the refusal is logged");
    assert!(
        line.contains(" 503 ") && line.contains("limit=300 MiB"),
        "{line}"
    );

    // Host objects count as memory: header maps kept in the host stop a
    // guest at its own limit (8 MiB) although its linear memory is small.
    let reply = node.get("small.localhost", "/hoard?mib=100&hold_ms=200");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.text().contains("memory limit (8 MiB)"),
        "{}",
        reply.text()
    );

    // Everything is given back.
    let metrics = || node.admin_call("GET", "/metrics", Some(TOKEN), None).text();
    eventually("the memory is given back", || {
        gauge(&metrics(), "verge_memory_used_bytes") == 0
    });
    assert_eq!(gauge(&metrics(), "verge_memory_budget_bytes"), 300 << 20);
    let reply = node.get("hog.localhost", "/alloc?mib=100");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn a_worker_takes_at_most_its_share_of_the_memory_budget() {
    // Each worker may hold half of 400 MiB, as it may run half the instances.
    let node = Node::start(&["--memory-budget-mib", "400", "--max-instances", "8"]);
    let hog = worker("hog", &fixtures(), "");
    let other = worker("other", &fixtures(), "");
    succeed(node.cli().arg("deploy").arg(hog.path()));
    succeed(node.cli().arg("deploy").arg(other.path()));

    std::thread::scope(|scope| {
        // One after another, 300 ms apart: three growing at the very same
        // moment can each be refused part of the way, all three together.
        let flood = scope.spawn(|| {
            std::thread::scope(|inner| {
                let handles: Vec<_> = (0..3u64)
                    .map(|i| {
                        let node = &node;
                        inner.spawn(move || {
                            std::thread::sleep(Duration::from_millis(300 * i));
                            let reply = node.get("hog.localhost", "/alloc?mib=90&hold_ms=4000");
                            (reply.status, reply.text())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        });
        std::thread::sleep(Duration::from_millis(1300));
        // The node still has room for another worker's large request.
        let reply = node.get("other.localhost", "/alloc?mib=90");
        assert_eq!(reply.status, 200, "{}", reply.text());
        // Two of its three fit in 200 MiB, one at least does not (growing
        // at once, two may each be refused part of the way).
        let results = flood.join().unwrap();
        let refused: Vec<_> = results
            .iter()
            .filter(|(status, _)| *status == 503)
            .collect();
        assert!((1..=2).contains(&refused.len()), "{results:?}");
        assert!(
            results.iter().any(|(status, _)| *status == 200),
            "{results:?}"
        );
        assert!(
            refused[0]
                .1
                .contains("the worker is at its share of the node's memory"),
            "{results:?}"
        );
    });
    assert!(
        node.stderr()
            .iter()
            .any(|l| l.contains("limit=worker-memory limit=200 MiB")),
        "{:?}",
        node.stderr()
    );
}

#[test]
fn a_memory_budget_that_cannot_hold_the_node_is_refused_at_start() {
    let error = serve_refused(&["--memory-budget-mib", "100"]);
    assert!(
        error.contains("too small for one request at the highest memory limit"),
        "{error}"
    );
    let error = serve_refused(&["--memory-budget-mib", "500", "--max-instances", "1000"]);
    assert!(
        error.contains("`max_instances` (--max-instances) is 1000, more than"),
        "{error}"
    );
    assert!(error.contains("lower max_instances to 400"), "{error}");
}

#[test]
fn a_guest_that_computes_for_long_still_streams_its_response() {
    // Past 1 ms of CPU a guest moves to the background threads; one that
    // answers only then, with a body far larger than what the node buffers,
    // must still stream it whole.
    let node = Node::start(&["--max-cpu-ms", "5000"]);
    let project = worker("long", &fixtures(), "[limits]\ncpu_ms = 5000\n");
    succeed(node.cli().arg("deploy").arg(project.path()));
    let reply = node.get("long.localhost", "/big?mib=8&burn=20000000");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref().map(Vec::len), Ok(8 << 20));
    let logged = || node.stderr().into_iter().find(|l| l.contains("GET /big"));
    eventually("the request is logged", || logged().is_some());
    let line = logged().unwrap();
    let cpu: f64 = line
        .split("cpu=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no cpu= in {line}"));
    assert!(cpu > 1.0, "the guest computed for {cpu} ms only: {line}");
}

#[test]
fn host_memory_freed_after_a_burst_returns_to_the_system() {
    let node = Node::start(&["--max-cpu-ms", "5000"]);
    let project = worker("hoard", &fixtures(), "[limits]\ncpu_ms = 5000\n");
    succeed(node.cli().arg("deploy").arg(project.path()));
    assert_eq!(node.get("hoard.localhost", "/plain").status, 200);
    let before = node.rss_kib();

    // Twenty requests keep 10 MiB of header maps each in the host for a
    // while; the node's memory grows by about that much.
    std::thread::scope(|scope| {
        let burst =
            scope.spawn(|| at_once(&node, "hoard.localhost", "/hoard?mib=10&hold_ms=4000", 20));
        eventually("the burst is held", || node.rss_kib() > before + 100 * 1024);
        let results = burst.join().unwrap();
        assert!(
            results.iter().all(|(status, _)| *status == 200),
            "{results:?}"
        );
    });
    // Then it is given back to the system, not kept by the allocator.
    eventually("the memory is returned", || {
        node.rss_kib() < before + 64 * 1024
    });
}
