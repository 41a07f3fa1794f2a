//! What a worker is given besides the request: its KV bindings, variables
//! and secrets, all declared outside the code.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::Error;
use crate::kv::Kv;

/// The worker's bindings. Cheap to clone; pass it to route handlers as the
/// router's state.
#[derive(Clone, Default)]
pub struct Env {
    /// Namespaces opened during this request, by binding. Type-erased so
    /// that a worker that never calls [`Env::kv`] links no KV code at all
    /// (not even the handle's destructor): its component then imports
    /// nothing beyond `wasi:http/proxy` and runs on any WASI HTTP host.
    opened: Rc<RefCell<HashMap<String, Box<dyn Any>>>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("opened", &self.opened.borrow().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    /// A new environment. The entry point makes one per request; tests can
    /// make their own.
    pub fn new() -> Env {
        Env::default()
    }

    /// The KV namespace bound as `binding` (`[[kv_namespaces]]` in
    /// `verge.toml`). An unbound name is an error that says what to add.
    pub fn kv(&self, binding: &str) -> Result<Kv, Error> {
        if let Some(kv) = self
            .opened
            .borrow()
            .get(binding)
            .and_then(|kv| kv.downcast_ref::<Kv>())
        {
            return Ok(kv.clone());
        }
        let kv = Kv::open(binding)?;
        self.opened
            .borrow_mut()
            .insert(binding.to_string(), Box::new(kv.clone()));
        Ok(kv)
    }

    /// The variable `name` from `[vars]` in `verge.toml`.
    pub fn var(&self, name: &str) -> Result<String, Error> {
        std::env::var(name).map_err(|_| {
            Error::internal(format!(
                "variable `{name}` is not set: add `{name} = \"...\"` under [vars] in verge.toml"
            ))
        })
    }

    /// The secret `name`, set with `verge secret put {name}` on a node, or
    /// in `.dev.vars` beside `verge.toml` for `verge dev`. Never log it.
    pub fn secret(&self, name: &str) -> Result<String, Error> {
        std::env::var(name).map_err(|_| {
            Error::internal(format!(
                "secret `{name}` is not set: run `verge secret put {name}`, \
                 or add `{name}=...` to .dev.vars for `verge dev`"
            ))
        })
    }
}
