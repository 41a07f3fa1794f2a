//! `verge.toml` as `verge dev`, `verge deploy` and the node read it: TOML,
//! names, bindings, the outbound allow-list, routes, cron schedules and
//! limits. Any text gets a manifest or an error, never a panic; what is
//! accepted stays within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verge_manifest::{MAX_ROUTES, MAX_VARS, Manifest};

fuzz_target!(|text: &str| {
    let Ok(manifest) = Manifest::parse(text, std::path::Path::new("/fuzz/verge.toml")) else {
        return;
    };
    assert!(manifest.vars.len() <= MAX_VARS);
    assert!(manifest.routes.len() <= MAX_ROUTES);
    for route in &manifest.routes {
        // A route written back reads as itself.
        let again: verge_manifest::RoutePattern = route.to_string().parse().unwrap();
        assert_eq!(&again, route);
    }
});
