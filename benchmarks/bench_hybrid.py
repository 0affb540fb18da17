"""Hybrid planning cost: rendering contour images and building gated plans, per image.

    python benchmarks/bench_hybrid.py [--images 200] [--sizes 224,1024]

Contours are rendered once per (query, map, threshold) and reused; this measures the first
render (read the query, upsample the 28x28 map, outline, PNG) of a natural image at MVTec-like sizes, and a rerun
that finds every PNG in place (hashing them only); `render_many` (what the planners call, 4
threads) against one image at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mmad.hybrid.contours import ContourRequest, render, render_many


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--sizes", default="224,1024")
    args = parser.parse_args()
    from skimage import data
    rng = np.random.default_rng(0)
    photo = Image.fromarray(data.astronaut())  # a natural image: PNG cost depends on content (noise is 2x slower)
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as tmp:
            folder = Path(tmp)
            queries, grids = [], []
            for i in range(args.images):
                path = folder / f"q{i:04d}.png"
                shifted = np.roll(np.asarray(photo.resize((size, size))), i, axis=1)  # a distinct file per query
                Image.fromarray(shifted).save(path, compress_level=1)
                grid = rng.uniform(0, 1, (28, 28)).astype(np.float16)
                grid[rng.integers(0, 28), rng.integers(0, 28)] = 3
                queries.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
                grids.append(grid)
            requests = [ContourRequest(path, grid, 1.5, sha, f"map{i}") for i, ((path, sha), grid)
                        in enumerate(zip(queries, grids))]
            start = time.perf_counter()
            for item in requests[:20]:
                render(item.query, item.grid, item.threshold, folder / "one", query_sha256=item.query_sha256,
                       map_digest=item.map_digest)
            print(f"{size:5d} px, 20 images, one at a time        : "
                  f"{(time.perf_counter() - start) / 20 * 1000:7.2f} ms/image")
            for label in ("first render", "rerun (PNGs in place)"):
                start = time.perf_counter()
                render_many(requests, folder / "contours")
                elapsed = time.perf_counter() - start
                print(f"{size:5d} px, {args.images} images, render_many, {label:22s}: "
                      f"{elapsed / args.images * 1000:7.2f} ms/image")


if __name__ == "__main__":
    main()
