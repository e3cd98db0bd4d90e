"""Parameters of an estimator, derived from its ``__init__`` as scikit-learn derives them."""

from __future__ import annotations

import inspect
from typing import Any, Self


class EstimatorParams:
    """``get_params`` / ``set_params`` for a class whose ``__init__`` stores every keyword
    argument, unchanged, under its own name (scikit-learn's estimator contract), so that
    ``sklearn.base.clone`` works without making scikit-learn a dependency of routing."""

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The parameters: ``__init__``'s named arguments, in signature order."""
        signature = inspect.signature(cls.__init__)
        return tuple(
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every parameter as given to ``__init__`` (or :meth:`set_params`)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change parameters (the fitted state is untouched until the next ``fit``)."""
        valid = set(self.param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of {type(self).__name__} "
                    f"(parameters: {', '.join(sorted(valid))})"
                )
            setattr(self, name, value)
        return self
