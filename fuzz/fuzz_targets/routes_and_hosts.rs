//! Route patterns from manifests and the Host header and path of client
//! requests, which the node matches against them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verge_manifest::{RoutePattern, request_host};

fuzz_target!(|input: (&str, &[u8], &str)| {
    let (pattern, host_header, path) = input;
    let mut request = http::Request::builder();
    if let Ok(value) = http::HeaderValue::from_bytes(host_header) {
        request = request.header(http::header::HOST, value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let host = request_host(&request);
    assert_eq!(host, host.to_ascii_lowercase());
    assert!(!host.ends_with('.'));
    if let Ok(route) = pattern.parse::<RoutePattern>() {
        let again: RoutePattern = route.to_string().parse().unwrap();
        assert_eq!(again, route);
        let _ = route.matches(&host, path);
    }
});
