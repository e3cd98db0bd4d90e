"""The service fixtures (real llama.cpp, sidecar) are shared with tests/serving."""

from tests.serving.conftest import (  # noqa: F401
    frontier_frame,
    functions_standin,
    llama,
    llama_functions,
    prompts,
    serving_dir,
)
