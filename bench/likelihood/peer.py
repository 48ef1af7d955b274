"""Imports of the PyTorch reference (read-only; TORCH_REF, default /work/shared/peers/torch_ref).

Import this first: the peer's `common` caps OpenBLAS at one thread before numpy loads (its
finding 3) and sets torch to 2 threads in `setup`.
"""
import os
import sys

TORCH_REF = os.environ.get("TORCH_REF", "/work/shared/peers/torch_ref")
sys.path.insert(0, TORCH_REF)

import common  # noqa: E402,F401
from likelihood import nll_data_space  # noqa: E402,F401
from model import ScoreMLP  # noqa: E402,F401
