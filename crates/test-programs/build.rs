//! Builds the guest components in `guests/` for wasm32-wasip2 and tells the
//! crate where they are. They are built from source on every machine, never
//! checked in.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("FIXTURES", "fixtures.wasm"),
    ("KV_FIXTURE", "kv-fixture.wasm"),
    ("WSTD_HELLO", "wstd-hello.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("guests");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // target/<profile>/build/<pkg>/out -> target/: one guest build for every
    // profile of the host.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("wasm-guests");

    println!("cargo:rerun-if-changed={}", guests.display());
    // The guests generate KV bindings from the WIT files.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../sdk/wit").display()
    );
    add_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the guests'.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed; is the wasm32-wasip2 target installed? \
         (`rustup target add wasm32-wasip2`; rust-toolchain.toml lists it)"
    );

    let built = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    for (name, file) in GUESTS {
        let path = built.join(file.replace('-', "_"));
        let path = if path.exists() {
            path
        } else {
            built.join(file)
        };
        assert!(
            path.exists(),
            "guest component {} was not built",
            path.display()
        );
        code.push_str(&format!(
            "pub const {name}: &str = {:?};\n",
            path_str(&path)
        ));
    }
    std::fs::write(out_dir.join("guests.rs"), code).unwrap();
}

/// rustup adds the targets rust-toolchain.toml lists only when it installs
/// the toolchain; on a machine that had the toolchain already, the first
/// `cargo test` adds wasm32-wasip2 here instead of failing.
fn add_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let installed = sysroot.join("lib/rustlib/wasm32-wasip2").is_dir();
    if !installed && !sysroot.as_os_str().is_empty() {
        println!("cargo:warning=adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .expect("the target directory's path must be UTF-8")
}
