"""A text-to-3D run, callable in-process: checks, stages, signals, exports and the summary.

`run(RunRequest(prompt=...))` is what `scripts/dream.py` (and the `dreamfusion-dream` command)
does; evaluation and batch runners call it too. Every reason to refuse a run (a bad config key, a
workspace holding another run, an unknown word for the bundled prior) is found before anything is
loaded or written; a refused run raises ConfigError and leaves the workspace as it was.

Stages: a config with a `fine:` section runs the coarse NeRF, then refines it as a DMTet mesh
(Magic3D); `stage` picks coarse, fine or all, and `source` (--from) refines another workspace's
finished coarse run. Workspace layout (workspace.py): the coarse stage at the root, the fine stage
in fine/, the result's mesh/ and video/ at the root (the coarse mesh of a two-stage run in
coarse/mesh/), and run.json once the run is finished.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import ConfigError, build, to_dict
from .guidance.vocabulary import closed_vocabulary, unknown_words
from .run_config import DEFAULT_OUTPUTS, RunConfig, TrainConfig, load_run_config
from .utils.capabilities import resolve_device, warn
from .layout import RunSummary
from .workspace import SCENE_SECTIONS, Workspace, slug


@dataclass
class RunRequest:
    """What a user asks for: dream.py's flags."""

    prompt: str
    negative: str | None = None
    config: str | None = None  # YAML file (default: the toy recipe)
    steps: int | None = None  # train.steps
    seed: int | None = None
    workspace: str | None = None  # default: outputs/<prompt-slug>
    device: str | None = None  # auto, cpu or cuda
    resume: bool = False
    overwrite: bool = False
    force: bool = False  # run even with words a closed-vocabulary prior never saw
    no_export: bool = False
    quiet: bool = False
    overrides: list[str] = field(default_factory=list)  # dotted key=value
    stage: str | None = None  # coarse, fine or all (default: all when the config has a fine: section)
    source: str | None = None  # --from: the workspace of a finished coarse run to refine
    program: str = "python scripts/dream.py"  # how the user started it, for the printed resume command


@dataclass
class RunOutcome:
    code: int  # 0 done, 1 trained but no mesh came out (workspace kept), 130 interrupted (checkpoint saved)
    workspace: Workspace
    summary: RunSummary | None = None
    reason: str = ""  # why the code is not 0


# ---- checks: everything that can refuse the run, before any work ------------------------------------

def resolve_config(req: RunRequest) -> RunConfig:
    if not req.prompt.strip():
        raise ConfigError('--prompt is empty; say what to make, e.g. --prompt "a red cube"')
    overrides = list(req.overrides)
    extra = {"prompt": req.prompt.strip()}
    if req.negative is not None:
        extra["negative_prompt"] = req.negative
    for key, value in (("seed", req.seed), ("device", req.device)):
        if value is not None:
            extra[key] = value
    if req.steps is not None:
        overrides.append(f"train.steps={req.steps}")
    return load_run_config(req.config, overrides, extra)


def plan_stages(req: RunRequest, cfg: RunConfig) -> tuple[str, ...]:
    """The stages this run trains, in order."""
    stage = req.stage or ("fine" if req.source else "all" if cfg.fine is not None else "coarse")
    if stage not in ("coarse", "fine", "all"):
        raise ConfigError(f"--stage must be coarse, fine or all, got {stage!r}")
    if stage != "coarse" and cfg.fine is None:
        raise ConfigError(f"--stage {stage}: the config has no fine: section to refine with "
                          "(the toy recipes and configs/magic3d-sd.yaml have one)")
    if req.source and stage == "coarse":
        raise ConfigError("--from refines a coarse run: it goes with --stage fine (or no --stage)")
    return ("coarse", "fine") if stage == "all" and not req.source else (stage if stage != "all" else "fine",)


def check_source(req: RunRequest, cfg: RunConfig, stages: tuple[str, ...], ws_root: Path) -> Workspace | None:
    """The finished coarse run a fine-only run refines (--from, or the workspace itself), checked
    before anything is written: it exists, its coarse stage trained to the end."""
    if stages != ("fine",):
        return None
    source = Workspace(req.source or ws_root)
    where = f"--from {source.root}" if req.source else f"--stage fine: {source.root}"
    if not source.root.is_dir():
        raise ConfigError(f"{where}: no such workspace")
    if not source.config_path.is_file() or not source.last_checkpoint.is_file():
        raise ConfigError(f"{where} is not a finished coarse run (no config.yaml or checkpoints/last.pt); run the coarse stage first")
    data = source.read_config()
    if data.get("prompt") != cfg.prompt:
        raise ConfigError(f"{where} holds a run for {data.get('prompt')!r}, not {cfg.prompt!r}")
    step, steps = source.checkpoint_step(), int(data.get("train", {}).get("steps", 0))
    if step < steps:
        raise ConfigError(f"{where} is not a finished coarse run (step {step} of {steps}); "
                          f"finish it first: {req.program} --prompt {shlex.quote(cfg.prompt)} --workspace {source.root} --resume --stage coarse")
    return source


def with_source_scene(cfg: RunConfig, source: Workspace) -> RunConfig:
    """The run config with the source run's scene sections (its field, background, cameras...) and
    representation: the fine stage continues that scene, whatever the --config says about its own."""
    scene = source.stage_config()
    for name in (*SCENE_SECTIONS, "representation"):
        setattr(cfg, name, getattr(scene, name))
    try:  # and its coarse training section, so the workspace's config.yaml still says what it trained
        cfg.train = build(TrainConfig, source.read_config().get("train", {}), prefix="train")
    except ConfigError:
        pass  # a workspace of an older version (renamed keys): the coarse stage is not trained again anyway
    return cfg


def check_workspace(req: RunRequest, cfg: RunConfig, stages: tuple[str, ...] = ("coarse",), source: Workspace | None = None) -> Workspace:
    """Every reason to refuse the workspace, found before anything is loaded or written."""
    ws = Workspace(req.workspace or (req.source if req.source else DEFAULT_OUTPUTS / slug(cfg.prompt)))
    if ws.root.exists() and not ws.root.is_dir():
        raise ConfigError(f"workspace {ws.root} is a file, not a folder; choose another --workspace")
    refining_in_place = source is not None and source.root.resolve() == ws.root.resolve()
    # What holds this run's progress: the coarse checkpoint, or (refining) the fine one.
    own = ws.stage("fine") if stages == ("fine",) else ws
    if req.resume:
        if not own.last_checkpoint.is_file() and not (refining_in_place or source is not None):
            raise ConfigError(f"--resume: {ws.root} has no checkpoint to resume from; drop --resume to start a new run")
        previous = ws.read_config().get("prompt") if ws.config_path.is_file() else cfg.prompt
        if previous != cfg.prompt:
            raise ConfigError(f"--resume: {ws.root} holds a run for {previous!r}, not {cfg.prompt!r}")
    elif not req.overwrite:
        holds = own.last_checkpoint.is_file() or (not refining_in_place and ws.config_path.is_file())
        if holds:
            previous = ws.read_config().get("prompt") if ws.config_path.is_file() else "?"
            what = "a fine stage" if stages == ("fine",) and own.last_checkpoint.is_file() else "a run"
            raise ConfigError(
                f"{ws.root} already holds {what} (prompt {previous!r}); pass --resume to continue it, "
                "--overwrite to replace it, or --workspace to choose another folder"
            )
    existing = ws.root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to workspace {ws.root} ({existing} is not a writable folder); choose another --workspace")
    return ws


def check_vocabulary(cfg: RunConfig, force: bool) -> None:
    """A closed-vocabulary prior (the bundled one) scores unseen words as noise: refuse them unless forced."""
    vocabulary = closed_vocabulary(cfg.guidance.model)
    if vocabulary is None:
        return
    unknown = unknown_words(f"{cfg.prompt} {cfg.negative_prompt or ''}", vocabulary)
    if not unknown:
        return
    words = ", ".join(repr(w) for w in unknown)
    if not force:
        raise ConfigError(
            f"the guidance model {cfg.guidance.model} was never trained on {words}; it knows only: "
            f"{' '.join(vocabulary)}. Rephrase the prompt with those words, or pass --force to run anyway"
        )
    warn(f"the guidance model has never seen {words}; running anyway (--force)")


def check_backgrounds(cfg: RunConfig) -> None:
    """A toy prior scores renders over greys it never saw as off its data: say so, once, up front."""
    if cfg.background.type != "random_grey" or not (Path(cfg.guidance.model) / "training_info.json").is_file():
        return
    from .toyworld.prior import training_backgrounds

    trained = training_backgrounds(cfg.guidance.model)
    drawn = tuple(float(v) for v in cfg.background.grey_range)
    if any(abs(a - b) > 1e-6 for a, b in zip(trained, drawn)):
        warn(f"background.grey_range is [{drawn[0]:g}, {drawn[1]:g}] but {cfg.guidance.model} was trained on greys "
             f"in [{trained[0]:g}, {trained[1]:g}]; the prior will read every render as off its data")


def open_workspace(req: RunRequest, ws: Workspace, stages: tuple[str, ...] = ("coarse",)) -> None:
    """The first write, after every check has passed: clear a replaced run (--overwrite; refining,
    only the fine stage and the result), create the folder."""
    coarse_export = ws.coarse_result()
    if stages == ("fine",) and ws.final_stage() == "coarse" and ws.mesh_dir.is_dir() and not coarse_export.mesh_dir.exists():
        coarse_export.root.mkdir(parents=True, exist_ok=True)  # refining a coarse run in place: its result becomes coarse/
        for own, kept in ((ws.mesh_dir, coarse_export.mesh_dir), (ws.video_dir, coarse_export.video_dir)):
            if own.is_dir():
                os.replace(own, kept)
    if req.overwrite and not req.resume:
        subs = ("fine", "mesh", "video") if stages == ("fine",) else ("checkpoints", "validation", "fine", "coarse", "mesh", "video")
        for sub in subs:
            shutil.rmtree(ws.root / sub, ignore_errors=True)
        if stages != ("fine",):
            ws.metrics_path.unlink(missing_ok=True)
    if ws.summary_path.is_file():
        ws.summary_path.unlink()  # run.json marks a finished run; this one is not, yet
    for folder in (ws.root, ws.checkpoints, ws.stage("fine").root, ws.stage("fine").checkpoints):
        for stale in folder.glob(".*.tmp"):  # a killed run's half-written temporaries (atomic_write)
            stale.unlink(missing_ok=True)
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        probe = ws.root / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to workspace {ws.root} ({err.strerror}); choose another --workspace") from None


def resume_command(req: RunRequest, ws: Workspace) -> str:
    """The command that continues this run: the same prompt, config, overrides and flags, plus --resume."""
    parts = [*shlex.split(req.program), "--prompt", req.prompt]
    for flag, value in (("--negative", req.negative), ("--config", req.config), ("--steps", req.steps),
                        ("--seed", req.seed), ("--device", req.device)):
        if value is not None:
            parts += [flag, str(value)]
    for flag, value in (("--stage", req.stage), ("--from", req.source)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--workspace", str(ws.root), "--resume"]
    parts += [flag for flag, on in (("--force", req.force), ("--no-export", req.no_export), ("--quiet", req.quiet)) if on]
    return shlex.join(parts + list(req.overrides))


# ---- the run ------------------------------------------------------------------------------------------

def quiet_libraries() -> None:
    """diffusers/transformers chatter (weight-loading bars, accelerate hints) is not the user's business."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


class StopFlag:
    """Set by SIGINT / SIGTERM (when installed in the main thread) or by the caller."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> bool:
        return self.reason is not None

    def install(self) -> Callable[[], None]:
        """Catch SIGINT and SIGTERM until the returned function restores the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum, _frame):
            self.reason = signal.Signals(signum).name

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()] and None


def train_stage(trainer, total: int, quiet: bool, stop: StopFlag, label: str) -> None:
    """Run a trainer to its step count with a progress bar (or plain lines with quiet)."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=trainer.step, desc=label, disable=quiet, unit="step")
    start, first = time.time(), trainer.step

    def on_step(result) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{result.metrics['sds']:.3g}", t=f"{result.metrics['t']:.2f}")
        if quiet and (result.step % 50 == 0 or result.step == total):
            rate = (result.step - first) / max(1e-9, time.time() - start)
            print(f"{label} step {result.step}/{total} sds {result.metrics['sds']:.4g} ({rate:.2f} step/s)", flush=True)

    try:
        trainer.run(on_step=on_step, stop=stop)
    finally:
        bar.close()


def export_results(rep, cfg: RunConfig, ws: Workspace, quiet: bool, video: bool = True) -> list[str]:
    """The mesh and the video of a trained representation into ws.mesh_dir / ws.video_dir; an empty
    one skips each with the reason (training is kept, not failed). Returns the reasons of what was
    skipped: empty when everything asked for was written."""
    from .export import ExportError, load_exported_mesh
    from .export.video import render_turntable

    e, skipped, mesh_written = cfg.export, [], False
    rep.eval()  # its schedules are those of the last checkpoint
    if e.mesh:
        try:
            result = rep.export_mesh(ws.mesh_dir, cfg.mesh_export_config(), progress=not quiet)
            mesh_written = True
            print(f"mesh: {len(result.files)} files in {ws.mesh_dir} ({result.n_faces} faces)")
        except ExportError as err:
            skipped.append(f"mesh export skipped: {err}")
            print(f"dream: mesh export skipped: {err} (the checkpoint is kept: scripts/export_mesh.py --workspace {ws.root} retries)", file=sys.stderr)
    if e.video and video:
        try:
            # the exported file when there is one (what the user gets, and 5-10x faster); else the field
            field = rep.volume()  # a NeRF or Gaussians can also be rendered as a volume
            use_mesh = mesh_written and (e.video_source == "mesh" or field is None)
            if not use_mesh and field is None:
                raise ExportError("there is no mesh to render (this stage is a mesh, and has no volume to render)")
            source = {"mesh": load_exported_mesh(ws.mesh_dir)} if use_mesh else {"field": field}
            paths = render_turntable(ws.video_dir, cfg.video_config(), bound=rep.bound, progress=not quiet, **source)
            print(f"video: {', '.join(p.name for p in paths)} in {ws.video_dir} (from the {next(iter(source))})")
        except ExportError as err:
            skipped.append(f"video skipped: {err}")
            print(f"dream: video skipped: {err} (the checkpoint is kept: scripts/render_video.py --workspace {ws.root} retries)", file=sys.stderr)
    return skipped


def stage_train_seconds(ws: Workspace) -> float:
    """Seconds of the steps in a stage's metrics.jsonl (every session, resumes included)."""
    total = 0.0
    if ws.metrics_path.is_file():
        for line in ws.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                total += float(json.loads(line).get("seconds", 0.0))
            except (ValueError, AttributeError):
                continue
    return total


def write_summary(ws: Workspace, cfg: RunConfig, steps: dict[str, int], export_seconds: float, wall_seconds: float,
                  skipped: list[str] | None, source: Workspace | None = None) -> RunSummary:
    """run.json for the finished run. `skipped`: the export's reasons for what it left out (None: --no-export)."""
    per_stage = {name: round(stage_train_seconds(ws.stage(name)), 1) for name in steps}
    summary = RunSummary(
        prompt=cfg.prompt, seed=cfg.seed, stages=list(steps), result=list(steps)[-1], steps=dict(steps), finished=True,
        exported=skipped == [], export_skipped=skipped or [], train_seconds=round(sum(per_stage.values()), 1),
        stage_train_seconds=per_stage, export_seconds=round(export_seconds, 1), wall_seconds=round(wall_seconds, 1),
        source=str(source.root) if source is not None else None,
    )
    summary.write(ws.summary_path)
    return summary


def interrupted(req: RunRequest, ws: Workspace, trainer, stop: StopFlag) -> RunOutcome:
    print(f"dream: {stop.reason or 'stop'} received; saved step {trainer.step} of the {trainer.stage.name} stage to "
          f"{trainer.ws.last_checkpoint}. Resume with: {resume_command(req, ws)}", file=sys.stderr)
    return RunOutcome(130, ws)


def run(req: RunRequest, stop: StopFlag | None = None) -> RunOutcome:
    """The whole run. Raises ConfigError (bad input: nothing written) or a runtime error; returns
    code 130 when a signal or `stop` interrupted training (the checkpoint is saved)."""
    launched = time.time()
    quiet_libraries()
    cfg = resolve_config(req)
    stages = plan_stages(req, cfg)
    ws_root = Path(req.workspace or (req.source if req.source else DEFAULT_OUTPUTS / slug(cfg.prompt)))
    source = check_source(req, cfg, stages, ws_root)
    if source is not None:
        cfg = with_source_scene(cfg, source)
    device = resolve_device(cfg.device)
    ws = check_workspace(req, cfg, stages, source)
    check_vocabulary(cfg, req.force)
    check_backgrounds(cfg)

    from .dmtet.init import NoSurfaceError
    from .dmtet.scene import EmptySurfaceError
    from .guidance import make_guidance
    from .stages import coarse_stage, fine_stage, stage_guidance
    from .train import Trainer

    # Everything that can fail on loading (the prior, a corrupt checkpoint, a coarse run without a
    # surface to refine) fails here, before the workspace is touched.
    guidance = make_guidance(cfg.guidance, device)
    guidance.prepare(cfg.prompt, cfg.negative_prompt or None)
    too_long = guidance.prompt_length_warning(cfg.prompt, cfg.negative_prompt or None)
    if too_long:
        print(f"dream: warning: {too_long}", file=sys.stderr)
    fine_ws = ws.stage("fine")
    coarse = fine = None
    restart_fine = False  # a coarse stage trained further makes an earlier fine stage stale
    if "coarse" in stages:
        coarse = Trainer(coarse_stage(cfg, device), ws, device, guidance)
        if req.resume and ws.last_checkpoint.is_file():
            coarse.resume()
            print(f"resuming {ws.root} at coarse step {coarse.step}")
        restart_fine = coarse.step < cfg.train.steps and fine_ws.last_checkpoint.is_file()
    if "fine" in stages and req.resume and fine_ws.last_checkpoint.is_file() and not restart_fine:
        fine = Trainer(fine_stage(cfg, device), fine_ws, device, stage_guidance(guidance, cfg, device))
        fine.resume()
        print(f"resuming {ws.root} at fine step {fine.step}")
    coarse_scene = None
    if source is not None and fine is None:
        coarse_scene, _ = source.load_scene(device)
        try:  # the cleaned level set must exist before anything is written
            fine = Trainer(fine_stage(cfg, device, coarse_scene), fine_ws, device, stage_guidance(guidance, cfg, device))
        except NoSurfaceError as err:
            raise ConfigError(f"{source.root}'s coarse run has no surface to refine ({err}); train it longer or start a new run") from None
    open_workspace(req, ws, stages)
    ws.write_config(to_dict(cfg))

    stop = stop or StopFlag()
    restore = stop.install()
    steps: dict[str, int] = {}
    export_seconds = 0.0
    try:
        if coarse is not None and fine is None:
            start = time.time()
            train_stage(coarse, cfg.train.steps, req.quiet, stop, "coarse")
            if stop():
                return interrupted(req, ws, coarse, stop)
            print(f"coarse: trained {coarse.step} steps in {time.time() - start:.0f}s; workspace {ws.root}")
        if coarse is not None:
            steps["coarse"] = cfg.train.steps
        if "fine" in stages:
            kept = ws.coarse_result()  # the coarse mesh, kept beside the result for comparison
            if coarse is not None and not req.no_export and not (kept.mesh_dir / "export.json").is_file():
                export_start = time.time()
                export_results(coarse.rep, cfg, kept, req.quiet, video=False)
                export_seconds += time.time() - export_start
            if fine is None:
                if restart_fine:
                    print(f"the coarse stage trained further: starting the fine stage again (replacing {fine_ws.root})")
                    for sub in ("checkpoints", "validation"):
                        shutil.rmtree(fine_ws.root / sub, ignore_errors=True)
                    fine_ws.metrics_path.unlink(missing_ok=True)
                try:
                    fine = Trainer(fine_stage(cfg, device, coarse.rep), fine_ws, device, stage_guidance(guidance, cfg, device))
                except NoSurfaceError as err:
                    print(f"dream: fine stage skipped: the coarse field has no surface to refine ({err}); "
                          f"the coarse run is kept in {ws.root}", file=sys.stderr)
            if fine is not None:
                start = time.time()
                try:
                    train_stage(fine, cfg.fine.train.steps, req.quiet, stop, "fine")
                except EmptySurfaceError as err:  # the coarse result is still a result: keep it
                    print(f"dream: the fine stage stopped at step {fine.step}: {err}; its last checkpoint is in "
                          f"{fine_ws.root}, and the result is the coarse stage's", file=sys.stderr)
                    fine = None
            if fine is not None:
                if stop():
                    return interrupted(req, ws, fine, stop)
                print(f"fine: trained {fine.step} steps in {time.time() - start:.0f}s; workspace {fine_ws.root}")
                steps["fine"] = cfg.fine.train.steps
    finally:
        restore()
    if fine is not None:
        result = fine.rep
    elif coarse is not None:
        result = coarse.rep
    else:  # refining another run whose fine stage failed: the source's coarse result
        result = coarse_scene if coarse_scene is not None else source.load_scene(device)[0]
    export_start = time.time()
    skipped = None if req.no_export else export_results(result, cfg, ws, req.quiet)
    export_seconds += time.time() - export_start
    summary = write_summary(ws, cfg, steps, export_seconds, time.time() - launched, skipped, source)
    write_page(ws)
    no_mesh = [reason for reason in skipped or [] if reason.startswith("mesh export skipped")]
    if no_mesh:  # trained, but no asset: a failure for whoever runs this, with the workspace kept
        reason = no_mesh[0].removeprefix("mesh export skipped: ")
        print(f"dream: the run made no mesh ({reason}); its workspace {ws.root} is kept: --resume with more --steps "
              f"trains it further, scripts/export_mesh.py --workspace {ws.root} retries the export", file=sys.stderr)
        return RunOutcome(1, ws, summary, f"no mesh: {reason}")
    return RunOutcome(0, ws, summary)


def write_page(ws: Workspace) -> None:
    """WORKSPACE/index.html, the run's gallery page; a failure here costs the page, never the run."""
    from .gallery import write_asset_page

    try:
        print(f"gallery: {write_asset_page(ws.root)} (open it in a browser)")
    except Exception as err:  # noqa: BLE001 - the run and its files are already safe
        print(f"dream: the gallery page was not written ({type(err).__name__}: {err}); "
              f"retry with: python scripts/gallery.py {ws.root}", file=sys.stderr)
