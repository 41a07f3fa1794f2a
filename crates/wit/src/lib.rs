//! The WIT packages of the interfaces Verge gives guests beyond the standard
//! `wasi:http/proxy` world, versioned from the start: `verge:kv@0.1.0`.
//!
//! The host generates its bindings from [`WIT_DIR`] (see `verge-runtime`);
//! guests generate theirs from the same files with `wit-bindgen`.

/// The directory holding the `.wit` files.
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wit");

#[cfg(test)]
mod tests {
    #[test]
    fn the_kv_package_is_versioned() {
        let text = std::fs::read_to_string(format!("{}/kv.wit", super::WIT_DIR)).unwrap();
        assert!(text.starts_with("package verge:kv@0.1.0;"));
    }
}
