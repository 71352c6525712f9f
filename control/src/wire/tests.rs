use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use super::{
    auth::{Auth, NetworkKey, MAX_PEERS},
    codec::{decode, encode, Decoded, Drop, FLAG_AUTH, HEADER_LEN, MAGIC, VERSION},
    message::{limits, Message, PeerIdentity},
};
use crate::qspn::msg::{Cost, EtpMessage, EtpPath, Fingerprint, HCoord, QspnMessage, Refusal};

// The largest single allocation made by the current thread, to show that a forged length
// does not make the decoder reserve memory (other threads' tests are not counted).
struct Counting;
thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(l.size())));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(new)));
        System.realloc(p, l, new)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 1, 1), 60269);
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 2, 2), 60269);

fn key(b: u8) -> NetworkKey {
    NetworkKey::from_contents(&[b; 32]).unwrap()
}

fn fp() -> Fingerprint {
    Fingerprint {
        id: 7,
        level: 1,
        elderships: vec![0, 1],
        elderships_seed: vec![],
    }
}

fn samples() -> Vec<Message> {
    let etp = EtpMessage {
        node_address: vec![1, 0, 1, 2],
        fingerprints: vec![fp(), fp()],
        nodes_inside: vec![1, 2],
        hops: vec![HCoord { lvl: 1, pos: 0 }],
        p_list: vec![EtpPath {
            hops: vec![HCoord { lvl: 0, pos: 3 }],
            arcs: vec![99],
            cost: Cost::Real(1500),
            fingerprint: fp(),
            nodes_inside: 1,
            ignore_outside: vec![false, true],
        }],
    };
    let ip = Ipv4Addr::new(169, 254, 3, 4);
    vec![
        Message::HereIAm {
            node_id: 111,
            mac: [0xaa; 6],
            nic_addr: ip,
        },
        Message::RequestArc {
            dest_id: 1,
            dest_mac: [1; 6],
            dest_addr: ip,
            its_id: 2,
            its_mac: [2; 6],
            its_addr: ip,
        },
        Message::CanYouExport {
            call: 5,
            i_can: true,
        },
        Message::CanYouExportReply {
            call: 5,
            can: false,
        },
        Message::RemoveArc {
            dest_id: 1,
            dest_mac: [1; 6],
            dest_addr: ip,
            its_id: 2,
            its_mac: [2; 6],
            its_addr: ip,
        },
        Message::Probe { seq: 9 },
        Message::ProbeReply { seq: u32::MAX },
        Message::IdentityAnnounce {
            identities: vec![PeerIdentity {
                node_id: 3,
                mac: [3; 6],
                linklocal: ip,
                main: true,
            }],
        },
        Message::Qspn {
            src: 1,
            dst: 2,
            call: 3,
            msg: QspnMessage::SendEtp { etp, is_full: true },
        },
        Message::Qspn {
            src: 1,
            dst: 2,
            call: 4,
            msg: QspnMessage::FullEtp(Err(Refusal::NotAccepted)),
        },
        Message::Ack { call: 3 },
    ]
}

fn accepted(d: Result<Decoded, Drop>) -> Message {
    match d {
        Ok(Decoded::Message { msg, .. }) => msg,
        other => panic!("expected an accepted message, got {other:?}"),
    }
}

/// The challenge exchange of RFC 8967 §4.3: `s` sends, `r` challenges, `s` answers. After
/// it `r` accepts `s`'s datagrams. Returns what `r` made of the first datagram.
fn introduce(s: &mut Auth, s_addr: SocketAddrV4, r: &mut Auth, r_addr: SocketAddrV4, now: u64) {
    let first = encode(1, &Message::Probe { seq: 0 }, Some(s)).unwrap();
    let Ok(Decoded::Respond {
        reply: req,
        dropped: Some(Drop::ChallengePending),
        ..
    }) = decode(&first, Some(r), s_addr, now)
    else {
        panic!("an unknown index must be challenged")
    };
    let req = encode(2, &req, Some(r)).unwrap();
    let Ok(Decoded::Respond {
        reply,
        dropped: None,
        ..
    }) = decode(&req, Some(s), r_addr, now)
    else {
        panic!("a challenge request must be answered")
    };
    assert!(matches!(reply, Message::ChallengeReply { .. }));
    let reply = encode(1, &reply, Some(s)).unwrap();
    assert_eq!(
        decode(&reply, Some(r), s_addr, now),
        Ok(Decoded::Consumed { sender: 1 })
    );
}

#[test]
fn every_message_round_trips_without_key() {
    for m in samples() {
        let d = encode(42, &m, None).unwrap();
        assert_eq!(&d[..4], &MAGIC);
        assert_eq!(d[4], VERSION);
        assert_eq!(
            decode(&d, None, A, 0),
            Ok(Decoded::Message {
                sender: 42,
                msg: m.clone()
            })
        );
    }
}

#[test]
fn same_key_round_trip_after_the_challenge() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    introduce(&mut s, A, &mut r, B, 0);
    for m in samples() {
        let d = encode(1, &m, Some(&mut s)).unwrap();
        assert_eq!(accepted(decode(&d, Some(&mut r), A, 10)), m);
    }
}

#[test]
fn wrong_key_is_bad_mac() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(8), 2));
    let d = encode(1, &Message::Ack { call: 1 }, Some(&mut s)).unwrap();
    assert_eq!(decode(&d, Some(&mut r), A, 0), Err(Drop::BadMac));
    // Nor can the other side's challenge machinery be reached.
    let d = encode(
        1,
        &Message::ChallengeRequest {
            nonce: [0; 16],
            index: r.index(),
        },
        Some(&mut s),
    )
    .unwrap();
    assert_eq!(decode(&d, Some(&mut r), A, 0), Err(Drop::BadMac));
}

#[test]
fn replayed_datagram_is_dropped() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    introduce(&mut s, A, &mut r, B, 0);
    let d1 = encode(1, &Message::Ack { call: 1 }, Some(&mut s)).unwrap();
    let d2 = encode(1, &Message::Ack { call: 2 }, Some(&mut s)).unwrap();
    accepted(decode(&d1, Some(&mut r), A, 1));
    assert_eq!(decode(&d1, Some(&mut r), A, 2), Err(Drop::Replay));
    accepted(decode(&d2, Some(&mut r), A, 3));
    assert_eq!(decode(&d1, Some(&mut r), A, 4), Err(Drop::Replay));
    assert_eq!(decode(&d2, Some(&mut r), A, 4), Err(Drop::Replay));
}

/// Reordered datagrams within the window are accepted once each; older ones are not.
#[test]
fn replay_window() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    let early = encode(1, &Message::Ack { call: 999 }, Some(&mut s)).unwrap();
    introduce(&mut s, A, &mut r, B, 0);
    // Sent before the challenge reply: never accepted, even inside the window.
    assert_eq!(decode(&early, Some(&mut r), A, 1), Err(Drop::Replay));
    let d: Vec<_> = (0..100)
        .map(|i| encode(1, &Message::Ack { call: i }, Some(&mut s)).unwrap())
        .collect();
    accepted(decode(&d[1], Some(&mut r), A, 1));
    accepted(decode(&d[0], Some(&mut r), A, 1)); // swapped on the way
    assert_eq!(decode(&d[0], Some(&mut r), A, 1), Err(Drop::Replay));
    accepted(decode(&d[90], Some(&mut r), A, 1));
    accepted(decode(&d[30], Some(&mut r), A, 1)); // 60 behind: inside the window
    assert_eq!(decode(&d[20], Some(&mut r), A, 1), Err(Drop::Replay)); // 70 behind
    assert_eq!(decode(&d[30], Some(&mut r), A, 1), Err(Drop::Replay));
    accepted(decode(&d[89], Some(&mut r), A, 1));
}

#[test]
fn restarted_sender_is_accepted_after_the_challenge() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    introduce(&mut s, A, &mut r, B, 0);
    accepted(decode(
        &encode(1, &Message::Ack { call: 1 }, Some(&mut s)).unwrap(),
        Some(&mut r),
        A,
        1,
    ));
    // Reboot: new index, PC from 1 again.
    let mut s = Auth::new(&key(7), 99);
    let d = encode(1, &Message::Ack { call: 2 }, Some(&mut s)).unwrap();
    assert!(matches!(
        decode(&d, Some(&mut r), A, 1_000),
        Ok(Decoded::Respond {
            dropped: Some(Drop::ChallengePending),
            ..
        })
    ));
    introduce(&mut s, A, &mut r, B, 2_000);
    let d = encode(1, &Message::Ack { call: 3 }, Some(&mut s)).unwrap();
    assert_eq!(
        accepted(decode(&d, Some(&mut r), A, 2_001)),
        Message::Ack { call: 3 }
    );
}

#[test]
fn wrong_or_late_challenge_reply_is_refused() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    let index = r.index();
    let d = encode(
        1,
        &Message::ChallengeReply {
            nonce: [1; 16],
            index,
        },
        Some(&mut s),
    )
    .unwrap();
    assert_eq!(decode(&d, Some(&mut r), A, 0), Err(Drop::BadChallenge));
    let first = encode(1, &Message::Probe { seq: 0 }, Some(&mut s)).unwrap();
    let Ok(Decoded::Respond {
        reply: Message::ChallengeRequest { nonce, .. },
        ..
    }) = decode(&first, Some(&mut r), A, 0)
    else {
        panic!()
    };
    // Challenges to one source are rate limited.
    let again = encode(1, &Message::Probe { seq: 1 }, Some(&mut s)).unwrap();
    assert_eq!(
        decode(&again, Some(&mut r), A, 10),
        Err(Drop::ChallengePending)
    );
    let late = encode(1, &Message::ChallengeReply { nonce, index }, Some(&mut s)).unwrap();
    assert_eq!(
        decode(&late, Some(&mut r), A, 60_000),
        Err(Drop::BadChallenge)
    );
}

#[test]
fn challenge_replies_are_rate_limited() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    let index = s.index();
    let q1 = encode(
        2,
        &Message::ChallengeRequest {
            nonce: [1; 16],
            index,
        },
        Some(&mut r),
    )
    .unwrap();
    let q2 = encode(
        2,
        &Message::ChallengeRequest {
            nonce: [2; 16],
            index,
        },
        Some(&mut r),
    )
    .unwrap();
    assert!(matches!(
        decode(&q1, Some(&mut s), B, 0),
        Ok(Decoded::Respond { dropped: None, .. })
    ));
    assert_eq!(decode(&q2, Some(&mut s), B, 1), Err(Drop::RateLimited));
}

#[test]
fn own_looped_back_datagram_is_dropped() {
    let mut s = Auth::new(&key(7), 1);
    let d = encode(1, &Message::Probe { seq: 0 }, Some(&mut s)).unwrap();
    assert_eq!(decode(&d, Some(&mut s), A, 0), Err(Drop::Own));
}

#[test]
fn every_tampered_byte_is_dropped() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    introduce(&mut s, A, &mut r, B, 0);
    let d = encode(1, &samples()[8], Some(&mut s)).unwrap();
    for i in 0..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x01;
        let got = decode(&t, Some(&mut r), A, 1);
        assert!(got.is_err(), "byte {i} flipped was accepted: {got:?}");
    }
    // Bytes of the signed part (after the header's own checks) fail the MAC.
    let mut t = d.clone();
    t[HEADER_LEN + 1] ^= 0x80;
    assert_eq!(decode(&t, Some(&mut r), A, 1), Err(Drop::BadMac));
    // The original is still fresh: a tampered copy does not advance the PC.
    accepted(decode(&d, Some(&mut r), A, 1));
}

#[test]
fn no_key_on_one_side_is_dropped_both_ways() {
    let mut k = Auth::new(&key(7), 1);
    let plain = encode(1, &Message::Probe { seq: 0 }, None).unwrap();
    assert_eq!(decode(&plain, Some(&mut k), A, 0), Err(Drop::AuthMissing));
    let signed = encode(1, &Message::Probe { seq: 0 }, Some(&mut k)).unwrap();
    assert_eq!(decode(&signed, None, A, 0), Err(Drop::AuthUnexpected));
    // An unauthenticated challenge means nothing.
    let c = Message::ChallengeRequest {
        nonce: [0; 16],
        index: 0,
    };
    let c = encode(1, &c, None).unwrap();
    assert_eq!(decode(&c, None, A, 0), Err(Drop::AuthUnexpected));
}

/// Challenges travel by broadcast: a third system on the segment ignores those for others.
#[test]
fn challenges_for_others_are_ignored() {
    let (mut s, mut r, mut x) = (
        Auth::new(&key(7), 1),
        Auth::new(&key(7), 2),
        Auth::new(&key(7), 3),
    );
    let first = encode(1, &Message::Probe { seq: 0 }, Some(&mut s)).unwrap();
    let Ok(Decoded::Respond { reply: req, .. }) = decode(&first, Some(&mut r), A, 0) else {
        panic!()
    };
    let req = encode(2, &req, Some(&mut r)).unwrap();
    assert_eq!(decode(&req, Some(&mut x), B, 0), Err(Drop::NotForMe));
    let Ok(Decoded::Respond { reply, .. }) = decode(&req, Some(&mut s), B, 0) else {
        panic!()
    };
    let reply = encode(1, &reply, Some(&mut s)).unwrap();
    assert_eq!(decode(&reply, Some(&mut x), A, 0), Err(Drop::NotForMe));
    assert_eq!(
        decode(&reply, Some(&mut r), A, 0),
        Ok(Decoded::Consumed { sender: 1 })
    );
}

#[test]
fn structural_drops() {
    let good = encode(1, &Message::Probe { seq: 3 }, None).unwrap();
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode(&bad, None, A, 0), Err(Drop::BadMagic));
    let mut bad = good.clone();
    bad[4] = 2;
    assert_eq!(decode(&bad, None, A, 0), Err(Drop::Version));
    let mut bad = good.clone();
    bad[5] = 0x80;
    assert_eq!(decode(&bad, None, A, 0), Err(Drop::Flags));
    assert_eq!(decode(&good[..5], None, A, 0), Err(Drop::Truncated));
    assert_eq!(
        decode(&good[..HEADER_LEN], None, A, 0),
        Err(Drop::Truncated)
    );
    let mut bad = good.clone();
    bad.push(0);
    assert_eq!(decode(&bad, None, A, 0), Err(Drop::Malformed));
    let mut bad = good[..HEADER_LEN].to_vec();
    bad.push(100); // no such variant
    assert_eq!(decode(&bad, None, A, 0), Err(Drop::Malformed));
    let mut huge = good.clone();
    huge.resize(65_001, 0);
    assert_eq!(decode(&huge, None, A, 0), Err(Drop::TooLong));
    // Header says "authenticated" but there is no room for a trailer.
    let mut bad = good.clone();
    bad[5] = FLAG_AUTH;
    let mut k = Auth::new(&key(7), 1);
    assert_eq!(decode(&bad, Some(&mut k), A, 0), Err(Drop::Truncated));
}

#[test]
fn lists_over_their_caps_are_refused_both_ways() {
    let m = Message::IdentityAnnounce {
        identities: vec![
            PeerIdentity {
                node_id: 1,
                mac: [0; 6],
                linklocal: Ipv4Addr::UNSPECIFIED,
                main: false,
            };
            limits::IDENTITIES + 1
        ],
    };
    assert!(encode(1, &m, None).is_err());
    let mut d = encode(1, &Message::Ack { call: 0 }, None).unwrap();
    d.truncate(HEADER_LEN);
    d.extend(postcard::to_stdvec(&m).unwrap());
    assert_eq!(decode(&d, None, A, 0), Err(Drop::Limits));
}

#[test]
fn forged_huge_length_is_rejected_fast_and_without_allocating() {
    // IdentityAnnounce (variant 7) declaring 2^32 identities, then a few bytes.
    let mut d = encode(1, &Message::Ack { call: 0 }, None).unwrap();
    d.truncate(HEADER_LEN);
    d.push(7);
    d.extend([0x80, 0x80, 0x80, 0x80, 0x10]); // varint 2^32
    d.extend([1, 2, 3]);
    // Same for a QSPN ETP list nested inside.
    let mut q = encode(1, &Message::Ack { call: 0 }, None).unwrap();
    q.truncate(HEADER_LEN);
    q.extend([8, 1, 2, 3, 2]); // Qspn{src 1, dst 2, call 3}, SendEtp
    q.extend([0xff, 0xff, 0xff, 0xff, 0x0f]); // node_address: 2^32 − 1 entries
    let t = Instant::now();
    LARGEST.with(|c| c.set(0));
    assert_eq!(decode(&d, None, A, 0), Err(Drop::Truncated));
    assert_eq!(decode(&q, None, A, 0), Err(Drop::Truncated));
    let largest = LARGEST.with(|c| c.get());
    assert!(largest < 4096, "decoder allocated {largest} bytes at once");
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn key_file_formats() {
    let dir = std::env::temp_dir().join(format!("ntkplane-wire-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.key");
    std::fs::write(&short, b"0123456789abcdef").unwrap();
    let e = NetworkKey::from_file(&short).unwrap_err().to_string();
    assert!(e.contains("short.key") && e.contains("too short"), "{e}");
    // 64 hex digits = 32 bytes; the same text as raw bytes would be a different key.
    let hex = dir.join("hex.key");
    std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
    let from_hex = NetworkKey::from_file(&hex).unwrap();
    let raw = NetworkKey::from_contents(&[0xab; 32]).unwrap();
    let (mut s, mut r) = (Auth::new(&from_hex, 1), Auth::new(&raw, 2));
    let d = encode(1, &Message::Probe { seq: 0 }, Some(&mut s)).unwrap();
    assert!(decode(&d, Some(&mut r), A, 0).is_ok());
    let missing = NetworkKey::from_file(&dir.join("missing.key"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("missing.key"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn receiver_state_is_bounded() {
    let (mut s, mut r) = (Auth::new(&key(7), 1), Auth::new(&key(7), 2));
    for i in 0..(MAX_PEERS as u32 + 50) {
        let from = SocketAddrV4::new(Ipv4Addr::from(0xa9fe_0000 + i), 60269);
        let d = encode(1, &Message::Probe { seq: i }, Some(&mut s)).unwrap();
        assert!(decode(&d, Some(&mut r), from, u64::from(i)).is_ok());
    }
    assert!(r.tracked() <= 2 * MAX_PEERS);
}

/// The fuzz target's seeds (control/fuzz/seeds-wire: a mode byte, then a datagram) are one
/// per message kind and still decode; `NTKPLANE_WRITE_WIRE_SEEDS=1` rewrites them after a
/// format change.
#[test]
fn fuzz_seeds_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds-wire");
    let mut seeds: Vec<(String, Vec<u8>)> = samples()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut v = vec![0u8];
            v.extend(encode(7, m, None).unwrap());
            (format!("{i:02}-{}.bin", m.kind()), v)
        })
        .collect();
    // Mode 2: the fuzz target signs the datagram itself.
    let mut v = vec![2u8];
    v.extend(encode(7, &samples()[8], None).unwrap());
    seeds.push(("20-signed-qspn.bin".into(), v));
    if std::env::var_os("NTKPLANE_WRITE_WIRE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
        assert_eq!(
            &on_disk, bytes,
            "seed {name} is stale: rerun with NTKPLANE_WRITE_WIRE_SEEDS=1"
        );
        assert!(decode(&on_disk[1..], None, A, 0).is_ok());
    }
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any body behind a valid header: a drop reason or a message that re-encodes to a
        /// datagram decoding to the same message (the fuzz target checks the same on
        /// arbitrary bytes, with nightly); never accepted by a keyed receiver.
        #[test]
        fn any_body_decodes_or_drops(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = encode(5, &Message::Ack { call: 0 }, None).unwrap();
            d.truncate(HEADER_LEN);
            d.extend(&body);
            if let Ok(Decoded::Message { sender, msg }) = decode(&d, None, A, 0) {
                let again = encode(sender, &msg, None).unwrap();
                prop_assert_eq!(decode(&again, None, A, 0), Ok(Decoded::Message { sender, msg }));
            }
            let mut r = Auth::new(&key(7), 2);
            prop_assert!(decode(&d, Some(&mut r), A, 0).is_err());
        }
    }
}

/// The runtime's priority peek agrees with the encoding for every sample message, with and
/// without authentication, and never panics on short or foreign datagrams.
#[test]
fn neighbourhood_messages_are_recognised_by_their_first_body_byte() {
    let mut a = Auth::new(&key(1), 5);
    for m in samples() {
        let want = matches!(
            m,
            Message::HereIAm { .. }
                | Message::RequestArc { .. }
                | Message::CanYouExport { .. }
                | Message::CanYouExportReply { .. }
                | Message::RemoveArc { .. }
                | Message::Probe { .. }
                | Message::ProbeReply { .. }
        );
        let plain = encode(7, &m, None).unwrap();
        assert_eq!(super::is_neighbourhood(&plain), want, "{m:?}");
        if let Ok(signed) = encode(7, &m, Some(&mut a)) {
            assert_eq!(super::is_neighbourhood(&signed), want, "{m:?}");
        }
    }
    for n in 0..=10 {
        assert!(!super::is_neighbourhood(
            &b"NTKP\x01\x00\x00\x00\x00\x07\x00"[..n]
        ));
    }
    assert!(!super::is_neighbourhood(
        b"XTKP\x01\x00\x00\x00\x00\x07\x00"
    ));
}
