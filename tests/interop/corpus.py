"""The shared public captures: where they live (``$FLOWPLANE_CORPUS``, else ``../shared/corpus`` beside the repo)
and how the flow captures among them group into replays."""

import os
import re
from pathlib import Path

import pytest

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
needs_corpus = pytest.mark.skipif(not FLOWS.is_dir(), reason="corpus not found")

# REFERENCE-flow.md 3b (what nfcapd stores from the same replay) plus the akvorado pairs
EXPECTED = {
    "akvorado_nfv5": 29, "akvorado_nat": 9, "pmacct_100-IPFIXv10-CISCO": 12,
    "pmacct_101-NFv9-CISCO-cust_primitives": 51, "pmacct_104-IPFIXv10-IPv6-CISCO-sampling_option": 3,
    "ndpi_netflowv9": 0,
    "akvorado_data+templates": 21, "akvorado_icmp": 2 + 2, "akvorado_ipfix-srv6": 1, "akvorado_ipfixprobe": 4,
    "akvorado_juniper-cpid": 1, "akvorado_mpls": 2, "akvorado_multiplesamplingrates": 12,
    "akvorado_physicalinterfaces": 8, "akvorado_samplingrate": 6, "akvorado_options": 0,
}


def flow_files() -> list:
    """Every NetFlow/IPFIX capture of the corpus (and the sFlow v5 ones)."""
    files = sorted(FLOWS.glob("akvorado_*.pcap")) + sorted(FLOWS.glob("pmacct_*.pcap"))
    files.append(FLOWS / "ndpi_netflowv9.pcap")
    return [f for f in files if f.exists()]


def stem(path) -> str:
    return re.sub(r"-(data|templates?|options-data|options-template)$", "", path.stem)


def replay_order(files) -> list:
    """Template files before option data before data, pair by pair."""
    def key(p):
        n = p.stem
        return (stem(p), 0 if "template" in n else 1 if "options-data" in n else 2)
    return sorted(files, key=key)


def corpus_groups() -> dict[str, list]:
    """The flow captures by exporter session (template and data files together), in replay order."""
    out: dict[str, list] = {}
    for f in replay_order(flow_files()):
        out.setdefault(stem(f), []).append(f)
    return out
