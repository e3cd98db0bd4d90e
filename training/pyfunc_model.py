"""Where router versions registered before models-from-code find their model class.

Those versions hold a pickled ``training.pyfunc_model.CascadeRouterPyfunc``; unpickling looks the
class up here.  New versions log :mod:`router.mlflow_model` as code and do not need this module.
"""

from __future__ import annotations

from router.pyfunc import CascadeRouterPyfunc

__all__ = ["CascadeRouterPyfunc"]
