//! Nodes sharing one PostgreSQL behind nginx, with the example config from
//! docs/cluster/nginx.conf: any node serves any worker, and when one node
//! dies the load balancer's next try lands on another.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::node::{Node, PgSchema, eventually, fixtures, worker};
use common::{Reply, agent, succeed};

/// docs/cluster/nginx.conf with this test's ports: nginx on `listen`, the
/// nodes' data planes as the upstream servers.
fn nginx_config(listen: u16, nodes: &[&str]) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cluster/nginx.conf"),
    )
    .unwrap();
    let servers: String = nodes
        .iter()
        .map(|url| {
            let address = url.trim_start_matches("http://");
            format!("        server {address} max_fails=1 fail_timeout=5s;\n")
        })
        .collect();
    let mut out = String::new();
    let mut replaced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("server 127.0.0.1:") {
            if !replaced {
                out.push_str(&servers);
                replaced = true;
            }
        } else if line.trim() == "listen 80;" {
            out.push_str(&format!("        listen 127.0.0.1:{listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(replaced, "the example config lost its upstream servers");
    out
}

/// nginx's master process, stopped with SIGTERM (which takes its workers
/// down with it; SIGKILL would orphan them).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn through(port: u16, host: &str, path: &str) -> Reply {
    let request = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .body(())
        .unwrap();
    Reply::from(agent().run(request))
}

#[test]
fn nodes_behind_nginx_share_the_load_and_survive_one_of_them_dying() {
    let nginx = std::env::var("VERGE_TEST_NGINX").unwrap_or_else(|_| "nginx".into());
    let schema = PgSchema::new();
    let store = ["--store", &schema.url, "--store-schema", &schema.name];
    let a = Node::start(&store);
    let b = Node::start(&store);
    let project = worker("app", &fixtures(), "[vars]\nVERSION = \"one\"\n");
    succeed(a.cli().arg("deploy").arg(project.path()));
    eventually("the deploy reaching b", || {
        b.get("app.localhost", "/env?name=VERSION").text() == "one"
    });

    let prefix = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        prefix.path().join("nginx.conf"),
        nginx_config(port, &[&a.data, &b.data]),
    )
    .unwrap();
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(prefix.path())
            .args(["-e", "stderr", "-c", "nginx.conf", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {nginx} ({e}); install nginx or set VERGE_TEST_NGINX")
            }),
    );
    eventually("nginx answering", || {
        agent()
            .get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .is_ok()
    });

    for _ in 0..20 {
        let reply = through(port, "app.localhost", "/env?name=VERSION");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "one");
    }
    // Both nodes took a share.
    let served = |node: &Node| {
        node.stderr()
            .iter()
            .filter(|l| l.contains("GET /env 200"))
            .count()
    };
    eventually("both nodes logging requests", || {
        served(&a) >= 5 && served(&b) >= 5
    });

    // One node dies: every request still gets an answer from the other.
    drop(b);
    for _ in 0..20 {
        let reply = through(port, "app.localhost", "/env?name=VERSION");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}
