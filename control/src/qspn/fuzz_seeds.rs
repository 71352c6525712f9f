//! The `etp` fuzz target's input format and seeds (control/fuzz/fuzz_targets/etp.rs): a
//! sequence of postcard-encoded `((op, is_full), EtpMessage)` steps for one instance at
//! [`FUZZ_NODE`] with two arcs. The seeds are real ETPs of two neighbours, so the fuzzer starts
//! from the structure a peer sends.
use super::{
    engine::{Params, Qspn},
    msg::{Cost, EtpMessage, Fingerprint},
};

/// The topology of the fuzzed instance: 4·2·2·2 (low level first).
pub const FUZZ_GSIZES: [u32; 4] = [2, 2, 2, 4];
/// The fuzzed instance's address (low level first): 2·1·0·0 in qspnclient's notation.
pub const FUZZ_NODE: [u32; 4] = [0, 0, 1, 2];

pub fn fingerprint(id: u64) -> Fingerprint {
    Fingerprint {
        id,
        level: 0,
        elderships: vec![0; FUZZ_GSIZES.len()],
        elderships_seed: vec![],
    }
}

/// The instance every fuzz input starts from, and its two arcs.
pub fn fuzz_instance() -> (Qspn, [u32; 2]) {
    let (mut q, _) = Qspn::create_net(
        Params::new(FUZZ_GSIZES.to_vec(), 7),
        FUZZ_NODE.to_vec(),
        fingerprint(7),
    );
    let (a, _) = q.arc_add(Cost::Real(1000));
    let (b, _) = q.arc_add(Cost::Real(2000));
    (q, [a, b])
}

/// One step of a fuzz input.
pub fn step(op: u8, is_full: bool, etp: &EtpMessage) -> Vec<u8> {
    postcard::to_stdvec(&((op, is_full), etp)).expect("encodable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::event::Output;

    /// Two neighbours of the fuzzed node, each with a neighbour of its own, and what they say.
    fn neighbour_etps() -> Vec<EtpMessage> {
        let mk = |addr: [u32; 4], id| {
            Qspn::create_net(
                Params::new(FUZZ_GSIZES.to_vec(), id),
                addr.to_vec(),
                fingerprint(id),
            )
            .0
        };
        let (mut n1, mut far) = (mk([1, 0, 1, 2], 11), mk([1, 1, 1, 2], 12));
        let (n1_far, _) = n1.arc_add(Cost::Real(500));
        let (far_n1, _) = far.arc_add(Cost::Real(500));
        let (r, _) = far.on_get_full_etp(far_n1, n1.my_naddr());
        let outs = n1.on_full_etp(n1_far, r);
        let mut etps: Vec<EtpMessage> = outs
            .into_iter()
            .filter_map(|o| match o {
                Output::SendEtp { etp, .. } => Some(etp),
                _ => None,
            })
            .collect();
        let (n1_me, _) = n1.arc_add(Cost::Real(1000));
        let (full, _) = n1.on_get_full_etp(n1_me, &FUZZ_NODE);
        etps.push(full.expect("a full ETP"));
        etps
    }

    /// `control/fuzz/seeds-etp` holds these; `NTKPLANE_WRITE_ETP_SEEDS=1` rewrites them.
    #[test]
    fn etp_fuzz_seeds_are_current() {
        let etps = neighbour_etps();
        assert!(!etps.is_empty());
        let mut seeds = vec![];
        let mut all = vec![];
        for (i, e) in etps.iter().enumerate() {
            let s = step(i as u8 % 4, i % 2 == 1, e);
            all.extend_from_slice(&s);
            seeds.push((format!("{i:02}-etp.bin"), s));
        }
        seeds.push(("10-all.bin".into(), all));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds-etp");
        if std::env::var_os("NTKPLANE_WRITE_ETP_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        for (name, bytes) in &seeds {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
            assert_eq!(
                &on_disk, bytes,
                "seed {name} is stale: rerun with NTKPLANE_WRITE_ETP_SEEDS=1"
            );
        }
        // The seeds reach the map: the fuzzed node learns destinations from them.
        let (mut q, arcs) = fuzz_instance();
        for e in etps {
            q.on_send_etp(arcs[0], e, false);
        }
        assert!(
            !q.paths().is_empty(),
            "the seeds teach the fuzzed node nothing"
        );
    }
}
