"""The ``/v1/models`` routes: list the catalog, pull a model (with SSE progress), delete it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from steadyframe.catalog import CatalogEntry, catalog, entry_state
from steadyframe.families import families_status
from steadyframe.pull import NotEnoughDisk, PullBusy, PullFailed
from steadyframe.server.context import ServerContext
from steadyframe.server.model_views import catalog_model_view
from steadyframe.server.pulls import CannotDelete, CannotPull
from steadyframe.server.schemas import CatalogModelView, FamilyView, ModelsView, ProblemView
from steadyframe.server.system_info import worker_processes

SSE_POLL_S = 0.25
_UNKNOWN = {404: {"model": ProblemView, "description": "no model of that name in the catalog"}}


def _problem(status_code: int, detail: str, advice: str | None = None) -> JSONResponse:
    return JSONResponse(ProblemView(detail=detail, advice=advice).model_dump(exclude_none=True), status_code=status_code)


def build_models_router(ctx: ServerContext) -> APIRouter:
    """The catalog routes bound to ``ctx``; the caller adds authentication as a router dependency."""
    router = APIRouter(prefix="/v1", tags=["models"])
    settings = ctx.settings

    def loaded_labels() -> list[str]:
        return sorted({m for w in worker_processes(ctx.dispatcher) for m in w.loaded_models})

    def view(entry: CatalogEntry, labels: list[str] | None = None) -> CatalogModelView:
        return catalog_model_view(entry, settings, ctx.pulls, loaded_labels() if labels is None else labels)

    def unknown() -> JSONResponse:
        names = ", ".join(catalog(settings))
        return _problem(404, "There is no model of that name in this server's catalog.", f"Offered: {names}.")

    def existing_entry(name: str) -> CatalogEntry:
        entry = catalog(settings).get(name)
        if entry is None:
            raise HTTPException(404, detail="There is no model of that name in this server's catalog.")
        return entry

    entry_dependency = Depends(existing_entry)

    @router.get("/models", response_model=ModelsView)
    def list_models() -> ModelsView:
        """The catalog (what jobs may name, whether each model is here, downloading, absent or broken,
        its size and memory need, whether a worker holds it), the family rules, and what is loaded."""
        labels = loaded_labels()
        models = [view(entry, labels) for entry in catalog(settings).values()]
        families = []
        for row in families_status(settings):
            name = row["name"]
            details = {k: v for k, v in row.items() if k not in ("name", "present", "location")}
            is_loaded = any(m.loaded for m in models if m.name == name)
            families.append(FamilyView(name=name, present=bool(row["present"]), loaded=is_loaded, details=details))
        default = settings.model or "built-in tiny model"
        return ModelsView(default_model=default, models=models, families=families, loaded=labels)

    @router.get("/models/{name}", response_model=CatalogModelView, responses=_UNKNOWN)
    def get_model(name: str):
        """One catalog model (state, download progress, size, memory, loaded)."""
        entry = catalog(settings).get(name)
        return unknown() if entry is None else view(entry)

    @router.post(
        "/models/{name}/pull",
        status_code=202,
        response_model=CatalogModelView,
        responses={
            200: {"model": CatalogModelView, "description": "already present: nothing to do"},
            409: {"model": ProblemView, "description": "offline, a local folder, built in, or pulled by another process"},
            502: {"model": ProblemView, "description": "the Hub refused or could not be reached (auth, network)"},
            507: {"model": ProblemView, "description": "not enough disk space (checked before the first byte)"},
            **_UNKNOWN,
        },
    )
    async def pull_model(name: str):
        """Start downloading a catalog model (or join the pull already running). Returns once the
        file list is known and the disk check passed; follow ``Location`` (server-sent events) or
        ``GET /v1/models`` for byte progress. A cut pull resumes from the bytes on disk."""
        entry = catalog(settings).get(name)
        if entry is None:
            return unknown()
        if entry_state(entry, settings).state == "present" and ctx.pulls is not None and not ctx.pulls.active(name):
            return JSONResponse(view(entry).model_dump(), status_code=200)
        assert ctx.pulls is not None
        try:
            await run_in_threadpool(ctx.pulls.start, entry)
        except CannotPull as exc:
            return _problem(409, exc.message, exc.advice)
        except NotEnoughDisk as exc:
            return _problem(507, exc.message, exc.advice)
        except PullBusy as exc:
            return _problem(409, exc.message, exc.advice)
        except PullFailed as exc:
            return _problem(502, exc.message, exc.advice)
        headers = {"Location": f"/v1/models/{name}/events"}
        return JSONResponse(view(entry).model_dump(), status_code=202, headers=headers)

    @router.get("/models/{name}/events", response_class=EventSourceResponse, responses=_UNKNOWN)
    async def model_events(request: Request, entry: CatalogEntry = entry_dependency) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: ``progress`` (data: the model) whenever its bytes or state change while
        it is pulled, then one event named after where it ended: ``present``, ``absent`` (the pull
        stopped; data carries ``last_pull_error``) or ``broken``."""
        sequence = 0
        last: tuple[object, ...] | None = None
        while True:
            current = await run_in_threadpool(view, entry)
            if current.state != "downloading":
                yield ServerSentEvent(event=current.state, data=current.model_dump(), id=str(sequence))
                return
            marker = (current.state, current.download.bytes_done if current.download else None)
            if marker != last:
                last = marker
                yield ServerSentEvent(event="progress", data=current.model_dump(), id=str(sequence))
                sequence += 1
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)

    @router.delete(
        "/models/{name}",
        response_model=CatalogModelView,
        responses={409: {"model": ProblemView, "description": "an operator's folder or the shared HF cache"}, **_UNKNOWN},
    )
    def delete_model(name: str):
        """Free the disk: stop its pull if one runs (jobs waiting for it fail) and remove its files.
        An operator's local folder and the shared Hugging Face cache are left alone (409)."""
        entry = catalog(settings).get(name)
        if entry is None:
            return unknown()
        assert ctx.pulls is not None
        try:
            ctx.pulls.delete(entry)
        except CannotDelete as exc:
            return _problem(409, exc.message, exc.advice)
        return view(entry)

    return router
