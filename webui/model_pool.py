"""Several models in memory: the UI's one plus those the API asked for by name, each with its own core.

Every loaded model is a `Slot`: a `ModelManager` holding it and a `GenerationCore` (own worker thread) over
it, so requests to different models run at the same time. The UI's slot is ``app.models`` / ``app.core``;
"Use in UI" points those at another slot without reloading anything.

Before a model is loaded for the API, the memory estimate (`webui.memory_estimate`) says what it needs; while
it will not fit in the budget (``--memory-budget``) or the count is over ``--max-models``, the least recently
used idle model (no request running, queued or about to start) is unloaded. When none can be freed the load
fails with an error naming the model, its estimate and the budget. ``--idle-unload MINUTES`` frees models
nobody used for that long (a daemon thread checks; tests call `check_idle` with their own clock).

Names: a model of the models folder (as listed), a ``remote:SERVER/MODEL`` name, or an alias
(`webui.model_aliases`). Empty or null is the UI's model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webui.errors import HearthError, ModelNotFound
from webui.generation import GenerationCore
from webui.memory_estimate import MemoryEstimate, available_memory
from webui.model_aliases import ALIASES_FILE, AliasFile, unknown_model
from webui.model_budget import NOTHING, Budget, estimate_model, gib, parse_budget, shortfall, too_large
from webui.model_settings import settings_for
from webui.models import LocalModel, ModelManager
from webui.remotes import PREFIX as REMOTE_PREFIX

if TYPE_CHECKING:
    from webui.app import App

log = logging.getLogger(__name__)

class PoolError(HearthError):
    """A model the API asked for cannot be loaded: not enough room in the budget, or its load failed."""


class NotEnoughMemory(PoolError):
    """The model does not fit in the memory budget and no idle model can be unloaded to make room."""


class ModelLoadFailed(PoolError):
    """Loading a model for the API failed; the models already loaded keep serving."""


@dataclass(eq=False)
class Slot:
    """One model the pool keeps (or is loading): its manager and core, when it was last used."""

    name: str
    models: ModelManager | None = None
    core: GenerationCore | None = None
    estimate: MemoryEstimate | None = None
    last_used: float = 0.0
    #: Requests routed here that have not started their generation yet (they keep it from eviction).
    leases: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    error: HearthError | None = None
    closing: bool = False
    #: What `estimate` was computed for (the UI's slot changes model under the pool).
    key: str = ""

    @property
    def loaded(self) -> bool:
        return self.models is not None and self.models.model is not None

    @property
    def busy(self) -> bool:
        return self.leases > 0 or (self.core is not None and self.core.busy)


class ModelPool:
    def __init__(
        self,
        app: App,
        *,
        clock: Callable[[], float] = time.monotonic,
        estimator: Callable[[LocalModel, str, dict[str, Any]], MemoryEstimate] = estimate_model,
        available: dict[str, int] | None = None,
    ):
        self.app = app
        settings = app.settings
        self._budget_text, self._available = settings.memory_budget, available
        self._budget: Budget | None = None
        self.max_models = settings.max_models
        self.idle_unload_s = settings.idle_unload * 60.0
        self.clock, self.estimator = clock, estimator
        self._lock = threading.RLock()
        self._ui = Slot("", app.models, app.core, last_used=clock())
        self._ui.ready.set()
        self._slots: list[Slot] = [self._ui]
        #: Why the UI's model went away (eviction, idle unload), for the Model tab; cleared by a UI load.
        self.ui_note = ""
        self._aliases = AliasFile(settings.user_data_dir)
        self._stop = threading.Event()
        if self.idle_unload_s > 0:
            threading.Thread(target=self._idle_loop, name="hearth-idle-unload", daemon=True).start()

    @property
    def budget(self) -> Budget:
        """--memory-budget, measured on first use (``auto`` reads free memory, and VRAM through CUDA, only then:
        the memory free now plus what the models loaded so far are estimated to hold)."""
        if self._budget is None:
            available = dict(self._available) if self._available is not None else available_memory()
            with self._lock:  # what the models loaded so far hold was free before them
                loaded = [self._estimate(s) for s in self._slots if s.loaded]
            available["ram_available"] = available.get("ram_available", 0) + sum(e.ram for e in loaded)
            if available.get("vram_free"):
                available["vram_free"] += sum(e.vram for e in loaded)
            self._budget = parse_budget(self._budget_text, available)
        return self._budget

    @budget.setter
    def budget(self, value: Budget) -> None:
        self._budget = value

    # -- names ------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """user_data/model_aliases.yaml (re-read when it changes); a malformed file is an error."""
        return self._aliases.aliases()

    def target(self, name: str | None) -> str:
        """The model a request's `model` names: '' for the UI's model (empty, null, its name or an alias of
        it); ModelNotFound listing the models and aliases for a name that is neither."""
        if not name:
            return ""
        name = self.aliases().get(name, name)
        ui = self._ui.models
        if not name or name == ui.model_name:
            return ""
        with self._lock:
            if any(s.name == name for s in self._slots if not s.closing):
                return name
        try:
            ui.resolve(name)
        except ModelNotFound:
            names = [m.name for m in ui.list_models()]
            if ui.model_name and ui.model_name not in names:
                names.insert(0, ui.model_name)
            raise unknown_model(name, names, list(self.aliases())) from None
        return name

    # -- routing ----------------------------------------------------------------------------------
    def lease_ready(self, target: str) -> Slot | None:
        """The slot serving `target` ('' = the UI's) with a lease taken, when it is loaded; None when it
        must be loaded first (`acquire`). Release the lease once the generation has started."""
        with self._lock:
            slot = self._ui if not target else self._find(target)
            if slot is None or not slot.ready.is_set() or (slot is not self._ui and not slot.loaded):
                return None
            slot.leases += 1
            slot.last_used = self.clock()
            return slot

    def acquire(self, target: str) -> Slot:
        """`lease_ready`, loading the model first when needed (two requests for it load it once)."""
        with self._lock:
            slot = self.lease_ready(target)
            if slot is not None:
                return slot
            slot = self._find(target)
            mine = slot is None
            if slot is None:
                slot = Slot(target, last_used=self.clock())
                self._slots.append(slot)
            slot.leases += 1
        if mine:
            self._load(slot)
        slot.ready.wait()
        if slot.error is not None:
            with self._lock:
                slot.leases -= 1
            raise slot.error
        return slot

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.leases -= 1
            slot.last_used = self.clock()

    def touch(self, models: ModelManager) -> None:
        """The model of `models` was used (the UI's chat): it is not idle."""
        with self._lock:
            for slot in self._slots:
                if slot.models is models:
                    slot.last_used = self.clock()

    def _find(self, name: str) -> Slot | None:
        return next((s for s in self._slots if s is not self._ui and s.name == name and not s.closing), None)

    # -- loading ----------------------------------------------------------------------------------
    def _load(self, slot: Slot) -> None:
        ui = self._ui.models
        try:
            try:
                if ui.remotes is not None and slot.name.startswith(REMOTE_PREFIX):  # settings: remotes.yaml
                    loader, params = ui.remotes.loader_settings(slot.name, ui.loaders)
                else:
                    chosen = settings_for(ui, self.app.settings.user_data_dir, slot.name)
                    loader, params = chosen.loader, chosen.params
                local = ui.resolve(slot.name)
                slot.estimate = self.estimator(local, loader, params)
                with self._lock:
                    self._make_room(slot, slot.estimate, refuse=True)
                models = ModelManager(
                    ui.models_dir, ui.loaders, allow_remote_code=ui.allow_remote_code, remotes=ui.remotes
                )
                models.load_local(local, loader, params)
            except PoolError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the request; the other models keep serving
                if not isinstance(exc, HearthError):
                    log.exception("loading %s for the API failed", slot.name)
                raise ModelLoadFailed(f"cannot load model {slot.name}: {str(exc).rstrip('.')}") from exc
            with self._lock:
                slot.models, slot.core = models, GenerationCore(models, self.app.extensions)
                slot.last_used = self.clock()
        except PoolError as exc:
            with self._lock:
                slot.error = exc
                self._slots.remove(slot)
        finally:
            slot.ready.set()

    def _make_room(self, new: Slot | None, need: MemoryEstimate, *, refuse: bool) -> None:
        """Unload least recently used idle models until `need` fits beside the others (pool lock held).
        `new`: the slot being loaded (not counted as loaded). `refuse`: raise when it cannot fit; else
        (the UI's own load) free what can be freed and let the load try."""
        name = new.name if new is not None else self._ui.name
        budget = self.budget
        if refuse and too_large(need, budget):
            raise NotEnoughMemory(
                f"cannot load model {name}: its estimate ({gib(need.ram)} RAM, {gib(need.vram)} VRAM) is larger than "
                f"the whole memory budget ({budget.describe()}, --memory-budget): it cannot fit even alone"
            )
        while True:
            others = [
                s
                for s in self._slots
                if s is not new and (s.loaded or not s.ready.is_set()) and not (new is None and s is self._ui)
            ]
            why = shortfall(need, [self._estimate(s) for s in others], budget, self.max_models)
            if not why:
                return
            idle = [s for s in others if s.loaded and s.ready.is_set() and not s.busy]
            if not idle:
                if not refuse:
                    return
                busy = ", ".join(s.name or str(s.models.model_name) for s in others) or "none"
                raise NotEnoughMemory(f"cannot load model {name}: {why}; no idle model can be unloaded (busy: {busy})")
            self._evict(min(idle, key=lambda s: s.last_used), f"to make room for {name}")

    def _estimate(self, slot: Slot) -> MemoryEstimate:
        if slot.estimate is not None and slot is not self._ui:
            return slot.estimate
        models = slot.models
        if models is None or models.model is None or not models.model_name:
            return slot.estimate or NOTHING
        key = repr((models.model_name, models.loader_name, sorted(models.load_params.items())))
        if slot.key != key:
            try:
                local = models.resolve_path(models.model_name)
            except HearthError:
                local = LocalModel(models.model_name, models.models_dir / models.model_name, 0)
            slot.estimate = self.estimator(local, models.loader_name or "", models.load_params)
            slot.key = key
        return slot.estimate or NOTHING

    def _evict(self, slot: Slot, why: str) -> None:
        """Unload an idle slot's model (pool lock held; its FIFO lock is free, so this does not wait)."""
        name = slot.models.model_name if slot.models else slot.name
        log.info("unloading %s %s", name, why)
        if slot is self._ui:
            self._ui.models.unload()
            self.ui_note = f"{name} was unloaded {why}."
            return
        self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        slot.closing = True
        if slot.models is not None:
            slot.models.unload()
        if slot.core is not None:
            slot.core.close()
        if slot in self._slots:
            self._slots.remove(slot)

    # -- the UI's model ---------------------------------------------------------------------------
    def load_ui(self, name: str, loader: str | None = None, params: dict[str, Any] | None = None) -> None:
        """The Model tab's (and /v1/internal/model/load's) load. A model already loaded in the pool with the
        same loader and parameters is taken as it is (no second copy); with other settings that copy is
        unloaded first (waiting for its requests). Idle models are unloaded to make room; the UI's own
        load is never refused by the budget (the tab shows whether it fits)."""
        ui = self._ui.models
        local = ui.resolve(name)
        with self._lock:
            other = self._find(local.name)
        if other is not None and other.loaded and other.models is not None:
            wanted = ui.get_loader(loader or other.models.loader_name or "").resolve_params(params)
            if (
                loader or other.models.loader_name
            ) == other.models.loader_name and wanted == other.models.load_params:
                self.use_in_ui(local.name)
                return
            self.unload(local.name)
        chosen_loader = loader or ui.choose_loader(local.path)
        need = self.estimator(local, chosen_loader, ui.get_loader(chosen_loader).resolve_params(params))
        with self._lock:
            self._make_room(None, need, refuse=False)
        try:
            ui.load_local(local, loader, params)
        finally:
            with self._lock:
                self.ui_note = ""
                self._ui.last_used = self.clock()

    def use_in_ui(self, name: str) -> None:
        """Point the UI (app.models, app.core) at the loaded model `name`; the UI's previous model stays
        loaded for the API (a UI with no model just drops its empty slot)."""
        with self._lock:
            slot = self._find(name)
            if slot is None or not slot.loaded:
                if name and name == self._ui.models.model_name:
                    return
                raise ModelNotFound(f"{name} is not loaded")
            old = self._ui
            old.name = old.models.model_name or ""
            self._ui = slot
            self.app.models, self.app.core = slot.models, slot.core  # type: ignore[assignment]
            self.ui_note = ""
            if not old.loaded:
                self._slots.remove(old)
                old.core.close()

    # -- unloading --------------------------------------------------------------------------------
    def unload(self, name: str | None = None, cancel: bool = False) -> bool:
        """Unload `name` (default: the UI's model), waiting for its requests or, with `cancel`, stopping
        them first. Returns whether a model was unloaded."""
        with self._lock:
            slot = self._ui if not name or name == self._ui.models.model_name else self._find(name)
            if slot is None or not slot.loaded:
                return False
            if slot is not self._ui:
                slot.closing = True  # new requests for it load a fresh copy
        if cancel and slot.core is not None:
            slot.core.stop_all()
        assert slot.models is not None
        while slot.core is not None and slot.core.busy and not cancel:  # running and queued generations
            threading.Event().wait(0.05)
        slot.models.unload()
        with self._lock:
            if slot is not self._ui:
                self._drop(slot)
            else:
                self.ui_note = ""
        return True

    def stop_all(self) -> int:
        """Cancel every model's running and queued generations; returns how many were signalled."""
        with self._lock:
            cores = {id(s.core): s.core for s in self._slots if s.core is not None}
        return sum(core.stop_all() for core in cores.values())

    def check_idle(self) -> list[str]:
        """Unload the models unused for --idle-unload minutes; returns their names."""
        if self.idle_unload_s <= 0:
            return []
        freed = []
        with self._lock:
            now = self.clock()
            for slot in list(self._slots):
                if not slot.loaded or not slot.ready.is_set():
                    continue
                if slot.busy:
                    slot.last_used = now
                elif now - slot.last_used >= self.idle_unload_s:
                    freed.append(slot.models.model_name if slot.models else slot.name)
                    self._evict(slot, f"after {self.idle_unload_s / 60:g} minutes unused (--idle-unload)")
        return freed

    def _idle_loop(self) -> None:
        interval = min(30.0, max(1.0, self.idle_unload_s / 10))
        while not self._stop.wait(interval):
            try:
                self.check_idle()
            except Exception:  # noqa: BLE001 - the timer must keep running
                log.exception("idle unload failed")

    def close(self) -> None:
        """Stop the idle timer and unload every routed model (the UI's stays with app.models)."""
        self._stop.set()
        with self._lock:
            for slot in [s for s in self._slots if s is not self._ui]:
                self._drop(slot)

    # -- what the Model tab shows -----------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        """Each loaded model (the UI's first): name, loader, estimate, requests, idle seconds, ui."""
        with self._lock:
            slots = sorted((s for s in self._slots if s.loaded), key=lambda s: s is not self._ui)
            now = self.clock()
            return [
                {
                    "name": s.models.model_name,
                    "loader": s.models.loader_name,
                    "estimate": self._estimate(s),
                    "requests": s.core.live_requests if s.core else 0,
                    "jobs": s.core.pending if s.core else 0,
                    "idle_s": 0.0 if s.busy else max(0.0, now - s.last_used),
                    "ui": s is self._ui,
                }
                for s in slots
                if s.models is not None
            ]

    def loaded_names(self) -> list[str]:
        return [row["name"] for row in self.snapshot()]


__all__ = [
    "ALIASES_FILE",
    "Budget",
    "ModelLoadFailed",
    "ModelPool",
    "NotEnoughMemory",
    "PoolError",
    "Slot",
    "estimate_model",
    "parse_budget",
]
