//! Differential `BPF_PROG_TEST_RUN` tests of the fast path: every frame of
//! `fastlab::cases()` goes through `classify` (fast path off) and `fastpath` (on) in the
//! router namespace of the fast lab, arriving on the router's ingress interface.
//!
//! * Handed-over frames: `fastpath` returns `TCX_NEXT` with the same mark as `classify` and
//!   leaves the frame untouched, so the stack sees exactly what it sees today.
//! * Forwarded frames: `fastpath` redirects to the interface and next hop the stack itself
//!   would use (`ip route get … iif r0 mark 250`), with TTL − 1 and a valid checksum, and
//!   nothing else changed.
//!
//! The netns test (`fastpath_netns.rs`) checks the same cases with real packets.
use std::net::Ipv4Addr;

use ntkplane::{
    classifier::{Classifier, ClassifierConfig},
    mac::MacAddr,
};
use ntkplane_common::fp;
use ntkplane_integration::{
    fastlab::{self, cases, fast_lab, ip_checksum, ipv4_frame, FastLab, MARK, SENDER_MAC},
    lab::require_root,
    packet::run_on,
    readback::route_get_in,
};

const TCX_NEXT: u32 = u32::MAX;
const TC_ACT_REDIRECT: u32 = 7;

fn ifindex(l: &FastLab, name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated string.
    l.router
        .netns()
        .run(|| unsafe { libc::if_nametoindex(c.as_ptr()) })
        .unwrap()
}

fn load(l: &FastLab, fast_path: bool) -> Classifier {
    let mut c = Classifier::load(
        l.router.netns(),
        ClassifierConfig {
            fast_path,
            ..Default::default()
        },
    )
    .expect("load");
    c.insert(MacAddr(SENDER_MAC), MARK, MARK).unwrap();
    if fast_path {
        c.set_excluded(&fastlab::exclusions()).unwrap();
    }
    c
}

#[test]
fn fast_path_and_stack_agree_on_every_case() {
    require_root();
    let l = fast_lab();
    let r0 = ifindex(&l, "r0");
    let off = load(&l, false);
    let on = load(&l, true);
    assert!(on.fast_path() && !off.fast_path());
    let mut failures = Vec::new();
    let mut want_counts = [0u64; fp::N];
    for case in cases() {
        let frame = ipv4_frame(&case.spec);
        let (a, b) = l
            .router
            .netns()
            .run(|| {
                (
                    run_on(off.program(), &frame, 0, r0),
                    run_on(on.program(), &frame, 0, r0),
                )
            })
            .unwrap();
        if let Some(o) = case.outcome {
            want_counts[o] += 1;
        }
        let mut fail = |why: String| failures.push(format!("{}: {why}", case.name));
        if a.verdict != TCX_NEXT || a.data != frame {
            fail(format!(
                "classify: verdict {:#x} or frame changed",
                a.verdict
            ));
        }
        if a.mark != b.mark {
            fail(format!(
                "mark {:#x} with the fast path, {:#x} without",
                b.mark, a.mark
            ));
        }
        if case.outcome != Some(fp::FORWARDED) {
            if b.verdict != TCX_NEXT {
                fail(format!("handed over expected, verdict {:#x}", b.verdict));
            }
            if b.data != frame {
                fail("handed-over frame was modified".into());
            }
            continue;
        }
        // Forwarded: where the stack would send it.
        let stack = route_get_in(
            &l.router.name,
            case.spec.dst,
            Some(fastlab::SENDER_IP),
            Some("r0"),
            Some(a.mark),
        );
        let want_if = ifindex(&l, stack.dev.as_deref().unwrap_or("?"));
        let want_nh = stack.gateway.unwrap_or(case.spec.dst);
        if b.verdict != TC_ACT_REDIRECT {
            fail(format!("redirect expected, verdict {:#x}", b.verdict));
            continue;
        }
        let (got_if, got_nh) = (b.cb[0], Ipv4Addr::from(b.cb[1].to_ne_bytes()));
        if (got_if, got_nh) != (want_if, want_nh) {
            fail(format!(
                "fast path → if {got_if} via {got_nh}, stack → if {want_if} ({:?}) via {want_nh}",
                stack.dev
            ));
        }
        let mut expect = frame.clone();
        expect[14 + 8] -= 1;
        expect[24..26].copy_from_slice(&[0, 0]);
        let c = ip_checksum(&expect[14..34]);
        expect[24..26].copy_from_slice(&c.to_be_bytes());
        if b.data != expect {
            fail(format!(
                "forwarded frame: ttl {} csum {:02x}{:02x}, want ttl {} csum {c:04x}",
                b.data[22], b.data[24], b.data[25], expect[22]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    let got = on.fast_path_counters(MacAddr(SENDER_MAC)).unwrap().unwrap();
    assert_eq!(got.packets, want_counts, "per-outcome counters");
    assert_eq!(off.fast_path_counters(MacAddr(SENDER_MAC)).unwrap(), None);
    // Removed and re-added (its slot reused): the fast-path counters restart from zero too.
    let mut on = on;
    on.remove(MacAddr(SENDER_MAC)).unwrap();
    on.insert(MacAddr(SENDER_MAC), MARK, MARK).unwrap();
    let again = on.fast_path_counters(MacAddr(SENDER_MAC)).unwrap().unwrap();
    assert_eq!(again.packets, [0; fp::N]);
}

#[test]
fn without_exclusions_nat_ranges_and_local_addresses_would_be_forwarded() {
    // Pins down why the exclusion trie exists: the neighbour's table alone routes them.
    require_root();
    let l = fast_lab();
    let r0 = ifindex(&l, "r0");
    let mut on = load(&l, true);
    on.set_excluded(&Default::default()).unwrap();
    for dst in [
        fastlab::SNAT_DST,
        fastlab::NETMAP_DST,
        fastlab::ROUTER_OUT_IP,
    ] {
        let frame = ipv4_frame(&fastlab::Spec::to(dst, 1));
        let b = l
            .router
            .netns()
            .run(|| run_on(on.program(), &frame, 0, r0))
            .unwrap();
        assert_eq!(b.verdict, TC_ACT_REDIRECT, "{dst}");
    }
    // And the trie follows set_excluded exactly (host bits masked, kinds kept).
    let mut want = fastlab::exclusions();
    want.insert((Ipv4Addr::new(10, 90, 1, 7), 16), 1);
    on.set_excluded(&want).unwrap();
    let got = on.excluded().unwrap();
    assert!(got.contains_key(&(Ipv4Addr::new(10, 90, 0, 0), 16)));
    assert_eq!(got.len(), want.len());
    want.clear();
    on.set_excluded(&want).unwrap();
    assert!(on.excluded().unwrap().is_empty());
}
