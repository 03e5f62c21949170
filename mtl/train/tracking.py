"""Where a run's numbers go besides its trace (:class:`mtl.run.trace.LocalTrace`, the source of truth): W&B
(online, offline or disabled), which mirrors it point for point, and the progress shown while it trains.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtl.config import Config
from mtl.run.model import Progress as ProgressRecord
from mtl.run.model import Status

WANDB_MODES = ("online", "offline", "disabled")
# The run summary's scalar of the best point's grader (the best rule's pick: the highest grader), kept by the
# trainer in every attempt. Sweeps and dashboards name it: W&B's own summary of val/grader is an object
# ({"max": ...}), which a sweep's metric cannot read.
BEST_PREFIX = "best/"
BEST_GRADER_SUMMARY = f"{BEST_PREFIX}grader"
# WANDB_MODE values wandb itself accepts under older names.
WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def wandb_base_url() -> str:
    """The W&B server ``wandb.init`` talks to: WANDB_BASE_URL, wandb's settings files, or wandb's default."""
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.base_url


def wandb_credentials_source(base_url: str) -> str | None:
    """Where wandb's own key lookup finds credentials for ``base_url`` (the environment, a netrc entry
    for that host, wandb's settings), described without the key; None when it finds none.

    No network: wandb checks the key's format here, not the key itself (the server does that at init).
    """
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import wbauth
    from wandb.sdk.lib.wbauth import wbnetrc

    try:
        auth = wbauth.authenticate_session(host=base_url, source="mtl-train", prompt=False, update_session=False)
    except AuthenticationError as exc:  # a key in a format the server would refuse: as good as none
        raise ValueError(f"W&B credentials for {base_url} are unusable: {exc}") from None
    if auth is None:
        return None
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):  # wandb's lookup order: environment first
        if os.environ.get(name):
            return f"${name}"
    netrc = wbnetrc.read_netrc_auth_with_source(host=wbauth.HostUrl(base_url))
    return netrc.source if netrc is not None else "wandb's settings"


def has_wandb_credentials() -> bool:
    """Whether wandb finds usable credentials for the server it is configured for."""
    try:
        return wandb_credentials_source(wandb_base_url()) is not None
    except ValueError:
        return False


def decide_wandb_mode(cfg: Config) -> tuple[str, str]:
    """(mode, why): ``--wandb_mode`` first, then $WANDB_MODE, then online exactly when wandb finds
    credentials for the server it is configured for."""
    if cfg.wandb_mode != "auto":
        return cfg.wandb_mode, f"wandb_mode={cfg.wandb_mode}"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        mode = WANDB_MODE_ALIASES.get(env_mode, env_mode)
        if mode not in WANDB_MODES:
            raise ValueError(f"WANDB_MODE={env_mode!r} is not a W&B mode; expected one of "
                             f"{', '.join(WANDB_MODES)} (or unset it to decide from the credentials)")
        return mode, f"WANDB_MODE={env_mode}"
    base_url = wandb_base_url()
    try:
        source = wandb_credentials_source(base_url)
    except ValueError as exc:
        return "offline", str(exc)
    if source is None:
        return "offline", f"no W&B credentials for {base_url} (`wandb login` or $WANDB_API_KEY would add them)"
    return "online", f"credentials for {base_url} found in {source}"


def derive_run_id(run_dir: Path) -> str:
    """A stable W&B id from the run directory, so a resumed run continues the same W&B run."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


# The W&B config key by which a W&B run names the earlier W&B run of its run directory whose history it
# carries on (see :func:`wandb_identity`); readers keep the run no other run continues.
CONTINUES_KEY = "continues_run_id"


@dataclass(frozen=True)
class WandbIdentity:
    """The W&B run that mirrors a run directory in this attempt."""

    run_id: str
    continues: str | None = None  # the directory's earlier W&B run, whose history this one carries on
    holds_history: bool = True  # False: a W&B run new to this directory, which gets its trace's points first


def wandb_identity(requested: str | None, recorded: str | None, run_dir: Path) -> WandbIdentity:
    """One W&B run per run directory: the one its status records, continued whoever launches or resumes the
    run (``mtl-ablate run``, a requeued job, an agent given that id again).

    A requested id other than the recorded one (a sweep agent's: W&B knows the sweep's run by the id it
    assigned, $WANDB_RUN_ID) starts a new W&B run that carries the directory's whole history and summary and
    names the recorded run (:data:`CONTINUES_KEY`), so readers collapse the two into one (report.wandb_store);
    the status then records the new one. Without a recorded id the run is new to W&B as well."""
    if recorded is not None and requested in (None, recorded):
        return WandbIdentity(recorded)
    return WandbIdentity(requested or derive_run_id(run_dir), continues=recorded, holds_history=False)


def records_summary(status: Status | None) -> dict[str, Any]:
    """The W&B summary a run's records give: its best point (``best/*``) and its model's size (``model/*``)."""
    summary: dict[str, Any] = {}
    if status is not None and status.best is not None:
        summary.update({f"{BEST_PREFIX}{k}": v for k, v in status.best.model_dump().items()})
    if status is not None and status.model is not None:
        summary.update({"model/params": status.model.params, "model/gflops": status.model.gflops})
    return summary


def _short(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")


def _say(text: str, warning: bool = False) -> None:
    print(f"mtl-train: {text}", file=sys.stderr if warning else sys.stdout, flush=True)


class WandbSink:
    """W&B mirror of the trace, with the conventions of docs/DESIGN.md §8: group = ablation id, job type =
    variant.

    W&B never costs a run: a server that cannot be reached at start (bounded by ``wandb_init_timeout_s``),
    or a W&B call that fails later -- the server, or wandb's own service process, which a cluster's stop
    signal reaches too (it runs in a session of its own) -- switches the mirror to offline files under a
    fresh service (``wandb sync`` uploads them later) with a line saying so; the new files get the trace's
    points and the summary again, since what the failed service had not written is lost. When even that
    fails, the mirror stops and the local trace, the source of truth, carries on alone.

    Resumed runs: the W&B run continues under the same id, so W&B still holds the points logged after the
    checkpoint by the attempt that was stopped (W&B's history rewind is a preview feature that servers
    refuse unless enabled, so it is not used). Every point carries ``trainer/step``; a reader rebuilds the
    local trace from W&B's history by, per metric, keeping the last value (highest ``_step``) logged for
    each ``trainer/step`` and dropping rows whose ``trainer/step`` exceeds the run summary's
    ``trainer/step`` (the furthest step the latest attempt reached).
    """

    # Fresh offline starts after failures, at most (a failure that comes back each time ends the mirror).
    MAX_RESTARTS = 3

    def __init__(self, cfg: Config, run_dir: Path, run_id: str, *, continues: str | None = None,
                 holds_history: bool = True):
        self.cfg, self.run_dir, self._run_id, self.continues = cfg, run_dir, run_id, continues
        # Whether the W&B run holds the directory's trace up to where training resumes (see carry()).
        self.holds_history = holds_history
        # The wandb Run while mirroring, else None. Any: wandb is imported lazily (self._wandb), so it is untyped here.
        self.run: Any = None
        # What a new or restarted W&B run must hold: the trace's points, and the summary of the records.
        self._history: Callable[[], list[dict[str, Any]]] | None = None
        self._summary: Callable[[], dict[str, Any]] = dict
        self._restarts = 0
        self.mode, why = decide_wandb_mode(cfg)
        if self.mode == "disabled":
            _say(f"W&B disabled ({why})")
            return
        import wandb

        self._wandb = wandb
        try:
            self._start(self.mode)
        except Exception as exc:  # noqa: BLE001 - an unreachable or refusing server must not cost the run
            self._fall_back(f"W&B {self.mode} ({why}) could not start ({_short(exc)})")
            return
        if self.mode == "online":
            _say(f"W&B online ({why}): {self.url}")
        else:
            _say(f"W&B offline ({why}); upload later with: {self.sync_command()}")

    def _start(self, mode: str) -> None:
        cfg, wandb = self.cfg, self._wandb
        self.run = wandb.init(
            project=cfg.wandb_project or os.environ.get("WANDB_PROJECT") or "mtl-ablate",
            entity=cfg.wandb_entity,
            group=cfg.wandb_group,
            job_type=cfg.wandb_job_type,
            tags=list(cfg.wandb_tags) or None,
            name=self.run_dir.name,
            config={**cfg.model_dump(mode="json"), **({CONTINUES_KEY: self.continues} if self.continues else {})},
            id=self._run_id,
            resume="allow",
            dir=str(self.run_dir),
            mode=mode,
            settings=wandb.Settings(
                console="auto" if cfg.wandb_console else "off",
                x_disable_stats=not cfg.wandb_system_metrics,
                init_timeout=cfg.wandb_init_timeout_s,
                finish_timeout=cfg.wandb_finish_timeout_s,
                finish_timeout_raises=True,  # so the end of the run can say what is left to sync
                silent=True,  # wandb's own lines; ours say the mode, why, and where the run went
            ),
        )
        self.mode = mode
        # Points carry their own step (resumed runs may revisit steps W&B has already seen).
        self.run.define_metric("trainer/step")
        self.run.define_metric("train/*", step_metric="trainer/step")
        self.run.define_metric("val/*", step_metric="trainer/step")
        self.run.define_metric("val_images/*", step_metric="trainer/step")
        self.run.define_metric("val/grader", step_metric="trainer/step", summary="max")

    def sync_command(self) -> str:
        return f"wandb sync {shlex.quote(str(self.run.settings.sync_dir))}"

    def _fall_back(self, what: str) -> None:
        """Drop the failing W&B run and carry on offline under a fresh wandb service, the new files holding
        the history again; without W&B when that fails too or failures keep coming back."""
        broken, self.run = self.run, None
        try:
            if broken is not None:
                broken.finish(exit_code=1)
        except Exception:  # noqa: BLE001 - it is being dropped because it failed
            pass
        try:
            # A run whose start failed still holds its id in wandb's service, and a service that died leaves
            # its connection broken: a fresh service frees both.
            self._wandb.teardown()
        except Exception:  # noqa: BLE001
            pass
        if self._restarts < self.MAX_RESTARTS:
            self._restarts += 1
            try:
                self._start("offline")
                self._carry_again()
                _say(f"{what}; continuing with W&B offline, upload later with: {self.sync_command()}",
                     warning=True)
                return
            except Exception as exc:  # noqa: BLE001
                self.run = None
                what = f"{what}; offline start failed too ({_short(exc)})"
        self.mode = "disabled"
        _say(f"{what}; continuing without W&B (the local trace has every point)", warning=True)

    def carry(self, history: Callable[[], list[dict[str, Any]]], summary: Callable[[], dict[str, Any]],
              resumed_at: int | None = None) -> None:
        """Make the W&B run hold what the run directory holds before training goes on: the trace's points
        ``history()`` when it does not hold them yet (:attr:`holds_history`), and the summary of the records
        ``summary()`` (best point, model size); ``resumed_at``: the step training resumes from, recorded as the
        summary's ``trainer/step`` (points the W&B run has beyond it were rolled back). Both are kept: a
        restarted mirror gets them again."""
        self._history, self._summary = history, summary
        if not self.holds_history and self.run is not None:
            try:
                self._log_history()
            except Exception as exc:  # noqa: BLE001 - W&B never costs a run; the restarted mirror gets them
                self._fall_back(f"W&B history failed ({_short(exc)})")
        values = summary()
        if resumed_at:
            values["trainer/step"] = resumed_at
        self.summary(values)

    def _log_history(self) -> None:
        for point in self._history() if self._history is not None else []:
            self.run.log(self._point_data(point))
        self.holds_history = True

    def _carry_again(self) -> None:
        """A restarted mirror: the history and summary again (what the failed service lost is unknown)."""
        if self._history is None:
            return
        self._log_history()
        self.run.summary.update(self._summary())

    def _guarded(self, what: str, call, *args: Any) -> None:
        """Run one W&B call; on failure fall back and, if a mirror is left, repeat it there."""
        if self.run is None:
            return
        try:
            call(*args)
            return
        except Exception as exc:  # noqa: BLE001 - W&B never costs a run
            self._fall_back(f"W&B {what} failed ({_short(exc)})")
        if self.run is not None:
            try:
                call(*args)
            except Exception as exc:  # noqa: BLE001
                self._fall_back(f"W&B {what} failed again offline ({_short(exc)})")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def url(self) -> str | None:
        """The run's W&B page while it logs online (an offline run has none until it is synced)."""
        return self.run.url if self.run is not None and self.mode == "online" else None

    @staticmethod
    def _point_data(point: dict[str, Any]) -> dict[str, Any]:
        """A trace point as W&B gets it: its metrics, and its step as ``trainer/step``."""
        data = {k: v for k, v in point.items() if k not in ("step", "time")}
        data["trainer/step"] = point["step"]
        return data

    def log(self, point: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        data = self._point_data(point)
        self._guarded("log", lambda: self.run.log({**data, **(extra or {})}))

    def summary(self, values: dict[str, Any]) -> None:
        self._guarded("summary", lambda: self.run.summary.update(values))

    def config(self, values: dict[str, Any]) -> None:
        """Add ``values`` to the run's W&B config (what it trained with, beside its hyperparameters)."""
        self._guarded("config", lambda: self.run.config.update(values, allow_val_change=True))

    def images(self, panels: list[np.ndarray], depth_m: np.ndarray | None, step: int) -> None:
        """Validation panels (input | predicted seg | true seg | predicted depth | true depth) and a histogram,
        on ``trainer/step`` like every other point."""
        if self.run is None:
            return
        wandb = self._wandb
        data = {"trainer/step": step,
                "val_images/panels": [wandb.Image(p, caption="input | pred seg | true seg | pred depth | true depth")
                                      for p in panels]}
        finite = depth_m[np.isfinite(depth_m)] if depth_m is not None else np.empty(0)
        if finite.size:  # a diverging model predicts NaN; the mirror must not fail the run over its histogram
            data["val/depth_histogram_m"] = wandb.Histogram(finite)
        self._guarded("images", lambda: self.run.log(data))

    def interrupted(self, exit_code: int = 143, requeue: bool = True) -> None:
        """End a run stopped by a signal. ``requeue``: as preempted, not failed -- W&B records a run marked
        preempting that exits non-zero as preempted (and a sweep requeues it), and the resume continues it.
        Without: stopped for good (its sweep stopped it), so no sweep hands it to an agent again."""
        self._end(exit_code, preempting=requeue)

    def finish(self, exit_code: int = 0) -> None:
        self._end(exit_code, preempting=False)

    def _end(self, exit_code: int, preempting: bool) -> None:
        """Mark the run preempting when asked, and finish it. A finish that fails has lost wandb's service (a
        stop signal reaches it too, and the client may learn of it only here, the preempting mark being sent
        without an answer): the end was not recorded, so it is made again on the offline mirror that restarts
        with the history. Never raises: W&B must not turn a finished run failed."""
        try:
            self._mark_and_finish(exit_code, preempting)
        except Exception as exc:  # noqa: BLE001
            self._fall_back(f"W&B could not record the run's end ({_short(exc)})")
            try:
                self._mark_and_finish(exit_code, preempting)
            except Exception as again:  # noqa: BLE001
                run, self.run = self.run, None
                assert run is not None  # only a run's finish raises
                _say(f"W&B could not record the run's end offline either ({_short(again)}); its files are kept, "
                     f"upload them with: wandb sync {shlex.quote(str(run.settings.sync_dir))}", warning=True)
                try:
                    self._wandb.teardown()
                except Exception:  # noqa: BLE001
                    pass

    def _mark_and_finish(self, exit_code: int, preempting: bool) -> None:
        """The run's end on the current run (none, as after W&B was given up: nothing); raises when finish fails."""
        if preempting:
            self._guarded("mark_preempting", lambda: self.run.mark_preempting())
        if self.run is None:
            return
        self.run.finish(exit_code=exit_code)
        self.run = None


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``3m05s`` or ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """A rich progress bar (step, loss, ETA) on a TTY; otherwise a plain line every 5 s or so with step,
    loss, learning rate, it/s and ETA, as torchvision's reference scripts print them.

    :meth:`record` hands the trainer the same numbers for the run's status at most every
    ``RECORD_INTERVAL_S`` seconds, so that ``mtl-ablate`` can show them without reading the log and
    without a status write per step."""

    LINE_INTERVAL_S = 5.0
    RECORD_INTERVAL_S = 5.0

    def __init__(self, mode: str, total_steps: int, done_steps: int, num_epochs: int | None = None):
        self.total, self.done = total_steps, done_steps
        self.num_epochs = num_epochs
        self.epoch = 0
        self.loss: float | None = None
        self.lr: float | None = None
        self._last_record = 0.0
        self.use_rich = mode == "rich" or (mode == "auto" and sys.stdout.isatty())
        self.enabled = mode != "none"
        self.started = time.monotonic()
        self.start_done = done_steps
        self._last_line = 0.0
        self._bar = None
        if self.enabled and self.use_rich:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task("train", total=total_steps, completed=done_steps, epoch=0, loss="-")
            self._bar.start()

    def steps_per_second(self) -> float | None:
        """Optimizer steps per second of this attempt so far (validation time included, as in the ETA)."""
        steps, seconds = self.done - self.start_done, time.monotonic() - self.started
        return steps / seconds if steps > 0 and seconds > 0 else None

    def eta_seconds(self) -> float | None:
        rate = self.steps_per_second()
        return (self.total - self.done) / rate if rate else None

    def update(self, step: int, epoch: int, loss: float | None, lr: float | None = None) -> None:
        self.done, self.epoch, self.loss, self.lr = step, epoch, loss, lr
        if not self.enabled:
            return
        loss_text = f"{loss:.4f}" if loss is not None else "-"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, epoch=epoch, loss=loss_text)
        elif time.monotonic() - self._last_line >= self.LINE_INTERVAL_S or step == self.total:
            self._last_line = time.monotonic()
            rate = self.steps_per_second()
            epochs = f"/{self.num_epochs}" if self.num_epochs else ""
            parts = [f"epoch {epoch}{epochs}", f"step {step}/{self.total}", f"loss {loss_text}",
                     f"lr {lr:.3g}" if lr is not None else "", f"it/s {rate:.2f}" if rate else "it/s -",
                     f"eta {format_eta(self.eta_seconds())}"]
            print(" ".join(part for part in parts if part), flush=True)

    def record(self, force: bool = False) -> ProgressRecord | None:
        """Step, loss, lr, it/s and ETA for the run's status; None when the last one is under
        ``RECORD_INTERVAL_S`` seconds old (unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_record < self.RECORD_INTERVAL_S:
            return None
        self._last_record = now
        rate, eta = self.steps_per_second(), self.eta_seconds()
        return ProgressRecord(step=self.done, total_steps=self.total, epoch=self.epoch, loss=self.loss, lr=self.lr,
                              it_s=round(rate, 4) if rate else None, eta_s=round(eta, 1) if eta is not None else None,
                              at=time.time())

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
