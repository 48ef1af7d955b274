"""Imports of the PyTorch reference (read-only; ../shared/peers/torch_ref beside the repository:
TWEEDIE_PEERS names the peers' folder, TORCH_REF torch_ref itself).

Import this first: the peer's `common` caps OpenBLAS at one thread before numpy loads (its
finding 3) and sets torch to 2 threads in `setup`.
"""
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bench/
from torch_ref import PEERS, ROOT, TORCH_REF  # noqa: E402,F401  puts torch_ref on sys.path

import common  # noqa: E402,F401
from likelihood import nll_data_space  # noqa: E402,F401
from model import ScoreMLP  # noqa: E402,F401
