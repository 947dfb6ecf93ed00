//! Dockerfile frontend: pest grammar, spanned AST, variable expansion and conversion to the llb graph.
