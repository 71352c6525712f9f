//! Ethernet MAC addresses as Netsukuku names them: upper case, colon separated
//! (`00:16:3E:5B:78:D5`), the form used in table names `ntk_from_<MAC>`.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed MAC address '{0}': expected six hex pairs separated by ':' (e.g. 00:16:3E:5B:78:D5)"
)]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The I/G bit: a group (broadcast or multicast) address can never be a frame's source.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 != 0
    }
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_upper_case() {
        let m: MacAddr = "00:16:3e:5b:78:d5".parse().unwrap();
        assert_eq!(m.to_string(), "00:16:3E:5B:78:D5");
        assert_eq!(m, "00:16:3E:5B:78:D5".parse().unwrap());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00:16:3E:5B:78",
            "00:16:3E:5B:78:D5:00",
            "00:16:3E:5B:78:G5",
            "0:16:3E:5B:78:D5",
            "00-16-3E-5B-78-D5",
            "00:16:3E:5B:78:D5 ",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains("malformed MAC"), "{bad}: {e}");
        }
    }

    #[test]
    fn group_bit() {
        assert!("FF:FF:FF:FF:FF:FF".parse::<MacAddr>().unwrap().is_group());
        assert!("01:00:5E:00:00:01".parse::<MacAddr>().unwrap().is_group());
        assert!(!"00:16:3E:5B:78:D5".parse::<MacAddr>().unwrap().is_group());
    }
}
