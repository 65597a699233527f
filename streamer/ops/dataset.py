"""``shelfcast data``: the full UCI Online Retail data set, downloaded once into a cache.

The repository ships only slices of it (``streamer/data``, ``tests/data``); the full year is
what the accuracy and throughput benchmarks read. UCI serves it as an .xlsx inside a zip, so
``fetch`` converts it to the CSV layout the replay reads and checks the result against a pinned
sha256. Offline, it says where to put the file by hand and accepts it there once it verifies.

The set is UCI id 352, CC BY 4.0: Daqing Chen, Sai Liang Sain, Kun Guo (2012), "Data mining for
the online retail industry", Journal of Database Marketing and Customer Strategy Management
19(3), doi:10.1057/dbm.2012.17.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "COLUMNS",
    "CSV_SHA256",
    "FILE_NAME",
    "GZ_SHA256",
    "MISSING_HELP",
    "UCI_URL",
    "ZIP_NAME",
    "DataError",
    "default_path",
    "fetch",
    "hand_placement_help",
    "verify",
    "xlsx_zip_to_csv",
]

UCI_URL = "https://archive.ics.uci.edu/static/public/352/online+retail.zip"
FILE_NAME = "online_retail.csv.gz"
ZIP_NAME = "online+retail.zip"
# Two pins for the same content: the gzip file as the project has distributed it, and its
# uncompressed CSV text, which a conversion on another machine reproduces whatever its gzip
# settings.
GZ_SHA256 = "157e69e27039e9618d3e09c0ea58f78c2e5915c95841be7c1c5cab960f9329c6"
CSV_SHA256 = "1b8d9b40edc8ca0f4a23760dae263a9a69b1b9550257866296056af8224899a4"
COLUMNS = [
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
    "CustomerID", "Country",
]  # fmt: skip


class DataError(RuntimeError):
    """The data set is missing or does not verify; the message says what to do."""


def default_path() -> Path:
    """Where ``shelfcast data fetch`` puts the data set (``shelfcast data path`` prints it)."""
    from streamer.config.settings import Settings

    return Settings.from_env().data_dir / FILE_NAME


MISSING_HELP = (
    "run `shelfcast data fetch` to download it, or pass --data with the Online Retail CSV"
)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_gunzipped(path: Path) -> str:
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, gz_sha256: str = GZ_SHA256, csv_sha256: str = CSV_SHA256) -> str | None:
    """None when ``path`` holds the pinned data set, else what is wrong."""
    if _sha256_file(path) == gz_sha256:
        return None
    try:
        got = _sha256_gunzipped(path)
    except (OSError, EOFError) as exc:
        return f"{path} is not a readable gzip file ({exc})"
    if got == csv_sha256:
        return None
    return f"{path}: sha256 of its CSV text is {got}, expected {csv_sha256}"


def xlsx_zip_to_csv(zip_path: Path) -> bytes:
    """The CSV text (header ``InvoiceNo,...,Country``) of the .xlsx inside UCI's zip."""
    import pandas as pd

    with zipfile.ZipFile(zip_path) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith(".xlsx")]
        if not names:
            raise DataError(f"{zip_path} holds no .xlsx file; is it UCI's online+retail.zip?")
        book = archive.read(names[0])
    try:
        df = pd.read_excel(
            io.BytesIO(book),
            engine="openpyxl",
            dtype={"InvoiceNo": str, "StockCode": str, "Description": str, "Country": str},
        )
    except ImportError as exc:
        raise DataError(f"reading the .xlsx needs openpyxl: pip install openpyxl ({exc})") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{zip_path}: the sheet lacks columns {missing}; is it Online Retail?")
    df = df[COLUMNS].copy()
    # Excel stores times as fractions of a day: round away the float noise
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"]).dt.round("s")
    df["CustomerID"] = df["CustomerID"].astype("Int64")  # 17850, not 17850.0
    return df.to_csv(index=False, lineterminator="\n").encode()


def _download(url: str, dest: Path, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as f:
        shutil.copyfileobj(response, f)
    part.replace(dest)


def hand_placement_help(directory: Path, url: str = UCI_URL) -> str:
    return (
        f"download {url} by hand and put it in {directory}/ as {ZIP_NAME} (or copy a verified "
        f"{FILE_NAME} there), then run `shelfcast data fetch` again"
    )


def fetch(
    directory: Path,
    url: str = UCI_URL,
    timeout: float = 60.0,
    say: Callable[[str], None] = print,
    gz_sha256: str = GZ_SHA256,
    csv_sha256: str = CSV_SHA256,
) -> Path:
    """The verified data set in ``directory``: already there, made from a zip placed there by
    hand, or downloaded from ``url`` and converted. Raises ``DataError`` saying what to do."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / FILE_NAME
    if target.exists():
        if (problem := verify(target, gz_sha256, csv_sha256)) is not None:
            raise DataError(f"{problem}; delete it and run `shelfcast data fetch` again")
        say(f"already there and verified: {target}")
        return target
    archive = directory / ZIP_NAME
    if not archive.exists():
        say(f"downloading {url}")
        try:
            _download(url, archive, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(
                f"cannot download ({reason}): {hand_placement_help(directory, url)}"
            ) from exc
    say(f"converting {archive} to CSV (about a minute)")
    try:
        text = xlsx_zip_to_csv(archive)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{archive} is not a zip file ({exc}): delete it; {hand_placement_help(directory, url)}"
        ) from exc
    got = hashlib.sha256(text).hexdigest()
    if got != csv_sha256:
        unverified = directory / ("unverified-" + FILE_NAME)
        unverified.write_bytes(gzip.compress(text, mtime=0))
        raise DataError(
            f"the converted CSV's sha256 is {got}, expected {csv_sha256} (UCI may have changed "
            f"the file); it is kept as {unverified}: rename it to {target} to use it anyway"
        )
    part = target.with_name(target.name + ".part")
    part.write_bytes(gzip.compress(text, mtime=0))
    part.replace(target)
    archive.unlink()
    return target
