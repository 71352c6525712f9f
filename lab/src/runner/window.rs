//! Where a `during` window ends in protocol mode.
//!
//! A scenario's timeline was written for the path solver: the first ETP an identity gets
//! after a move is a `feed` step, and a window that asserts the state "until the first ETP"
//! ends at the last step before that feed (S1's "β's default namespace from migrate_phase_1's
//! return to the first ETP", S2's "S2-B on λ through the pause and migr02"). In protocol mode
//! the feed is skipped and ETPs are the daemons' own: QSPN arcs join only by `add-qspn-arc`,
//! and the first ETP after a move is the consequence of the first such step (the peer
//! answers the new identity's bootstrap request, qspn.md §8.1/§13.2, or floods the new arc).
//! So a window whose state is meant to last until the feed ends, in protocol mode, at the
//! last step before the first `add-qspn-arc` after it opened — the last step at which no
//! ETP can have been delivered yet. Windows that end before something else (a check, or
//! no feed follows) are the scenario's own and keep their end.

/// What matters about a step for a window's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Paths from the solver (`feed`).
    Feed,
    /// A step that checks the state (`check`, `ping`, `udp`, also inside `parallel`).
    Check,
    /// A step that makes an arc a QSPN arc (`run = ["add-qspn-arc", …]`, also inside
    /// `parallel`): in protocol mode, ETPs may flow from it on.
    AddQspnArc,
    Other,
}

/// The step's kind (a `parallel` group: a check if it holds one, else an arc addition if it
/// holds one).
pub fn kind(s: &crate::scenario::Step) -> Kind {
    if s.feed.is_some() {
        return Kind::Feed;
    }
    if s.check.is_some() || s.ping.is_some() || s.udp.is_some() {
        return Kind::Check;
    }
    if s.run
        .as_ref()
        .is_some_and(|r| r.first().is_some_and(|c| c == "add-qspn-arc"))
    {
        return Kind::AddQspnArc;
    }
    if let Some(g) = &s.parallel {
        let kinds: Vec<Kind> = g.iter().map(kind).collect();
        for k in [Kind::Check, Kind::AddQspnArc] {
            if kinds.contains(&k) {
                return k;
            }
        }
    }
    Kind::Other
}

/// The last step of a window opened at `from` and ending at `to` (indices into `steps`) in
/// protocol mode: `to`, unless the window lasts until a feed (only non-check steps between
/// `to` and the next feed), then no later than the step before the first `add-qspn-arc`
/// after `from`.
pub fn protocol_end(steps: &[Kind], from: usize, to: usize) -> usize {
    let until_feed = steps
        .iter()
        .skip(to + 1)
        .find(|k| matches!(k, Kind::Feed | Kind::Check))
        == Some(&Kind::Feed);
    if !until_feed {
        return to;
    }
    match steps
        .iter()
        .enumerate()
        .skip(from + 1)
        .find(|(_, k)| **k == Kind::AddQspnArc)
    {
        Some((first, _)) if first <= to => to.min(first - 1),
        _ => to,
    }
}

#[cfg(test)]
mod tests {
    use super::{protocol_end, Kind::*};

    #[test]
    fn a_window_until_the_feed_ends_before_the_first_qspn_arc() {
        // S1 step 43: opens at the pause after migrate_phase_1 (1), α's neighbour-migrated
        // (2), α's add-qspn-arc (3, the first ETP in protocol mode), … up to the step before
        // the feed (6).
        let s = [
            Other, Other, Other, AddQspnArc, Other, AddQspnArc, Other, Feed, Check,
        ];
        assert_eq!(protocol_end(&s, 1, 6), 2);
    }

    #[test]
    fn a_window_that_ends_before_a_check_keeps_its_end() {
        // S1 step 30: ends at the pause before β's add-qspn-arc, which a check follows
        // before the feed.
        let s = [Other, AddQspnArc, Other, Check, AddQspnArc, Feed];
        assert_eq!(protocol_end(&s, 0, 2), 2);
        let s = [Other, AddQspnArc, Other, AddQspnArc, Check, Feed];
        assert_eq!(protocol_end(&s, 0, 2), 2);
    }

    #[test]
    fn no_feed_after_it_no_change() {
        let s = [Other, AddQspnArc, Other, Other];
        assert_eq!(protocol_end(&s, 0, 2), 2);
    }

    #[test]
    fn no_qspn_arc_inside_no_change() {
        let s = [Other, Other, Other, AddQspnArc, Feed];
        assert_eq!(protocol_end(&s, 0, 2), 2);
    }

    #[test]
    fn the_opening_step_itself_is_not_counted() {
        // A window may open on an add-qspn-arc: ETPs it causes are what it watches for.
        let s = [AddQspnArc, Other, AddQspnArc, Other, Feed];
        assert_eq!(protocol_end(&s, 0, 3), 1);
    }

    #[test]
    fn a_window_ending_on_the_first_qspn_arc_ends_before_it() {
        // S2 step 72: "up to its own add_qspn_arc" (the window's last step).
        let s = [Other, Other, AddQspnArc, Other, AddQspnArc, Feed];
        assert_eq!(protocol_end(&s, 0, 2), 1);
    }
}
