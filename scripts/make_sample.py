"""Write the real-data sample shipped for the demo and tests.

Every line, in file order, of the SKUs with the most order lines, between two dates, from the
UCI Online Retail data set (CC BY 4.0; see ../shared/data/README.md for the citation). Whole
SKUs are kept so event ids (invoice, code, repeat) match those of the full file.

    python scripts/make_sample.py [--source PATH] [--skus 25] [--until 2011-06-01]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=ROOT.parent / "shared/data/online_retail.csv.gz"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "streamer/data/online_retail_sample.csv.gz"
    )
    parser.add_argument("--skus", type=int, default=25)
    parser.add_argument("--until", default="2011-06-01")
    args = parser.parse_args()
    df = pd.read_csv(args.source, dtype=str, keep_default_na=False)
    top = df[df["Quantity"].astype(int) > 0]["StockCode"].value_counts().head(args.skus).index
    keep = df["StockCode"].isin(top) & (df["InvoiceDate"] < args.until)
    df[keep].to_csv(args.out, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{int(keep.sum())} lines, {len(top)} SKUs -> {args.out}")


if __name__ == "__main__":
    main()
