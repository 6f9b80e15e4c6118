"""End-to-end jobs built from the layers below: the demo pipeline and the benchmark suite."""
