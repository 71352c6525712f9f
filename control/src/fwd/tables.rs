//! Routing-table ids (which double as packet marks), allocated per neighbour MAC for the
//! whole system (forwarding-state.md §3, identities.md §5.1).
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// Table `ntk` (the main identity's egress table).
pub const NTK_TABLE: u32 = 251;
/// qspnclient's pool: 250 down to 200.
pub const CLASSIC_POOL: std::ops::RangeInclusive<u32> = 200..=250;

/// `ntk_from_<MAC>`.
pub fn table_name(mac: MacAddr) -> String {
    format!("ntk_from_{mac}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free routing-table id left (classic pool 200..=250 and extension {start}..={end} all in use)")]
    Exhausted { start: u32, end: u32 },
    #[error("identity {user} holds no table for {mac}")]
    NotHeld { mac: MacAddr, user: u32 },
}

/// The system-wide MAC → table id map.
///
/// Policy (the docs', normative for ntkplane): a MAC that has an id keeps it for every
/// identity that uses it; a new MAC takes the **highest free** id of 250..=200 (so freed ids
/// are reused, and a neighbour MAC swap that releases first gets the same number back).
/// Beyond qspnclient's 51 ids, allocation continues upwards in `extension`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIds {
    extension: (u32, u32),
    /// MAC → (id, identities using it).
    held: BTreeMap<MacAddr, (u32, BTreeSet<u32>)>,
}

impl Default for TableIds {
    fn default() -> Self {
        Self::new(1000, 65_535)
    }
}

impl TableIds {
    /// `extension`: the ids used after 200..=250 is exhausted (must not overlap 0..=255).
    pub fn new(ext_start: u32, ext_end: u32) -> Self {
        assert!(
            ext_start > 255 && ext_start <= ext_end,
            "extension range must be above 255"
        );
        Self {
            extension: (ext_start, ext_end),
            held: BTreeMap::new(),
        }
    }

    /// The id of `mac`, if any identity holds one.
    pub fn get(&self, mac: MacAddr) -> Option<u32> {
        self.held.get(&mac).map(|(id, _)| *id)
    }

    /// Every held id, by MAC.
    pub fn all(&self) -> impl Iterator<Item = (MacAddr, u32)> + '_ {
        self.held.iter().map(|(m, (id, _))| (*m, *id))
    }

    /// Identity `user` takes a table for `mac`: the MAC's id if it has one, else a new one.
    pub fn acquire(&mut self, mac: MacAddr, user: u32) -> Result<u32, AllocError> {
        if let Some((id, users)) = self.held.get_mut(&mac) {
            users.insert(user);
            return Ok(*id);
        }
        let used: BTreeSet<u32> = self.held.values().map(|(id, _)| *id).collect();
        let id = CLASSIC_POOL
            .rev()
            .find(|id| !used.contains(id))
            .or_else(|| (self.extension.0..=self.extension.1).find(|id| !used.contains(id)))
            .ok_or(AllocError::Exhausted {
                start: self.extension.0,
                end: self.extension.1,
            })?;
        self.held.insert(mac, (id, BTreeSet::from([user])));
        Ok(id)
    }

    /// Identity `user` no longer uses its table for `mac`; the id returns to the pool when
    /// no identity uses it. Returns whether the id was freed.
    pub fn release(&mut self, mac: MacAddr, user: u32) -> Result<bool, AllocError> {
        let Some((_, users)) = self.held.get_mut(&mac) else {
            return Err(AllocError::NotHeld { mac, user });
        };
        if !users.remove(&user) {
            return Err(AllocError::NotHeld { mac, user });
        }
        if users.is_empty() {
            self.held.remove(&mac);
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MacAddr {
        format!("00:16:3E:{s}").parse().unwrap()
    }

    /// β through S0 and S1 (scenarios.md): γ first (250), then α (249), then ε (248); β₁ in
    /// migr01 and β₂ in default share the ids of the same MACs.
    #[test]
    fn beta_history() {
        let mut t = TableIds::default();
        let (b1, b2) = (1, 2);
        assert_eq!(t.acquire(m("5B:78:D5"), b1), Ok(250)); // entr02: γ
        assert_eq!(t.acquire(m("FD:E2:AA"), b1), Ok(249)); // entr04: α
        assert_eq!(t.acquire(m("3C:14:33"), b1), Ok(248)); // S1: ε
                                                           // migr01: β₂ inherits the same MACs' tables.
        for mac in ["5B:78:D5", "FD:E2:AA", "3C:14:33"] {
            t.acquire(m(mac), b2).unwrap();
        }
        // β₁ removes its outer arc to α: 249 stays (β₂ uses it).
        assert_eq!(t.release(m("FD:E2:AA"), b1), Ok(false));
        assert_eq!(t.get(m("FD:E2:AA")), Some(249));
    }

    /// α/γ/ε when β₁ moves to migr01 (DettagliOperazioni8): release 250 for …EC:A3:E1
    /// first, then allocate for …EE:AF:D1: the same number comes back.
    #[test]
    fn neighbour_mac_swap_keeps_the_number() {
        let mut t = TableIds::default();
        assert_eq!(t.acquire(m("EC:A3:E1"), 0), Ok(250));
        assert_eq!(t.release(m("EC:A3:E1"), 0), Ok(true));
        assert_eq!(t.acquire(m("EE:AF:D1"), 0), Ok(250));
        // then β₂ arrives with the old MAC: next free.
        assert_eq!(t.acquire(m("EC:A3:E1"), 0), Ok(249));
    }

    /// The highest free id is taken, not the most recently freed one.
    #[test]
    fn highest_free_id() {
        let mut t = TableIds::default();
        let macs: Vec<MacAddr> = (0..4).map(|i| MacAddr([0, 0x16, 0x3e, 0, 0, i])).collect();
        for mac in &macs {
            t.acquire(*mac, 0).unwrap();
        } // 250 249 248 247
        t.release(macs[3], 0).unwrap(); // frees 247
        t.release(macs[1], 0).unwrap(); // frees 249
        assert_eq!(t.acquire(MacAddr([2, 0, 0, 0, 0, 9]), 0), Ok(249));
        assert_eq!(t.acquire(MacAddr([2, 0, 0, 0, 0, 8]), 0), Ok(247));
    }

    #[test]
    fn beyond_51_neighbours_the_extension_is_used() {
        let mut t = TableIds::new(1000, 1001);
        for i in 0..51u8 {
            assert_eq!(
                t.acquire(MacAddr([2, 0, 0, 0, 1, i]), 0),
                Ok(250 - i as u32)
            );
        }
        assert_eq!(t.acquire(MacAddr([2, 0, 0, 0, 2, 0]), 0), Ok(1000));
        assert_eq!(t.acquire(MacAddr([2, 0, 0, 0, 2, 1]), 0), Ok(1001));
        assert_eq!(
            t.acquire(MacAddr([2, 0, 0, 0, 2, 2]), 0),
            Err(AllocError::Exhausted {
                start: 1000,
                end: 1001
            })
        );
        // Freed classic ids come first again.
        t.release(MacAddr([2, 0, 0, 0, 1, 0]), 0).unwrap();
        assert_eq!(t.acquire(MacAddr([2, 0, 0, 0, 2, 2]), 0), Ok(250));
    }

    #[test]
    fn releasing_what_is_not_held_is_an_error() {
        let mut t = TableIds::default();
        assert!(t.release(m("EC:A3:E1"), 0).is_err());
        t.acquire(m("EC:A3:E1"), 0).unwrap();
        assert!(t.release(m("EC:A3:E1"), 7).is_err());
    }
}
