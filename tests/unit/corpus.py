"""Where the shared public captures live: ``$FLOWPLANE_CORPUS``, else ``../shared/corpus`` beside the repo."""

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path:
    env = os.environ.get("FLOWPLANE_CORPUS")
    for candidate in ([Path(env)] if env else []) + [_REPO.parent / "shared" / "corpus", Path("/work/shared/corpus")]:
        if candidate.is_dir():
            return candidate
    return _REPO.parent / "shared" / "corpus"  # missing: tests that need it skip


CORPUS = corpus_dir()
FLOWS = CORPUS / "flows"
ACTIVE = CORPUS / "active"
