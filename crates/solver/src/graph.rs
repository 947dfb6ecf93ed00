//! The build graph.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Identifies a vertex of a [`Graph`]: its index in insertion order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct VertexId(pub usize);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

pub(crate) struct Node<V> {
    pub(crate) vertex: Arc<V>,
    pub(crate) name: Arc<str>,
    pub(crate) inputs: Vec<VertexId>,
}

/// The build graph: a DAG of vertices with ordered inputs.
///
/// Vertices are added inputs first, so a graph built only from ids returned by
/// [`Graph::add_vertex`] is acyclic; ids made by hand are checked by the solver, which reports
/// [`SolveError::UnknownVertex`](crate::SolveError::UnknownVertex) and
/// [`SolveError::Cycle`](crate::SolveError::Cycle) (detected with petgraph's topological sort).
/// Vertices are kept behind `Arc` so that the solver can hand them to spawned tasks without
/// requiring `V: Clone`.
pub struct Graph<V> {
    nodes: Vec<Node<V>>,
}

impl<V> Default for Graph<V> {
    fn default() -> Self {
        Graph { nodes: Vec::new() }
    }
}

impl<V> fmt::Debug for Graph<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (i, n) in self.nodes.iter().enumerate() {
            l.entry(&(i, &*n.name, &n.inputs));
        }
        l.finish()
    }
}

impl<V> Graph<V> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex with a display name (used in progress events and errors) and its inputs in
    /// order; returns its id.
    pub fn add_vertex(&mut self, vertex: V, name: String, inputs: Vec<VertexId>) -> VertexId {
        let id = VertexId(self.nodes.len());
        self.nodes.push(Node {
            vertex: Arc::new(vertex),
            name: name.into(),
            inputs,
        });
        id
    }

    /// The number of vertices.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the graph has no vertices.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The vertex's display name; `""` for an id not in this graph.
    pub fn name(&self, id: VertexId) -> &str {
        self.nodes.get(id.0).map(|n| &*n.name).unwrap_or("")
    }

    /// The vertex itself, or `None` for an id not in this graph.
    pub fn vertex(&self, id: VertexId) -> Option<&V> {
        self.nodes.get(id.0).map(|n| &*n.vertex)
    }

    /// The vertex's inputs in order; empty for an id not in this graph.
    pub fn inputs(&self, id: VertexId) -> &[VertexId] {
        self.nodes
            .get(id.0)
            .map(|n| n.inputs.as_slice())
            .unwrap_or(&[])
    }

    pub(crate) fn node(&self, id: VertexId) -> Option<&Node<V>> {
        self.nodes.get(id.0)
    }
}
