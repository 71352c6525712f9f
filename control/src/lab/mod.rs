//! Support for driving daemons through scenarios: the feed (what QSPN would have told each
//! identity, from a network graph) and the spec's listing format for expected tables.
pub mod feed;
pub mod listing;
