"""Puts the PyTorch reference (../shared/peers/torch_ref beside the repository) on sys.path.

TWEEDIE_PEERS overrides the peers' folder; TORCH_REF names torch_ref itself.
"""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEERS = pathlib.Path(os.environ.get("TWEEDIE_PEERS", ROOT.parent / "shared" / "peers"))
TORCH_REF = os.environ.get("TORCH_REF", str(PEERS / "torch_ref"))
if not os.path.isdir(TORCH_REF):
    sys.exit(f"the PyTorch reference is not at {TORCH_REF}: set TWEEDIE_PEERS to the peers' folder "
             "(or TORCH_REF to torch_ref)")
sys.path.insert(0, TORCH_REF)
