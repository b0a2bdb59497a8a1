//! The plan: agents and their dependencies, checked once at start-up and kept in topological
//! order so that every node's dependencies come before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::{Agent, Entry};

/// One agent in the plan.
#[derive(Debug, Clone)]
pub struct PlanNode {
    pub name: String,
    /// Indexes of the nodes this one waits for.
    pub deps: Vec<usize>,
    /// Indexes of the nodes that wait for this one.
    pub dependents: Vec<usize>,
    /// The agent's own timeout; it is given `min(timeout, time left in the session)`.
    pub timeout: Duration,
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan has no agents")]
    Empty,
    #[error("two agents are named `{0}`")]
    DuplicateAgent(String),
    #[error("agent `{agent}` lists `{dependency}` more than once in depends_on")]
    DuplicateDependency { agent: String, dependency: String },
    #[error("agent `{agent}` depends on `{dependency}`, which is not configured")]
    UnknownDependency { agent: String, dependency: String },
    #[error("the plan has a dependency cycle through: {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// A directed acyclic graph of agents.
#[derive(Debug, Clone)]
pub struct Plan {
    nodes: Vec<PlanNode>,
}

impl Plan {
    /// A short fingerprint of the plan (agents, dependencies, timeouts), recorded on every
    /// session so that a decision can be traced to the plan that made it.
    pub fn version(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for node in &self.nodes {
            let deps: Vec<&str> = node
                .deps
                .iter()
                .map(|&d| self.nodes[d].name.as_str())
                .collect();
            hasher.update(format!(
                "{}<-{};{}ms\n",
                node.name,
                deps.join(","),
                node.timeout.as_millis()
            ));
        }
        hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The plan of the registry's agents, and the agents in its order.
    pub fn of(entries: Vec<Entry>) -> Result<(Self, Vec<Arc<dyn Agent>>), PlanError> {
        let plan = Self::new(
            entries
                .iter()
                .map(|e| (e.name.as_str(), e.depends_on.as_slice(), e.timeout)),
        )?;
        let mut entries: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
        let agents = plan
            .nodes()
            .iter()
            .map(|node| {
                let at = entries
                    .iter()
                    .position(|e| e.as_ref().is_some_and(|e| e.name == node.name))
                    .expect("every plan node comes from an entry");
                entries[at].take().expect("each entry is taken once").agent
            })
            .collect();
        Ok((plan, agents))
    }

    /// Checks the graph and orders it; ties keep the order given.
    pub fn new<'a>(
        agents: impl IntoIterator<Item = (&'a str, &'a [String], Duration)>,
    ) -> Result<Self, PlanError> {
        let agents: Vec<_> = agents.into_iter().collect();
        if agents.is_empty() {
            return Err(PlanError::Empty);
        }
        let index: HashMap<&str, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (*name, i))
            .collect();
        if index.len() < agents.len() {
            let duplicate = agents
                .iter()
                .enumerate()
                .find(|(i, (name, _, _))| index[name] != *i)
                .map(|(_, (name, _, _))| (*name).to_owned())
                .expect("a shadowed name has an earlier twin");
            return Err(PlanError::DuplicateAgent(duplicate));
        }
        let mut deps = vec![Vec::new(); agents.len()];
        for (i, (name, depends_on, _)) in agents.iter().enumerate() {
            for dependency in *depends_on {
                let Some(&d) = index.get(dependency.as_str()) else {
                    return Err(PlanError::UnknownDependency {
                        agent: (*name).to_owned(),
                        dependency: dependency.clone(),
                    });
                };
                if deps[i].contains(&d) {
                    return Err(PlanError::DuplicateDependency {
                        agent: (*name).to_owned(),
                        dependency: dependency.clone(),
                    });
                }
                deps[i].push(d);
            }
        }

        // Kahn's algorithm; whatever is left unordered sits on a cycle.
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut order = Vec::with_capacity(agents.len());
        let mut ready: Vec<usize> = (0..agents.len()).filter(|&i| waiting[i] == 0).collect();
        while let Some(i) = ready.first().copied() {
            ready.remove(0);
            order.push(i);
            for (j, node_deps) in deps.iter().enumerate() {
                if node_deps.contains(&i) {
                    waiting[j] -= 1;
                    if waiting[j] == 0 {
                        ready.push(j);
                    }
                }
            }
        }
        if order.len() < agents.len() {
            let cyclic = (0..agents.len())
                .filter(|i| !order.contains(i))
                .map(|i| agents[i].0.to_owned())
                .collect();
            return Err(PlanError::Cycle(cyclic));
        }

        let position: Vec<usize> = {
            let mut position = vec![0; agents.len()];
            for (pos, &i) in order.iter().enumerate() {
                position[i] = pos;
            }
            position
        };
        let mut nodes: Vec<PlanNode> = order
            .iter()
            .map(|&i| PlanNode {
                name: agents[i].0.to_owned(),
                deps: deps[i].iter().map(|&d| position[d]).collect(),
                dependents: Vec::new(),
                timeout: agents[i].2,
            })
            .collect();
        for i in 0..nodes.len() {
            for d in nodes[i].deps.clone() {
                nodes[d].dependents.push(i);
            }
        }
        Ok(Self { nodes })
    }

    pub fn nodes(&self) -> &[PlanNode] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The longest dependency chain given each node's duration (indexed like `nodes()`): the
    /// least time a session of this plan can take.
    pub fn critical_path(&self, durations: &[Duration]) -> Duration {
        let mut finish = vec![Duration::ZERO; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            let start = node
                .deps
                .iter()
                .map(|&d| finish[d])
                .max()
                .unwrap_or_default();
            finish[i] = start + durations[i];
        }
        finish.into_iter().max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(edges: &[(&'static str, &[&str])]) -> Result<Plan, PlanError> {
        let owned: Vec<(&str, Vec<String>)> = edges
            .iter()
            .map(|(n, d)| (*n, d.iter().map(|s| s.to_string()).collect()))
            .collect();
        Plan::new(
            owned
                .iter()
                .map(|(n, d)| (*n, d.as_slice(), Duration::from_secs(1))),
        )
    }

    #[test]
    fn the_default_plan_orders_dependencies_first() {
        let plan = plan(&[
            ("doc_capture", &[]),
            ("face_match", &["doc_capture", "liveness"]),
            ("liveness", &[]),
            ("ocr", &["doc_capture"]),
        ])
        .unwrap();
        let at = |name| plan.index_of(name).unwrap();
        for node in plan.nodes() {
            for &dep in &node.deps {
                assert!(
                    dep < at(&node.name),
                    "{} comes after its dependencies",
                    node.name
                );
            }
        }
        let face = &plan.nodes()[at("face_match")];
        let mut deps = face.deps.clone();
        deps.sort_unstable();
        let mut expected = vec![at("doc_capture"), at("liveness")];
        expected.sort_unstable();
        assert_eq!(deps, expected);
        let mut dependents = plan.nodes()[at("doc_capture")].dependents.clone();
        dependents.sort_unstable();
        let mut expected = vec![at("ocr"), at("face_match")];
        expected.sort_unstable();
        assert_eq!(dependents, expected);
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let err = plan(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]).unwrap_err();
        assert_eq!(err, PlanError::Cycle(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn an_unknown_dependency_is_refused() {
        let err = plan(&[("ocr", &["doc_capture"])]).unwrap_err();
        assert!(matches!(err, PlanError::UnknownDependency { .. }));
        assert_eq!(
            err.to_string(),
            "agent `ocr` depends on `doc_capture`, which is not configured"
        );
    }

    #[test]
    fn a_dependency_listed_twice_is_refused_as_such() {
        let err = plan(&[
            ("doc_capture", &[]),
            ("ocr", &["doc_capture", "doc_capture"]),
        ])
        .unwrap_err();
        assert!(
            matches!(err, PlanError::DuplicateDependency { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_critical_path_is_the_longest_chain() {
        let plan = plan(&[
            ("doc_capture", &[]),
            ("liveness", &[]),
            ("face_match", &["doc_capture", "liveness"]),
            ("ocr", &["doc_capture"]),
        ])
        .unwrap();
        let ms = Duration::from_millis;
        let mut durations = vec![Duration::ZERO; plan.len()];
        for (name, d) in [
            ("doc_capture", 10),
            ("liveness", 30),
            ("face_match", 20),
            ("ocr", 50),
        ] {
            durations[plan.index_of(name).unwrap()] = ms(d);
        }
        // doc 10 + ocr 50 = 60 beats max(doc 10, liveness 30) + face 20 = 50
        assert_eq!(plan.critical_path(&durations), ms(60));
        durations[plan.index_of("face_match").unwrap()] = ms(45);
        assert_eq!(plan.critical_path(&durations), ms(75));
    }
}
