"""The routes of ``/api/v1``: thin over the core the CLI uses (``autopilot.operations``,
``ReviewQueue``, ``kernel.write_freeze``, ``autopilot.run_mode``, ``DecisionLog``,
``read_ledger``, ``RunMemory``), so that both front ends accept and refuse the same things.
Every command or approval a request makes has source ``human``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette.sse import EventSourceResponse

from autopilot import operations
from autopilot.assignments import parse_assignment
from autopilot.config import Settings, load_settings
from autopilot.decisions import DecisionLog, DecisionView
from autopilot.proposals import Action
from autopilot.review import ReviewItem, ReviewQueue
from autopilot.run_mode import write_run_mode
from autopilot.service import tickets, views
from autopilot.service.auth import ENV_TOKEN, Token
from autopilot.service.models import (
    RUN_ID,
    ApprovalOut,
    ApproveIn,
    Back,
    BudgetOut,
    CommandIn,
    ErrorOut,
    FreezeIn,
    LessonsOut,
    MetricsPage,
    ModeIn,
    ModeOut,
    PilotOut,
    QueuedOut,
    RejectIn,
    RewindIn,
    RewindTarget,
    RunDetail,
    RunSummary,
    SetIn,
    TicketOut,
    ToStep,
)
from autopilot.service.runs import Fleet
from autopilot.service.stream import events
from kernel import (
    FreezeState,
    KernelState,
    LedgerRow,
    read_freeze,
    read_kernel_state,
    read_ledger,
    write_freeze,
)


@dataclass(frozen=True, kw_only=True)
class ServiceState:
    """What every request reaches: the root, its runs, the token and the user's config."""

    root: Path
    fleet: Fleet
    token: Token
    reads_need_token: bool
    config: str | None

    def settings(self, run_dir: Path) -> Settings:
        return load_settings(self.config, run_dir)


_bearer = HTTPBearer(auto_error=False, description="the token `autopilot serve` printed")
_REFUSALS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in (
        (400, "the body is not JSON"),
        (401, "no token, or not the service's token"),
        (404, "no such run or proposal under the root"),
        (409, "the run's state refuses it"),
        (422, "the request does not fit the schema"),
    )
}
router = APIRouter(responses=_REFUSALS)
RunId = Annotated[str, PathParam(pattern=RUN_ID, description="the run's id (`team~exp1`)")]


def _service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _check(state: ServiceState, creds: HTTPAuthorizationCredentials | None, why: str) -> None:
    if creds is None or not state.token.matches(creds.credentials):
        what = "no token was sent" if creds is None else "the token sent is not the service's"
        raise HTTPException(
            status_code=401,
            detail=f"{why}: {what}. Send `Authorization: Bearer TOKEN` with the token "
            f"`autopilot serve` printed when it first started (kept in {state.token.source}; "
            f"${ENV_TOKEN} overrides it)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def can_read(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ServiceState:
    state = _service(request)
    if state.reads_need_token:
        _check(state, creds, "this server listens beyond loopback, so reads need the token")
    return state


def can_write(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ServiceState:
    state = _service(request)
    _check(state, creds, "a change to a run needs the service's token")
    return state


Reader = Annotated[ServiceState, Depends(can_read)]
Writer = Annotated[ServiceState, Depends(can_write)]


def _run_dir(state: ServiceState, run_id: str) -> Path:
    """The run's directory: only runs found under the root have one, so no id (``..``,
    an absolute path, a link out of the root) reaches a file outside it."""
    path = state.fleet.path_of(run_id)
    if path is None:
        raise HTTPException(
            status_code=404,
            detail=f"no run {run_id!r} under {state.root}; GET /api/v1/runs lists the runs "
            "(a run appears once its kernel has written kernel.json)",
        )
    return path


def _detail(state: ServiceState, run_id: str) -> RunDetail:
    path = _run_dir(state, run_id)
    return views.run_detail(
        run_id,
        path,
        state.settings(path),
        state.fleet.mode_of(run_id),
        state.fleet.status_of(run_id),
    )


# -- reads ---------------------------------------------------------------------------------
@router.get("/health")
def health() -> dict[str, str]:
    """Whether the service answers (no token needed)."""
    return {"status": "ok"}


@router.get("/runs")
def list_runs(state: Reader) -> list[RunSummary]:
    """Every run under the root: status, key metric, last step, heartbeat, mode, spend."""
    details = [_detail(state, run_id) for run_id in state.fleet.scan(tick=False)]
    return [
        RunSummary.model_validate(d.model_dump(exclude={"kernel", "decisions"})) for d in details
    ]


@router.get("/runs/{run_id}")
def get_run(state: Reader, run_id: RunId) -> RunDetail:
    """One run in full, with its ``kernel.json`` (knobs, bounds, snapshots, freeze)."""
    return _detail(state, run_id)


@router.get("/runs/{run_id}/metrics")
def get_metrics(
    state: Reader,
    run_id: RunId,
    offset: Annotated[int, Query(ge=0, le=2**53, description="0: the segment's start")] = 0,
    names: Annotated[list[str] | None, Query(max_length=50)] = None,
    max_points: Annotated[int, Query(ge=3, le=100_000)] = views.DEFAULT_MAX_POINTS,
) -> MetricsPage:
    """The metrics appended since byte ``offset`` (pass ``next_offset`` next time), each
    series downsampled with LTTB to ``max_points``."""
    return views.metrics_page(_run_dir(state, run_id), offset, names, max_points)


@router.get("/runs/{run_id}/ledger")
def get_ledger(
    state: Reader, run_id: RunId, after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0
) -> list[LedgerRow]:
    """Every command the kernel handled, after ``after_seq``."""
    return [r for r in read_ledger(_run_dir(state, run_id)) if r.seq > after_seq]


@router.get("/runs/{run_id}/decisions")
def get_decisions(
    state: Reader, run_id: RunId, tail: Annotated[int | None, Query(ge=1, le=100_000)] = None
) -> list[DecisionView]:
    """The autopilot's decisions with their measured effects (``tail``: the last N)."""
    found = DecisionLog(_run_dir(state, run_id)).read()
    return found[-tail:] if tail else found


@router.get("/runs/{run_id}/review")
def list_review(
    state: Reader,
    run_id: RunId,
    status: Literal["pending", "approved", "rejected", "expired", "applied"] | None = None,
) -> list[ReviewItem]:
    """The review queue (``status``: only the items in it)."""
    path = _run_dir(state, run_id)
    items = ReviewQueue(path, state.settings(path)).items()
    return [i for i in items if status is None or i.status == status]


@router.get("/runs/{run_id}/review/{item_id}")
def get_review(
    state: Reader, run_id: RunId, item_id: Annotated[str, PathParam(max_length=200)]
) -> ReviewItem:
    """One proposal (its id or a unique prefix)."""
    return _item(state, _run_dir(state, run_id), item_id)


def _item(state: ServiceState, path: Path, item_id: str) -> ReviewItem:
    queue = ReviewQueue(path, state.settings(path))
    matches = [i for i in queue.items() if i.id.startswith(item_id)]
    if not matches:
        raise HTTPException(status_code=404, detail=f"no proposal {item_id!r} in the review queue")
    return queue.get(item_id)  # ReviewError (409) names the ids of an ambiguous prefix


@router.get("/runs/{run_id}/mode")
def get_mode(state: Reader, run_id: RunId) -> ModeOut:
    """The mode the service ticks the run in, and what set it."""
    _run_dir(state, run_id)
    return _mode(state, run_id)


def _mode(state: ServiceState, run_id: str) -> ModeOut:
    mode, pilot = state.fleet.mode_of(run_id), state.fleet.status_of(run_id)
    return ModeOut(
        mode=mode.mode,
        source=mode.source,
        pilot=PilotOut.of(pilot),
    )


@router.get("/runs/{run_id}/freeze")
def get_freeze(state: Reader, run_id: RunId) -> FreezeState:
    return read_freeze(_run_dir(state, run_id))


@router.get("/runs/{run_id}/budget")
def get_budget(state: Reader, run_id: RunId) -> BudgetOut:
    """The LLM spend of the run and of the day, against their caps."""
    path = _run_dir(state, run_id)
    return views.budget_of(path, state.settings(path))


@router.get("/runs/{run_id}/lessons")
def get_lessons(state: Reader, run_id: RunId) -> LessonsOut:
    """What earlier runs of similar tasks measured (memory's lessons for this run)."""
    from autopilot.remember import RunMemory

    path = _run_dir(state, run_id)
    memory = RunMemory(path, state.settings(path))
    try:
        kernel = read_kernel_state(path)
        if kernel is not None:
            memory.peek(kernel)
        return LessonsOut(memory=memory.status(), lessons=memory.lessons())
    finally:
        memory.close()


def can_stream(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    run_id: RunId,
    ticket: Annotated[str | None, Query(max_length=200, description="from stream-ticket")] = None,
) -> ServiceState:
    """A read, where a browser's ``EventSource`` (no headers) may show a stream ticket
    instead of the token (``tickets``)."""
    state = _service(request)
    if state.reads_need_token and not (ticket and tickets.valid(state.token, run_id, ticket)):
        _check(
            state,
            creds,
            "this server listens beyond loopback, so the stream needs the "
            "token or a ticket from POST .../stream-ticket",
        )
    return state


@router.get("/runs/{run_id}/stream", response_class=EventSourceResponse)
def stream(
    state: Annotated[ServiceState, Depends(can_stream)],
    run_id: RunId,
    since: Literal["now", "start"] = "now",
) -> EventSourceResponse:
    """Server-Sent Events: ``metrics``, ``ledger``, ``decision`` and ``review``, one per
    line appended to those files (data: the line's JSON)."""
    return EventSourceResponse(events(_run_dir(state, run_id), since=since))


@router.post("/runs/{run_id}/stream-ticket", status_code=201)
def stream_ticket(state: Writer, run_id: RunId) -> TicketOut:
    """A ticket that opens this run's stream for a minute (``?ticket=``): for a browser,
    whose ``EventSource`` cannot send the token, and which keeps it out of URLs."""
    _run_dir(state, run_id)
    return TicketOut(ticket=tickets.issue(state.token, run_id), ttl_s=tickets.TICKET_TTL_S)


# -- writes --------------------------------------------------------------------------------
@router.post("/runs/{run_id}/commands", status_code=201)
def post_command(state: Writer, run_id: RunId, body: CommandIn) -> QueuedOut:
    """Queue a command as ``autopilot set``, ``stop``, ``pause``, ``resume``,
    ``checkpoint`` or ``rewind`` would, with the same checks; source ``human``."""
    path = _run_dir(state, run_id)
    if isinstance(body, SetIn):
        queued = operations.queue_set(
            path, body.assignments, at_step=body.at_step, reason=body.reason, next_run=body.next_run
        )
    elif isinstance(body, RewindIn):
        queued = _rewind(path, body)
    else:
        queued = operations.queue_op(path, body.op, reason=body.reason)
    return _queued(path, queued)


@router.post("/runs/{run_id}/rewind", status_code=201)
def post_rewind(state: Writer, run_id: RunId, body: RewindTarget) -> QueuedOut:
    """Queue a ``rewind`` (as ``autopilot rewind``)."""
    path = _run_dir(state, run_id)
    return _queued(path, _rewind(path, body))


def _rewind(path: Path, body: RewindTarget) -> operations.Queued:
    to = body.to
    target = operations.rewind_target(
        to_best=to == "best",
        to_step=to.step if isinstance(to, ToStep) else None,
        back=to.back if isinstance(to, Back) else None,
    )
    return operations.queue_rewind(path, target, reason=body.reason)


def _queued(path: Path, queued: operations.Queued) -> QueuedOut:
    when = [operations.when_text(c, queued.state, path) for c in queued.commands]
    return QueuedOut(commands=queued.commands, when=when)


@router.post("/runs/{run_id}/review/{item_id}/approve")
def approve(
    state: Writer,
    run_id: RunId,
    item_id: Annotated[str, PathParam(max_length=200)],
    body: ApproveIn,
) -> ApprovalOut:
    """Approve a proposal: the guards run again on the run as it is now (edits too) and its
    commands are queued, each with source ``human`` (an unedited action keeps its proposer
    in ``proposed_by``: ``autopilot.review``)."""
    path = _run_dir(state, run_id)
    item = _item(state, path, item_id)
    kernel = read_kernel_state(path)
    edits = [_edit(text, kernel) for text in body.edits]
    approval = ReviewQueue(path, state.settings(path)).approve(item.id, edits=edits)
    return ApprovalOut(item=approval.item, verdicts=approval.verdicts, commands=approval.commands)


def _edit(text: str, kernel: KernelState | None) -> Action:
    a = parse_assignment(text, kernel)
    return Action(knob=a.knob, value=a.value, multiplier=a.multiplier, reason="edited in review")


@router.post("/runs/{run_id}/review/{item_id}/reject")
def reject(
    state: Writer, run_id: RunId, item_id: Annotated[str, PathParam(max_length=200)], body: RejectIn
) -> ReviewItem:
    """Decide against a proposal; ``why`` is kept with it."""
    path = _run_dir(state, run_id)
    item = _item(state, path, item_id)
    return ReviewQueue(path, state.settings(path)).reject(item.id, body.why)


@router.put("/runs/{run_id}/mode")
def put_mode(state: Writer, run_id: RunId, body: ModeIn) -> ModeOut:
    """Set the run's mode (``autopilot/mode.json``); ``null`` unsets it. The service starts,
    restarts or stops the run's autopilot at its next scan."""
    write_run_mode(_run_dir(state, run_id), body.mode, set_by="api")
    return _mode(state, run_id)


@router.put("/runs/{run_id}/freeze")
def put_freeze(state: Writer, run_id: RunId, body: FreezeIn) -> FreezeState:
    """``autopilot freeze``: ``prod`` ignores outside knob changes, ``replay`` replays a
    recipe (a file inside the root), ``off`` lifts it."""
    path = _run_dir(state, run_id)
    recipe = None if body.recipe is None else _inside_root(state, path, body.recipe)
    return write_freeze(path, body.mode, recipe)


def _inside_root(state: ServiceState, run_dir: Path, name: str) -> Path:
    root = state.root.resolve()
    candidate = None if "\x00" in name else (run_dir / name).resolve()  # absolute: as given
    if candidate is None or not candidate.is_relative_to(root):
        raise HTTPException(
            status_code=422,
            detail=f"recipe {name!r} is outside the service's root {state.root}; name a file "
            "under it (relative to the run directory, or absolute)",
        )
    return candidate
