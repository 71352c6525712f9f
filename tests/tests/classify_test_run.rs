//! `BPF_PROG_TEST_RUN` tests of the `classify` program: crafted frames in, verdict and
//! `skb->mark` out, counters read back from the per-CPU map.
use aya::programs::{TestRun, TestRunOptions};
use ntkplane::{
    classifier::{Classifier, ClassifierConfig, ClassifierError},
    mac::MacAddr,
    netns::Netns,
};
use ntkplane_integration::{
    lab::require_root,
    packet::{frame, test_run},
};

/// `TCX_NEXT` (-1) as the u32 the syscall reports: "let the next program decide".
const TCX_NEXT: u32 = u32::MAX;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;

const NEIGHBOUR: [u8; 6] = [0x00, 0x16, 0x3E, 0x5B, 0x78, 0xD5];
const STRANGER: [u8; 6] = [0x00, 0x16, 0x3E, 0x2D, 0x8D, 0xDE];
const BROADCAST: [u8; 6] = [0xFF; 6];
const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0x01];

/// Runs the program once on `data` with `mark_in`; returns (verdict, mark out).
fn run(c: &Classifier, data: &[u8], mark_in: u32) -> (u32, u32) {
    let r = test_run(c, data, mark_in, 1);
    assert_eq!(r.data, data, "classify must not modify the frame");
    (r.verdict, r.mark)
}

struct Case {
    name: &'static str,
    mask: u32,
    /// Map entries (MAC, mark).
    entries: &'static [([u8; 6], u32)],
    frame: Vec<u8>,
    mark_in: u32,
    mark_out: u32,
}

#[test]
fn classify_table() {
    require_root();
    let big = frame(NEIGHBOUR, ETH_P_IP, 106);
    let cases = [
        Case {
            name: "hit sets the mark",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: big.clone(),
            mark_in: 0,
            mark_out: 250,
        },
        Case {
            name: "hit overwrites a previous mark (full mask)",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: big.clone(),
            mark_in: 0xdead_beef,
            mark_out: 250,
        },
        Case {
            name: "miss leaves the mark unchanged",
            mask: u32::MAX,
            entries: &[(STRANGER, 249)],
            frame: big.clone(),
            mark_in: 0x1234,
            mark_out: 0x1234,
        },
        Case {
            name: "empty map: miss",
            mask: u32::MAX,
            entries: &[],
            frame: big.clone(),
            mark_in: 7,
            mark_out: 7,
        },
        Case {
            name: "mask: bits outside survive",
            mask: 0x0000_ff00,
            entries: &[(NEIGHBOUR, 0x4200)],
            frame: big.clone(),
            mark_in: 0xdead_00ef,
            mark_out: 0xdead_42ef,
        },
        Case {
            name: "mask: bits inside are replaced",
            mask: 0x0000_ff00,
            entries: &[(NEIGHBOUR, 0x4200)],
            frame: big.clone(),
            mark_in: 0x0000_ff00,
            mark_out: 0x0000_4200,
        },
        Case {
            name: "broadcast source is ignored",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(BROADCAST, ETH_P_IP, 106),
            mark_in: 3,
            mark_out: 3,
        },
        Case {
            name: "multicast source is ignored",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(MULTICAST, ETH_P_IP, 106),
            mark_in: 0,
            mark_out: 0,
        },
        Case {
            name: "non-IPv4 (ARP) from a neighbour is ignored",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(NEIGHBOUR, ETH_P_ARP, 60),
            mark_in: 0,
            mark_out: 0,
        },
        // The kernel's test-run harness refuses IPv4 frames shorter than an IPv4 header (see
        // `kernel_refuses_to_test_run_short_ipv4_frames`), so runts are sent with another type.
        Case {
            name: "runt: header and one byte",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(NEIGHBOUR, ETH_P_ARP, 15),
            mark_in: 0,
            mark_out: 0,
        },
        Case {
            name: "runt: one byte short of an IPv4 frame",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(NEIGHBOUR, ETH_P_ARP, 33),
            mark_in: 9,
            mark_out: 9,
        },
        Case {
            name: "shortest IPv4 frame is classified",
            mask: u32::MAX,
            entries: &[(NEIGHBOUR, 250)],
            frame: frame(NEIGHBOUR, ETH_P_IP, 34),
            mark_in: 0,
            mark_out: 250,
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let mut c = Classifier::load(
            Netns::Current,
            ClassifierConfig {
                mark_mask: case.mask,
                ..Default::default()
            },
        )
        .expect("load classify");
        for (mac, mark) in case.entries {
            c.insert(MacAddr(*mac), *mark, *mark).expect("insert");
        }
        let (verdict, mark) = run(&c, &case.frame, case.mark_in);
        if verdict != TCX_NEXT || mark != case.mark_out {
            failures.push(format!(
                "{}: verdict {verdict:#x} (want {TCX_NEXT:#x}), mark {mark:#x} (want {:#x})",
                case.name, case.mark_out
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn counters_follow_hits_misses_and_ignored_frames() {
    require_root();
    let mut c = Classifier::load(Netns::Current, ClassifierConfig::default()).unwrap();
    c.insert(MacAddr(NEIGHBOUR), 250, 250).unwrap();
    let hit = frame(NEIGHBOUR, ETH_P_IP, 106);
    let miss = frame(STRANGER, ETH_P_IP, 80);
    for _ in 0..5 {
        run(&c, &hit, 0);
    }
    for _ in 0..3 {
        run(&c, &miss, 0);
    }
    run(&c, &frame(NEIGHBOUR, ETH_P_ARP, 60), 0);
    run(&c, &frame(BROADCAST, ETH_P_IP, 106), 0);

    let n = c.counters(MacAddr(NEIGHBOUR)).unwrap().expect("entry");
    assert_eq!((n.packets, n.bytes), (5, 5 * 106));
    let m = c.misses().unwrap();
    assert_eq!((m.packets, m.bytes), (3, 3 * 80));
    let i = c.ignored().unwrap();
    assert_eq!((i.packets, i.bytes), (2, 60 + 106));
    assert_eq!(c.counters(MacAddr(STRANGER)).unwrap(), None);

    // Changing the mark keeps the counters; removing and re-adding starts from zero.
    c.insert(MacAddr(NEIGHBOUR), 249, 249).unwrap();
    assert_eq!(c.counters(MacAddr(NEIGHBOUR)).unwrap().unwrap().packets, 5);
    assert_eq!(run(&c, &hit, 0).1, 249);
    assert!(c.remove(MacAddr(NEIGHBOUR)).unwrap());
    assert!(!c.remove(MacAddr(NEIGHBOUR)).unwrap());
    assert_eq!(run(&c, &hit, 0).1, 0, "removed entry must not mark");
    c.insert(MacAddr(STRANGER), 248, 248).unwrap();
    assert_eq!(c.counters(MacAddr(STRANGER)).unwrap().unwrap().packets, 0);
}

#[test]
fn entries_are_listed_and_bad_entries_refused() {
    require_root();
    let mut c = Classifier::load(
        Netns::Current,
        ClassifierConfig {
            mark_mask: 0xff,
            ..Default::default()
        },
    )
    .unwrap();
    c.insert(MacAddr(STRANGER), 249, 249).unwrap();
    c.insert(MacAddr(NEIGHBOUR), 250, 250).unwrap();
    let listed: Vec<(String, u32)> = c
        .entries()
        .unwrap()
        .into_iter()
        .map(|(m, e)| (m.to_string(), e.mark))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("00:16:3E:2D:8D:DE".to_string(), 249),
            ("00:16:3E:5B:78:D5".to_string(), 250)
        ]
    );
    assert!(matches!(
        c.insert(MacAddr(BROADCAST), 1, 1),
        Err(ClassifierError::GroupMac(_))
    ));
    assert!(matches!(
        c.insert(MacAddr(MULTICAST), 1, 1),
        Err(ClassifierError::GroupMac(_))
    ));
    assert!(matches!(
        c.insert(MacAddr([0; 6]), 1, 1),
        Err(ClassifierError::GroupMac(_))
    ));
    assert!(matches!(
        c.insert(MacAddr(NEIGHBOUR), 0x100, 1),
        Err(ClassifierError::MarkOutsideMask { .. })
    ));
    assert!(matches!(
        c.insert(MacAddr(NEIGHBOUR), 0, 1),
        Err(ClassifierError::ZeroMark)
    ));
    // The refused inserts left the map as it was.
    assert_eq!(c.entries().unwrap().len(), 2);
    assert_eq!(c.entries().unwrap()[1].1.mark, 250);
}

/// Pins down the boundary the runt cases rely on: IPv4 frames shorter than Ethernet + IPv4
/// header never reach a TC program through `BPF_PROG_TEST_RUN`.
#[test]
fn kernel_refuses_to_test_run_short_ipv4_frames() {
    require_root();
    let c = Classifier::load(Netns::Current, ClassifierConfig::default()).unwrap();
    let short = frame(NEIGHBOUR, ETH_P_IP, 33);
    let r = c.program().test_run(TestRunOptions {
        data_in: Some(&short),
        ..Default::default()
    });
    assert!(r.is_err(), "kernel accepted a 33-byte IPv4 frame: {r:?}");
}
