//! The runtime as a library: loading components, and what a node that has
//! not opted in to error details tells its clients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use verge_runtime::server::{ServeOptions, SingleWorker, serve};
use verge_runtime::{
    CompileSource, LoadError, RequestSink, RequestSummary, Runtime, RuntimeConfig, Termination,
    WorkerSpec,
};

#[derive(Default)]
struct Collect(Mutex<Vec<RequestSummary>>);

impl RequestSink for Collect {
    fn record(&self, summary: &RequestSummary) {
        self.0.lock().unwrap().push(summary.clone());
    }
}

fn runtime(sink: Arc<Collect>, cache: Option<std::path::PathBuf>) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        sink,
        cache_dir: cache,
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn fixtures() -> WorkerSpec {
    WorkerSpec::new(
        "fixtures",
        verge_test_programs::read(verge_test_programs::FIXTURES),
    )
}

/// Serves `spec` on port 0 and runs `client` (blocking) against its URL.
async fn with_server<T: Send + 'static>(
    runtime: &Arc<Runtime>,
    spec: WorkerSpec,
    client: impl FnOnce(String) -> T + Send + 'static,
) -> T {
    let (worker, _) = runtime.load(spec).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(SingleWorker::new(worker)),
        ServeOptions {
            drain_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let result = tokio::task::spawn_blocking(move || client(url))
        .await
        .unwrap();
    let _ = stop.send(());
    assert!(server.await.unwrap(), "server did not drain");
    result
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_failure_details_reach_the_log_but_not_the_client() {
    let sink = Arc::new(Collect::default());
    let runtime = runtime(sink.clone(), None);
    let (status, body) =
        with_server(&runtime, fixtures(), |url| get(&format!("{url}/panic"))).await;
    assert_eq!(status, 500);
    assert!(
        body.starts_with("the worker panicked\nrequest id: "),
        "{body}"
    );
    assert!(!body.contains("boom"), "guest detail leaked: {body}");

    let summaries = sink.0.lock().unwrap();
    let summary = summaries
        .iter()
        .find(|s| s.path == "/panic")
        .expect("a summary for /panic");
    assert_eq!(summary.status, 500);
    assert!(body.contains(&summary.id.to_string()));
    match &summary.termination {
        Some(Termination::Panic { message }) => {
            assert!(message.contains("panicked at"), "{message}")
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(
        summary
            .logs
            .iter()
            .any(|l| l.text.contains("boom from the fixtures"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_carry_status_timings_and_guest_lines() {
    let sink = Arc::new(Collect::default());
    let runtime = runtime(sink.clone(), None);
    let (status, body) =
        with_server(&runtime, fixtures(), |url| get(&format!("{url}/hello"))).await;
    assert_eq!((status, body.as_str()), (200, "hello from fixtures\n"));
    let summaries = sink.0.lock().unwrap();
    let s = &summaries[0];
    assert_eq!(
        (s.method.as_str(), s.path.as_str(), s.status),
        ("GET", "/hello", 200)
    );
    assert!(
        s.cpu > Duration::ZERO && s.wall >= s.cpu,
        "cpu {:?} wall {:?}",
        s.cpu,
        s.wall
    );
    let texts: Vec<&str> = s.logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["saying hello", "to stderr too"]);
    assert!(s.termination.is_none());
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let runtime = runtime(Arc::default(), None);
    let err = runtime
        .load(WorkerSpec::new("bad", b"\0asm garbage".to_vec()))
        .err()
        .unwrap();
    let LoadError::Compile(cause) = &err else {
        panic!("{err}");
    };
    // wasmtime's reason is kept as the source, for reports that walk it.
    let source = std::error::Error::source(&err).expect("a source");
    assert_eq!(source.to_string(), cause.to_string());
    assert!(format!("{:#}", anyhow::Error::from(err)).contains(": "));
}

/// A component instantiating `memories` core modules of one memory each.
fn component_with_memories(memories: u32) -> Vec<u8> {
    use wasm_encoder::{
        Component, InstanceSection, MemorySection, MemoryType, Module, ModuleArg, ModuleSection,
    };
    let mut component = Component::new();
    let mut instances = InstanceSection::new();
    for index in 0..memories {
        let mut module = Module::new();
        let mut section = MemorySection::new();
        section.memory(MemoryType {
            minimum: 1,
            maximum: Some(1),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&section);
        component.section(&ModuleSection(&module));
        instances.instantiate(index, Vec::<(&str, ModuleArg)>::new());
    }
    component.section(&instances);
    component.finish()
}

#[test]
fn a_component_shaped_to_take_more_than_its_share_of_the_pool_is_refused() {
    let runtime = runtime(Arc::default(), None);
    assert!(
        runtime.pooling(),
        "this test needs the pooling allocator (it could not reserve its address space here)"
    );
    let err = runtime
        .load(WorkerSpec::new("greedy", component_with_memories(3)))
        .err()
        .unwrap();
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("3 Wasm linear memories"), "{text}");
    // Within the share, the same shape gets past the pool (and on to the
    // check that it is an HTTP worker).
    let err = runtime
        .load(WorkerSpec::new("fits", component_with_memories(2)))
        .err()
        .unwrap();
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(!text.contains("linear memories"), "{text}");
}

#[test]
fn components_above_the_size_limit_are_refused() {
    let runtime = runtime(Arc::default(), None);
    let err = runtime
        .load(WorkerSpec::new(
            "big",
            vec![0; verge_runtime::MAX_COMPONENT_SIZE + 1],
        ))
        .err()
        .unwrap();
    assert!(err.to_string().contains("above the limit"), "{err}");
}

#[test]
fn limits_above_the_ceiling_are_refused_before_compiling() {
    let runtime = runtime(Arc::default(), None);
    let mut spec = fixtures();
    spec.limits.wall = Duration::from_secs(31);
    let err = runtime.load(spec).err().unwrap();
    assert!(
        err.to_string().contains("limit `wall_ms` is 31000 ms"),
        "{err}"
    );
}

#[test]
fn the_compile_cache_is_keyed_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(Arc::default(), Some(dir.path().to_path_buf()));
    let (_, first) = runtime.load(fixtures()).unwrap();
    assert!(matches!(first, CompileSource::Compiled(_)));
    let (worker, second) = runtime.load(fixtures()).unwrap();
    assert_eq!(second, CompileSource::Cache);
    let other = verge_test_programs::read(verge_test_programs::WSTD_HELLO);
    let (_, third) = runtime.load(WorkerSpec::new("wstd", other)).unwrap();
    assert!(
        matches!(third, CompileSource::Compiled(_)),
        "a different component must compile"
    );
    assert_eq!(worker.hash().len(), 64);

    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        std::fs::write(entry.path(), b"damaged").unwrap();
    }
    // While a worker runs the component, another load shares its code in
    // memory: the damaged file is not even read.
    let (sharing, shared) = runtime.load(fixtures()).unwrap();
    assert_eq!(shared, CompileSource::Cache);
    // Once no worker holds it, it comes from disk again, where a damaged
    // artifact is recompiled, not trusted.
    drop((worker, sharing));
    let (_, again) = runtime.load(fixtures()).unwrap();
    assert!(matches!(again, CompileSource::Compiled(_)));
}

fn sharing_runtime(secret: Option<&str>, cache: &std::path::Path) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        code_secret: secret.map(|s| s.as_bytes().to_vec()),
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_sealed_by_one_node_runs_on_another_and_nothing_else_does() {
    const SECRET: &str = "0123456789abcdef-cluster";
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = sharing_runtime(Some(SECRET), dirs[0].path());
    let (compiled, source) = a.load(fixtures()).unwrap();
    assert!(matches!(source, CompileSource::Compiled(_)), "{source:?}");
    let sealed = a.seal(&compiled).unwrap().unwrap();
    let hash = compiled.hash().to_string();

    // A node with the same secret runs it without compiling, and keeps it
    // in its own cache for its next start.
    let b = sharing_runtime(Some(SECRET), dirs[1].path());
    assert!(!b.compiled_here(&hash));
    assert_eq!(a.engine_key(), b.engine_key());
    let (shared, source) = b.load_shared(fixtures(), Some(&sealed)).unwrap();
    assert_eq!(source, CompileSource::Shared);
    assert!(b.compiled_here(&hash));
    let (status, body) = with_server(&b, fixtures(), |url| get(&format!("{url}/plain"))).await;
    assert_eq!((status, body.as_str()), (200, "hello world\n"));
    drop(shared);
    let restarted = sharing_runtime(Some(SECRET), dirs[1].path());
    assert_eq!(restarted.load(fixtures()).unwrap().1, CompileSource::Cache);

    // Everything else compiles here: another cluster's secret, one altered
    // byte of code, the seal of another component, no secret at all.
    let mut altered = sealed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let other = || {
        WorkerSpec::new(
            "wstd",
            verge_test_programs::read(verge_test_programs::WSTD_HELLO),
        )
    };
    let cases: [(&str, Option<&str>, WorkerSpec, &[u8]); 4] = [
        (
            "another secret",
            Some("another-cluster-secret"),
            fixtures(),
            &sealed,
        ),
        ("an altered byte", Some(SECRET), fixtures(), &altered),
        ("another component", Some(SECRET), other(), &sealed),
        ("no secret", None, fixtures(), &sealed),
    ];
    for ((case, secret, spec, code), dir) in cases.into_iter().zip(&dirs[2..]) {
        let node = sharing_runtime(secret, dir.path());
        let (worker, source) = node.load_shared(spec, Some(code)).unwrap();
        assert!(
            matches!(source, CompileSource::Compiled(_)),
            "{case}: {source:?}"
        );
        assert_eq!(node.seal(&worker).is_some(), secret.is_some(), "{case}");
    }
}
