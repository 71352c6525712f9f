//! IPv4 prefixes (`10.0.0.64/27`): a thin layer over [`ipnet::Ipv4Net`] that keeps one
//! invariant the routing code relies on — host bits are zero — and names the problem when
//! text breaks it.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 prefix whose host bits are zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix(Ipv4Net);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("malformed IPv4 prefix '{0}': expected a.b.c.d/len")]
    Malformed(String),
    #[error("prefix length {0} is greater than 32")]
    Length(u8),
    #[error("'{0}' has host bits set (did you mean {1}?)")]
    HostBits(String, Ipv4Prefix),
}

impl Ipv4Prefix {
    /// A prefix from an address and a length; fails if host bits are set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        let net = Ipv4Net::new(addr, len).map_err(|_| PrefixError::Length(len))?;
        if net.network() != addr {
            return Err(PrefixError::HostBits(
                format!("{addr}/{len}"),
                Ipv4Prefix(net.trunc()),
            ));
        }
        Ok(Ipv4Prefix(net))
    }

    /// A prefix from an address and a length, clearing host bits.
    pub fn truncating(addr: Ipv4Addr, len: u8) -> Self {
        Ipv4Prefix(
            Ipv4Net::new(addr, len)
                .expect("prefix length at most 32")
                .trunc(),
        )
    }

    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Prefix(Ipv4Net::from(addr))
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.0.network()
    }
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
    pub fn is_host(&self) -> bool {
        self.0.prefix_len() == 32
    }
    /// First and last address, as integers.
    pub fn range(&self) -> (u32, u32) {
        (u32::from(self.0.network()), u32::from(self.0.broadcast()))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }
    pub fn contains_prefix(&self, other: &Ipv4Prefix) -> bool {
        self.0.contains(&other.0)
    }
    pub fn overlaps(&self, other: &Ipv4Prefix) -> bool {
        self.contains_prefix(other) || other.contains_prefix(self)
    }
    /// The `ipnet` value, for code that speaks it.
    pub fn net(&self) -> Ipv4Net {
        self.0
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    /// `a.b.c.d/len`, or a bare address as a /32.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| PrefixError::Malformed(s.into()))?;
        // ipnet's own parser would accept what `l` holds only as digits: keep our errors.
        let len: u8 = l.parse().map_err(|_| PrefixError::Malformed(s.into()))?;
        Self::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_and_relations() {
        let p: Ipv4Prefix = "10.0.0.64/27".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.64/27");
        assert_eq!(p.range(), (0x0a00_0040, 0x0a00_005f));
        assert!(p.contains("10.0.0.95".parse().unwrap()));
        assert!(!p.contains("10.0.0.96".parse().unwrap()));
        let q: Ipv4Prefix = "10.0.0.48/30".parse().unwrap();
        assert!(!p.overlaps(&q));
        assert!("10.0.0.0/26".parse::<Ipv4Prefix>().unwrap().overlaps(&q));
        assert_eq!("10.0.0.7".parse::<Ipv4Prefix>().unwrap().prefix_len(), 32);
        assert!(matches!(
            "10.0.0.65/27".parse::<Ipv4Prefix>(),
            Err(PrefixError::HostBits(..))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length(33))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Ipv4Prefix>(),
            Err(PrefixError::Malformed(_))
        ));
    }
}
