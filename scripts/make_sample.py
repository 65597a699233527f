"""Write the real-data slices shipped for the demo and tests.

By default: every line, in file order, of the SKUs with the most order lines, between two dates,
from the UCI Online Retail data set (CC BY 4.0; citation in streamer/data/README.md). Whole SKUs
are kept so event ids (invoice, code, repeat) match those of the full file. With ``--head N``:
the first N lines, unchanged (tests/data/README.md).

The source is the full set, which ``shelfcast data fetch`` downloads; by default the path
``shelfcast data path`` prints.

    python scripts/make_sample.py [--source PATH] [--skus 25] [--until 2011-06-01]
    python scripts/make_sample.py --head 52000 --out tests/data/online_retail_head52k.csv.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from streamer.config.settings import Settings
from streamer.ops.dataset import FILE_NAME

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=Settings.from_env().data_dir / FILE_NAME,
        help="the full data set (default: the path `shelfcast data path` prints)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "streamer/data/online_retail_sample.csv.gz"
    )
    parser.add_argument("--skus", type=int, default=25)
    parser.add_argument("--until", default="2011-06-01")
    parser.add_argument("--head", type=int, help="write the first N lines instead")
    args = parser.parse_args()
    if not args.source.is_file():
        sys.exit(f"{args.source} not found: run `shelfcast data fetch` first, or pass --source")
    df = pd.read_csv(args.source, dtype=str, keep_default_na=False)
    if args.head:
        keep = df.index < args.head
    else:
        top = df[df["Quantity"].astype(int) > 0]["StockCode"].value_counts().head(args.skus).index
        keep = df["StockCode"].isin(top) & (df["InvoiceDate"] < args.until)
    df[keep].to_csv(args.out, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{int(keep.sum())} lines -> {args.out}")


if __name__ == "__main__":
    main()
