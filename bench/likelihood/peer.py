"""Imports of the PyTorch reference (read-only; ../shared/peers/torch_ref beside the repository:
TWEEDIE_PEERS names the peers' folder, TORCH_REF torch_ref itself).

Import this first: the peer's `common` caps OpenBLAS at one thread before numpy loads (its
finding 3) and sets torch to 2 threads in `setup`.
"""
import os
import pathlib
import sys

# The peers' folder is ../shared/peers beside the repository (TWEEDIE_PEERS overrides it; TORCH_REF
# names torch_ref itself).
ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS = pathlib.Path(os.environ.get("TWEEDIE_PEERS", ROOT.parent / "shared" / "peers"))
TORCH_REF = os.environ.get("TORCH_REF", str(PEERS / "torch_ref"))
if not os.path.isdir(TORCH_REF):
    sys.exit(f"{pathlib.Path(__file__).name}: the PyTorch reference is not at {TORCH_REF}: set "
             "TWEEDIE_PEERS to the peers' folder (or TORCH_REF to torch_ref)")
sys.path.insert(0, TORCH_REF)

import common  # noqa: E402,F401
from likelihood import nll_data_space  # noqa: E402,F401
from model import ScoreMLP  # noqa: E402,F401
