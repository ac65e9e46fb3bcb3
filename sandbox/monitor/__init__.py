"""The monitor: one per sandbox, outside its restrictions (supervision, wall time, seccomp notifications, audit)."""
