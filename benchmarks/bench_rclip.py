"""rclip 3.3 beside photosearch: the same photos, the same model architecture (random weights), in one run.

    flock /tmp/photosearch-bench.lock python benchmarks/bench_rclip.py                  # 240 photos, 5 runs each
    flock /tmp/photosearch-bench.lock python benchmarks/bench_rclip.py --photos 1000

What a person waits for when no server runs: a cold text query in a new process, a no-change re-run of
indexing, and the first indexing of the folder. Every timed command is the real console script of each tool in
a new process (the page cache warm, the process not), alternated run by run so both see the same machine; the
median of --runs is reported, and photosearch's time over rclip's.

rclip runs from PyPI in a virtualenv of its own (--rclip-venv, made with `pip install rclip==3.3.0` when
missing: rclip pins numpy 2.1, so it cannot share photosearch's). It runs offline from its data folder
(RCLIP_DATADIR): ViT-B-32-256-datacomp_s34b_b86k/{textual,visual}.onnx and the tokenizer's BPE merges. Those
ONNX files are exported here, as rclip's own conversion script does (torch.onnx.export of each tower, input
"input", the projected embedding out), from transformers' CLIPModel with ../shared/clip-tokenizer/config.json's
ViT-B/32 architecture at rclip's 256 px and random weights; open_clip itself cannot be installed offline (it
pulls torchvision, whose wheels pull a CUDA torch). Its merges are the same file as the tokenizer's merges.txt.
photosearch runs the same architecture at its checkpoint's 224 px.

rclip has no index-only command: its "no-change re-run of indexing" is `rclip -f QUERY` (it updates the index,
then answers), its cold query `rclip -n -f QUERY` (no indexing). photosearch's are `photosearch index` and
`photosearch search QUERY -k 10`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from camera_photos import camera_photos
from machine import CLIP_FILES, cpu_model, save_random_clip

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "testdata" / "exif-samples"
RCLIP = "rclip==3.3.0"
MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"  # the folder rclip 3.3 loads its ONNX files from
QUERY = "a dog on the beach"

EXPORT = """
import sys, torch
from transformers import CLIPConfig, CLIPModel
config = CLIPConfig.from_json_file(sys.argv[1])
config.vision_config.image_size = 256  # rclip's ViT-B-32-256
torch.manual_seed(0)
model = CLIPModel(config).eval()
class Text(torch.nn.Module):
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, input): return self.m.get_text_features(input_ids=input).pooler_output
class Visual(torch.nn.Module):
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, input): return self.m.get_image_features(pixel_values=input).pooler_output
with torch.no_grad():
    for tower, example, name in ((Text(model), torch.zeros(1, 77, dtype=torch.int64), "textual"),
                                 (Visual(model), torch.zeros(1, 3, 256, 256), "visual")):
        torch.onnx.export(tower, (example,), f"{sys.argv[2]}/{name}.onnx", input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "n"}}, dynamo=False, opset_version=18)
"""


def rclip_data(cache: Path) -> Path:
    """rclip's model files, exported once into the cache (a folder renamed when complete)."""
    folder = cache / "rclip-3.3-data-vit-b32-random"
    if not (folder / MODEL_SUBDIR / "textual.onnx").is_file():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / MODEL_SUBDIR).mkdir(parents=True)
        (staging / "tokenizer").mkdir()
        print("exporting the random ViT-B/32 to ONNX for rclip (once)", flush=True)
        subprocess.run([sys.executable, "-c", EXPORT, str(CLIP_FILES / "config.json"), str(staging / MODEL_SUBDIR)],
                       check=True, capture_output=True)  # fmt: skip
        merges = (CLIP_FILES / "merges.txt").read_bytes()
        (staging / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress(merges))
        staging.rename(folder)
    return folder


def rclip_venv(venv: Path) -> Path:
    exe = venv / "bin" / "rclip"
    if not exe.exists():
        print(f"installing {RCLIP} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", RCLIP], check=True)
    return exe


def timed(cmd: list[str], env: dict[str, str], cwd: Path, lines: int | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or (lines is not None and len(done.stdout.splitlines()) != lines):
        sys.exit(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=240)
    parser.add_argument("--runs", type=int, default=5, help="new processes timed per command (default 5)")
    parser.add_argument("--size", default="2000x1500", help="the photos' pixels (default 2000x1500)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "photosearch-bench-rclip",
        help="photos, models and rclip's virtualenv, kept between runs",
    )
    parser.add_argument("--rclip-venv", type=Path, help="default: CACHE/rclip-3.3-venv")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))
    rclip = rclip_venv(args.rclip_venv or args.cache / "rclip-3.3-venv")
    model = save_random_clip(args.cache / "model-clip-vit-b32-random")
    models = rclip_data(args.cache)
    sources = camera_photos(args.cache, args.photos, SAMPLES, (width, height))

    with tempfile.TemporaryDirectory(prefix="bench-rclip-") as scratch_name:
        scratch = Path(scratch_name)
        photos = scratch / "photos"
        photos.mkdir()
        for source in sources:
            shutil.copy(source, photos / source.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOTOSEARCH_", "RCLIP_"))}
        env |= {"XDG_CONFIG_HOME": str(scratch / "xdg"), "HF_HUB_OFFLINE": "1"}
        rclip_env = env | {"RCLIP_DATADIR": str(scratch / "rclip-data")}
        (scratch / "rclip-data").mkdir()
        for entry in models.iterdir():
            (scratch / "rclip-data" / entry.name).symlink_to(entry)
        ps = [str(Path(sys.executable).with_name("photosearch")), "--data-dir", str(scratch / "data"),
              "--model", str(model)]  # fmt: skip
        commands = {
            "photosearch_no_change_index_s": ([*ps, "index", "--no-progress"], env, None),
            "rclip_no_change_index_s": ([str(rclip), "-f", QUERY], rclip_env, 10),
            "photosearch_cold_query_s": ([*ps, "search", QUERY, "-k", "10"], env, 10),
            "rclip_cold_query_s": ([str(rclip), "-n", "-f", QUERY], rclip_env, 10),
        }
        figures = {
            "photosearch_first_index_s": timed([*ps, "index", "--no-progress", str(photos)], env, photos),
            "rclip_first_index_s": timed([str(rclip), "-f", QUERY], rclip_env, photos, 10),
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (cmd, run_env, lines) in commands.items():
                walls[name].append(timed(cmd, run_env, photos, lines))
        figures |= {name: float(np.median(values)) for name, values in walls.items()}
    report(args, figures)


def report(args: argparse.Namespace, f: dict[str, float]) -> None:
    for what in ("first_index", "no_change_index", "cold_query"):
        ours, theirs = f[f"photosearch_{what}_s"], f[f"rclip_{what}_s"]
        f[f"{what}_ratio"] = ours / theirs
        label = what.replace("_", " ")
        print(f"{label:>16}: photosearch {ours:6.2f} s   rclip {theirs:6.2f} s   ratio {ours / theirs:.2f}")
    command = f"python benchmarks/bench_rclip.py --photos {args.photos} --runs {args.runs} --size {args.size}"
    print(f"| {datetime.now():%Y-%m-%d} | {cpu_model()}, {os.cpu_count()} cores | {args.photos} ({args.size}) "
          f"| {f['photosearch_cold_query_s']:.2f} / {f['rclip_cold_query_s']:.2f} s ({f['cold_query_ratio']:.2f}) "
          f"| {f['photosearch_no_change_index_s']:.2f} / {f['rclip_no_change_index_s']:.2f} s "
          f"({f['no_change_index_ratio']:.2f}) "
          f"| {f['photosearch_first_index_s']:.1f} / {f['rclip_first_index_s']:.1f} s ({f['first_index_ratio']:.2f}) "
          f"| `{command}` |")  # fmt: skip
    print("RESULT " + json.dumps(f | {"photos": args.photos, "runs": args.runs}))


if __name__ == "__main__":
    main()
