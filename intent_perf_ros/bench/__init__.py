"""Tools that drive the nodes from outside: demo, benchmarks, evaluations, bags."""
