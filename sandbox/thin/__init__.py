"""The thin `sandbox exec`: a per-user daemon holding the warm CLI, and a client that
imports almost nothing (docs/benchmarks.md, "A thin sandbox exec")."""
