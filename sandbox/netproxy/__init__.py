"""Network allowlists (policy `[network] mode = "allowlist"`, issue 18).

`rules`: the allow entries and the decision on one connection; `lattice`:
allowlists compared and met (nested spawns never widen one).
"""
