//! Netsukuku addresses (`3.1.0.1`, highest level first) and hierarchical coordinates.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::topology::Topology;

/// A node's address: one position per level, **low level first**. A position ≥ gsize is
/// *virtual* (a placeholder during entry/migration; it has no IPv4 form).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtkAddress(Vec<u32>);

/// A destination relative to an address: the level-`lvl` g-node with the address's
/// positions above `lvl` and position `pos` at `lvl`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HCoord {
    pub lvl: usize,
    pub pos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("malformed address '{0}': expected positions separated by dots, highest level first (e.g. 3.1.0.1)")]
    Malformed(String),
    #[error("address '{addr}' has {got} levels, the topology {topology} has {want}")]
    Levels {
        addr: String,
        got: usize,
        want: usize,
        topology: String,
    },
    #[error("position {pos} at level {level} of address '{addr}' is out of range")]
    OutOfRange {
        addr: String,
        level: usize,
        pos: u32,
    },
}

impl NtkAddress {
    /// From positions, low level first.
    pub fn from_low_first(pos: Vec<u32>) -> Self {
        Self(pos)
    }

    /// Parses `3.1.0.1` (highest level first) for `topology`. Virtual positions (≥ gsize)
    /// are accepted, see [`NtkAddress::check`].
    pub fn parse(s: &str, topology: &Topology) -> Result<Self, AddressError> {
        let mut pos = Vec::new();
        for part in s.split('.') {
            pos.push(
                part.parse::<u32>()
                    .map_err(|_| AddressError::Malformed(s.to_string()))?,
            );
        }
        pos.reverse();
        let a = Self(pos);
        a.check(topology)?;
        Ok(a)
    }

    /// Checks the number of levels and that positions are plausible: real, or virtual
    /// within twice the gsize (qspnclient's virtual positions are `gsize .. 2·gsize-1`).
    pub fn check(&self, topology: &Topology) -> Result<(), AddressError> {
        if self.0.len() != topology.levels() {
            return Err(AddressError::Levels {
                addr: self.to_string(),
                got: self.0.len(),
                want: topology.levels(),
                topology: topology.to_string(),
            });
        }
        for (level, &p) in self.0.iter().enumerate() {
            if p >= 2 * topology.gsize(level) {
                return Err(AddressError::OutOfRange {
                    addr: self.to_string(),
                    level,
                    pos: p,
                });
            }
        }
        Ok(())
    }

    pub fn levels(&self) -> usize {
        self.0.len()
    }
    pub fn pos(&self, level: usize) -> u32 {
        self.0[level]
    }
    pub fn positions(&self) -> &[u32] {
        &self.0
    }

    /// `is_real(n, a..=b)`; an empty range (`a > b`) is real.
    pub fn is_real(&self, t: &Topology, a: usize, b: usize) -> bool {
        (a..=b).all(|i| i < self.0.len() && self.0[i] < t.gsize(i)) || a > b
    }
    pub fn is_all_real(&self, t: &Topology) -> bool {
        self.is_real(t, 0, self.0.len() - 1)
    }

    /// The address with position `level` replaced by `pos` (the HCoord `(level, pos)`
    /// seen from `self`, lower positions kept).
    pub fn with(&self, level: usize, pos: u32) -> Self {
        let mut v = self.0.clone();
        v[level] = pos;
        Self(v)
    }

    /// The maximum distinct g-node of `other` relative to `self`: the highest level where
    /// they differ and `other`'s position there. `None` when equal.
    pub fn coord_of(&self, other: &NtkAddress) -> Option<HCoord> {
        (0..self.0.len())
            .rev()
            .find(|&i| self.0[i] != other.0[i])
            .map(|lvl| HCoord {
                lvl,
                pos: other.0[lvl],
            })
    }
}

impl fmt::Display for NtkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().rev().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl fmt::Debug for NtkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `LEVEL,POS` (how the command line names a destination).
impl std::str::FromStr for HCoord {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (l, p) = s
            .split_once(',')
            .ok_or_else(|| format!("destination '{s}': expected LEVEL,POS"))?;
        Ok(HCoord {
            lvl: l
                .trim()
                .parse()
                .map_err(|_| format!("destination '{s}': bad level"))?,
            pos: p
                .trim()
                .parse()
                .map_err(|_| format!("destination '{s}': bad position"))?,
        })
    }
}

impl fmt::Display for HCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.lvl, self.pos)
    }
}

impl fmt::Debug for HCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for NtkAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NtkAddress {
    /// Topology-free parse (levels and ranges are checked where the topology is known).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut pos = Vec::new();
        for part in s.split('.') {
            pos.push(
                part.parse::<u32>()
                    .map_err(|_| serde::de::Error::custom(AddressError::Malformed(s.clone())))?,
            );
        }
        pos.reverse();
        Ok(Self(pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topology {
        "4.2.2.2".parse().unwrap()
    }

    #[test]
    fn parse_display_round_trip() {
        let a = NtkAddress::parse("3.1.0.1", &t()).unwrap();
        assert_eq!(a.positions(), &[1, 0, 1, 3]);
        assert_eq!(a.to_string(), "3.1.0.1");
        let v = NtkAddress::parse("2.1.1.2", &t()).unwrap();
        assert!(!v.is_all_real(&t()));
        assert!(v.is_real(&t(), 1, 3));
        assert!(v.is_real(&t(), 2, 1), "empty range is real");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            NtkAddress::parse("3.1.0", &t()).unwrap_err().to_string(),
            "address '3.1.0' has 3 levels, the topology 4.2.2.2 has 4"
        );
        assert!(matches!(
            NtkAddress::parse("3.1.0.x", &t()),
            Err(AddressError::Malformed(_))
        ));
        assert!(matches!(
            NtkAddress::parse("9.1.0.1", &t()),
            Err(AddressError::OutOfRange {
                level: 3,
                pos: 9,
                ..
            })
        ));
    }

    #[test]
    fn maximum_distinct_gnode() {
        // forwarding-state.md §5.3 examples.
        let d1 = NtkAddress::parse("2.1.0.1", &t()).unwrap();
        let mu2 = NtkAddress::parse("2.1.0.0", &t()).unwrap();
        let g = NtkAddress::parse("2.1.1.0", &t()).unwrap();
        assert_eq!(d1.coord_of(&mu2), Some(HCoord { lvl: 0, pos: 0 }));
        assert_eq!(d1.coord_of(&g), Some(HCoord { lvl: 1, pos: 1 }));
        let e1 = NtkAddress::parse("2.1.1.2", &t()).unwrap();
        let b2 = NtkAddress::parse("2.0.1.1", &t()).unwrap();
        assert_eq!(e1.coord_of(&b2), Some(HCoord { lvl: 2, pos: 0 }));
        assert_eq!(d1.coord_of(&d1), None);
    }
}
