//! The wire decoder on arbitrary bytes (docs/PROTOCOL.md): never a panic, and whatever it
//! accepts re-encodes to a datagram that decodes to the same message. The first byte picks
//! the mode: 0 no key; 1 with a key (the MAC rejects almost everything: this covers the
//! checks before it); 2 the rest is signed with the key first (a valid trailer appended), so
//! that the authenticated body decoding and the replay state are reached too.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use ntkplane::wire::{decode, encode, Auth, Decoded, Message, NetworkKey};

const FROM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 1, 1), 60269);
const TO: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(169, 254, 2, 2), 60269);

fn key() -> NetworkKey {
    NetworkKey::from_contents(&[0x5a; 32]).unwrap()
}

/// A sender/receiver pair that went through the challenge exchange (RFC 8967 §4.3).
fn introduced() -> (Auth, Auth) {
    let (mut s, mut r) = (Auth::new(&key(), 1), Auth::new(&key(), 2));
    let first = encode(1, &Message::Probe { seq: 0 }, Some(&mut s)).unwrap();
    let Ok(Decoded::Respond { reply, .. }) = decode(&first, Some(&mut r), FROM, 0) else {
        panic!("no challenge")
    };
    let req = encode(2, &reply, Some(&mut r)).unwrap();
    let Ok(Decoded::Respond { reply, .. }) = decode(&req, Some(&mut s), TO, 0) else {
        panic!("no challenge reply")
    };
    let reply = encode(1, &reply, Some(&mut s)).unwrap();
    assert!(matches!(
        decode(&reply, Some(&mut r), FROM, 0),
        Ok(Decoded::Consumed { .. })
    ));
    (s, r)
}

fn check(got: Result<Decoded, ntkplane::wire::Drop>) {
    match got {
        Err(d) => assert!(!d.as_str().is_empty()),
        Ok(Decoded::Message { sender, msg }) => {
            let again = encode(sender, &msg, None).expect("an accepted message re-encodes");
            assert_eq!(
                decode(&again, None, FROM, 0),
                Ok(Decoded::Message { sender, msg })
            );
        }
        Ok(Decoded::Respond { .. } | Decoded::Consumed { .. }) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check(decode(rest, None, FROM, 0)),
        1 => {
            let mut r = Auth::new(&key(), 2);
            check(decode(rest, Some(&mut r), FROM, 0));
        }
        _ => {
            let (mut s, mut r) = introduced();
            let mut signed = rest.to_vec();
            // The header must say "authenticated" for the trailer to be looked at.
            if let Some(flags) = signed.get_mut(5) {
                *flags |= ntkplane::wire::codec::FLAG_AUTH;
            }
            s.seal(&mut signed);
            check(decode(&signed, Some(&mut r), FROM, 1));
            // The same datagram twice is a replay, whatever it holds.
            let twice = decode(&signed, Some(&mut r), FROM, 2);
            assert!(!matches!(twice, Ok(Decoded::Message { .. })));
        }
    }
});
