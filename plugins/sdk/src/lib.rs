//! Write keygate plugins in a few lines. The WIT contract (plugins/wit) is generated into
//! [`authorizer`] and [`auditor`]; this crate adds the helpers every plugin needs: its JSON
//! configuration, key-range arithmetic, and etcd-style denials.
//!
//! ```ignore
//! use keygate_plugin_sdk::authorizer::{export_authorizer, Decision, Guest, Identity, Request};
//! struct Plugin;
//! impl Guest for Plugin {
//!     fn init(_config: String) -> Result<(), String> { Ok(()) }
//!     fn authorize(who: Identity, what: Request) -> Decision { Decision::Allow }
//! }
//! export_authorizer!(Plugin);
//! ```

pub mod keys;
mod operation;

pub use operation::operations;

/// The authorizer world: implement [`authorizer::Guest`], then `export_authorizer!(YourType)`.
// The generated export takes `authorize`'s 14 flat parameters (identity and request fit the
// canonical ABI's 16, so keygate passes them in registers rather than through memory).
#[allow(clippy::too_many_arguments)]
pub mod authorizer {
    wit_bindgen::generate!({
        world: "authorizer",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_authorizer",
        default_bindings_module: "keygate_plugin_sdk::authorizer",
    });
    pub use self::keygate::plugin::host::{count, log, Level};
    pub use self::keygate::plugin::types::{
        Access, Denial, IdentitySource, KeyRange, Operation, RequestFlags,
    };

    /// The gRPC code etcd uses for a refused request.
    pub const PERMISSION_DENIED: u32 = 7;

    /// etcd's own refusal: PERMISSION_DENIED "etcdserver: permission denied".
    pub fn permission_denied() -> Decision {
        deny("etcdserver: permission denied")
    }

    /// PERMISSION_DENIED with a reason of the plugin's.
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny(Denial {
            code: PERMISSION_DENIED,
            reason: reason.into(),
        })
    }

    impl Request {
        /// The ranges the request writes.
        pub fn writes(&self) -> impl Iterator<Item = &KeyRange> {
            self.ranges.iter().filter(|r| r.access == Access::Write)
        }
    }
}

/// The auditor world: implement [`auditor::Guest`], then `export_auditor!(YourType)`.
pub mod auditor {
    wit_bindgen::generate!({
        world: "auditor",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_auditor",
        default_bindings_module: "keygate_plugin_sdk::auditor",
        // One set of types for both worlds: what an authorizer sees is what an auditor sees.
        with: {
            "keygate:plugin/types@0.2.0": crate::authorizer::keygate::plugin::types,
            "keygate:plugin/host@0.2.0": crate::authorizer::keygate::plugin::host,
        },
    });
    pub use crate::authorizer::keygate::plugin::host::{count, log, Level};
    pub use crate::authorizer::keygate::plugin::types::{
        Access, Identity, IdentitySource, KeyRange, Operation, Request, RequestFlags, ServedBy,
        Verdict,
    };
}

/// Parses the plugin's configuration (keygate passes the plugin's `config` table as JSON);
/// an empty string is the type's default.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    if config.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))
}

/// Holds a plugin's state, set once by `init`.
pub struct State<T>(std::sync::OnceLock<T>);

impl<T> State<T> {
    pub const fn new() -> Self {
        State(std::sync::OnceLock::new())
    }
    /// Stores the state; a second `init` on the same instance is refused.
    pub fn set(&self, value: T) -> Result<(), String> {
        self.0
            .set(value)
            .map_err(|_| "init called twice".to_string())
    }
    /// The state, if `init` succeeded.
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self::new()
    }
}
