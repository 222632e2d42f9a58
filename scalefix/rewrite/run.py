"""``scalefix rewrite``: the permanent fix, streaming and atomic."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ScalefixError
from ..formats import classify, open_bundle
from ..formats.bundle import INDEX_SUFFIX
from ..formats.tensor_data import prefetch
from ..interrupts import Interrupted
from ..locate import cached_repo_name
from . import space
from . import staging as stage
from .allocator import reuse_large_buffers
from .config_edit import copy_other_files, files_to_copy, write_json
from .plan import Plan, build_plan, build_rename_plan
from .progress import Progress, human_bytes
from .shard_writer import write_shard
from .target import TargetPlan

if TYPE_CHECKING:
    from .target import TargetSpec


@dataclass
class Options:
    out: Path | None = None
    out_dtype: str = "bf16"
    max_shard_bytes: int = 5 * 10 ** 9
    workers: int = 1
    resume: bool = False
    dry_run: bool = False
    quiet: bool = False
    progress: bool | None = None      # None: only on a terminal
    rename_scales: str | None = None  # keep FP8, rename scales to this naming
    target: TargetSpec | None = None  # another output format (--to mlx, --to mlx-affine)
    space_check: bool = True          # refuse up front when DST's filesystem lacks the room

    @property
    def suffix(self) -> str:
        if self.target is not None:
            return self.target.suffix
        return self.rename_scales or self.out_dtype


@dataclass
class Summary:
    source: str
    destination: str | None
    status: str                        # "written" | "nothing-to-do" | "dry-run"
    counts: dict = field(default_factory=dict)
    config_changes: list[str] = field(default_factory=list)
    copied_files: list[str] = field(default_factory=list)
    shards: int = 0
    reused_shards: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    requantization_sqnr: dict | None = None  # --to mlx-affine: min / median dB, worst module
    notes: list[str] = field(default_factory=list)  # the target's own count lines
    quality_notes: list[str] = field(default_factory=list)  # the target's error report
    disk_needed: int | None = None     # bytes this run writes, with the margin (see space.py)
    disk_free: int | None = None       # free on DST's filesystem, plus leftovers it replaces


def default_destination(src: Path, suffix: str, single_file: bool) -> Path:
    """Beside the source; in the working directory for a model in the Hugging Face cache
    (a snapshot is the hub library's to manage: nothing is ever written there)."""
    repo_name = cached_repo_name(src)
    if single_file:
        name = f"{src.stem}-{suffix}.safetensors"
        return Path.cwd() / name if repo_name else src.with_name(name)
    if repo_name:
        return Path.cwd() / f"{repo_name}-{suffix}"
    root = src if src.is_dir() else src.parent
    return root.with_name(f"{root.name}-{suffix}")


def _check_destination(src_root: Path, src: Path, dst: Path, single_file: bool) -> None:
    real_dst = dst.resolve()
    if single_file:
        if real_dst == src.resolve():
            raise ScalefixError("--out is the source file itself", file=dst)
        if dst.suffix != ".safetensors":  # mx.load and ComfyUI read nothing else
            raise ScalefixError(
                "a single-file source rewrites to one file, and --out names it: it must end "
                f"in .safetensors (e.g. --out {dst.name}.safetensors)", file=dst)
    else:
        real_src = src_root.resolve()
        if real_dst == real_src or real_src in real_dst.parents:
            raise ScalefixError(f"--out must not be inside the source bundle {src_root}",
                                file=dst)
    if dst.exists():
        raise ScalefixError("already exists: choose another --out or remove it", file=dst)
    if not dst.parent.is_dir():
        raise ScalefixError("parent directory does not exist", file=dst)


def _base_name(bundle) -> str:
    if bundle.index_path is not None:
        return bundle.index_path.name[: -len(INDEX_SUFFIX)]
    if len(bundle.headers) == 1:
        name = next(iter(bundle.headers)).name
        stem = name[: -len(".safetensors")]
        return stem.split("-00001-of-")[0]
    return "model"


def rewrite(src: str | os.PathLike, options: Options, note=None) -> Summary:
    note = note or (lambda msg: print(f"scalefix: {msg}", file=sys.stderr))
    started = time.monotonic()
    src = Path(src)
    bundle = open_bundle(src)
    single_file = bundle.kind == "file"
    if bundle.unindexed_shards:  # following the index would silently lose them
        raise ScalefixError(f"shard {bundle.unindexed_shards[0]!r} is missing from the index: "
                            "fix the index (or move the file away) first", file=bundle.index_path)
    if bundle.unindexed:
        raise ScalefixError("is in a shard but missing from the index: fix the index first",
                            file=bundle.index_path, tensor=bundle.unindexed[0])
    result = classify(bundle)
    # the side tensors are read one by one by validation and the workers: asked for now,
    # they arrive while the plan is made, in one queue instead of a round trip each
    prefetch(side for qw in result.quantized.values() for side in qw.side_tensors)
    if options.target is not None:
        if single_file and not options.target.single_file_ok:
            raise ScalefixError(options.target.single_file_refusal(), file=src)
        plan = options.target.build_plan(result, options.max_shard_bytes, _base_name(bundle),
                                         single_file)
    elif options.rename_scales:
        plan = build_rename_plan(result, options.rename_scales, options.max_shard_bytes,
                                 _base_name(bundle), single_file)
    else:
        plan = build_plan(result, options.out_dtype, options.max_shard_bytes,
                          _base_name(bundle), single_file)
    summary = Summary(str(src), None, "nothing-to-do", plan.counts(), plan.config_changes,
                      notes=plan.count_lines(),
                      shards=len(plan.shards),
                      bytes_in=sum(h.file_size for h in bundle.headers.values()),
                      bytes_out=sum(s.nbytes for s in plan.shards))
    if plan.nothing_to_do:
        summary.seconds = time.monotonic() - started
        return summary
    dst = Path(options.out) if options.out else default_destination(src, options.suffix,
                                                                    single_file)
    summary.destination = str(dst)
    _check_destination(bundle.root, src, dst, single_file)
    plan.validate()
    reused = stage.reusable_shards(dst, plan) if options.resume and not single_file else set()
    reclaimed = _disk_space(plan, dst, single_file, options, reused, summary)
    if options.dry_run:
        summary.status = "dry-run"
        summary.seconds = time.monotonic() - started
        return summary
    if options.space_check and summary.disk_needed is not None:
        space.check(dst, summary.disk_needed, summary.disk_free, reclaimed, len(reused))
    summary.reused_shards = len(reused)
    try:
        _write(plan, dst, single_file, options, reused, note, summary)
    except Interrupted as exc:
        if dst.exists():  # the signal came after the final rename
            exc.detail = f"{dst} was already complete"
        else:
            exc.detail = f"{dst} not written; " + _left_behind(
                dst, single_file, "rerun with --resume to finish")
        raise
    except OSError as exc:
        code = space.out_of_space(exc)
        if code is None:
            raise
        raise ScalefixError(f"{os.strerror(code)} while writing it; " + _left_behind(
            dst, single_file, "free some space, then rerun with --resume"), file=dst) from None
    summary.status = "written"
    summary.seconds = time.monotonic() - started
    return summary


def _disk_space(plan, dst: Path, single_file: bool, options: Options, reused: set[str],
                summary: Summary) -> int:
    """Fill ``summary.disk_needed`` / ``disk_free`` for DST's filesystem (left None when it
    cannot tell); returns the bytes of leftovers the run replaces (counted as free)."""
    disk = space.free_bytes(dst.parent)
    if disk is None:
        return 0
    free, block = disk
    if single_file:  # an interrupted run's partial file is overwritten
        partial = stage.staging_path(dst)
        needed = space.output_bytes(plan, set(), [], [], block)
        reclaimed = space.tree_bytes(partial) if partial.is_file() else 0
    else:
        bundle = plan.classification.bundle
        keeps = plan.keeps_quantization_files
        configs = [bundle.root / "config.json"] if bundle.config is not None else []
        needed = space.output_bytes(plan, reused, files_to_copy(bundle, keeps), configs, block)
        reclaimed = stage.leftover_bytes(dst, reused if options.resume else None)
    summary.disk_needed, summary.disk_free = space.with_margin(needed), free + reclaimed
    return reclaimed


def _write(plan, dst: Path, single_file: bool, options: Options, reused: set[str], note,
           summary: Summary) -> None:
    """The writing phase; its threads are stopped and joined whatever happens."""
    reuse_large_buffers()
    progress = Progress(plan.source_bytes, "rewrite",
                        enabled=False if options.quiet else options.progress)
    pool = ThreadPoolExecutor(max_workers=max(1, options.workers))
    try:
        plan.begin(pool)
        if single_file:
            _write_single(plan, dst, progress, pool)
        else:
            _write_bundle(plan, dst, options, reused, progress, note, summary, pool)
    finally:  # queued decode jobs are dropped, not run, when the write failed or a signal came
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()


def _left_behind(dst: Path, single_file: bool, then: str) -> str:
    if single_file:
        return "nothing kept (the partial file was removed)"
    return stage.left_behind(dst, then)


def _write_single(plan: TargetPlan, dst: Path, progress: Progress, pool) -> None:
    (shard,) = plan.shards
    tmp = dst.with_name(f".{dst.name}.scalefix-partial")
    try:
        write_shard(tmp, shard, plan.jobs, progress, pool)
        os.replace(tmp, dst)
        stage.fsync_dir(dst.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_bundle(plan: TargetPlan, dst: Path, options: Options, reused: set[str],
                  progress: Progress, note, summary: Summary, pool) -> None:
    bundle = plan.classification.bundle
    staging = stage.prepare(dst, options.resume, note, reused)
    todo = []
    for shard in plan.shards:
        if shard.filename in reused:
            progress.advance(plan.shard_source_bytes(shard))
        else:
            todo.append((shard, plan.shard_fingerprint(shard)))
    if reused:
        note(f"resuming: {len(reused)} finished shard(s) checked and reused")

    for shard, fingerprint in todo:  # one shard at a time; its chunks use every worker
        write_shard(staging / f".{shard.filename}.tmp", shard, plan.jobs, progress, pool)
        stage.commit_shard(staging, shard.filename, fingerprint)
    plan.end(summary)
    summary.copied_files = copy_other_files(bundle, staging,
                                            keep_quant_files=plan.keeps_quantization_files)
    config = plan.output_config()
    if config is not None:
        write_json(staging / "config.json", config)
    stage.write_index(staging, plan.shards)  # the index goes in last
    stage.finish(staging, dst)


def render_summary(summary: Summary) -> str:
    if summary.status == "nothing-to-do":
        return (f"{summary.source}: nothing to do (already clean, or scales already named as "
                "asked)")
    counts = summary.counts
    lines = [f"{'would write' if summary.status == 'dry-run' else 'wrote'} "
             f"{summary.destination}  ({summary.shards} shard(s), "
             f"{human_bytes(summary.bytes_out)} from {human_bytes(summary.bytes_in)})"]
    if summary.status == "dry-run" and summary.disk_needed is not None:
        short = summary.disk_needed > summary.disk_free
        lines.append(f"  disk: needs {human_bytes(summary.disk_needed)}, "
                     f"{human_bytes(summary.disk_free)} free on its filesystem"
                     + (" (not enough: the run would refuse)" if short else ""))
    lines += summary.notes
    for scheme, n in sorted(counts["dequantized"].items()):
        lines.append(f"  dequantized {n:6d}  {scheme}")
    if counts["cast_without_scale"]:
        lines.append(f"  decoded {counts['cast_without_scale']:8d}  FP8 weights without a scale"
                     " (scale 1)")
    if counts["renamed"]:
        lines.append(f"  renamed {counts['renamed']:8d}  scale tensors (data copied byte for byte)")
    lines.append(f"  copied {counts['copied']:9d}  tensors, byte for byte")
    for why, n in sorted(counts["dropped"].items()):
        lines.append(f"  dropped {n:8d}  {why}")
    for change in summary.config_changes:
        lines.append(f"  {change}")
    if summary.copied_files:
        shown = ", ".join(summary.copied_files[:6])
        lines.append(f"  other files copied: {shown}"
                     + (f" and {len(summary.copied_files) - 6} more"
                        if len(summary.copied_files) > 6 else ""))
    if summary.reused_shards:
        lines.append(f"  reused {summary.reused_shards} finished shard(s) (--resume)")
    if summary.seconds and summary.status == "written":
        rate = summary.bytes_out / summary.seconds
        lines.append(f"  {summary.seconds:.1f} s, {human_bytes(rate)}/s written")
    lines += summary.quality_notes
    if summary.status == "written" and "requantized" not in counts:
        lines.append(f"check it: scalefix verify {summary.source} {summary.destination}")
    return "\n".join(lines)


def summary_json(summary: Summary) -> str:
    return json.dumps(summary.__dict__, indent=2)
