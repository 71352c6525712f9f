//! Differential test of the fast path on a real router: every frame of `fastlab::cases()`
//! is sent from the sender's interface, once through a router running `classify` (fast path
//! off) and once through one running `fastpath`; what reaches the sink (destination MAC,
//! TTL, addresses, fragmentation) and the ICMP errors that come back must be identical.
use ntkplane::{
    classifier::{Classifier, ClassifierConfig},
    mac::MacAddr,
};
use ntkplane_common::fp;
use ntkplane_integration::{
    fastlab::{self, cases, fast_lab, ipv4_frame, observe, PacketSocket, Seen, MARK, SENDER_MAC},
    lab::require_root,
};

/// Runs every case through a fresh lab whose router runs the fast path or not; returns
/// what each case caused, and the fast path's per-outcome counters.
fn run(fast_path: bool) -> (Vec<Seen>, Option<[u64; fp::N]>) {
    let l = fast_lab();
    let mut c = Classifier::load(
        l.router.netns(),
        ClassifierConfig {
            fast_path,
            ..Default::default()
        },
    )
    .unwrap();
    c.insert(MacAddr(SENDER_MAC), MARK, MARK).unwrap();
    if fast_path {
        c.set_excluded(&fastlab::exclusions()).unwrap();
    }
    c.attach("r0").unwrap();
    let tx = PacketSocket::open(&l.sender, "s0");
    let sink = PacketSocket::open(&l.sink, "k0");
    let seen = cases()
        .iter()
        .map(|case| observe(&tx, &sink, &tx, &ipv4_frame(&case.spec), case.spec.id))
        .collect();
    let counters = c
        .fast_path_counters(MacAddr(SENDER_MAC))
        .unwrap()
        .map(|f| f.packets);
    (seen, counters)
}

#[test]
fn same_frames_leave_the_same_way_with_and_without_the_fast_path() {
    require_root();
    let (off, none) = run(false);
    let (on, counters) = run(true);
    assert_eq!(none, None);
    let mut failures = Vec::new();
    let mut want = [0u64; fp::N];
    for ((case, a), b) in cases().iter().zip(&off).zip(&on) {
        if let Some(o) = case.outcome {
            want[o] += 1;
        }
        if a != b {
            failures.push(format!(
                "{}:\n  fast path off: {a:?}\n  fast path on:  {b:?}",
                case.name
            ));
        }
        // The cases are only meaningful if they do what they are named after.
        let forwarded = !a.at_sink.is_empty();
        let expect_forwarded = matches!(
            case.name,
            "via"
                | "direct"
                | "TTL 2 (forwarded, leaves with 1)"
                | "exactly the egress MTU"
                | "over the egress MTU, no DF"
                | "anonymizing SNAT range"
                | "NETMAP range"
                | "IP options"
        );
        // ("fragment (MF)" is a lone first fragment: the router's conntrack, there for the
        // NAT table, holds it for reassembly, with or without the fast path.)
        if forwarded != expect_forwarded {
            failures.push(format!(
                "{}: reached the sink: {forwarded} ({a:?})",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
    // And the fast path did forward what it should, and only that.
    assert_eq!(counters.unwrap(), want, "per-outcome counters");
}
