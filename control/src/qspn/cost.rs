//! Cost arithmetic (qspn.md §5): `⊕`, and the relevance test of §5.2 / §10.2.
use super::msg::Cost;

/// `a ⊕ b` (§5.1): Null is neutral, Dead absorbs, real costs add (saturating: a peer's
/// absurd value must not overflow).
pub fn add(a: Cost, b: Cost) -> Cost {
    match (a, b) {
        (Cost::Dead, _) | (_, Cost::Dead) => Cost::Dead,
        (Cost::Null, x) | (x, Cost::Null) => x,
        (Cost::Real(x), Cost::Real(y)) => Cost::Real(x.saturating_add(y)),
    }
}

/// `important_variation(old, new)` (§5.1, §5.2): Null/Dead differ from everything else;
/// two real costs differ when `new > old/0.7` or `new < 0.7·old` (±30 %).
pub fn important_variation(old: Cost, new: Cost) -> bool {
    match (old, new) {
        (Cost::Null, n) => n != Cost::Null,
        (Cost::Dead, n) => n != Cost::Dead,
        (Cost::Real(_), Cost::Null | Cost::Dead) => true,
        (Cost::Real(o), Cost::Real(n)) => {
            let (o, n) = (o as u128, n as u128);
            7 * n > 10 * o || 10 * n < 7 * o
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cost::*;

    #[test]
    fn add_rules() {
        assert_eq!(add(Null, Real(5)), Real(5));
        assert_eq!(add(Real(5), Null), Real(5));
        assert_eq!(add(Null, Null), Null);
        assert_eq!(add(Dead, Real(5)), Dead);
        assert_eq!(add(Real(5), Dead), Dead);
        assert_eq!(add(Real(5), Real(7)), Real(12));
        assert_eq!(add(Real(u64::MAX), Real(7)), Real(u64::MAX));
    }

    #[test]
    fn order_null_real_dead() {
        assert!(Null < Real(0));
        assert!(Real(u64::MAX) < Dead);
    }

    #[test]
    fn variation_thresholds() {
        assert!(!important_variation(Null, Null));
        assert!(important_variation(Null, Real(1)));
        assert!(!important_variation(Dead, Dead));
        assert!(important_variation(Dead, Null));
        assert!(important_variation(Real(10), Dead));
        assert!(important_variation(Real(10), Null));
        // 1000 → up to 1428 and down to 700 are not important.
        assert!(!important_variation(Real(1000), Real(1428)));
        assert!(important_variation(Real(1000), Real(1429)));
        assert!(!important_variation(Real(1000), Real(700)));
        assert!(important_variation(Real(1000), Real(699)));
        assert!(!important_variation(Real(u64::MAX), Real(u64::MAX)));
    }
}
