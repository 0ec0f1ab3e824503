"""freezelab: semantic-aware layer freezing. Where to fine-tune a language model.

The method in book/method.md's notation, one module a step (freezelab/method/):
    trace -> deviation -> fit_scaling_law -> layer_gains -> plan -> cost
and then freeze / finetune under the plan, with baselines and the oracle sweep to check it.
"""

from freezelab.costmodel.ledger import Cost, cost
from freezelab.model.data import Example, Split, Task, list_datasets, load_task, split
from freezelab.method.lens import LENSES, Deviation, Lens, deviation
from freezelab.errors import FreezelabError
from freezelab.train.finetune import FinetuneConfig, RunResult, finetune
from freezelab.train.freeze import freeze
from freezelab.method.gains import Gains, layer_gains
from freezelab.method.law import Law, fit_scaling_law
from freezelab.model.models import LoadedModel, list_models, load_model
from freezelab.method.plan import RULES, Plan, plan
from freezelab.method.pipeline import PlanRun, make_plan
from freezelab.method.basis import semantic_basis
from freezelab.method.trace import Trace, trace

__all__ = [
    "Cost", "Deviation", "Example", "FinetuneConfig", "FreezelabError", "Gains", "LENSES", "Law", "Lens", "LoadedModel", "Plan",
    "PlanRun", "RULES", "RunResult", "Split", "Task", "Trace", "cost", "deviation", "finetune",
    "fit_scaling_law", "freeze", "layer_gains", "list_datasets", "list_models", "load_model",
    "load_task", "make_plan", "plan", "semantic_basis", "split", "trace",
]
__version__ = "0.1.0"
