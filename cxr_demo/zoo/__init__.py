"""The model zoo: typed specs read from `weights/zoo.toml`, resolved local-first, built by one registered loader per kind.

    from cxr_demo import zoo
    spec = zoo.default("classify")
    model = zoo.load(spec.name)      # cached; raises ModelUnavailable with a plain reason
"""
from cxr_demo.zoo import architectures  # noqa: F401  (registers the zoo's own timm architectures)
from cxr_demo.zoo.catalog import REPO_ROOT, WEIGHTS_FILE, Zoo, default, get, load, load_weights, metrics, names, registry, resolve
from cxr_demo.zoo.spec import Loaded, ModelSpec, ModelUnavailable, UnknownModel
from cxr_demo.zoo.task_table import ENDPOINTS, KINDS, TASKS, Task

__all__ = ["ENDPOINTS", "KINDS", "REPO_ROOT", "TASKS", "WEIGHTS_FILE", "Loaded", "ModelSpec", "ModelUnavailable", "Task", "UnknownModel", "Zoo",
           "default", "get", "load", "load_weights", "metrics", "names", "registry", "resolve"]
