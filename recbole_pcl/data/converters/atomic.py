"""Shared machinery of the dataset converters: one atomic output directory, checked input columns,
streamed tab-separated writing of RecBole atomic files.

A converter describes its input (:func:`describe_sources`) and passes a ``write(tmp_dir)``
function to :func:`convert_atomically`, which

1. returns ``out_dir`` untouched when its ``.complete`` marker already describes the same input;
2. otherwise runs ``write`` inside a fresh temporary *sibling* directory of ``out_dir`` (same file
   system, so the final rename is atomic), writes the marker last, and only then renames the
   temporary directory onto ``out_dir``;
3. on any failure removes the temporary directory and leaves ``out_dir`` as it was: absent, or a
   previous complete conversion.

Input files are read with :func:`read_csv_chunks`, which checks that the file and its columns exist
and that every value has the expected kind, raising :class:`PCLError` with a one-line message that
names the file (full path) and the column at fault. Output files are written with
:class:`AtomicFileWriter` (header ``name:type``, tab-separated, one ``pandas.DataFrame`` chunk at a
time so memory stays bounded by the chunk size).
"""

import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recbole_pcl.utils.errors import PCLError

logger = logging.getLogger(__name__)

MARKER = ".complete"
#: Bump when the output of a converter changes, so older conversions are redone, not reused.
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- atomic directory
def describe_sources(converter: str, dataset_name: str, files: Sequence[Path]) -> dict:
    """What a conversion is made from: written to (and compared with) the ``.complete`` marker.

    Each file is named by its resolved path, size and modification time, so an edited or replaced
    source is converted again instead of being served from a stale output. Raises :class:`PCLError`
    for a missing file.
    """
    sources = []
    for file in files:
        file = Path(file)
        if not file.is_file():
            raise PCLError(f"{file.absolute()}: file not found")
        stat = file.stat()
        sources.append({"path": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {
        "converter": converter,
        "format_version": FORMAT_VERSION,
        "dataset_name": dataset_name,
        "sources": sources,
    }


def is_complete(out_dir: Path, description: dict) -> bool:
    """True when ``out_dir`` holds a finished conversion of exactly ``description``."""
    marker = Path(out_dir) / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == description
    except (OSError, ValueError):
        return False


def check_dataset_name(dataset_name: str) -> str:
    """A dataset name becomes file names inside ``out_dir``: refuse paths and empty names."""
    if not dataset_name or dataset_name in (".", "..") or any(sep in dataset_name for sep in "/\\"):
        raise PCLError(f"dataset name '{dataset_name}' must be a plain, non-empty file name")
    return dataset_name


def convert_atomically(out_dir, description: dict, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` and move its result to ``out_dir`` only if it fully succeeded.

    ``out_dir`` may be absent or hold a complete conversion of another input (it is then replaced
    after the new one succeeded). A directory without our marker is refused rather than deleted:
    it may hold the user's own files.
    """
    out_dir = Path(out_dir).absolute()
    if is_complete(out_dir, description):
        logger.info("%s already holds this conversion (%s); reusing it", out_dir, MARKER)
        return out_dir
    if out_dir.exists() and not (out_dir / MARKER).is_file():
        raise PCLError(
            f"{out_dir}: exists but is not a finished conversion (no {MARKER} marker); "
            "move it away or choose another output directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # mkdtemp makes a private (0700) directory; the dataset folder gets the usual permissions.
        os.chmod(tmp_dir, 0o777 & ~_current_umask())
        write(tmp_dir)
        # The marker is written last: its presence means every other file is complete.
        (tmp_dir / MARKER).write_text(json.dumps(description, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _move_into_place(tmp_dir, out_dir, description)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("wrote %s", out_dir)
    return out_dir


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into_place(tmp_dir: Path, out_dir: Path, description: dict) -> None:
    """Rename ``tmp_dir`` to ``out_dir``; an older complete ``out_dir`` is swapped out first."""
    if not out_dir.exists():
        try:
            os.rename(tmp_dir, out_dir)
            return
        except OSError:
            # Another process finished the same conversion meanwhile: keep theirs.
            if is_complete(out_dir, description):
                shutil.rmtree(tmp_dir, ignore_errors=True)
                return
            raise
    # A directory cannot be renamed onto a non-empty one: move the old conversion aside, move the
    # new one in, then delete the old one (restoring it if the second rename fails).
    old_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rename(out_dir, old_dir / "previous")
    try:
        os.rename(tmp_dir, out_dir)
    except BaseException:
        os.rename(old_dir / "previous", out_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
        raise
    shutil.rmtree(old_dir, ignore_errors=True)


# --------------------------------------------------------------------------- reading input
@dataclass(frozen=True)
class Column:
    """An input column and what its values must be.

    ``kind`` is ``"token"`` (kept as the exact text, e.g. ids) or ``"number"`` (parsed as a
    number). ``required=False`` lets cells be empty (they become NaN / missing).
    """

    name: str
    kind: str = "token"
    required: bool = True


def check_columns(path: Path, columns: Sequence[Column]) -> None:
    """Fail with the file and the first missing column when the CSV header lacks one."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except FileNotFoundError:
        raise PCLError(f"{path}: file not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PCLError(f"{path}: not a readable CSV file with a header row ({type(err).__name__})") from None
    for column in columns:
        if column.name not in header:
            raise PCLError(f"{path}: missing column '{column.name}' (found: {', '.join(map(str, header))})")


def read_csv_chunks(path, columns: Sequence[Column], chunksize: int) -> Iterator[pd.DataFrame]:
    """Yield checked chunks of ``path`` with just ``columns``, in file order.

    Token columns are read as text (so ids are written back exactly as they were); number columns
    are parsed, and a value that is not a number, or an empty required cell, raises
    :class:`PCLError` naming the file, the column and the line. Each chunk keeps its position in the
    file as its index (0 = first data row), which converters use for row numbers.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise PCLError(f"{path}: file not found")
    if chunksize < 1:
        raise PCLError(f"chunksize must be a positive number of rows, got {chunksize}")
    check_columns(path, columns)
    dtype = {c.name: str for c in columns if c.kind == "token"}
    reader = pd.read_csv(path, usecols=[c.name for c in columns], dtype=dtype, chunksize=chunksize)
    try:
        for chunk in reader:
            yield _checked(chunk[[c.name for c in columns]], path, columns)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PCLError(f"{path}: malformed CSV ({str(err).splitlines()[0]})") from None
    finally:
        reader.close()


def _checked(chunk: pd.DataFrame, path: Path, columns: Sequence[Column]) -> pd.DataFrame:
    """Parse number columns and reject missing/unparsable values; line numbers count the header."""
    for column in columns:
        values = chunk[column.name]
        if column.kind == "number":
            parsed = pd.to_numeric(values, errors="coerce")
            bad = parsed.isna() & values.notna()
            if bad.any():
                row = bad.idxmax()
                raise PCLError(
                    f"{path}: column '{column.name}' has a non-numeric value {values[row]!r} on line {row + 2}"
                )
            chunk[column.name] = parsed
            values = parsed
        if column.required:
            missing = values.isna()
            if missing.any():
                raise PCLError(f"{path}: column '{column.name}' is empty on line {missing.idxmax() + 2}")
    return chunk


# --------------------------------------------------------------------------- writing output
class AtomicFileWriter:
    """Stream rows into one RecBole atomic file: a ``name:type`` header, then tab-separated rows.

    ``fields`` maps output field name -> RecBole type (``token``, ``token_seq``, ``float``, ...).
    Chunks are written with CSV quoting rules (a value holding a tab, newline or double quote is
    quoted), which is how RecBole's ``pandas.read_csv`` reads the file back.
    """

    def __init__(self, path: Path, fields: dict[str, str]):
        self.path = Path(path)
        self.fields = dict(fields)
        self.rows = 0
        self._file = open(self.path, "w", encoding="utf-8", newline="")
        self._file.write("\t".join(f"{name}:{ftype}" for name, ftype in self.fields.items()) + "\n")

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s columns named like the fields (in field order)."""
        frame[list(self.fields)].to_csv(
            self._file, sep="\t", header=False, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL
        )
        self.rows += len(frame)

    def close(self) -> None:
        self._file.close()


@contextmanager
def atomic_file(path: Path, fields: dict[str, str]) -> Iterator[AtomicFileWriter]:
    """``with atomic_file(tmp_dir / "x.inter", {...}) as out: out.write(df)``."""
    writer = AtomicFileWriter(path, fields)
    try:
        yield writer
    finally:
        writer.close()
