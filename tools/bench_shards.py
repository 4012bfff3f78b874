"""Benchmark: the image-sharded sweep on a COCO-size cache, in this process and on Ray clusters of
1, 2 and 4 workers.

The cache and the grid are `tools/bench_coco.py`'s (5000 images, 80 categories, 44M entries;
score 0.05,0.1,0.2,0.3,0.5 x IoU 0.4,0.5,0.6,0.7, Model Garden's v2 by default). Each run is a
whole process, ``python -m detsearch sweep --cache ... -v``:

- in this process, the whole cache as one range (the default) and as ``--local-shards`` ranges;
- on a Ray cluster of N workers for each N of ``--workers`` (``ray start --head --num-cpus N``,
  then ``--executor ray --ray-address auto``, twice N ranges by default), the cluster started
  before the timing and stopped after it;
- in this process with ``--limit-shards`` ranges under a memory limit below the cache's size
  (``--memory-limit``, default 0.8 x the cache on disk): a memory cgroup (v2 ``memory.max`` or
  v1 ``memory.limit_in_bytes``; needs the right to make one, else the run is skipped and says
  so). The limit counts the process's own memory and the page cache of the files it reads;
  the kernel evicts cache pages to stay under it, so the sweep must fit in what is left. A
  ``prlimit --as`` limit does not serve: memory-mapping a file reserves address space for all
  of it, resident or not.

Printed per run: wall time, the driver's peak RSS, and from the sweep's log the seconds spent in
the tasks building range engines (reading the range, sorting its candidates) and evaluating
(NMS and matching), and in the driver merging and accumulating. Speed-up is against the
in-process run; efficiency is speed-up / N. ``rest`` is what the wall time holds beyond the
tasks' work spread over N workers and the driver's merging: in every run the process's start,
reading the cache and the ground truth, the chosen configuration's details and the report;
on Ray also its scheduling, moving the results and idle workers, which ``Ray s`` (rest minus
the in-process run's) isolates. On a machine with fewer cores than N, N workers share the
cores: the work seconds grow and the efficiency shows it. Exit status 1 when any table
differs from the in-process one.

Usage:
  python tools/bench_shards.py                         # the COCO-size cache (made once, ~5 minutes)
  python tools/bench_shards.py --images 500 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_coco import IOUS, SCORES, build_one_stage, disk_bytes  # noqa: E402

LOG = re.compile(r"sweep: (\d+) tasks \(\d+ NMS settings x (\d+) image ranges, \d+ waves\) in ([\d.]+)s: in the "
                 r"tasks ([\d.]+)s building engines and ([\d.]+)s evaluating; here ([\d.]+)s merging")


def sweep_process(argv: list[str], out: Path, cgroup: Path | None = None) -> dict:
    """Runs one ``detsearch sweep`` under ``/usr/bin/time`` (in ``cgroup`` when given); its wall
    time, peak RSS, log figures and table."""
    import time

    with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        command = ["/usr/bin/time", "-o", timing.name, "-f", "%M", sys.executable, "-m", "detsearch", "sweep", *argv,
                   "--out", str(out), "--no-progress", "-v"]
        if cgroup is not None:  # the shell joins the group, then becomes the command
            command = ["bash", "-c", f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"', "bash", *command]
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            killed = done.returncode in (-9, 137) or "signal 9" in done.stderr
            sys.exit(f"sweep failed ({done.returncode}{', killed: out of memory' if killed and cgroup else ''}):"
                     f"\n{done.stderr[-3000:]}")
        peak = int(timing.read().split()[-1]) / 1e6
    found = LOG.search(done.stderr)
    if found is None:
        sys.exit(f"no task summary in the sweep's log:\n{done.stderr[-3000:]}")
    tasks, ranges, _, build_s, work_s, merge_s = found.groups()
    return dict(wall=wall, peak=peak, tasks=int(tasks), ranges=int(ranges), build=float(build_s), work=float(work_s),
                merge=float(merge_s), table=json.loads((out / "result.json").read_text())["table"])


def memory_cgroup(limit_bytes: int) -> Path | None:
    """A new memory cgroup limited to ``limit_bytes`` (v2, else v1), or None where none can be
    made here."""
    for root, limit_file in ((Path("/sys/fs/cgroup"), "memory.max"), (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")):
        if not (root / limit_file).exists() and not (root / "cgroup.controllers").exists():
            continue
        group = root / f"detsearch_bench_{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit_bytes))
            (group / "memory.swap.max" if limit_file == "memory.max" else group / "memory.swappiness").write_text("0")
            return group
        except OSError:
            if group.exists():
                group.rmdir()
    return None


def ray(*argv: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("ray")), *argv], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images (default 5000, COCO val)")
    parser.add_argument("--rows-per-image", type=int, default=6100, help="candidate boxes per image (default 6100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nms-version", default="v2", choices=("v2", "batched", "v1"))
    parser.add_argument("--workers", default="1,2,4", help="Ray cluster sizes (default 1,2,4)")
    parser.add_argument("--local-shards", type=int, default=10, help="image ranges of the second in-process run (default 10)")
    parser.add_argument("--memory-limit", type=float, default=0.8,
                        help="the memory-limited run's limit, as a fraction of the cache's bytes on disk (default 0.8; 0: no such run)")
    parser.add_argument("--limit-shards", type=int, default=20, help="image ranges of the memory-limited run (default 20)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "detsearch_bench_coco",
                        help="where the cache is made and kept (default: the temp folder, shared with bench_coco.py)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache, annotations = build_one_stage(args.work, args.images, args.rows_per_image, args.seed)
    on_disk = disk_bytes(cache)
    print(f"cache: {cache} ({args.images} images, {on_disk / 1e9:.2f} GB on disk); nms_version {args.nms_version}; "
          f"{os.cpu_count()} CPUs here")
    common = ["--cache", str(cache), "--annotations", str(annotations), "--score-thresholds", SCORES,
              "--iou-thresholds", IOUS, "--nms-version", args.nms_version]
    header = (f"{'run':28s} {'wall s':>7s} {'speed-up':>8s} {'effic.':>6s} {'driver RSS':>10s} {'tasks':>5s} "
              f"{'build s':>7s} {'eval s':>7s} {'merge s':>7s} {'rest s':>6s} {'Ray s':>6s}")
    print(header)
    rows, same = [], True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A first run compiles the NMS kernels into numba's cache; every timed run finds them there.
        sweep_process(common + ["--score-thresholds", "0.5", "--iou-thresholds", "0.5"], tmp / "warm")
        runs = [("in-process, 1 range", 1, []), (f"in-process, {args.local_shards} ranges", 1,
                                                  ["--shards", str(args.local_shards)])]
        runs += [(f"ray, {n} worker{'s' if n > 1 else ''}", n, ["--executor", "ray", "--ray-address", "auto"])
                 for n in (int(v) for v in args.workers.split(","))]
        base = None
        for i, (label, workers, extra) in enumerate(runs):
            on_ray = "ray" in extra
            if on_ray:
                ray("stop", "--force")
                ray("start", "--head", f"--num-cpus={workers}", "--include-dashboard=false", "--disable-usage-stats")
            try:
                figures = sweep_process(common + extra, tmp / f"out{i}")
            finally:
                if on_ray:
                    ray("stop", "--force")
            base = base or figures
            same &= figures["table"] == base["table"]
            speedup = base["wall"] / figures["wall"]
            figures["rest"] = figures["wall"] - (figures["build"] + figures["work"]) / workers - figures["merge"]
            ray_seconds = f"{figures['rest'] - base['rest']:6.1f}" if on_ray else f"{'':6s}"
            print(f"{label:28s} {figures['wall']:7.1f} {speedup:7.2f}x {speedup / workers:6.2f} "
                  f"{figures['peak']:6.2f} GB {figures['tasks']:5d} {figures['build']:7.1f} {figures['work']:7.1f} "
                  f"{figures['merge']:7.1f} {figures['rest']:6.1f} {ray_seconds}", flush=True)
            rows.append((label, figures))
        if args.memory_limit > 0:
            limit = int(args.memory_limit * on_disk)
            group = memory_cgroup(limit)
            if group is None:
                print(f"memory-limited run skipped: no memory cgroup can be made here (needs root, or "
                      f"systemd-run --user --scope -p MemoryMax={limit} on a systemd host)")
            else:
                try:
                    figures = sweep_process(common + ["--shards", str(args.limit_shards)], tmp / "limited", group)
                finally:
                    group.rmdir()
                same &= figures["table"] == base["table"]
                print(f"in-process, {args.limit_shards} ranges, under a {limit / 1e9:.2f} GB memory limit "
                      f"({limit / on_disk:.2f}x the cache): {figures['wall']:.1f} s, table identical: "
                      f"{figures['table'] == base['table']}")
    print(f"driver peak RSS / cache on disk: in-process {base['peak'] * 1e9 / on_disk:.1f}x")
    print(f"every table identical to the in-process one: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
