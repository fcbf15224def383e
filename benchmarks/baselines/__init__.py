"""The serving patterns KServe's own docs show, written faithfully as baselines for the benchmarks."""
