"""The cgroup-attach speed row reports the cgroup2 mount's real options."""
from sandbox.doctor import probe_cgroup_attach


def test_attach_row_agrees_with_proc_mounts():
    with open("/proc/mounts") as f:
        cg2 = [line.split() for line in f if " cgroup2 " in line]
    check = probe_cgroup_attach()
    if not cg2:
        assert check.ok is None
    else:
        assert check.ok == ("favordynmods" in cg2[0][3].split(","))
        assert cg2[0][1] in check.detail
