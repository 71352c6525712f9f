//! Seed checkpoints as kernel states, computed by ntkplane's pure core from the
//! scenarios.md network at that moment.
use std::collections::BTreeMap;

use ntkplane::{
    fwd::{compute, ForwardingState},
    mac::MacAddr,
    plan::KernelState,
};

use ntkplane_lab::network::{fixed_tables, InputOptions};
pub use ntkplane_lab::seed::s2_final;

fn ids(pairs: &[(&str, u32)]) -> BTreeMap<MacAddr, u32> {
    pairs
        .iter()
        .map(|(m, id)| (m.parse().unwrap(), *id))
        .collect()
}

/// ε₂ (`2·0·0·1`, default namespace of ε) at S2-C.
pub fn eps2_s2c() -> ForwardingState {
    let net = s2_final();
    let tables = ids(&[
        ("00:16:3E:EE:AF:D1", 250),
        ("00:16:3E:EC:A3:E1", 249),
        ("00:16:3E:06:3E:90", 248),
    ]);
    let opts = InputOptions {
        serve_anonymous: true,
        anonymizer: true,
        ..Default::default()
    };
    compute(&net.input("eps2", fixed_tables(&tables), &opts).unwrap()).unwrap()
}

/// λ₁ (`2·1·1·0`, gateway of a level-1 autonomous subnet) at S2-D.
pub fn lambda1_s2d() -> ForwardingState {
    let net = s2_final();
    let tables = ids(&[("00:16:3E:3B:9F:45", 250), ("00:16:3E:3C:14:33", 249)]);
    let opts = InputOptions {
        subnet_level: 1,
        serve_anonymous: true,
        anonymizer: true,
        ..Default::default()
    };
    compute(&net.input("lambda1", fixed_tables(&tables), &opts).unwrap()).unwrap()
}

/// The reconciler's input for a state on a node whose only interface is `eth1`.
pub fn desired(st: &ForwardingState) -> ntkplane::plan::Desired {
    let (state, table_names) = kernel(st);
    ntkplane::plan::Desired {
        interfaces: vec!["eth1".into()],
        state,
        table_names,
    }
}

/// Kernel form with the full mark mask, and the table names for rt_tables.
pub fn kernel(st: &ForwardingState) -> (KernelState, BTreeMap<u32, String>) {
    let names = st.tables.values().map(|t| (t.id, t.name.clone())).collect();
    (KernelState::from_forwarding(st, u32::MAX), names)
}
