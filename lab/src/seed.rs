//! The reference test network of `shared/spec/scenarios.md` §1 (systems α β γ δ ε λ μ, their
//! MACs and link-locals, the physical arcs and their costs) at the checkpoints the spec lists
//! complete route tables for. One definition for the golden tests, the kernel tests and the lab.
use crate::network::{arc, identity, Network};
use ntkplane::addr::Topology;

/// The topology of every scenario.
pub const TOPOLOGY: &str = "4.2.2.2";

/// `(name, address, dev, MAC, link-local, main)`.
pub type IdentityRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
);
/// `(a, b, cost measured by a, cost measured by b)`.
pub type ArcRow = (&'static str, &'static str, u64, u64);

const ALPHA1: IdentityRow = (
    "alpha1",
    "2.0.1.0",
    "eth1",
    "00:16:3E:FD:E2:AA",
    "169.254.69.30",
    true,
);
const BETA1_S0: IdentityRow = (
    "beta1",
    "2.1.1.1",
    "eth1",
    "00:16:3E:EC:A3:E1",
    "169.254.96.141",
    true,
);
const GAMMA0: IdentityRow = (
    "gamma0",
    "2.1.1.0",
    "eth1",
    "00:16:3E:5B:78:D5",
    "169.254.94.223",
    true,
);
const DELTA1: IdentityRow = (
    "delta1",
    "2.1.0.1",
    "eth1",
    "00:16:3E:1A:C4:45",
    "169.254.253.216",
    true,
);
const MU2: IdentityRow = (
    "mu2",
    "2.1.0.0",
    "eth1",
    "00:16:3E:2D:8D:DE",
    "169.254.119.176",
    true,
);
const EPS1_VIRTUAL: IdentityRow = (
    "eps1",
    "2.1.1.2",
    "eth1",
    "00:16:3E:3C:14:33",
    "169.254.163.36",
    true,
);
const EPS1: IdentityRow = (
    "eps1",
    "2.1.1.1",
    "eth1",
    "00:16:3E:3C:14:33",
    "169.254.163.36",
    true,
);
const BETA2: IdentityRow = (
    "beta2",
    "2.0.1.1",
    "eth1",
    "00:16:3E:EC:A3:E1",
    "169.254.96.141",
    true,
);
const BETA1_MIGR01: IdentityRow = (
    "beta1",
    "2.1.1.3",
    "migr01_eth1",
    "00:16:3E:EE:AF:D1",
    "169.254.27.218",
    false,
);
const BETA3_MIGR01: IdentityRow = (
    "beta3",
    "2.0.0.3",
    "migr01_eth1",
    "00:16:3E:EE:AF:D1",
    "169.254.27.218",
    false,
);
const BETA1_MIGR02: IdentityRow = (
    "beta1",
    "2.1.3.3",
    "migr02_eth1",
    "00:16:3E:BD:34:98",
    "169.254.42.4",
    false,
);
const GAMMA1: IdentityRow = (
    "gamma1",
    "2.0.0.0",
    "eth1",
    "00:16:3E:5B:78:D5",
    "169.254.94.223",
    true,
);
const GAMMA0_MIGR02: IdentityRow = (
    "gamma0",
    "2.1.3.0",
    "migr02_eth1",
    "00:16:3E:AF:4C:2A",
    "169.254.24.198",
    false,
);
const EPS2: IdentityRow = (
    "eps2",
    "2.0.0.1",
    "eth1",
    "00:16:3E:3C:14:33",
    "169.254.163.36",
    true,
);
const EPS1_MIGR02: IdentityRow = (
    "eps1",
    "2.1.3.1",
    "migr02_eth1",
    "00:16:3E:3B:9F:45",
    "169.254.241.153",
    false,
);
const LAMBDA1: IdentityRow = (
    "lambda1",
    "2.1.1.0",
    "eth1",
    "00:16:3E:06:3E:90",
    "169.254.109.22",
    true,
);

/// A network of the reference topology from table rows.
pub fn network(ids: &[IdentityRow], arcs: &[ArcRow]) -> Network {
    let t: Topology = TOPOLOGY.parse().expect("valid topology");
    Network {
        identities: ids
            .iter()
            .map(|(n, a, d, m, l, main)| identity(&t, n, a, d, m, l, *main))
            .collect(),
        arcs: arcs.iter().map(|(a, b, x, y)| arc(a, b, *x, *y)).collect(),
        topology: t,
    }
}

const S0_ARCS: [ArcRow; 4] = [
    ("alpha1", "beta1", 10000, 10000),
    ("beta1", "gamma0", 10000, 11000),
    ("gamma0", "delta1", 11000, 10000),
    ("delta1", "mu2", 11000, 10000),
];

/// S0 (§3): G_γ with α₁, β₁, γ₀, δ₁, μ₂, after entr01–entr04.
pub fn s0() -> Network {
    network(&[ALPHA1, BETA1_S0, GAMMA0, DELTA1, MU2], &S0_ARCS)
}

/// S1-B: S0 plus ε₁ `2·1·1·2` (still virtual) with its arc to β₁.
pub fn s1_b() -> Network {
    let mut arcs = S0_ARCS.to_vec();
    arcs.push(("beta1", "eps1", 10000, 10000));
    network(
        &[ALPHA1, BETA1_S0, GAMMA0, DELTA1, MU2, EPS1_VIRTUAL],
        &arcs,
    )
}

/// S1-C: after migr01, ε's phase 2 and β₁'s outer-arc removal.
pub fn s1_c() -> Network {
    network(
        &[ALPHA1, BETA2, BETA1_MIGR01, GAMMA0, DELTA1, MU2, EPS1],
        &[
            ("alpha1", "beta2", 10000, 10000),
            ("beta2", "gamma0", 10000, 11000),
            ("beta2", "eps1", 10000, 10000),
            ("beta1", "gamma0", 10000, 11000),
            ("beta1", "eps1", 10000, 10000),
            ("gamma0", "delta1", 11000, 10000),
            ("delta1", "mu2", 11000, 10000),
        ],
    )
}

/// S2-C/S2-D: after entr06 and migr02 (λ entered, 2·1·1· moved to 2·0·0·).
pub fn s2_final() -> Network {
    network(
        &[
            ALPHA1,
            BETA2,
            BETA3_MIGR01,
            BETA1_MIGR02,
            GAMMA1,
            GAMMA0_MIGR02,
            EPS2,
            EPS1_MIGR02,
            DELTA1,
            MU2,
            LAMBDA1,
        ],
        &[
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
        ],
    )
}
