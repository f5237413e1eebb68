"""Cut training images into a pack of tiles (``pcsr.data.write_pack``): the form in which a
data set travels to a machine that cannot reach it (a GPU lent for minutes, which takes at
most 64 MiB with a call).

    python scripts/make_pack.py data/photos data/skimage -o data/pack/phase1.pack --tiles 1200 --max-mib 24

Tiles are drawn as ``pcsr train`` draws its crops (an image in proportion to its area, a
uniform position; flips are left to training time) from ``--seed``, so the pack is
reproducible from the folders; ``--max-mib`` stops early when the file would grow past it.
"""
from __future__ import annotations

import argparse
import sys

from pcsr.data import AUTHORS_RESCALE, find_images, write_pack


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="folders (or files) of training images")
    p.add_argument("-o", "--out", required=True, help="the pack to write (.pack)")
    p.add_argument("--tile", type=int, default=128, help="tile side in HR pixels (default 128, the training crop)")
    p.add_argument("--tiles", type=int, default=1000, help="number of tiles (default 1000)")
    p.add_argument("--max-mib", type=float, default=None, help="stop before the file passes this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rescale", type=float, nargs="*", metavar="S",
                   help="scale augmentation as `pcsr train --rescale` (the flag alone: 1 0.9 0.8 0.7 0.6)")
    args = p.parse_args(argv)
    if not args.out.endswith(".pack"):
        p.error("the output name must end in .pack")
    manifest = write_pack(find_images(args.data), args.out, args.tile, args.tiles, seed=args.seed,
                          max_bytes=None if args.max_mib is None else int(args.max_mib * 2 ** 20),
                          note="python scripts/make_pack.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                          rescale=None if args.rescale is None else (args.rescale or AUTHORS_RESCALE))
    print(f"{args.out}: {manifest['count']} tiles of {args.tile}x{args.tile} from {len(manifest['sources'])} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
