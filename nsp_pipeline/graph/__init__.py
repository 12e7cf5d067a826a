"""The neuron DAG: its CSR type, per-operation edges, ancestor relations and the builder."""
