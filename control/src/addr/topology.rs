//! The topology: how many levels, and the size of each (qspnclient's `4.2.2.2`).
use std::{fmt, str::FromStr};

use super::prefix::Ipv4Prefix;

/// Netsukuku's default IPv4 block.
pub const DEFAULT_BASE: &str = "10.0.0.0/8";

/// Sizes of the levels, plus the IPv4 block the addresses are mapped into.
///
/// Stored low level first (level 0 = the single node), as the Vala code does; written and
/// parsed high level first, as the command line does.
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    gsizes: Vec<u32>,
    gexp: Vec<u32>,
    base: Ipv4Prefix,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("malformed topology '{0}': expected gsizes separated by dots, highest level first (e.g. 4.2.2.2)")]
    Malformed(String),
    #[error("a topology needs at least one level")]
    NoLevels,
    #[error("gsize {gsize} at level {level} is not a power of two")]
    NotPowerOfTwo { level: usize, gsize: u32 },
    #[error("gsize {gsize} at level {level} is too small (at least 2)")]
    TooSmall { level: usize, gsize: u32 },
    #[error("topology needs {bits} address bits plus 2 type bits, but base prefix {base} has only {host} host bits")]
    TooManyBits {
        bits: u32,
        host: u32,
        base: Ipv4Prefix,
    },
    #[error("top-level gsize {gsize} is smaller than the number of levels {levels} (internal addresses store a level number there)")]
    TopTooSmall { gsize: u32, levels: usize },
}

impl Topology {
    /// A topology from gsizes, **low level first**, mapped into `base`.
    pub fn new(gsizes_low_first: Vec<u32>, base: Ipv4Prefix) -> Result<Self, TopologyError> {
        let l = gsizes_low_first.len();
        if l == 0 {
            return Err(TopologyError::NoLevels);
        }
        let mut gexp = Vec::with_capacity(l);
        for (level, &gsize) in gsizes_low_first.iter().enumerate() {
            if gsize < 2 {
                return Err(TopologyError::TooSmall { level, gsize });
            }
            if !gsize.is_power_of_two() {
                return Err(TopologyError::NotPowerOfTwo { level, gsize });
            }
            gexp.push(gsize.trailing_zeros());
        }
        let bits: u32 = gexp.iter().sum();
        let host = 32 - base.prefix_len() as u32;
        if bits + 2 > host {
            return Err(TopologyError::TooManyBits { bits, host, base });
        }
        let top = gsizes_low_first[l - 1];
        if (top as usize) < l {
            return Err(TopologyError::TopTooSmall {
                gsize: top,
                levels: l,
            });
        }
        Ok(Self {
            gsizes: gsizes_low_first,
            gexp,
            base,
        })
    }

    /// Parses qspnclient's notation (highest level first) with the given base prefix.
    pub fn parse_with_base(s: &str, base: Ipv4Prefix) -> Result<Self, TopologyError> {
        let mut sizes = Vec::new();
        for part in s.split('.') {
            sizes.push(
                part.parse::<u32>()
                    .map_err(|_| TopologyError::Malformed(s.to_string()))?,
            );
        }
        sizes.reverse();
        Self::new(sizes, base)
    }

    /// Number of levels `l`.
    pub fn levels(&self) -> usize {
        self.gsizes.len()
    }
    pub fn gsize(&self, level: usize) -> u32 {
        self.gsizes[level]
    }
    pub fn gexp(&self, level: usize) -> u32 {
        self.gexp[level]
    }
    /// Bit offset of level `i`'s field; `off(l)` is the total number of address bits `B`.
    pub fn off(&self, level: usize) -> u32 {
        self.gexp[..level].iter().sum()
    }
    /// `B`: bits of a real Netsukuku address.
    pub fn bits(&self) -> u32 {
        self.off(self.levels())
    }
    pub fn base(&self) -> Ipv4Prefix {
        self.base
    }
}

impl FromStr for Topology {
    type Err = TopologyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_with_base(s, DEFAULT_BASE.parse().unwrap())
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.gsizes.iter().rev().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topology({self} in {})", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_high_level_first() {
        let t: Topology = "4.16.256.256".parse().unwrap();
        assert_eq!(t.levels(), 4);
        assert_eq!((t.gsize(0), t.gsize(3)), (256, 4));
        assert_eq!((t.gexp(0), t.gexp(1), t.gexp(2), t.gexp(3)), (8, 8, 4, 2));
        assert_eq!(t.bits(), 22);
        assert_eq!(t.off(2), 16);
        assert_eq!(t.to_string(), "4.16.256.256");
        let t: Topology = "4.2.2.2".parse().unwrap();
        assert_eq!(t.bits(), 5);
    }

    #[test]
    fn validation_names_the_problem() {
        let e = "4.3.2".parse::<Topology>().unwrap_err();
        assert_eq!(e.to_string(), "gsize 3 at level 1 is not a power of two");
        let e = "8.256.256.256".parse::<Topology>().unwrap_err();
        assert!(
            matches!(
                e,
                TopologyError::TooManyBits {
                    bits: 27,
                    host: 24,
                    ..
                }
            ),
            "{e}"
        );
        // 22 bits fit in /8 (24 host bits), 23 do not.
        assert!("4.16.256.256".parse::<Topology>().is_ok());
        assert!("8.16.256.256".parse::<Topology>().is_err());
        let e = "2.2.2.2".parse::<Topology>().unwrap_err();
        assert_eq!(
            e,
            TopologyError::TopTooSmall {
                gsize: 2,
                levels: 4
            }
        );
        assert!(matches!(
            "4..2".parse::<Topology>(),
            Err(TopologyError::Malformed(_))
        ));
        assert!(matches!(
            "4.1.2".parse::<Topology>(),
            Err(TopologyError::TooSmall { level: 1, .. })
        ));
        assert!(matches!(
            "".parse::<Topology>(),
            Err(TopologyError::Malformed(_))
        ));
        // A smaller base prefix leaves fewer bits.
        let base = "10.0.0.0/24".parse().unwrap();
        assert!(Topology::parse_with_base("4.2.2.2", base).is_ok());
        assert!(
            Topology::parse_with_base("4.4.2.2", base).is_ok(),
            "6 + 2 bits fill a /24 exactly"
        );
        assert!(Topology::parse_with_base("8.4.2.2", base).is_err());
    }

    #[test]
    fn optimal_layout_of_addressing_md_fits() {
        // 4 bits on top (16 levels), levels 14..3 one bit, levels 2..0 two bits: B = 22.
        let mut s = vec!["16".to_string()];
        s.extend(std::iter::repeat_n("2".to_string(), 12));
        s.extend(std::iter::repeat_n("4".to_string(), 3));
        let t: Topology = s.join(".").parse().unwrap();
        assert_eq!((t.levels(), t.bits()), (16, 22));
    }
}
