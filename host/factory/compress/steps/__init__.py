"""The recipe step types, one module each (see ``base`` for the ``CompressionStep`` ABC).

Importing this package imports every module in it, and each module registers its step with
``@register_step``: adding a step type is adding one module here, nothing else.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
