"""freezelab: semantic-aware layer freezing. Where to fine-tune a language model.

The method in METHOD.md notation, one module a step:
    trace -> deviation -> fit_scaling_law -> layer_gains -> plan -> cost
and then freeze / finetune under the plan, with baselines and the oracle sweep to check it.
"""

from .cost import Cost, cost
from .data import Example, Split, Task, list_datasets, load_task, split
from .deviation import LENSES, Deviation, deviation
from .errors import FreezelabError
from .finetune import RunResult, finetune
from .freeze import freeze
from .gains import Gains, layer_gains
from .law import Law, fit_scaling_law
from .models import LoadedModel, list_models, load_model
from .plan import RULES, Plan, plan
from .planner import PlanRun, make_plan
from .basis import semantic_basis
from .trace import Trace, trace

__all__ = [
    "Cost", "Deviation", "Example", "FreezelabError", "Gains", "LENSES", "Law", "LoadedModel", "Plan",
    "PlanRun", "RULES", "RunResult", "Split", "Task", "Trace", "cost", "deviation", "finetune",
    "fit_scaling_law", "freeze", "layer_gains", "list_datasets", "list_models", "load_model",
    "load_task", "make_plan", "plan", "semantic_basis", "split", "trace",
]
__version__ = "0.1.0"
