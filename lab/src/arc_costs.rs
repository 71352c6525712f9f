//! The real arcs' costs a system is told in protocol mode (`ntkplane run --arc-cost
//! eth1=MAC=US`, qspnclient's `add_real_arc` cost): from the scenario's graphs, so that QSPN in
//! the daemons chooses among the same costs the path solver uses in feed mode. Measured RTTs
//! between namespaces are tens of µs to milliseconds and move with the machine's load; the
//! scenarios' expected tables follow their graphs' costs (10 000, 11 000 µs). Pure.
use std::collections::BTreeMap;

use crate::scenario::GraphDef;

/// `(neighbour system, cost measured by me)` for every graph arc between an identity of
/// `me` and one of another system, the first graph (by name) giving a pair its cost.
pub fn costs_of(graphs: &BTreeMap<String, GraphDef>, me: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for g in graphs.values() {
        let system_of = |name: &str| {
            g.identities
                .iter()
                .find(|i| i.name.get_ref() == name)
                .and_then(|i| i.system.as_ref())
                .map(|s| s.get_ref().clone())
        };
        for a in &g.arcs {
            let (x, y, cx, cy) = a.get_ref();
            let (Some(sx), Some(sy)) = (system_of(x), system_of(y)) else {
                continue;
            };
            if sx == sy {
                continue;
            }
            if sx == me {
                out.entry(sy).or_insert(*cx);
            } else if sy == me {
                out.entry(sx).or_insert(*cy);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graphs(text: &str) -> BTreeMap<String, GraphDef> {
        #[derive(serde::Deserialize)]
        struct F {
            graph: BTreeMap<String, GraphDef>,
        }
        toml::from_str::<F>(text).unwrap().graph
    }

    #[test]
    fn each_end_gets_the_cost_it_measures_and_the_first_graph_wins() {
        let g = graphs(
            r#"
[graph.a]
identities = [
  { name = "a1", system = "alpha", index = 0, address = "2.0.1.0" },
  { name = "b1", system = "beta", index = 0, address = "2.1.1.1" },
  { name = "b2", system = "beta", index = 1, address = "2.1.1.3" },
  { name = "x", address = "2.1.1.2", mac = "02:00:00:00:00:01", linklocal = "169.254.1.1" },
]
arcs = [["a1", "b1", 10000, 11000], ["b2", "a1", 12000, 13000], ["a1", "x", 5, 5]]
[graph.b]
identities = [
  { name = "a1", system = "alpha", index = 0, address = "2.0.1.0" },
  { name = "b1", system = "beta", index = 0, address = "2.1.1.1" },
]
arcs = [["a1", "b1", 99, 99]]
"#,
        );
        let alpha = costs_of(&g, "alpha");
        assert_eq!(alpha, BTreeMap::from([("beta".to_string(), 10000)]));
        let beta = costs_of(&g, "beta");
        assert_eq!(beta, BTreeMap::from([("alpha".to_string(), 11000)]));
        assert!(costs_of(&g, "gamma").is_empty());
    }
}
