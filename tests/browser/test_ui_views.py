"""The page's pure shaping of API data (sandbox/service/web/views.py, common.multiline)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sandbox.service.web import views
from sandbox.service.web.common import multiline


def test_setup_bars_are_consecutive_segments_then_layers():
    bars = views.setup_bars({"launcher.prepared": 8.0, "spec_received": 20.0, "exited": 100.0,
                             "layer.mounts": 5.0, "layer.seccomp": 1.0})
    assert [b.label for b in bars] == ["launcher.prepared", "spec_received", "exited",
                                       "layer.mounts", "layer.seccomp"]
    assert [(b.start_ms, b.ms) for b in bars[:3]] == [(0.0, 8.0), (8.0, 12.0), (20.0, 80.0)]
    assert bars[2].x + bars[2].width <= views.CHART_W + 1e-9
    assert all(b.width >= 1.0 for b in bars)            # every phase stays visible
    assert views.setup_bars(None) == [] and views.setup_bars({}) == []


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12),
                       st.one_of(st.floats(allow_nan=True), st.integers(), st.text()), max_size=20))
def test_setup_bars_never_leave_the_chart(timings):
    for bar in views.setup_bars(timings):
        assert 0 <= bar.x <= views.CHART_W and bar.width >= 1.0
        assert bar.x + bar.width <= views.CHART_W + 1.0 + 1e-6


def test_usage_against_limits():
    rows = {u.what: u for u in views.usage(
        {"cpu_time": 1.5, "wall_time": 3.0, "max_rss": 50 * 2**20,
         "output": {"files": 2, "bytes": 10}, "limits_applied": {"cpu": "cgroup-v2"}},
        {"cpu": 3.0, "wall": 30.0, "memory": 100 * 2**20, "output_size": 1000})}
    assert rows["CPU"].fraction == 0.5 and rows["CPU"].mechanism == "cgroup-v2"
    assert rows["peak memory"].fraction == 0.5 and rows["wall time"].fraction == 0.1
    assert rows["output files"].fraction is None    # no limit given
    assert rows["output size"].used == "10 B"


def test_audit_filters_and_directory_counts():
    recs = [{"operation": "read", "path": "/etc/shadow", "verdict": "denied", "count": 2},
            {"operation": "read", "path": "/etc/passwd", "verdict": "allowed"},
            {"operation": "write", "path": "/out/x", "verdict": "allowed"}]
    assert [r["path"] for r in views.filter_audit(recs, denied=True, operation="", search="")] \
        == ["/etc/shadow"]
    assert len(views.filter_audit(recs, denied=False, operation="read", search="")) == 2
    assert len(views.filter_audit(recs, denied=False, operation="", search="out")) == 1
    assert views.by_directory(recs) == [("/etc", 1, 2), ("/out", 1, 0)]
    assert views.operations(recs) == ["read", "write"]


def test_policy_diff_kinds():
    diff = views.policy_diff('a = 1\nb = 2\n', 'a = 1\nb = 3\n', "default")
    kinds = [k for k, _ in diff]
    assert kinds[:3] == ["file", "file", "hunk"]
    assert ("del", "-b = 2") in diff and ("add", "+b = 3") in diff


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text())
def test_program_text_keeps_lines_and_shows_every_control(text):
    shown = multiline(text)
    assert shown.count("\n") == text.count("\n")
    assert all(ch == "\n" or ch == " " or ch.isprintable() for ch in shown)
