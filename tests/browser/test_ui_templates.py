"""Every template, fed run data of any shape a run or a submitter can choose,
renders it as text: no element, attribute or URL scheme comes from the data.

The class-level companion of test_ui_xss.py (which proves a few payloads in a
real browser): here hypothesis puts markup-like strings into every field the
pages show, and an HTML parser checks the rendered page's structure.
"""
from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from sandbox.service.web import views
from sandbox.service.web.common import env

MARK = "x-evil"
# text a run or submitter may choose: markup, quotes, entities, controls, URLs
hostile = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}<{MARK} onload=alert(1) href='javascript:x'>{b}",
              st.text(max_size=10), st.text(max_size=10)),
    st.sampled_from([f'"><{MARK}>', f"'><{MARK} onerror=1>", "javascript:alert(1)",
                     f"</pre><{MARK}>", f"</textarea><{MARK}>", "&lt;", "\x1b]0;t\x07",
                     f"]]><{MARK}>", f"--><{MARK}>", "\u202e", f"</title><{MARK}>"]),
)


class Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []

        self.editing = False

    def handle_endtag(self, tag):
        if tag == "textarea":
            self.editing = False

    def handle_data(self, data):
        # a textarea holds what the user pasted, to edit: kept as typed
        if not self.editing:
            self.text.append(data)

    def handle_starttag(self, tag, attrs):
        self.editing = self.editing or tag == "textarea"
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]


def _check(html: str) -> None:
    s = Structure()
    s.feed(html)
    assert MARK not in s.tags
    assert not [k for k, _ in s.attrs if k.startswith("on")]
    assert not [v for k, v in s.attrs if k in ("href", "src", "action")
                and v.strip().lower().startswith(("javascript:", "data:"))]
    assert "<script>" not in html
    # text the page shows holds no raw control characters (they are escapes)
    assert not [t for t in s.text if any(ord(c) < 32 and c not in "\n\t" or ord(c) == 0x7f
                                         or 0x80 <= ord(c) < 0xa0 for c in t)]


def _run(t):
    return {"id": t[0], "status": "ok", "kind": "exec", "token": t[1], "policy": t[2],
            "argv": [t[3], t[4]], "workflow": None, "labels": {t[5]: t[6]}, "host": t[7],
            "created_at": 1.0, "queued_at": 1.0, "started_at": 1.0, "finished_at": 2.0,
            "attempts": 1, "retries": 0, "reason": t[8],
            "result": {"stdout": t[9], "stderr": t[10], "exit_code": 0, "signal": None,
                       "hints": [t[11]], "layers": [t[12]], "skipped_layers": {t[13]: t[14]},
                       "limits_applied": {"cpu": t[15]}, "logs": [{"level": t[16], "message": t[17]}],
                       "messages": {t[18]: 3}, "store": {t[19]: t[20]}, "changed_keys": [t[19]],
                       "deleted_keys": [t[21]], "timings": {t[22]: 1.0, "layer." + t[23]: 2.0},
                       "error": {"type": t[24], "message": t[25]}, "violation": {"reason": t[26]}}}


fields = st.tuples(*([hostile] * 27))
session = SimpleNamespace(csrf="c", name="n", admin=True)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(fields, hostile, hostile)
def test_run_pages_render_run_data_as_text(t, path, rule):
    run = _run(t)
    result = run["result"]
    files = [{"path": path, "size": 3, "kind": "file", "sha256": rule}]
    common = dict(prefix="/ui", session=session, run=run)
    _check(env.get_template("run.html").render(
        **common, result=result, files=files, clipped=[], bars=views.setup_bars(result["timings"]),
        chart_w=views.CHART_W, row_h=views.ROW_H, usage=views.usage(result, {}), final=True,
        tab="overview"))
    _check(env.get_template("runs.html").render(
        prefix="/ui", session=session, runs=[run], next_cursor=path, statuses=["ok"],
        query={"status": "", "policy": rule, "token": path, "host": "", "since": "",
               "until": "", "cursor": ""}))
    recs = [{"seq": 1, "operation": t[0], "path": path, "verdict": "denied", "rule": rule,
             "count": 1, "syscall": t[1]}]
    _check(env.get_template("audit.html").render(
        **common, tab="audit", records=recs, matched=1, total=1, denied=True, operation=t[0],
        search=path, operations=views.operations(recs), directories=views.by_directory(recs),
        truncated=False, note=t[2]))
    _check(env.get_template("explain.html").render(
        **common, tab="audit", path=path, explained={"rule": rule, t[3]: t[4]}))
    _check(env.get_template("learn.html").render(
        **common, tab="learn", suggested=t[5], note="",
        diff=views.policy_diff(t[6], t[7], t[8])))
    _check(env.get_template("check.html").render(
        prefix="/ui", session=session, text=t[9],
        checked={"ok": False, "errors": [{"line": 1, "key": t[10], "message": t[11]}]}))
    _check(env.get_template("tokens.html").render(
        prefix="/ui", session=session, created={"name": t[12], "token": "sbx_x"},
        tokens=[{"id": t[13], "name": t[14], "ceiling": t[15], "max_concurrent": 1,
                 "max_queued": 1, "rate": None, "admin": False, "created_at": 1.0,
                 "revoked_at": None}]))
    _check(env.get_template("error.html").render(prefix="/ui", session=session,
                                                  status_code=400, message=t[16]))
