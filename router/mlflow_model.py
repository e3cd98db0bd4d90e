"""The code MLflow logs as the router's pyfunc model ("models from code").

MLflow copies this file into every logged version and runs it when the version is loaded: it
names the model object, so no pickled Python object travels in the artifact.  It is never
imported by the package itself.
"""

from mlflow.models import set_model

from router.pyfunc import CascadeRouterPyfunc

set_model(CascadeRouterPyfunc())
