//! Seed checkpoints as kernel states, computed by ntkplane's pure core from the
//! scenarios.md network at that moment.
use std::collections::BTreeMap;

use ntkplane::{
    addr::Topology,
    fwd::{
        compute,
        network::{arc, fixed_tables, identity, InputOptions, Network},
        ForwardingState,
    },
    mac::MacAddr,
    plan::KernelState,
};

/// The network after scenario S2 (scenarios.md §5, S2-C/S2-D).
pub fn s2_final() -> Network {
    let t: Topology = "4.2.2.2".parse().unwrap();
    let ids = [
        (
            "alpha1",
            "2.0.1.0",
            "eth1",
            "00:16:3E:FD:E2:AA",
            "169.254.69.30",
            true,
        ),
        (
            "beta2",
            "2.0.1.1",
            "eth1",
            "00:16:3E:EC:A3:E1",
            "169.254.96.141",
            true,
        ),
        (
            "beta3",
            "2.0.0.3",
            "migr01_eth1",
            "00:16:3E:EE:AF:D1",
            "169.254.27.218",
            false,
        ),
        (
            "beta1",
            "2.1.3.3",
            "migr02_eth1",
            "00:16:3E:BD:34:98",
            "169.254.42.4",
            false,
        ),
        (
            "gamma1",
            "2.0.0.0",
            "eth1",
            "00:16:3E:5B:78:D5",
            "169.254.94.223",
            true,
        ),
        (
            "gamma0",
            "2.1.3.0",
            "migr02_eth1",
            "00:16:3E:AF:4C:2A",
            "169.254.24.198",
            false,
        ),
        (
            "eps2",
            "2.0.0.1",
            "eth1",
            "00:16:3E:3C:14:33",
            "169.254.163.36",
            true,
        ),
        (
            "eps1",
            "2.1.3.1",
            "migr02_eth1",
            "00:16:3E:3B:9F:45",
            "169.254.241.153",
            false,
        ),
        (
            "delta1",
            "2.1.0.1",
            "eth1",
            "00:16:3E:1A:C4:45",
            "169.254.253.216",
            true,
        ),
        (
            "mu2",
            "2.1.0.0",
            "eth1",
            "00:16:3E:2D:8D:DE",
            "169.254.119.176",
            true,
        ),
        (
            "lambda1",
            "2.1.1.0",
            "eth1",
            "00:16:3E:06:3E:90",
            "169.254.109.22",
            true,
        ),
    ];
    let identities = ids
        .iter()
        .map(|(n, a, d, m, l, main)| identity(&t, n, a, d, m, l, *main))
        .collect();
    let arcs = [
        ("alpha1", "beta2", 10000, 10000),
        ("beta2", "gamma1", 10000, 11000),
        ("beta3", "gamma1", 10000, 11000),
        ("beta1", "gamma0", 10000, 11000),
        ("beta2", "eps2", 10000, 10000),
        ("beta3", "eps2", 10000, 10000),
        ("beta1", "eps1", 10000, 10000),
        ("gamma1", "delta1", 11000, 10000),
        ("gamma0", "delta1", 11000, 10000),
        ("delta1", "mu2", 11000, 10000),
        ("eps2", "lambda1", 10000, 10000),
        ("eps1", "lambda1", 10000, 10000),
    ]
    .iter()
    .map(|(a, b, x, y)| arc(a, b, *x, *y))
    .collect();
    Network {
        topology: t,
        identities,
        arcs,
    }
}

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
pub fn desired(st: &ForwardingState) -> ntkplane::kernel::Desired {
    let (state, table_names) = kernel(st);
    ntkplane::kernel::Desired {
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
