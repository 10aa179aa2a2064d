"""ltfunc: functional lottery-ticket research on PyTorch.

Models become parameter pytrees, masks are immutable pytrees of bool tensors produced by pure
pruning functions, and training is one compiled masked step. ``ltfunc.interop`` (JAX, torch
prune buffers) and ``ltfunc.plot`` (matplotlib) are imported on demand.
"""

from importlib.metadata import PackageNotFoundError, version

from . import data as data
from . import experiment as experiment
from . import interop as interop
from . import lottery as lottery
from . import masks as masks
from . import models as models
from . import optim as optim
from . import params as params
from . import prune as prune
from . import report as report
from . import reproduce as reproduce
from . import step as step
from . import ticket as ticket
from . import train as train
from .data import DATASETS as DATASETS
from .data import Dataset as Dataset
from .data import Split as Split
from .data import batches as batches
from .data import load_dataset as load_dataset
from .experiment import ImpConfig as ImpConfig
from .experiment import RunResult as RunResult
from .experiment import load_round as load_round
from .experiment import run_imp as run_imp
from .lottery import LotteryTicket as LotteryTicket
from .masks import Mask as Mask
from .optim import Optimizer as Optimizer
from .optim import adam as adam
from .optim import adamw as adamw
from .optim import from_torch as from_torch
from .optim import momentum as momentum
from .optim import sgd as sgd
from .params import call as call
from .params import get_buffers as get_buffers
from .params import get_params as get_params
from .params import load_into as load_into
from .params import load_tree as load_tree
from .params import save_tree as save_tree
from .params import snapshot as snapshot
from .params import tree_equal as tree_equal
from .prune import Rates as Rates
from .step import evaluate as evaluate
from .step import make_eval_step as make_eval_step
from .step import make_train_step as make_train_step
from .ticket import RoundResult as RoundResult
from .ticket import Trainer as Trainer
from .ticket import baseline_round as baseline_round
from .ticket import dense_round as dense_round
from .ticket import imp as imp
from .ticket import imp_round as imp_round
from .ticket import make_evaluator as make_evaluator
from .ticket import make_trainer as make_trainer
from .ticket import next_mask as next_mask
from .ticket import reset_to as reset_to
from .ticket import train_round as train_round
from .train import TrainState as TrainState
from .train import fit as fit

try:
    __version__ = version("ltfunc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
