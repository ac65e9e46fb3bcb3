"""What an ended run leaves the monitor to hand back: its output, its work directory's
changes, and whether its private file systems were full.

Each is read on a descriptor the sandboxee sent (sandbox/sandboxee/entry.py) and done
only once no process of the sandbox is left, so nothing can change under it; each
descriptor is the last reference to its tmpfs, which goes when it is closed here.
Split from the Supervisor (sandbox/monitor/supervisor.py), which calls these from
`end`, in this order.
"""
from __future__ import annotations

import os

from sandbox.policy.plan import FsPlan
from sandbox.protocol import ExitReport, OutputSummary

# bytes left on a tmpfs at or below which it counts as full (a tmpfs fills page by
# page; a failed write leaves less than one chunk of a typical writer)
FULL = 64 * 1024


def full(fd: int) -> bool:
    """Is the file system of `fd` full, in bytes or in inodes? A kernel figure, nothing
    the program can forge but by filling it."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize <= FULL or (st.f_files > 0 and st.f_favail == 0)


def scratch(report: ExitReport, tmp_fd: int | None, shm_fd: int | None) -> None:
    """Whether the private /tmp and /dev/shm were full when the program ended; both
    descriptors closed."""
    for fd, name in ((tmp_fd, "tmp_full"), (shm_fd, "shm_full")):
        if fd is None:
            continue
        try:
            setattr(report, name, full(fd))
        except OSError:
            pass
        finally:
            os.close(fd)


def output(report: ExitReport, plan: FsPlan, dest: str, output_fd: int | None) -> bool:
    """Hand ${OUTPUT} back inert (sandbox/monitor/copy_out.py), from the output tmpfs's
    descriptor (then closed); whether there was an output to hand back."""
    from sandbox.monitor import copy_out
    if output_fd is not None:
        try:
            report.output = copy_out.copy_out(output_fd, dest, max_bytes=plan.output_size,
                                              max_entries=plan.output_inodes)
        finally:
            os.close(output_fd)
        return True
    if os.path.isdir(dest):
        # No output tmpfs (best_effort without namespaces: the program wrote to the
        # host directory itself; or the view did not hold it): same rules in place.
        report.output = copy_out.sanitize(dest)
        return True
    return False


def workdir(report: ExitReport, plan: FsPlan, dest: str, cow_fd: int) -> None:
    """The copy-on-write layer's changes into ${OUTPUT} (sandbox/monitor/workdir_export.py);
    the layer's descriptor closed."""
    from sandbox.monitor import workdir_export
    try:
        report.workdir_full = full(cow_fd)
        report.workdir = workdir_export.export(cow_fd, dest, max_bytes=plan.output_size,
                                               max_entries=plan.output_inodes)
    except OSError as exc:
        report.workdir = OutputSummary(error=f"exporting the work directory: {exc}")
    finally:
        os.close(cow_fd)
