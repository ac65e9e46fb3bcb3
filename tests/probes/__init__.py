"""Small probes the seccomp tests run inside sandboxees (pure Python, no compiler needed)."""
