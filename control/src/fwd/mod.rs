//! Forwarding state (pure; no kernel access): table ids, the per-identity tables, rules,
//! marks, addresses and NAT.
//! Spec: `shared/spec/forwarding-state.md`, `lifecycle.md` §2, `identities.md` §5.
pub mod state;
pub mod tables;

pub use state::{
    compute, Arc, ForwardingState, IdentityInput, Interface, Path, QspnArc, Route, Rule, Table,
};
pub use tables::{table_name, TableIds, NTK_TABLE};
