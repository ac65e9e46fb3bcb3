"""The monitor: one process per launcher (the monitor host), outside every sandbox's
restrictions, supervising all of them (wall time, seccomp notifications, audit)."""
