"""A 4D-LRM config shrunk to test size, shared by the task and API tests."""

from jaxmm import config as config_lib


def small_config(**overrides):
    """The runlocal variant shrunk to test size (16², 2+2 views, 1-layer width-32 model)."""
    c = config_lib.load_config_file("configs/lrm4d.py:runlocal")
    values = {
        "num_steps": 2,
        "batch_size": 8,
        "optimizer.warmup_steps": 0,
        "progress_bar": False,
        "checkpoint.async_save": False,
        "checkpoint.every_steps": 2,
        "log_every_steps": 1,
        "data.image_size": 16,
        "data.num_input_views": 2,
        "data.num_target_views": 2,
        "data.points_per_primitive": 16,
        "model.width": 32,
        "model.num_layers": 1,
        "model.num_heads": 2,
        "model.render_capacity": 64,
        "eval.num_scenes": 0,
        "mesh.data": 2,
        "mesh.fsdp": 2,
        "mesh.tensor": 2,
    }
    values.update(overrides)
    with c.unlocked():
        for k, v in values.items():
            config_lib.set_key(c, k, v)
    return c
