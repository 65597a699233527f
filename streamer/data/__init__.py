"""Real-data slices shipped with shelfcast (README.md here: source, licence, citation)."""

from pathlib import Path

__all__ = ["SAMPLE"]

SAMPLE = Path(__file__).parent / "online_retail_sample.csv.gz"
