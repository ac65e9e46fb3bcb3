"""The thin `sandbox exec`: a per-user daemon holding the warm CLI, and a client that
imports almost nothing (docs/benchmarks-journal.md, "A thin sandbox exec")."""
