"""ltfunc: functional lottery-ticket research on PyTorch.

Models become parameter pytrees, masks are immutable pytrees of bool tensors produced by pure
pruning functions, and training is one compiled masked step.
"""

from importlib.metadata import PackageNotFoundError, version

from . import masks as masks
from . import models as models
from . import params as params
from . import prune as prune
from . import report as report
from .masks import Mask as Mask
from .params import call as call
from .params import get_buffers as get_buffers
from .params import get_params as get_params
from .params import load_into as load_into
from .params import load_tree as load_tree
from .params import save_tree as save_tree
from .params import snapshot as snapshot
from .params import tree_equal as tree_equal
from .prune import Rates as Rates

try:
    __version__ = version("ltfunc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
