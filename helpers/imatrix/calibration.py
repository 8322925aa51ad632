"""The default calibration text: Chinese stories from HFL's CMRC 2019 data set, downloaded from the hub.

The importance matrix is only as good as the text it is computed on, and the releases are Chinese models. The
default is the development set of CMRC 2019 (``hfl/cmrc2019`` on the hub, ``cmrc2019_dev.json``, about 800 kB;
licence CC BY-SA 4.0), published by HFL, the lab that released Chinese-LLaMA/Alpaca: narrative Chinese text
(stories and essays) in which some sentences were cut out for a cloze test; the answer key puts them back, so the
text is whole again. Each story becomes one paragraph of the calibration file.

The file is downloaded through ``huggingface_hub`` (``HF_ENDPOINT`` honoured, so a mirror works) and checked against
the digest the hub lists for it (:func:`helpers.hub.access.fetch_dataset_file`). Any UTF-8 text file of your own works as
well (``python -m helpers imatrix --text FILE``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..hub.access import fetch_dataset_file
from ..util import UserError, atomic_path

CALIBRATION_REPO = "hfl/cmrc2019"  # hub data set
CALIBRATION_FILE = "cmrc2019_dev.json"
CALIBRATION_LICENSE = "CC BY-SA 4.0"
CALIBRATION_NAME = f"{CALIBRATION_REPO}/{CALIBRATION_FILE}"  # what imatrix.datasets records
_BLANK = re.compile(r"\[BLANK(\d+)\]")


def cloze_to_text(data: dict) -> str:
    """The stories of a CMRC 2019 file (``{"data": [{"context", "choices", "answers"}, ...]}``) with every
    ``[BLANKn]`` replaced by its answer, one story per paragraph.

    Raises:
        UserError: a file in another layout, or an answer key that does not fit its story.
    """
    stories = []
    try:
        for item in data["data"]:
            choices, answers = item["choices"], item["answers"]

            def fill(m: re.Match, choices=choices, answers=answers) -> str:
                return choices[answers[int(m.group(1)) - 1]]

            stories.append(_BLANK.sub(fill, item["context"]).strip())
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(f"the calibration data is not in CMRC 2019's layout ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(s for s in stories if s)
    if not text:
        raise UserError("the calibration data holds no text")
    return text + "\n"


def calibration_text(folder: str | Path) -> Path:
    """Download the default Chinese calibration set (:data:`CALIBRATION_REPO`) and write it as plain text.

    Args:
        folder: where to write ``calibration-zh.txt`` (kept: a rerun does not download again).

    Returns:
        the text file, for :func:`helpers.imatrix.compute.compute_imatrix` (whose ``dataset`` should be
        :data:`CALIBRATION_NAME`).

    Raises:
        UserError: the hub (or ``HF_ENDPOINT``) cannot be reached, the download does not match the hub's digest, or
            the file is not in the expected layout.
    """
    out = Path(folder) / "calibration-zh.txt"
    if out.is_file() and out.stat().st_size > 0:
        return out
    src = fetch_dataset_file(CALIBRATION_REPO, CALIBRATION_FILE, what="calibration data set")
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{CALIBRATION_NAME} is not UTF-8 JSON ({exc})") from None
    text = cloze_to_text(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
