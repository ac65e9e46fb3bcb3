"""Policies (list, show, check, explain), a run's audit and suggested policy,
tokens (admin) and /metrics (admin)."""
from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from sandbox.errors import InputError, PolicyError
from sandbox.service import tenancy
from sandbox.service.deps import NotFound, Service, admin_token, current_token, service
from sandbox.service.models import InlinePolicy, Strict, TokenCreate, TokenCreated, TokenView
from sandbox.service.routes_runs import visible_run
from sandbox.service.streamslots import large_json
from sandbox.service.store import TokenRow

router = APIRouter()
Tok = Annotated[TokenRow, Depends(current_token)]
Admin = Annotated[TokenRow, Depends(admin_token)]
Svc = Annotated[Service, Depends(service)]
MAX_RECORDS = 10000
# Fixed stand-ins for a run's directories when a policy is checked or explained
# outside a run: nothing on the server's disk is consulted.
EXAMPLE_WORKDIR, EXAMPLE_OUTPUT = "/run/sandbox/input", "/run/sandbox/output"


# -- policies ---------------------------------------------------------------------
class PolicyInfo(BaseModel):
    name: str
    description: str = ""


class PolicyList(BaseModel):
    items: list[PolicyInfo]


class PolicyDoc(PolicyInfo):
    policy: dict[str, Any] = Field(description="the policy as data, `extends` applied")


class PolicyRef(Strict):
    policy: str | None = Field(default=None, max_length=128)
    policy_inline: InlinePolicy = None


class PolicyCheck(BaseModel):
    ok: bool
    name: str | None = None
    summary: str | None = None
    errors: list[str] = Field(default_factory=list)
    within_ceiling: bool | None = Field(
        default=None, description="narrower than or equal to this token's ceiling")
    ceiling_reason: str | None = None


class ExplainRequest(PolicyRef):
    operation: Literal["read", "write", "exec", "create", "delete", "connect", "bind",
                       "stat"] = "read"
    path: str = Field(min_length=1, max_length=4096)
    run: str | None = Field(default=None, max_length=64, description=(
        "explain as in this run (one the token sees): ${WORKDIR} and ${OUTPUT} are its "
        "directories, as in its audit records"))


class Explanation(BaseModel):
    policy: str
    operation: str
    path: str
    allowed: bool
    rule: str
    reason: str


def _load(ref: PolicyRef, tok: TokenRow, svc: Service) -> Any:
    return tenancy.load_requested(ref.policy, ref.policy_inline,
                                  tenancy.ceiling_name(tok) or svc.config.default_policy)


@router.get("/v1/policies", response_model=PolicyList)
def list_policies(tok: Tok) -> PolicyList:
    """Built-in and registered policies (names a run may ask for)."""
    from sandbox.policy.loader import load_policy_cached
    from sandbox.policy.search import available_policies
    items = []
    for name in sorted(available_policies()):
        try:
            desc = load_policy_cached(name).description
        except (InputError, OSError):
            continue
        items.append(PolicyInfo(name=name, description=desc or ""))
    return PolicyList(items=items)


@router.get("/v1/policies/{name}", response_model=PolicyDoc)
def show_policy(name: str, tok: Tok) -> PolicyDoc:
    from sandbox.policy.loader import load_policy_cached
    from sandbox.policy.search import available_policies, is_name
    if not is_name(name) or name not in available_policies():
        raise NotFound(f"no policy {name[:128]!r}")
    p = load_policy_cached(name)
    return PolicyDoc(name=p.name, description=p.description or "", policy=p.to_dict())


@router.post("/v1/policies/check", response_model=PolicyCheck)
def check_policy(ref: PolicyRef, tok: Tok, svc: Svc) -> PolicyCheck:
    """Validate a policy (a name or inline), and compare it with this token's ceiling."""
    from sandbox.policy import default_variables, resolve
    from sandbox.policy.compare import differences
    from sandbox.policy.loader import load_policy_cached
    from sandbox.policy.render import summary
    try:
        p = _load(ref, tok, svc)
        variables = default_variables(EXAMPLE_WORKDIR, EXAMPLE_OUTPUT)
        resolved = resolve(p, variables)
    except PolicyError as exc:
        return PolicyCheck(ok=False, errors=[str(e) for e in getattr(exc, "errors", [exc])])
    out = PolicyCheck(ok=True, name=p.name, summary=summary(p))
    if tok.ceiling:
        why = differences(resolved, resolve(load_policy_cached(tok.ceiling), variables))
        out.within_ceiling, out.ceiling_reason = not why, "; ".join(why) or None
    return out


@router.post("/v1/policies/explain", response_model=Explanation)
def explain_policy(req: ExplainRequest, tok: Tok, svc: Svc) -> Explanation:
    """May a run of this policy do OPERATION on PATH, and which rule says so. The
    path is taken as written (normalised, never resolved on the server's disk);
    ${WORKDIR} is /run/sandbox/input and ${OUTPUT} /run/sandbox/output here, or,
    with `run`, that run's directories (the paths of its audit records: the web
    page's Explain said "denied", or another rule, of a file the run read from
    its own input directory)."""
    from sandbox.policy import decide, default_variables, resolve
    if not req.path.startswith("/") or "\0" in req.path:
        raise InputError("path: give an absolute path")
    work, out = EXAMPLE_WORKDIR, EXAMPLE_OUTPUT
    if req.run is not None:
        visible_run(svc, tok, req.run)
        work, out = svc.config.input_dir(req.run), svc.config.output_dir(req.run)
    p = resolve(_load(req, tok, svc), default_variables(work, out))
    path = os.path.normpath(req.path)
    v = _in_own_layer(p, req.operation, path, decide(p, req.operation, path), work)
    return Explanation(policy=p.name, operation=req.operation, path=path, allowed=v.allowed,
                       rule=v.rule, reason=v.reason)


def _in_own_layer(policy: Any, operation: str, path: str, verdict: Any, work: str) -> Any:
    """`verdict`, or, for a change beneath ${WORKDIR} (`work`: the stand-in or the
    run's) that only its copy-on-write layer allows, the verdict saying where the
    change goes: what `sandbox policy explain` says (sandbox.policy.workdir_overlay),
    with `work` taken as written, never resolved on the server's disk (a run of
    `default` writes there; this endpoint said "denied")."""
    from sandbox.policy import decide
    from sandbox.policy import workdir_overlay as overlay
    from sandbox.policy.engine import Verdict
    if verdict.allowed or operation not in overlay.WRITE_OPS \
            or policy.filesystem.workdir != "copy-on-write" \
            or not (path == work or path.startswith(work + "/")) \
            or decide(policy, "write", work).allowed or not decide(policy, "read", work).allowed:
        return verdict
    if not decide(overlay.with_write(policy, work), operation, path).allowed:
        return verdict      # a deny rule, a masked path: the layer does not change it
    return Verdict(True, overlay.RULE,
                   f"{operation} of {path} goes to the run's own layer over its work directory "
                   f"{work}: the run's input files stay untouched (the changes are copied to "
                   "${OUTPUT}/workdir.changes when the run ends)", path)


# -- a run's audit ------------------------------------------------------------------
def _text(v: Any) -> Any:
    """Record fields as JSON-safe text (paths are surrogate-escaped bytes)."""
    from sandbox.service.files import text
    return text(v) if isinstance(v, str) else v


def _audit_run(svc: Service, tok: TokenRow, run_id: str) -> str:
    visible_run(svc, tok, run_id)
    row = svc.store.run(run_id)
    if row is None:
        raise NotFound(f"no run {run_id[:64]!r}")
    rid = (row.result or {}).get("run_id")
    if not isinstance(rid, str) or not (row.result or {}).get("audit"):
        raise NotFound(f"run {run_id} has no audit records (not ended, or not audited)")
    return rid


@router.get("/v1/runs/{run_id}/audit")
async def run_audit(run_id: str, tok: Tok, svc: Svc,
                    denied: Annotated[int, Query(ge=0, le=1)] = 0,
                    limit: Annotated[int, Query(ge=1, le=MAX_RECORDS)] = 1000) -> JSONResponse:
    """The run's audit records ({"summary", "items": [record]}); ?denied=1: denials only."""
    rid = await run_in_threadpool(_audit_run, svc, tok, run_id)
    # 10,000 records of long paths are tens of MB, held until read (streamslots.py)
    return await large_json(svc, tok, lambda: _records(svc, run_id, rid, bool(denied), limit))


def _records(svc: Service, run_id: str, rid: str, denied: bool, limit: int) -> dict[str, Any]:
    from sandbox.audit import store as audit
    row = svc.store.run(run_id)
    conn = audit.Store(svc.config.audit_dir)
    items = []
    try:
        for rec in audit.records(conn, rid, denied_only=denied):
            items.append({k: _text(v) for k, v in rec.items() if k != "run_id"})
            if len(items) >= limit:
                break
    except Exception:   # sqlite3.Error, a file removed by retention
        items = []
    finally:
        conn.close()
    summary = (row.result or {}).get("audit") if row else None
    return {"summary": summary, "items": items, "truncated": len(items) >= limit}


class Suggestion(BaseModel):
    toml: str
    rules: dict[str, list[str]]


@router.get("/v1/runs/{run_id}/policy/suggest", response_model=Suggestion)
async def suggest(run_id: str, tok: Tok, svc: Svc) -> Suggestion:
    """The least policy that grants what the run used (it must have been audited with
    [audit] files = "all", e.g. under strict)."""
    from sandbox.audit.suggest import suggest_for_run
    rid = await run_in_threadpool(_audit_run, svc, tok, run_id)
    text, rules = await run_in_threadpool(
        lambda: suggest_for_run(rid, db=svc.config.audit_dir))
    return Suggestion(toml=_text(text), rules={k: [_text(x) for x in v]
                                               for k, v in rules.items()})


# -- tokens (admin) ---------------------------------------------------------------
@router.post("/v1/tokens", response_model=TokenCreated, status_code=201)
def create_token(spec: TokenCreate, tok: Admin, svc: Svc) -> TokenCreated:
    from sandbox.service.tokens import create
    return create(svc.store, spec)


@router.get("/v1/tokens", response_model=list[TokenView])
def list_tokens(tok: Admin, svc: Svc) -> list[TokenView]:
    from sandbox.service.tokens import row_view
    return [row_view(t) for t in svc.store.tokens()]


@router.delete("/v1/tokens/{token_id}", response_model=TokenView)
def revoke_token(token_id: str, tok: Admin, svc: Svc) -> TokenView:
    from sandbox.service.tokens import row_view
    row = svc.store.token(token_id)
    if row is None:
        raise NotFound(f"no token {token_id[:64]!r}")
    svc.store.revoke_token(token_id)
    svc.revocations.sweep()     # its runs end and its streams close now, not at the next poll
    return row_view(svc.store.token(token_id) or row)


# -- metrics ----------------------------------------------------------------------
@router.get("/metrics", response_class=Response)
def metrics(tok: Admin, svc: Svc) -> Response:
    """Prometheus text: runs by status, queue depth, live sandboxes, run durations,
    audit records (admin token: the counts span every tenant)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
