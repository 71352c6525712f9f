//! The classifier on a real router: sender → router → sink over veth, where the sink's
//! prefix is routed only in a table reached through `ip rule fwmark`. Packets get through
//! exactly when `classify` marks them.
use std::{net::SocketAddrV4, time::Duration};

use ntkplane::{
    classifier::{Classifier, ClassifierConfig},
    mac::MacAddr,
};
use ntkplane_integration::lab::{require_root, udp_through, veth, End, Ns};

const SENDER_MAC: &str = "02:00:5e:10:00:01";
const ROUTER_IN_MAC: &str = "02:00:5e:10:00:02";
const ROUTER_OUT_MAC: &str = "02:00:5e:10:00:03";
const SINK_MAC: &str = "02:00:5e:10:00:04";
const MARK: u32 = 250;

struct Line {
    sender: Ns,
    router: Ns,
    sink: Ns,
}

fn line() -> Line {
    let sender = Ns::new("s");
    let router = Ns::new("r");
    let sink = Ns::new("k");
    veth(
        End(&sender, "s0", SENDER_MAC, "10.250.1.2/24"),
        End(&router, "r0", ROUTER_IN_MAC, "10.250.1.1/24"),
    );
    veth(
        End(&router, "r1", ROUTER_OUT_MAC, "10.250.2.1/24"),
        End(&sink, "k0", SINK_MAC, "10.250.2.2/24"),
    );
    sender.sh(&format!(
        "ip route add default via 10.250.1.1 && ip neigh replace 10.250.1.1 lladdr {ROUTER_IN_MAC} dev s0 nud permanent"
    ));
    router.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0 \
         && ip neigh replace 10.250.2.2 lladdr {SINK_MAC} dev r1 nud permanent \
         && ip route del 10.250.2.0/24 dev r1 table main \
         && ip route add 10.250.2.0/24 dev r1 table {MARK} \
         && ip rule add pref 100 fwmark {MARK} table {MARK}"
    ));
    Line {
        sender,
        router,
        sink,
    }
}

fn sink_addr() -> SocketAddrV4 {
    "10.250.2.2:9999".parse().unwrap()
}

#[test]
fn marked_packets_reach_the_sink_and_unmarked_do_not() {
    require_root();
    let l = line();
    let wait = Duration::from_millis(500);
    let sender_mac: MacAddr = SENDER_MAC.parse().unwrap();

    // No classifier: the sink's prefix is in no table the router consults.
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 10, wait),
        0,
        "routed without a mark"
    );

    let mut c = Classifier::load(l.router.netns(), ClassifierConfig::default()).unwrap();
    c.attach("r0").unwrap();
    c.insert(sender_mac, MARK, MARK).unwrap();
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 20, wait),
        20,
        "marked packets lost"
    );
    let hits = c.counters(sender_mac).unwrap().unwrap();
    assert!(
        hits.packets >= 20,
        "counter {hits:?} below the 20 packets forwarded"
    );

    // Entry removed: the mark is gone, so is the route.
    c.remove(sender_mac).unwrap();
    let misses_before = c.misses().unwrap().packets;
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 20, wait),
        0,
        "forwarded without an entry"
    );
    assert!(c.misses().unwrap().packets >= misses_before + 20);

    // Entry back but program detached: nothing marks any more.
    c.insert(sender_mac, MARK, MARK).unwrap();
    assert_eq!(udp_through(&l.sender, &l.sink, sink_addr(), 5, wait), 5);
    c.detach("r0").unwrap();
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 10, wait),
        0,
        "forwarded after detach"
    );
}

#[test]
fn the_next_tcx_program_still_runs_under_a_masked_rule() {
    require_root();
    let l = line();
    let wait = Duration::from_millis(500);
    let sender_mac: MacAddr = SENDER_MAC.parse().unwrap();
    // Another user of the mark owns the high bits; ntkplane gets the low 16. The rule
    // matches only our bits, as the control plane will install it (`fwmark N/mask`).
    l.router.sh(&format!(
        "ip rule del pref 100 && ip rule add pref 100 fwmark {MARK}/0xffff table {MARK}"
    ));
    let mut first = Classifier::load(
        l.router.netns(),
        ClassifierConfig {
            mark_mask: 0xffff,
            ..Default::default()
        },
    )
    .unwrap();
    let mut second = Classifier::load(
        l.router.netns(),
        ClassifierConfig {
            mark_mask: 0xffff,
            ..Default::default()
        },
    )
    .unwrap();
    first.attach("r0").unwrap();
    second.attach("r0").unwrap();
    // Only the program attached second knows the sender: it runs only if the first
    // returned TCX_NEXT.
    second.insert(sender_mac, MARK, MARK).unwrap();
    assert_eq!(udp_through(&l.sender, &l.sink, sink_addr(), 10, wait), 10);
    assert!(first.misses().unwrap().packets >= 10);
    assert!(second.counters(sender_mac).unwrap().unwrap().packets >= 10);
}

#[test]
fn pinned_classifier_outlives_its_process_and_is_adopted() {
    use ntkplane::classifier::{ClassifierError, BPFFS};
    require_root();
    let l = line();
    let wait = Duration::from_millis(500);
    let sender_mac: MacAddr = SENDER_MAC.parse().unwrap();
    let dir = std::path::PathBuf::from(BPFFS)
        .join("ntkplane")
        .join(&l.router.name);
    let cfg = ClassifierConfig::default();
    {
        let mut c = Classifier::open_pinned(l.router.netns(), cfg, &dir).unwrap();
        c.attach("r0").unwrap();
        c.insert(sender_mac, MARK, MARK).unwrap();
        assert_eq!(udp_through(&l.sender, &l.sink, sink_addr(), 10, wait), 10);
    } // the owning process is gone ("daemon down")
    assert!(dir.join("prog").exists() && dir.join("link-r0").exists());
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 10, wait),
        10,
        "classification stopped with its process"
    );

    // A restart adopts: same attachment, same entries, counters kept (no reload, no refill).
    let mut c = Classifier::open_pinned(l.router.netns(), cfg, &dir).unwrap();
    assert_eq!(c.attached().collect::<Vec<_>>(), ["r0"]);
    assert!(c.counters(sender_mac).unwrap().unwrap().packets >= 20);
    let wrong = Classifier::open_pinned(
        l.router.netns(),
        ClassifierConfig {
            mark_mask: 0xff,
            ..Default::default()
        },
        &dir,
    );
    assert!(matches!(
        wrong,
        Err(ClassifierError::MaskMismatch {
            pinned: u32::MAX,
            wanted: 0xff,
            ..
        })
    ));
    // The adopted program still takes new neighbours and new interfaces.
    c.insert("02:00:5e:10:00:99".parse().unwrap(), 249, 249)
        .unwrap();
    assert_eq!(c.entries().unwrap().len(), 2);

    c.unpin().unwrap();
    assert!(!dir.exists(), "pins left behind");
    assert_eq!(
        udp_through(&l.sender, &l.sink, sink_addr(), 5, wait),
        0,
        "still attached after unpin"
    );
}
