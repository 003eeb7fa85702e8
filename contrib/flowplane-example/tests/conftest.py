import sys
from importlib.util import find_spec
from pathlib import Path

# Test the installed plugin when there is one (pip install -e .), else the source tree.
if find_spec("flowplane_example") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# make_app, make_config, make_batch, register_plugin fixtures and write_pcap
pytest_plugins = ["flowplane.testing"]
