"""A 4D-LRM trained for one step at test size, shared by the API and folder-evaluation tests."""

import jax
import pytest

from jaxmm import tasks
from jaxmm.train import trainer as trainer_lib
from tests.lrm4d.small import small_config


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(workdir, config, params) of a 16², 2-input-view model after one step."""
    workdir = str(tmp_path_factory.mktemp("lrm4d_run"))
    c = small_config(**{"num_steps": 1, "checkpoint.every_steps": 1, "data.num_target_views": 1})
    result = trainer_lib.train(c, workdir, tasks.build(c))
    return workdir, c, jax.device_get(result.state.params)
