"""SFT's epoch recipe uses the shared rule (`optim.epoch_schedule`): ceil steps, rounded warmup."""

from jaxmm import config as config_lib
from jaxmm.tasks.sft import _resolve_schedule


def test_epochs_count_the_last_partial_batch_and_warmup_rounds():
    c = config_lib.load_config_file("configs/sft.py:tiny")
    with c.unlocked():
        c.data.num_epochs = 3
        c.batch_size = 4
        c.warmup_fraction = 0.1
    _resolve_schedule(c, num_rows=10)  # 30 rows / 4 per batch = 7.5 -> 8 steps
    assert c.num_steps == 8
    assert c.optimizer.warmup_steps == 1  # round(0.8)


def test_without_epochs_num_steps_is_kept():
    c = config_lib.load_config_file("configs/sft.py:tiny")
    with c.unlocked():
        c.data.num_epochs = 0
        c.num_steps = 50
        c.warmup_fraction = 0.26
    _resolve_schedule(c, num_rows=10)
    assert c.num_steps == 50 and c.optimizer.warmup_steps == 13  # round(13.0)
