"""How a run stops and how it takes over from a dead one, under Prefect.

Stopping (`stop_between_chunks`): while chunks are generated, the first SIGINT (Ctrl-C)
or SIGTERM only asks the run to stop; the chunk in flight finishes and is committed,
generation ends there, the run is marked `interrupted` in the catalog and the flow run
ends Cancelled (`synth run` exits 130 / 143). A second signal stops at once (the chunk
in flight is lost, nothing committed is). The same happens when the flow run is
cancelled from the Prefect UI: the flow asks the API for its own state after each chunk
(at most every `POLL_S` seconds) and stops when it is Cancelling. A deployment run that
`synth serve` started is cancelled by its runner with SIGTERM, which lands in the same
handler; the runner waits 30 s before SIGKILL, so a chunk longer than that is lost
(and the next run supersedes the killed one, below). Outside generation (tree building,
export), signals keep Prefect's and Python's own behaviour. Signal handlers can only be
set in the main thread; elsewhere only the UI cancel works.

Taking over (`supersede`): a process killed with SIGKILL leaves its flow run Running;
with heartbeats on (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set by `synth`) the server's
automation (flows/server.py) marks it Crashed after 90 s without one. The next run of
the same recipe tags its own flow run `synth-run:<run id>`, marks any other flow run
with that tag still Running/Pending/Cancelling as Crashed ("superseded by ..."), and
logs what it found in the catalog (storage.runs.runs.stale_start).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

POLL_S = 2.0  # at most one state read per this many seconds (chunks are usually longer)
STOP_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
TAG_PREFIX = "synth-run:"

last_stop: dict[str, Any] = {}  # the latest stop in this process: {"signal": signum or None, "why": text}


class StopRequest:
    """Asked between chunks: has a signal or a cancel from the UI asked this run to stop?"""

    def __init__(self, poll_prefect: bool = True) -> None:
        self.signum: int | None = None
        self.why: str | None = None
        self.poll_prefect = poll_prefect
        self._polled = 0.0

    def __call__(self) -> bool:
        if self.why is None and self.poll_prefect and time.monotonic() - self._polled >= POLL_S:
            self._polled = time.monotonic()
            if own_state_is_cancelling():
                self.why = "a cancel from the Prefect UI"
        return self.why is not None

    def signalled(self, signum: int) -> None:
        self.signum, self.why = signum, STOP_NAMES.get(signum, f"signal {signum}")
        print(f"\nstopping after the chunk in flight ({self.why}); press Ctrl-C again to stop at once",
              file=sys.stderr, flush=True)


@contextmanager
def stop_between_chunks(poll_prefect: bool = True) -> Iterator[StopRequest]:
    """Inside: the first SIGINT / SIGTERM sets the request; a second one goes to the handler
    that was there before (KeyboardInterrupt, Prefect's TerminationSignal)."""
    request = StopRequest(poll_prefect)
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if request.signum is None:
            request.signalled(signum)
            return
        signal.signal(signum, previous[signum])  # the second one: what would have happened without us
        os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():
        for signum in STOP_NAMES:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if request.why is not None:
            last_stop.update(signal=request.signum, why=request.why)


def _flow_run_id():
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.id if ctx is not None and ctx.flow_run is not None else None


def own_state_is_cancelling() -> bool:
    """Is this flow run Cancelling (a person pressed Cancel in the UI)? False when unknown."""
    from prefect.client.orchestration import get_client

    flow_run_id = _flow_run_id()
    if flow_run_id is None:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception:  # noqa: BLE001 - polling must never fail the run; the next poll tries again
        return False
    return state is not None and state.is_cancelling()


def supersede(run_id: str, logger: Any) -> list[str]:
    """Tag this flow run with the catalog run id and mark earlier flow runs of that run id that
    are still Running/Pending/Cancelling as Crashed; returns their ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterState,
                                                FlowRunFilterStateType, FlowRunFilterTags)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    me = _flow_run_id()
    if me is None:
        return []
    tag = f"{TAG_PREFIX}{run_id}"
    found: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            own = client.read_flow_run(me)
            if tag not in (own.tags or []):
                client.update_flow_run(me, tags=[*(own.tags or []), tag])
            stale = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[me]), tags=FlowRunFilterTags(all_=[tag]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]))))
            for old in stale:
                client.set_flow_run_state(old.id, Crashed(
                    message=f"superseded by flow run {me}: its process stopped without ending the run "
                            "(killed or crashed); the new run resumes from what it committed"), force=True)
                found.append(str(old.id))
    except Exception as exc:  # noqa: BLE001 - bookkeeping in the UI must not fail the run
        logger.warning("could not check the Prefect API for earlier flow runs of %s: %s", run_id, exc)
        return found
    if found:
        logger.warning("marked %d earlier flow run(s) of run %s as Crashed (superseded): %s", len(found), run_id,
                       ", ".join(found))
    return found
