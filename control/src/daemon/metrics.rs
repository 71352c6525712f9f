//! Prometheus metrics (`run --metrics ADDR:PORT`): what the daemon counts as it works
//! (reconcile operations and their duration, repairs, failed applies) and, gathered at
//! scrape time, what the kernel holds (routes per table from an observation, the classifier's
//! per-neighbour and fast-path counters from the BPF maps, identities).
//!
//! Everything here runs on the writer thread: the counters are bumped where the daemon
//! applies, and a scrape asks the writer for a rendering ([`super::server::Msg::Metrics`]),
//! so no lock is shared with the socket thread. The text is OpenMetrics
//! (`prometheus-client`'s encoder), which Prometheus scrapes natively.
use std::{collections::BTreeMap, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::{kernel::Report, plan::diff::Op};

/// The content type of the rendering.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArcLabels {
    nic: String,
    mac: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetnsLabel {
    netns: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    netns: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeighbourLabels {
    netns: String,
    table: String,
    mac: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    netns: String,
    table: String,
    mac: String,
    outcome: String,
}

/// The kind of a reconciler operation, as a label value (`add-rule`, `replace-route`, …).
pub fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::AddAddress { .. } => "add-address",
        Op::DelAddress { .. } => "del-address",
        Op::ReplaceRoute { .. } => "replace-route",
        Op::DelRoute { .. } => "del-route",
        Op::AddRule(_) => "add-rule",
        Op::DelRule(_) => "del-rule",
        Op::SetMark { .. } => "set-mark",
        Op::DelMark { .. } => "del-mark",
        Op::SetNat(_) => "set-nat",
    }
}

/// An operation in `ip`'s words, for the event stream (`rule pref 32764 fwmark 0xfa/0xffffffff
/// lookup 250`).
pub fn op_detail(op: &Op) -> String {
    let rule = |r: &crate::plan::KRule| {
        let mark = r
            .fwmark
            .map(|(m, mask)| format!(" fwmark {m:#x}/{mask:#x}"))
            .unwrap_or_default();
        format!("rule pref {}{mark} lookup {}", r.priority, r.table)
    };
    match op {
        Op::AddAddress { dev, addr } | Op::DelAddress { dev, addr } => {
            format!("address {addr}/32 dev {dev}")
        }
        Op::ReplaceRoute { table, prefix, .. } | Op::DelRoute { table, prefix } => {
            format!("route {prefix} table {table}")
        }
        Op::AddRule(r) | Op::DelRule(r) => rule(r),
        Op::SetMark { mac, mark } => format!("classifier entry {mac} mark {mark:#x}"),
        Op::DelMark { mac } => format!("classifier entry {mac}"),
        Op::SetNat(_) => "nft table ip ntkplane".into(),
    }
}

/// Every kind of kernel change a [`Report`] holds, with how many of each: the operations by
/// [`op_kind`], then the classifier links attached (`classifier-attach`) and dead ones
/// dropped (`classifier-detach`), sysctls written (`sysctl`) and links set up (`link-up`).
pub fn report_kinds(rep: &Report) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for op in &rep.ops {
        *out.entry(op_kind(op)).or_insert(0) += 1;
    }
    for (kind, n) in [
        ("classifier-attach", rep.attached),
        ("classifier-detach", rep.detached),
        ("sysctl", rep.sysctls),
        ("link-up", rep.links_up),
    ] {
        if n > 0 {
            *out.entry(kind).or_insert(0) += n as u64;
        }
    }
    out
}

/// What the daemon counts while it runs (kept for its lifetime).
#[derive(Clone, Debug)]
pub struct Metrics {
    reconcile_ops: Family<KindLabel, Counter>,
    reconcile_seconds: Histogram,
    repairs: Family<KindLabel, Counter>,
    apply_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_ops: Family::default(),
            // 1 ms … ~16 s: an unchanged apply takes milliseconds, a migration's seconds.
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            repairs: Family::default(),
            apply_failures: Counter::default(),
        }
    }
}

/// One neighbour entry of a namespace's classifier, read from the BPF maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighbourCounters {
    pub mac: String,
    pub table: u32,
    pub packets: u64,
    pub bytes: u64,
    /// Fast-path outcomes (`forwarded`, or why handed to the stack); empty without it.
    pub fast_path: BTreeMap<String, u64>,
}

/// A namespace's classifier counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassifierCounters {
    pub neighbours: Vec<NeighbourCounters>,
    pub misses: u64,
    pub ignored: u64,
}

/// The protocol runtime's counters (`rx`, `tx`, `dropped_<reason>`, other events) and each
/// arc's cost: (NIC, peer MAC) → µs.
pub type ProtocolSnapshot = (BTreeMap<String, u64>, BTreeMap<(String, String), u64>);

/// What a scrape reads from the kernel and the model, per namespace name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// (netns, table) → routes the kernel holds in it (ntkplane's, `proto ntk`).
    pub routes: BTreeMap<(String, u32), usize>,
    pub classifiers: BTreeMap<String, ClassifierCounters>,
    pub identities: usize,
    /// `run --paths protocol`: the runtime's counters (`rx`, `tx`, `dropped_<reason>`, …) and
    /// the measured cost of each arc (NIC, peer MAC) → µs.
    pub protocol: Option<ProtocolSnapshot>,
}

impl Metrics {
    /// One apply of a namespace: its duration, its operations, or its failure.
    pub fn applied(&self, took: Duration, result: Result<&Report, ()>) {
        self.reconcile_seconds.observe(took.as_secs_f64());
        match result {
            Ok(rep) => {
                for (kind, n) in report_kinds(rep) {
                    self.reconcile_ops
                        .get_or_create(&KindLabel { kind: kind.into() })
                        .inc_by(n);
                }
            }
            Err(()) => {
                self.apply_failures.inc();
            }
        }
    }

    /// Changes made behind ntkplane's back that a repair put back.
    pub fn repaired(&self, rep: &Report) {
        for (kind, n) in report_kinds(rep) {
            self.repairs
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc_by(n);
        }
    }

    /// The OpenMetrics text of the counters and of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut reg = Registry::default();
        // Clones share their values: the registry of one scrape renders the live counters.
        reg.register(
            "ntkplane_reconcile_ops",
            "Kernel operations the reconciler performed, by kind",
            self.reconcile_ops.clone(),
        );
        reg.register_with_unit(
            "ntkplane_reconcile",
            "Duration of one namespace's apply (observe, diff, execute)",
            Unit::Seconds,
            self.reconcile_seconds.clone(),
        );
        reg.register(
            "ntkplane_repairs",
            "Changes made behind ntkplane's back that it put back, by kind",
            self.repairs.clone(),
        );
        reg.register(
            "ntkplane_apply_failures",
            "Applies of a namespace the kernel refused (partly or wholly)",
            self.apply_failures.clone(),
        );

        let identities = Gauge::<i64>::default();
        identities.set(snap.identities as i64);
        reg.register(
            "ntkplane_identities",
            "Identities the system has (main and connectivity)",
            identities,
        );

        let routes = Family::<TableLabels, Gauge>::default();
        for ((netns, table), n) in &snap.routes {
            routes
                .get_or_create(&TableLabels {
                    netns: netns.clone(),
                    table: table.to_string(),
                })
                .set(*n as i64);
        }
        reg.register(
            "ntkplane_routes",
            "Routes ntkplane holds in the kernel (proto ntk), per table",
            routes,
        );

        // Counters held by the kernel: a fresh counter per scrape set to the map's value (the
        // maps are the truth; a neighbour removed and added again restarts from 0, which
        // Prometheus treats as a counter reset).
        let packets = Family::<NeighbourLabels, Counter>::default();
        let bytes = Family::<NeighbourLabels, Counter>::default();
        let fast = Family::<OutcomeLabels, Counter>::default();
        let misses = Family::<NetnsLabel, Counter>::default();
        let ignored = Family::<NetnsLabel, Counter>::default();
        for (netns, c) in &snap.classifiers {
            for n in &c.neighbours {
                let l = NeighbourLabels {
                    netns: netns.clone(),
                    table: n.table.to_string(),
                    mac: n.mac.clone(),
                };
                packets.get_or_create(&l).inc_by(n.packets);
                bytes.get_or_create(&l).inc_by(n.bytes);
                for (outcome, v) in &n.fast_path {
                    fast.get_or_create(&OutcomeLabels {
                        netns: netns.clone(),
                        table: l.table.clone(),
                        mac: l.mac.clone(),
                        outcome: outcome.clone(),
                    })
                    .inc_by(*v);
                }
            }
            let l = NetnsLabel {
                netns: netns.clone(),
            };
            misses.get_or_create(&l).inc_by(c.misses);
            ignored.get_or_create(&l).inc_by(c.ignored);
        }
        reg.register(
            "ntkplane_neighbour_packets",
            "IPv4 packets the classifier marked for a neighbour (per source MAC and its table)",
            packets,
        );
        reg.register(
            "ntkplane_neighbour_bytes",
            "Bytes of the IPv4 packets the classifier marked for a neighbour",
            bytes,
        );
        reg.register(
            "ntkplane_classifier_misses",
            "IPv4 packets from a MAC with no neighbour entry",
            misses,
        );
        reg.register(
            "ntkplane_classifier_ignored",
            "Frames the classifier does not look at (not IPv4, runts, group source MACs)",
            ignored,
        );
        reg.register(
            "ntkplane_fast_path_packets",
            "Fast path: packets forwarded in TC (outcome=forwarded) or handed to the stack (outcome=the reason)",
            fast,
        );
        if let Some((counters, arcs)) = &snap.protocol {
            let datagrams = Family::<KindLabel, Counter>::default();
            let dropped = Family::<ReasonLabel, Counter>::default();
            let other = Family::<KindLabel, Counter>::default();
            for (k, v) in counters {
                match k.strip_prefix("dropped_") {
                    Some(reason) => {
                        dropped
                            .get_or_create(&ReasonLabel {
                                reason: reason.into(),
                            })
                            .inc_by(*v);
                    }
                    None if k == "rx" || k == "tx" => {
                        datagrams
                            .get_or_create(&KindLabel { kind: k.clone() })
                            .inc_by(*v);
                    }
                    None => {
                        other
                            .get_or_create(&KindLabel { kind: k.clone() })
                            .inc_by(*v);
                    }
                }
            }
            reg.register(
                "ntkplane_protocol_datagrams",
                "Protocol datagrams received (kind=rx) and sent (kind=tx)",
                datagrams,
            );
            reg.register(
                "ntkplane_protocol_dropped",
                "Protocol datagrams or messages dropped, by reason",
                dropped,
            );
            reg.register(
                "ntkplane_protocol_events",
                "Protocol events: ETPs received and applied, unanswered calls, challenges",
                other,
            );
            let cost = Family::<ArcLabels, Gauge>::default();
            for ((nic, mac), us) in arcs {
                cost.get_or_create(&ArcLabels {
                    nic: nic.clone(),
                    mac: mac.clone(),
                })
                .set(*us as i64);
            }
            reg.register_with_unit(
                "ntkplane_arc_cost",
                "The measured (smoothed) round-trip time of each arc",
                Unit::Other("microseconds".into()),
                cost,
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{KRule, NatState};

    fn rule(table: u32) -> KRule {
        KRule {
            priority: 32764,
            fwmark: Some((table, 0xffff_ffff)),
            table,
        }
    }

    #[test]
    fn counters_and_snapshot_render_with_prometheus_names() {
        let m = Metrics::default();
        let rep = Report {
            ops: vec![
                Op::AddRule(rule(250)),
                Op::AddRule(rule(249)),
                Op::SetNat(NatState::default()),
            ],
            attached: 1,
            ..Default::default()
        };
        m.applied(Duration::from_millis(3), Ok(&rep));
        m.applied(Duration::from_millis(1), Err(()));
        m.repaired(&Report {
            ops: vec![Op::AddRule(rule(250))],
            ..Default::default()
        });
        let snap = Snapshot {
            routes: [(("default".to_string(), 250), 18)].into(),
            classifiers: [(
                "default".to_string(),
                ClassifierCounters {
                    neighbours: vec![NeighbourCounters {
                        mac: "00:16:3E:5B:78:D5".into(),
                        table: 250,
                        packets: 5,
                        bytes: 420,
                        fast_path: [("forwarded".to_string(), 2)].into(),
                    }],
                    misses: 3,
                    ignored: 1,
                },
            )]
            .into(),
            identities: 1,
            protocol: Some((
                [
                    ("rx".to_string(), 7),
                    ("tx".to_string(), 6),
                    ("dropped_bad_mac".to_string(), 2),
                    ("etp_received".to_string(), 3),
                ]
                .into(),
                [(("eth1".to_string(), "00:16:3E:5B:78:D5".to_string()), 420)].into(),
            )),
        };
        let t = m.render(&snap);
        for line in [
            "ntkplane_reconcile_ops_total{kind=\"add-rule\"} 2",
            "ntkplane_reconcile_ops_total{kind=\"set-nat\"} 1",
            "ntkplane_reconcile_ops_total{kind=\"classifier-attach\"} 1",
            "ntkplane_reconcile_seconds_count 2",
            "ntkplane_repairs_total{kind=\"add-rule\"} 1",
            "ntkplane_apply_failures_total 1",
            "ntkplane_identities 1",
            "ntkplane_routes{netns=\"default\",table=\"250\"} 18",
            "ntkplane_neighbour_packets_total{netns=\"default\",table=\"250\",mac=\"00:16:3E:5B:78:D5\"} 5",
            "ntkplane_neighbour_bytes_total{netns=\"default\",table=\"250\",mac=\"00:16:3E:5B:78:D5\"} 420",
            "ntkplane_classifier_misses_total{netns=\"default\"} 3",
            "ntkplane_fast_path_packets_total{netns=\"default\",table=\"250\",mac=\"00:16:3E:5B:78:D5\",outcome=\"forwarded\"} 2",
            "ntkplane_protocol_datagrams_total{kind=\"rx\"} 7",
            "ntkplane_protocol_datagrams_total{kind=\"tx\"} 6",
            "ntkplane_protocol_dropped_total{reason=\"bad_mac\"} 2",
            "ntkplane_protocol_events_total{kind=\"etp_received\"} 3",
            "ntkplane_arc_cost_microseconds{nic=\"eth1\",mac=\"00:16:3E:5B:78:D5\"} 420",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in:\n{t}");
        }
        assert!(t.ends_with("# EOF\n"), "{t}");
    }
}
