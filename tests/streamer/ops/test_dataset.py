"""`shelfcast data fetch`: download, convert UCI's spreadsheet, verify; offline, say what to do."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from streamer.ops.dataset import FILE_NAME, ZIP_NAME, DataError, fetch, verify

# What this project's CSV holds for these lines (the full set, by `shelfcast data fetch`)
CSV = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,"
    "United Kingdom\n"
    '536381,82567,"AIRLINE LOUNGE,METAL SIGN",2,2010-12-01 09:41:00,2.1,15311,United Kingdom\n'
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527,United Kingdom\n"
    "536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom\n"
)


def uci_zip(path: Path) -> Path:
    """A zip like UCI's: one .xlsx, numbers stored as numbers, times as Excel dates."""
    df = pd.DataFrame(
        {
            "InvoiceNo": [536365, 536381, "C536379", 536414],
            "StockCode": ["85123A", 82567, "D", 22139],
            "Description": [
                "WHITE HANGING HEART T-LIGHT HOLDER", "AIRLINE LOUNGE,METAL SIGN", "Discount", None,
            ],
            "Quantity": [6, 2, -1, 56],
            "InvoiceDate": [
                datetime(2010, 12, 1, 8, 26), datetime(2010, 12, 1, 9, 41),
                datetime(2010, 12, 1, 9, 41), datetime(2010, 12, 1, 11, 52),
            ],
            "UnitPrice": [2.55, 2.1, 27.5, 0.0],
            "CustomerID": [17850.0, 15311.0, 14527.0, None],
            "Country": ["United Kingdom"] * 4,
        }
    )  # fmt: skip
    book = path.with_suffix(".xlsx")
    df.to_excel(book, index=False, engine="openpyxl")
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(book, "Online Retail.xlsx")
    return path


def pins(text: str) -> dict[str, str]:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {"gz_sha256": "0" * 64, "csv_sha256": digest}


def test_fetch_downloads_converts_and_verifies(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    source = uci_zip(tmp_path / "src" / "online+retail.zip")
    said: list[str] = []
    cache = tmp_path / "cache"
    path = fetch(cache, url=source.as_uri(), say=said.append, **pins(CSV))
    assert path == cache / FILE_NAME
    assert gzip.decompress(path.read_bytes()).decode() == CSV
    assert not (cache / ZIP_NAME).exists()  # the download is not kept once converted
    assert any("downloading" in line for line in said)
    # a second run finds it and checks it again, without the network
    said.clear()
    assert fetch(cache, url="http://127.0.0.1:9/x.zip", say=said.append, **pins(CSV)) == path
    assert said == [f"already there and verified: {path}"]


def test_a_conversion_that_does_not_match_the_pin_is_kept_aside(tmp_path: Path) -> None:
    uci_zip(tmp_path / ZIP_NAME)  # placed by hand
    with pytest.raises(DataError) as err:
        fetch(tmp_path, say=lambda _: None, gz_sha256="0" * 64, csv_sha256="1" * 64)
    assert "rename it to" in str(err.value)
    assert not (tmp_path / FILE_NAME).exists()
    assert (tmp_path / ("unverified-" + FILE_NAME)).exists()


def test_offline_it_says_where_to_put_the_file_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        fetch(tmp_path, url="http://127.0.0.1:9/online+retail.zip", timeout=5, say=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    assert "cannot download" in message and "by hand" in message
    assert f"{tmp_path}/ as {ZIP_NAME}" in message and FILE_NAME in message


def test_a_file_placed_by_hand_is_accepted_only_if_it_verifies(tmp_path: Path) -> None:
    placed = tmp_path / FILE_NAME
    placed.write_bytes(gzip.compress(CSV.encode()))  # any gzip settings: the text is pinned
    assert fetch(tmp_path, url="http://127.0.0.1:9/x", say=lambda _: None, **pins(CSV)) == placed
    assert verify(placed, **pins(CSV)) is None
    placed.write_bytes(gzip.compress(CSV.replace("6,", "7,").encode()))
    with pytest.raises(DataError, match="delete it and run `shelfcast data fetch` again"):
        fetch(tmp_path, say=lambda _: None, **pins(CSV))
    placed.write_bytes(b"not gzip")
    assert "not a readable gzip file" in (verify(placed) or "")
