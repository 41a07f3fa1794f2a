//! Exercises the whole `verge:kv/store` interface over HTTP, one route per
//! operation, answering with the result or the error value it got.

use std::io::{Read, Write};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../../sdk/wit",
    world: "verge:kv/kv-guest",
});

use verge::kv::store::{Bucket, Condition, Expiration, ListOptions, PutOptions};

wasip2::http::proxy::export!(KvFixture);

struct KvFixture;

impl Guest for KvFixture {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        let arg = |name: &str| -> Option<String> {
            query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
        };
        let binding = arg("b").unwrap_or_else(|| "KV".into());
        let bucket = match Bucket::open(&binding) {
            Ok(bucket) => bucket,
            Err(e) => return respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
        };
        let key = arg("key").unwrap_or_default().into_bytes();
        match path {
            "/open" => respond(out, 200, &[], b"ok"),
            "/put" => {
                let value = match arg("bytes") {
                    Some(n) => vec![b'v'; n.parse().unwrap_or(0)],
                    None => read_body(request),
                };
                let options = PutOptions {
                    expiration: match (arg("ttl"), arg("at")) {
                        (Some(ttl), _) => Expiration::Ttl(ttl.parse().unwrap_or(0)),
                        (None, Some(at)) => Expiration::At(at.parse().unwrap_or(0)),
                        (None, None) => Expiration::Never,
                    },
                    metadata: arg("meta"),
                    condition: match arg("if").as_deref() {
                        None => Condition::Always,
                        Some("absent") => Condition::IfAbsent,
                        Some(g) => Condition::IfGeneration(g.parse().unwrap_or(0)),
                    },
                };
                match bucket.put(&key, &value, &options) {
                    Ok(generation) => respond(out, 200, &[], generation.to_string().as_bytes()),
                    Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            "/get" => match bucket.get(&key) {
                Ok(Some(entry)) => {
                    let mut headers = vec![("x-generation", entry.generation.to_string())];
                    if let Some(m) = entry.metadata {
                        headers.push(("x-metadata", m));
                    }
                    if let Some(e) = entry.expiration {
                        headers.push(("x-expiration", e.to_string()));
                    }
                    respond(out, 200, &headers, &entry.value)
                }
                Ok(None) => respond(out, 404, &[], b"absent"),
                Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
            },
            "/get-many" => {
                let keys: Vec<Vec<u8>> = arg("keys").unwrap_or_default().split(',').map(|k| k.as_bytes().to_vec()).collect();
                match bucket.get_many(&keys) {
                    Ok(entries) => {
                        let text: Vec<String> = entries
                            .into_iter()
                            .map(|e| e.map_or("-".into(), |e| String::from_utf8_lossy(&e.value).into_owned()))
                            .collect();
                        respond(out, 200, &[], text.join(",").as_bytes())
                    }
                    Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            "/delete" => match bucket.delete(&key) {
                Ok(existed) => respond(out, 200, &[], existed.to_string().as_bytes()),
                Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
            },
            // A cron tick: counts runs per tick, so tests can see each ran
            // once.
            "/.well-known/verge/scheduled" if request.headers().has("verge-scheduled") => {
                let time = arg("time").unwrap_or_default();
                match bucket.increment(format!("tick:{time}").as_bytes(), 1) {
                    Ok(n) => respond(out, 200, &[], n.to_string().as_bytes()),
                    Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            "/incr" => {
                let by = arg("by").and_then(|b| b.parse().ok()).unwrap_or(1);
                match bucket.increment(&key, by) {
                    Ok(n) => respond(out, 200, &[], n.to_string().as_bytes()),
                    Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            "/list" => {
                let options = ListOptions {
                    prefix: arg("prefix").unwrap_or_default().into_bytes(),
                    limit: arg("limit").and_then(|l| l.parse().ok()),
                    cursor: arg("cursor"),
                };
                match bucket.list_keys(&options) {
                    Ok(page) => {
                        let names: Vec<String> =
                            page.keys.iter().map(|k| String::from_utf8_lossy(&k.name).into_owned()).collect();
                        let mut headers = vec![("x-complete", page.list_complete.to_string())];
                        if let Some(cursor) = page.cursor {
                            headers.push(("x-cursor", cursor));
                        }
                        respond(out, 200, &headers, names.join("\n").as_bytes())
                    }
                    Err(e) => respond(out, 400, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            "/bench" => {
                // Times `n` operations from inside the guest and reports
                // percentiles in nanoseconds: `op` is get (of keys
                // bench:0..keys, prefilled by the host) or put.
                let n = arg("n").and_then(|n| n.parse().ok()).unwrap_or(1000usize);
                let size = arg("size").and_then(|n| n.parse().ok()).unwrap_or(100usize);
                let keys = arg("keys").and_then(|n| n.parse().ok()).unwrap_or(1000usize);
                let op = arg("op").unwrap_or_default();
                let value = vec![b'x'; size];
                let options = PutOptions { expiration: Expiration::Never, metadata: None, condition: Condition::Always };
                let mut times = Vec::with_capacity(n);
                let started = wasip2::clocks::monotonic_clock::now();
                for i in 0..n {
                    let key = format!("bench:{}", i % keys);
                    let t0 = wasip2::clocks::monotonic_clock::now();
                    let ok = match op.as_str() {
                        "get" => bucket.get(key.as_bytes()).map(|e| e.is_some()).unwrap_or(false),
                        _ => bucket.put(key.as_bytes(), &value, &options).is_ok(),
                    };
                    times.push(wasip2::clocks::monotonic_clock::now() - t0);
                    if !ok {
                        return respond(out, 500, &[], format!("{op} of {key} failed").as_bytes());
                    }
                }
                let total = wasip2::clocks::monotonic_clock::now() - started;
                times.sort_unstable();
                let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
                let text = format!("p50={} p99={} total={} n={n}", p(0.50), p(0.99), total);
                respond(out, 200, &[], text.as_bytes())
            }
            "/put1" => {
                // One put of `size` bytes under a fresh random key: a load
                // generator's unit of write throughput.
                let size = arg("size").and_then(|n| n.parse().ok()).unwrap_or(100usize);
                let key = format!("load:{:016x}", wasip2::random::random::get_random_u64());
                let options = PutOptions { expiration: Expiration::Never, metadata: None, condition: Condition::Always };
                match bucket.put(key.as_bytes(), &vec![b'x'; size], &options) {
                    Ok(_) => respond(out, 200, &[], b"ok"),
                    Err(e) => respond(out, 500, &[], format!("error: {e:?}").as_bytes()),
                }
            }
            _ => respond(out, 404, &[], b"no such route"),
        }
    }
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let body = request.consume().unwrap();
    let mut stream = body.stream().unwrap();
    let mut bytes = Vec::new();
    let _ = Read::read_to_end(&mut stream, &mut bytes);
    bytes
}

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.set(name, &[value.clone().into_bytes()]);
    }
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = outgoing.write().unwrap();
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
