//! The QSPN ETP handler on arbitrary input (qspn.md §7.3, §9, §10): a sequence of
//! postcard-encoded `((op, is_full), EtpMessage)` steps given to one instance with two arcs
//! (`ntkplane::qspn::fuzz_seeds`). Never a panic; after every step the instance's paths are
//! well formed (hops and arcs of equal length, the destination last, no own g-node on them)
//! and its map stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntkplane::qspn::{
    fuzz_seeds::{fuzz_instance, FUZZ_NODE},
    msg::{Cost, EtpMessage, Refusal},
};

fuzz_target!(|data: &[u8]| {
    let (mut q, mut arcs) = fuzz_instance();
    let mut rest = data;
    let mut steps = 0;
    while let Ok((((op, is_full), etp), r)) =
        postcard::take_from_bytes::<((u8, bool), EtpMessage)>(rest)
    {
        rest = r;
        steps += 1;
        if steps > 64 {
            break;
        }
        let i = usize::from(op & 1);
        let arc = arcs[i];
        match (op >> 1) % 4 {
            0 => drop(q.on_send_etp(arc, etp, is_full)),
            1 => drop(q.on_full_etp(arc, Ok(etp))),
            2 => drop(q.on_full_etp(arc, Err(Refusal::BootstrapInProgress))),
            _ => drop(q.arc_changed(arc, Cost::Real(100 + u64::from(op)))),
        }
        // An arc the instance dropped (a bad ETP) comes back, as the runtime does.
        if !q.arcs().any(|a| a == arc) {
            let (a, _) = q.arc_add(Cost::Real(1000 + i as u64));
            arcs[i] = a;
        }
        let mut total = 0;
        for (d, ps) in q.paths() {
            for p in &ps {
                assert_eq!(p.hops.len(), p.arcs.len());
                assert_eq!(p.hops.last(), Some(&d));
                assert!(q.arcs().any(|a| a == p.arc), "a path over a removed arc");
                assert!(
                    !p.hops.iter().any(|h| FUZZ_NODE.get(h.lvl) == Some(&h.pos)),
                    "a path through one of my own g-nodes: {p:?}"
                );
                assert!(!matches!(p.cost, Cost::Dead), "a dead path kept");
            }
            total += ps.len();
        }
        assert!(total <= 10_000, "the map grew without bound: {total} paths");
    }
});
