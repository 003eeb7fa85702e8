import sys
from pathlib import Path

# tests/unit/frames.py (frame builders) is shared by unit and integration tests: `from frames import ...`
sys.path.insert(0, str(Path(__file__).parent / "unit"))

pytest_plugins = ["flowplane.testing"]
